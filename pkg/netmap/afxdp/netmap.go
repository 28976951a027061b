package afxdp

import (
	"github.com/epair-cni/epair/pkg/netmap"
	"golang.org/x/sys/unix"
)

// Socket is a netmap generic backend with one TX and one RX queue: wrap it with
// netmap.NewGenericAdapter(name, sock, netmap.GenericConfig{...}) and the adapter drives the
// batch calls from its kring syncs and the readiness waits from its own goroutines.
var _ netmap.GenericBackend = (*Socket)(nil)

// FrameSize is the largest frame the socket receives: FrameSize minus XDP_PACKET_HEADROOM.
func (s *Socket) FrameSize() int { return int(s.frameSize) - unix.XDP_PACKET_HEADROOM }
