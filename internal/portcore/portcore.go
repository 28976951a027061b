// Package portcore is the lifecycle that the project's frame sockets share (the AF_XDP
// and AF_PACKET ports of pkg/netmap, the TAP host port of pkg/hostport), and their glue
// to netmap.GenericBackend: an embedded Core provides Close, Name, Queues, TxBatch,
// RxBatch, WaitReady, WaitRX and WaitTX on top of the socket's own Transmit and Receive.
//
// The rules it enforces: calls that touch the descriptor or a mapping hold the read side
// of an RWMutex (Enter/Exit) and fail with the socket's closed error once Close began;
// Close marks the socket closed, wakes parked waiters (their wait conditions see it),
// then takes the write side, so that no raw system call can ever run on a closed and
// possibly reused descriptor number, and closes the descriptor and undoes the rest. One
// receive waiter and one transmit waiter at a time; waits are event-driven through the
// Go netpoller (internal/sys.PollFD).
package portcore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/netmap"
)

// Ops is the socket's side: the batch calls the Core's netmap glue forwards to.
type Ops interface {
	Transmit(frames [][]byte) (int, error)
	Receive(bufs [][]byte, lens []int) (int, error)
}

// Config describes the socket to its Core.
type Config struct {
	Name      string       // interface name
	PFD       *sys.PollFD  // the descriptor, owned by the Core from Init
	ErrClosed error        // what calls return after Close
	Undo      func() error // releases everything but the descriptor (mappings, programs)
	// RxReady and TxReady report readiness for the waiters; they may read only atomics,
	// or poll(2) on a pollfd of their own (one waiter per direction).
	RxReady, TxReady func() bool
	// Kicked selects sys.PollFD.WaitWriteKicked for transmit waits (ring sockets whose
	// completions advance only when the kernel is kicked): Kick (nil: nothing to kick)
	// and Recheck are passed on. Otherwise transmit waits are plain write waits.
	Kicked  bool
	Kick    func() error
	Recheck time.Duration
	// TxWaitWhat, if set, names a failed transmit wait ("wait for TX slots").
	TxWaitWhat string
}

// Core is embedded in a socket and initialised by Init once the socket is open.
type Core struct {
	cfg    Config
	ops    Ops
	closed atomic.Bool
	mu     sync.RWMutex
	once   sync.Once
	cerr   error

	rxWait, txWait func(uintptr) bool
	rxDone, txDone <-chan struct{} // Done channel of the current wait's context (its waiter only)
}

// Init sets the Core up for ops. Nothing may use the Core before.
func (c *Core) Init(ops Ops, cfg Config) {
	c.ops, c.cfg = ops, cfg
	// The wait conditions read only atomics (or poll their own pollfd), so a waiter may
	// run concurrently with Receive/Transmit on another goroutine.
	c.rxWait = func(uintptr) bool { return c.closed.Load() || sys.Done(c.rxDone) || cfg.RxReady() }
	c.txWait = func(uintptr) bool { return c.closed.Load() || sys.Done(c.txDone) || cfg.TxReady() }
}

// Enter starts a call that touches the descriptor or a mapping: it fails with the
// closed error after Close; on success the caller must call Exit when done.
func (c *Core) Enter() error {
	c.mu.RLock()
	if c.closed.Load() {
		c.mu.RUnlock()
		return c.cfg.ErrClosed
	}
	return nil
}

// EnterQueue is Enter for a netmap.GenericBackend call on queue q (only queue 0 exists).
func (c *Core) EnterQueue(q int) error {
	if err := sys.CheckQueue(c.cfg.Name, q); err != nil {
		return err
	}
	return c.Enter()
}

// Exit ends a call begun with Enter.
func (c *Core) Exit() { c.mu.RUnlock() }

// Closed reports whether Close has begun.
func (c *Core) Closed() bool { return c.closed.Load() }

// Close closes the socket (waking waiters with the closed error), waits for the calls
// in flight, closes the descriptor, then runs Undo. It is idempotent.
func (c *Core) Close() error {
	c.once.Do(func() {
		c.closed.Store(true)
		c.cfg.PFD.InterruptRead()
		c.cfg.PFD.InterruptWrite()
		c.mu.Lock()
		defer c.mu.Unlock()
		perr := c.cfg.PFD.Close() // first: the undo may unmap what the descriptor maps
		var uerr error
		if c.cfg.Undo != nil {
			uerr = c.cfg.Undo()
		}
		c.cerr = errors.Join(perr, uerr)
	})
	return c.cerr
}

// Name returns the interface name.
func (c *Core) Name() string { return c.cfg.Name }

// WaitRX parks until frames are pending, the timeout passes (os.ErrDeadlineExceeded;
// ≤ 0 waits forever) or the socket is closed (the closed error). It may run concurrently
// with Receive on another goroutine; one RX waiter at a time.
func (c *Core) WaitRX(timeout time.Duration) error { return c.waitRX(timeout, nil) }

func (c *Core) waitRX(timeout time.Duration, done <-chan struct{}) error {
	if err := c.Enter(); err != nil {
		return err
	}
	defer c.Exit()
	c.rxDone = done
	err := c.cfg.PFD.WaitRead(timeout, c.rxWait)
	c.rxDone = nil
	if c.closed.Load() || sys.IsClosed(err) {
		return c.cfg.ErrClosed
	}
	return err
}

// WaitTX parks until there is room to transmit, the timeout passes or the socket is
// closed. It may run concurrently with Transmit on another goroutine; one TX waiter at a
// time.
func (c *Core) WaitTX(timeout time.Duration) error { return c.waitTX(timeout, nil) }

func (c *Core) waitTX(timeout time.Duration, done <-chan struct{}) error {
	if err := c.Enter(); err != nil {
		return err
	}
	defer c.Exit()
	c.txDone = done
	defer func() { c.txDone = nil }()
	var err error
	if c.cfg.Kicked {
		err = c.cfg.PFD.WaitWriteKicked(timeout, c.cfg.Recheck, c.txWait, c.cfg.Kick, done)
	} else {
		err = c.cfg.PFD.WaitWrite(timeout, c.txWait)
	}
	if c.closed.Load() || sys.IsClosed(err) {
		return c.cfg.ErrClosed
	}
	if err != nil && c.cfg.TxWaitWhat != "" && !errors.Is(err, sys.ErrTimeout) {
		return fmt.Errorf("%s on %s: %w", c.cfg.TxWaitWhat, c.cfg.Name, err)
	}
	return err
}

// Queues reports one TX and one RX queue.
func (c *Core) Queues() (tx, rx int) { return 1, 1 }

// TxBatch is Transmit on queue 0.
func (c *Core) TxBatch(q int, frames [][]byte) (int, error) {
	if err := sys.CheckQueue(c.cfg.Name, q); err != nil {
		return 0, err
	}
	return c.ops.Transmit(frames)
}

// RxBatch is Receive on queue 0.
func (c *Core) RxBatch(q int, bufs [][]byte, lens []int) (int, error) {
	if err := sys.CheckQueue(c.cfg.Name, q); err != nil {
		return 0, err
	}
	return c.ops.Receive(bufs, lens)
}

// RxPending reports, without blocking, whether received frames wait on queue 0 (the
// backend's RxReady: an atomic, or a poll(2) with no timeout). It is the receive waiter's
// to call (one at a time, as WaitReady).
func (c *Core) RxPending(q int) bool {
	if q != 0 || c.Enter() != nil {
		return false
	}
	defer c.Exit()
	return c.cfg.RxReady()
}

// WaitReady parks in the netpoller until queue 0 has frames (netmap.RX) or transmit
// room (netmap.TX), the socket is closed (the closed error) or ctx ends (ctx.Err());
// see sys.PollFD.WaitReady.
func (c *Core) WaitReady(ctx context.Context, q int, dir netmap.Direction) error {
	if err := sys.CheckQueue(c.cfg.Name, q); err != nil {
		return err
	}
	if dir == netmap.RX {
		return c.cfg.PFD.WaitReady(ctx, true, func(done <-chan struct{}) error { return c.waitRX(0, done) })
	}
	return c.cfg.PFD.WaitReady(ctx, false, func(done <-chan struct{}) error { return c.waitTX(0, done) })
}
