package linkport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/netmap/afxdp"
)

// ErrClosed is returned by an Upgradable's calls after Close.
var ErrClosed = fmt.Errorf("link port closed: %w", syscall.EBADF)

// Handoff timing of Upgradable.Upgrade.
const (
	// upgradeGrace is how long the old socket is still read after the new one took
	// over: frames the kernel was already delivering to it when the XDP program began
	// redirecting (a softirq's worth) land there within it.
	upgradeGrace = 10 * time.Millisecond
	// drainPoll is how often a receive waiter looks at the old socket during the grace.
	drainPoll = time.Millisecond
	// drainTimeout bounds the wait for the receiving goroutine to empty the old socket;
	// a port nobody receives from (not attached to a switch) is closed after it.
	drainTimeout = time.Second
)

// Upgradable is a Port that starts on a ring-less AF_PACKET socket, which opens in
// well under a millisecond, and moves to AF_XDP when Upgrade is called, without
// stopping traffic: Open with Options.FastStart returns one. Both sockets are bound to
// the same link during the handoff. The XDP program takes every frame for the new
// socket as soon as the socket is in its map, and a frame it takes never reaches the
// packet socket (XDP runs before the taps), while a frame it passed before that is in
// the packet socket only; so the receive side reads the old socket first until it is
// empty and a grace period has passed, then the new one only, and the transmit side
// moves at once. Frames are neither lost nor duplicated by the handoff.
//
// There is no upgrade to AF_PACKET with rings: two packet sockets on one link both
// receive every frame, so no handoff between them is free of both loss and
// duplicates. Where AF_XDP cannot serve the link, the port stays on its ring-less
// socket (Current reports why).
//
// KernelDrops counts the frames the kernel dropped before the port's reader saw them
// over every socket the port has had: each socket is read one last time before the
// port closes it, and that count is kept, so the total never goes backwards.
//
// The concurrency rules are a backend's: one receiving and one transmitting
// goroutine, one waiter per direction. Upgrade, Close and KernelDrops may be called
// from any goroutine.
type Upgradable struct {
	name      string
	frameSize int
	xdp       afxdp.Config

	ph      atomic.Pointer[phase]
	closed  atomic.Bool
	closing chan struct{}
	once    sync.Once
	cerr    error

	mu        sync.Mutex // serialises Upgrade and Close
	attempted bool
	state     atomic.Pointer[Opened] // what Current reports

	kmu  sync.Mutex // serialises KernelDrops and the last reading of a socket before it closes
	legs []*leg     // every socket the port has had, the first first (kmu)
}

// leg is one socket of an Upgradable.
type leg struct {
	p       Port
	retired atomic.Bool // set before the Upgradable closes p: its errors mean "look again"

	drops uint64 // p's kernel drops at their last reading (Upgradable.kmu)
	final bool   // drops was read just before p was closed: nothing to read any more (kmu)
}

// phase is what an Upgradable's calls use; it is replaced, never changed, except for
// the handoff's drain flag.
type phase struct {
	cur *leg // transmit, and receive after old
	old *leg // during a handoff: read first until empty, then retired
	// final: nothing changes any more but Close, so waits go straight to cur.
	final bool
	// ctx ends when the phase is replaced (not for a final phase): it wakes waiters.
	ctx    context.Context
	cancel context.CancelFunc

	drain     atomic.Bool   // the grace is over: the receiver retires old once it is empty
	drained   chan struct{} // closed by the receiver when it stops reading old
	drainOnce sync.Once
}

func newPhase(cur, old *leg, final bool) *phase {
	ph := &phase{cur: cur, old: old, final: final}
	if !final {
		ph.ctx, ph.cancel = context.WithCancel(context.Background())
	}
	if old != nil {
		ph.drained = make(chan struct{})
	}
	return ph
}

func (u *Upgradable) publish(ph *phase) {
	if prev := u.ph.Swap(ph); prev != nil && prev.cancel != nil {
		prev.cancel()
	}
}

// openFast opens the ring-less socket of a FastStart port (Backend Auto or XDP).
func openFast(ifname string, opts Options) (*Upgradable, error) {
	fs, err := opts.XDP.MaxFrame()
	if err != nil {
		return nil, fmt.Errorf("open port %s: %w", ifname, err)
	}
	pc := opts.Packet
	pc.Ringless, pc.VnetHdr = true, false
	pc.TXFrameSize = 4096 // no slots: only the largest frame it takes, at least AF_XDP's
	s, err := afpacket.Open(ifname, pc)
	if err != nil {
		return nil, fmt.Errorf("open port %s: %w", ifname, err)
	}
	u := &Upgradable{name: ifname, frameSize: fs, xdp: opts.XDP, closing: make(chan struct{})}
	first := &leg{p: s}
	u.legs = append(make([]*leg, 0, 2), first)
	u.publish(newPhase(first, nil, false))
	u.state.Store(&Opened{Port: u, Backend: Ringless})
	return u, nil
}

// Upgrade opens an AF_XDP socket on the link (with the Options' XDP config), in the
// calling thread's network namespace, and hands the port over to it. It returns once
// the ring-less socket is closed, or with an error when AF_XDP could not be opened
// (the port then stays on the ring-less socket, and Current reports why as
// Fallback). Only the first call does anything; it may run concurrently with traffic.
func (u *Upgradable) Upgrade() (Opened, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed.Load() {
		return Opened{}, fmt.Errorf("upgrade port %s: %w", u.name, ErrClosed)
	}
	if u.attempted {
		return *u.state.Load(), nil
	}
	u.attempted = true
	old := u.ph.Load().cur
	o, err := Open(u.name, Options{Backend: XDP, XDP: u.xdp})
	if err != nil {
		err = fmt.Errorf("upgrade port %s: %w", u.name, err)
		u.state.Store(&Opened{Port: u, Backend: Ringless, Fallback: err})
		u.publish(newPhase(old, nil, true))
		return Opened{}, err
	}
	next := &leg{p: o.Port}
	u.kmu.Lock()
	u.legs = append(u.legs, next)
	u.kmu.Unlock()
	ph := newPhase(next, old, false)
	u.publish(ph)
	t := time.NewTimer(upgradeGrace)
	select {
	case <-t.C:
	case <-u.closing:
	}
	ph.drain.Store(true)
	t.Reset(drainTimeout)
	select {
	case <-ph.drained:
	case <-t.C:
	case <-u.closing:
	}
	t.Stop()
	u.publish(newPhase(next, nil, true))
	old.retired.Store(true)
	u.finalDrops(old)
	cerr := old.p.Close()
	st := o
	st.Port = u
	u.state.Store(&st)
	if cerr != nil {
		return st, fmt.Errorf("upgrade port %s: close the ring-less socket: %w", u.name, cerr)
	}
	return st, nil
}

// Current reports the backend in use: Ringless before Upgrade (or after it failed,
// with Fallback saying why), then what Upgrade opened.
func (u *Upgradable) Current() Opened { return *u.state.Load() }

// Close closes the port's sockets, waking waiters with an error; an Upgrade in flight
// is cut short. It is idempotent.
func (u *Upgradable) Close() error {
	u.once.Do(func() {
		u.closed.Store(true)
		close(u.closing)
		u.mu.Lock()
		defer u.mu.Unlock()
		ph := u.ph.Load()
		var errs []error
		for _, l := range []*leg{ph.cur, ph.old} {
			if l != nil && !l.retired.Swap(true) {
				u.finalDrops(l)
				errs = append(errs, l.p.Close())
			}
		}
		if ph.cancel != nil {
			ph.cancel()
		}
		u.cerr = errors.Join(errs...)
	})
	return u.cerr
}

// KernelDrops returns the frames the kernel dropped on receive before the port's reader
// saw them (see the package's KernelDrops for the counters), summed over every socket the
// port has had: the ring-less socket it opened on and, after Upgrade, the AF_XDP socket.
// A socket the port closes (the ring-less one at the end of the handoff, every one at
// Close) is read one last time just before, and that count is kept: the total never goes
// backwards, and after Close it is the port's final count. An error says that a socket
// could not be read; the total then counts what it had at its last reading.
func (u *Upgradable) KernelDrops() (uint64, error) {
	u.kmu.Lock()
	defer u.kmu.Unlock()
	var total uint64
	var err error
	for _, l := range u.legs {
		if !l.final {
			if e := l.readDrops(); e != nil && err == nil {
				err = e
			}
		}
		total += l.drops
	}
	return total, err
}

// finalDrops reads l's kernel drops one last time, just before the port closes l.p.
func (u *Upgradable) finalDrops(l *leg) {
	u.kmu.Lock()
	defer u.kmu.Unlock()
	if !l.final {
		_ = l.readDrops() // on failure the last reading stands
		l.final = true
	}
}

// readDrops updates l.drops from the kernel (Upgradable.kmu held).
func (l *leg) readDrops() error {
	n, err := KernelDrops(l.p)
	if err != nil {
		return err
	}
	l.drops = max(l.drops, n)
	return nil
}

// Name is the interface name.
func (u *Upgradable) Name() string { return u.name }

// Queues reports one TX and one RX queue.
func (u *Upgradable) Queues() (tx, rx int) { return 1, 1 }

// FrameSize is the largest frame the port carries on every backend it may use.
func (u *Upgradable) FrameSize() int { return u.frameSize }

// retry reports whether an error from leg l means "the leg was replaced under the
// call: look again" rather than a real error.
func (u *Upgradable) retry(l *leg, err error) bool {
	return err != nil && l.retired.Load() && !u.closed.Load()
}

// closedErr maps the errors of a closed port's sockets to ErrClosed.
func (u *Upgradable) closedErr(err error) error {
	if err != nil && u.closed.Load() {
		return fmt.Errorf("%s: %w", u.name, ErrClosed)
	}
	return err
}

// Transmit transmits on the current socket (see Port).
func (u *Upgradable) Transmit(frames [][]byte) (int, error) {
	for {
		l := u.ph.Load().cur
		n, err := l.p.Transmit(frames)
		if u.retry(l, err) {
			continue
		}
		return n, u.closedErr(err)
	}
}

// Receive receives from the old socket first during a handoff, then from the current
// one (see Port).
func (u *Upgradable) Receive(bufs [][]byte, lens []int) (int, error) {
	want := min(len(bufs), len(lens))
	for {
		ph := u.ph.Load()
		n := 0
		if o := ph.old; o != nil {
			m, err := o.p.Receive(bufs[:want], lens[:want])
			switch {
			case err == nil:
				n = m
			case !u.retry(o, err):
				return 0, u.closedErr(err)
			}
			if n == want {
				return n, nil
			}
			if n == 0 && ph.drain.Load() {
				ph.drainOnce.Do(func() { close(ph.drained) })
			}
		}
		m, err := ph.cur.p.Receive(bufs[n:want], lens[n:want])
		if u.retry(ph.cur, err) {
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil && n > 0 {
			return n, nil
		}
		return n + m, u.closedErr(err)
	}
}

// TxBatch is Transmit on queue 0.
func (u *Upgradable) TxBatch(q int, frames [][]byte) (int, error) {
	if err := sys.CheckQueue(u.name, q); err != nil {
		return 0, err
	}
	return u.Transmit(frames)
}

// RxBatch is Receive on queue 0.
func (u *Upgradable) RxBatch(q int, bufs [][]byte, lens []int) (int, error) {
	if err := sys.CheckQueue(u.name, q); err != nil {
		return 0, err
	}
	return u.Receive(bufs, lens)
}

// RxPending reports, without blocking, whether frames wait on queue 0 of the current
// socket (false around a handoff, when the caller should wait instead).
func (u *Upgradable) RxPending(q int) bool {
	ph := u.ph.Load()
	if !ph.final {
		return false
	}
	if r, ok := ph.cur.p.(netmap.GenericRxProber); ok {
		return r.RxPending(q)
	}
	return false
}

// WaitReady parks until queue 0 has frames (RX) or room (TX), ctx ends (ctx.Err())
// or the port is closed. Around a handoff it may return nil with nothing ready (the
// caller looks, finds nothing, and waits again, on the new socket).
func (u *Upgradable) WaitReady(ctx context.Context, q int, dir netmap.Direction) error {
	if err := sys.CheckQueue(u.name, q); err != nil {
		return err
	}
	for {
		ph := u.ph.Load()
		if ph.final {
			err := ph.cur.p.WaitReady(ctx, 0, dir)
			if u.retry(ph.cur, err) && ctx.Err() == nil {
				continue
			}
			return u.closedErr(err)
		}
		return u.waitPhase(ctx, ph, dir)
	}
}

// waitPhase waits on a phase that will be replaced: on its current socket, woken when
// the phase ends, and during a handoff (receive) every drainPoll to look at the old one.
func (u *Upgradable) waitPhase(ctx context.Context, ph *phase, dir netmap.Direction) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ph.ctx, cancel)
	defer stop()
	if dir == netmap.RX && ph.old != nil {
		var tcancel context.CancelFunc
		wctx, tcancel = context.WithTimeout(wctx, drainPoll)
		defer tcancel()
	}
	err := ph.cur.p.WaitReady(wctx, 0, dir)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case u.closed.Load():
		return fmt.Errorf("%s: %w", u.name, ErrClosed)
	case wctx.Err() != nil: // the phase ended, or time to look at the old socket
		return nil
	case u.retry(ph.cur, err):
		return nil
	}
	return err
}

// WaitRX parks until frames are pending, the timeout passes (os.ErrDeadlineExceeded;
// ≤ 0 waits forever) or the port is closed.
func (u *Upgradable) WaitRX(timeout time.Duration) error { return u.waitTimeout(timeout, netmap.RX) }

// WaitTX parks until there is room to transmit, the timeout passes or the port is
// closed.
func (u *Upgradable) WaitTX(timeout time.Duration) error { return u.waitTimeout(timeout, netmap.TX) }

func (u *Upgradable) waitTimeout(timeout time.Duration, dir netmap.Direction) error {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	err := u.WaitReady(ctx, 0, dir)
	if errors.Is(err, context.DeadlineExceeded) {
		return sys.ErrTimeout
	}
	return err
}

var _ Port = (*Upgradable)(nil)

var _ KernelDropper = (*Upgradable)(nil)
