package dataplane

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.UpgradeQuiet and Config.UpgradeMaxDelay.
const (
	DefaultUpgradeQuiet    = 50 * time.Millisecond
	DefaultUpgradeMaxDelay = 2 * time.Second
)

// upgrader moves FastStart pod ports to AF_XDP in the background, one at a
// time (each upgrade attaches an XDP program under the kernel's RTNL lock,
// which every CNI ADD and DEL also needs): it waits until no attach or
// detach has started for quiet, or until a port has waited maxDelay.
type upgrader struct {
	d               *Dataplane
	quiet, maxDelay atomic.Int64 // time.Duration

	lastOp  atomic.Int64  // time.Since(d.start) when the latest attach or detach started
	skipped atomic.Uint64 // queued ports that were detached before their turn

	mu       sync.Mutex
	queue    []upItem
	inflight bool
	kick     chan struct{} // capacity 1: the queue grew
	stop     chan struct{}
	done     chan struct{}
}

type upItem struct {
	p  *Port
	at time.Time
}

func newUpgrader(d *Dataplane) *upgrader {
	u := &upgrader{d: d, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	q, m := d.cfg.UpgradeQuiet, d.cfg.UpgradeMaxDelay
	if q == 0 {
		q = DefaultUpgradeQuiet
	}
	if m == 0 {
		m = DefaultUpgradeMaxDelay
	}
	u.setTiming(q, m)
	go u.run()
	return u
}

// setTiming changes the quiet period and the longest wait; the worker looks
// again at once.
func (u *upgrader) setTiming(quiet, maxDelay time.Duration) {
	u.quiet.Store(int64(quiet))
	u.maxDelay.Store(int64(maxDelay))
	u.wake()
}

func (u *upgrader) wake() {
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// touch records that an attach or detach is starting.
func (u *upgrader) touch() { u.lastOp.Store(int64(time.Since(u.d.start))) }

// enqueue schedules a published FastStart port for its upgrade.
func (u *upgrader) enqueue(p *Port) {
	u.mu.Lock()
	u.queue = append(u.queue, upItem{p: p, at: time.Now()})
	u.mu.Unlock()
	u.wake()
}

// close stops the worker (an upgrade in flight finishes first).
func (u *upgrader) close() {
	close(u.stop)
	<-u.done
}

// pending reports whether upgrades are queued or running.
func (u *upgrader) pending() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.queue) > 0 || u.inflight
}

func (u *upgrader) run() {
	defer close(u.done)
	for {
		u.mu.Lock()
		var it upItem
		ok := len(u.queue) > 0
		if ok {
			it = u.queue[0]
		}
		u.mu.Unlock()
		if !ok {
			select {
			case <-u.kick:
				continue
			case <-u.stop:
				return
			}
		}
		if !u.waitQuiet(it.at) {
			return
		}
		u.mu.Lock()
		u.queue[0] = upItem{}
		u.queue = u.queue[1:]
		u.inflight = true
		u.mu.Unlock()
		u.upgrade(it.p)
		u.mu.Lock()
		u.inflight = false
		u.mu.Unlock()
	}
}

// waitQuiet waits until no attach or detach has started for u.quiet, or
// until u.maxDelay after queued; false if stopped.
func (u *upgrader) waitQuiet(queued time.Time) bool {
	for {
		last := u.d.start.Add(time.Duration(u.lastOp.Load()))
		wake := last.Add(time.Duration(u.quiet.Load()))
		if latest := queued.Add(time.Duration(u.maxDelay.Load())); latest.Before(wake) {
			wake = latest
		}
		wait := time.Until(wake)
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-u.kick: // more queued or new timing: look again
			t.Stop()
		case <-u.stop:
			t.Stop()
			return false
		}
	}
}

// upgrade upgrades a port that is still attached. A port detached since is
// skipped (its socket is being closed); an upgrade that fails leaves the
// port on its ring-less socket, with the reason in PortInfo.Fallback.
func (u *upgrader) upgrade(p *Port) {
	d := u.d
	d.mu.Lock()
	live := !d.closed && d.ports[p.name] == p
	d.mu.Unlock()
	if !live {
		u.skipped.Add(1)
		return
	}
	_ = d.inNS(func() error {
		_, err := p.up.Upgrade()
		return err
	})
}

// SettleUpgrades waits until every pod port attached so far has been moved
// off its FastStart socket (or has failed to, see PortInfo.Fallback), or ctx
// ends.
func (d *Dataplane) SettleUpgrades(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for d.up.pending() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
