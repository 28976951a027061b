package afpacket

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/epair-cni/epair/pkg/netmap"
)

// Socket is a netmap generic backend with one TX and one RX queue: wrap it with
// netmap.NewGenericAdapter(name, sock, netmap.GenericConfig{...}) and the adapter drives the
// batch calls from its kring syncs and the readiness waits from its own goroutines.
var _ netmap.GenericBackend = (*Socket)(nil)

// Queues reports one TX and one RX queue.
func (s *Socket) Queues() (tx, rx int) { return 1, 1 }

// FrameSize is the largest frame a transmit slot holds.
func (s *Socket) FrameSize() int { return int(s.txSlot) - txDataOff }

func checkQueue(q int) error {
	if q != 0 {
		return fmt.Errorf("select queue %d: the socket has only queue 0: %w", q, syscall.EINVAL)
	}
	return nil
}

// TxBatch is Transmit on queue 0.
func (s *Socket) TxBatch(q int, frames [][]byte) (int, error) {
	if err := checkQueue(q); err != nil {
		return 0, err
	}
	return s.Transmit(frames)
}

// RxBatch is Receive on queue 0.
func (s *Socket) RxBatch(q int, bufs [][]byte, lens []int) (int, error) {
	if err := checkQueue(q); err != nil {
		return 0, err
	}
	return s.Receive(bufs, lens)
}

// WaitReady parks in the netpoller until queue 0 has frames (netmap.RX) or transmit room
// (netmap.TX), the socket is closed (ErrClosed) or ctx ends (ctx.Err()). Cancellation
// interrupts the parked wait through a past deadline; the wait condition also checks
// ctx.Done(), so a cancellation racing with the start of the wait is not lost.
func (s *Socket) WaitReady(ctx context.Context, q int, dir netmap.Direction) error {
	if err := checkQueue(q); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	interrupt := s.pfd.InterruptWrite
	if dir == netmap.RX {
		interrupt = s.pfd.InterruptRead
	}
	stop := context.AfterFunc(ctx, interrupt)
	defer stop()
	for {
		var err error
		if dir == netmap.RX {
			err = s.waitRX(0, ctx.Done())
		} else {
			err = s.waitTX(0, ctx.Done())
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // an interrupt left over from an earlier, already finished wait
		}
		return err
	}
}
