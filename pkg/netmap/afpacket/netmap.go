package afpacket

import (
	"github.com/epair-cni/epair/pkg/netmap"
)

// Socket is a netmap generic backend with one TX and one RX queue: wrap it with
// netmap.NewGenericAdapter(name, sock, netmap.GenericConfig{...}) and the adapter drives the
// batch calls from its kring syncs and the readiness waits from its own goroutines.
var (
	_ netmap.GenericBackend     = (*Socket)(nil)
	_ netmap.GenericFragBackend = (*Socket)(nil)
)

// FrameSize is the largest frame a transmit slot holds.
// With VnetHdr it is MaxVnetFrame (virtio_net_hdr included).
func (s *Socket) FrameSize() int {
	if s.vnet {
		return MaxVnetFrame
	}
	return int(s.txSlot) - txDataOff
}
