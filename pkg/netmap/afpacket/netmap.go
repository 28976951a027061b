package afpacket

import (
	"context"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/netmap"
)

// Socket is a netmap generic backend with one TX and one RX queue: wrap it with
// netmap.NewGenericAdapter(name, sock, netmap.GenericConfig{...}) and the adapter drives the
// batch calls from its kring syncs and the readiness waits from its own goroutines.
var (
	_ netmap.GenericBackend     = (*Socket)(nil)
	_ netmap.GenericFragBackend = (*Socket)(nil)
)

// Queues reports one TX and one RX queue.
func (s *Socket) Queues() (tx, rx int) { return 1, 1 }

// FrameSize is the largest frame a transmit slot holds.
// With VnetHdr it is MaxVnetFrame (virtio_net_hdr included).
func (s *Socket) FrameSize() int {
	if s.vnet {
		return MaxVnetFrame
	}
	return int(s.txSlot) - txDataOff
}

// TxBatch is Transmit on queue 0.
func (s *Socket) TxBatch(q int, frames [][]byte) (int, error) {
	if err := sys.CheckQueue(s.ifname, q); err != nil {
		return 0, err
	}
	return s.Transmit(frames)
}

// RxBatch is Receive on queue 0.
func (s *Socket) RxBatch(q int, bufs [][]byte, lens []int) (int, error) {
	if err := sys.CheckQueue(s.ifname, q); err != nil {
		return 0, err
	}
	return s.Receive(bufs, lens)
}

// WaitReady parks in the netpoller until queue 0 has frames (netmap.RX) or transmit room
// (netmap.TX), the backend is closed (ErrClosed) or ctx ends (ctx.Err()); see
// sys.PollFD.WaitReady.
func (s *Socket) WaitReady(ctx context.Context, q int, dir netmap.Direction) error {
	if err := sys.CheckQueue(s.ifname, q); err != nil {
		return err
	}
	r := s
	if dir == netmap.RX {
		return r.pfd.WaitReady(ctx, true, func(done <-chan struct{}) error { return r.waitRX(0, done) })
	}
	return r.pfd.WaitReady(ctx, false, func(done <-chan struct{}) error { return r.waitTX(0, done) })
}
