package ifcore

import (
	"sync"
	"sync/atomic"
	"time"
)

// Watchdog is the per-subqueue watchdog (ifsq_watchdog): a 1 s tick on the
// subqueue's owner worker (the callback gets that worker); when the driver-set timer counts down to zero
// the callback runs under TrySerialize, or is retried a tick later.
type Watchdog struct {
	sq       *Subqueue
	fn       func(w *Worker, sq *Subqueue)
	timer    atomic.Int32
	mu       sync.Mutex
	callout  Timer
	running  bool
	inflight atomic.Bool
	msg      Msg
	fire     func()
}

// NewWatchdog binds a watchdog to sq (ifsq_watchdog_init).
func (sq *Subqueue) NewWatchdog(fn func(w *Worker, sq *Subqueue)) *Watchdog {
	wd := &Watchdog{sq: sq, fn: fn}
	wd.msg.fn = wd.dispatch
	wd.fire = wd.expire
	sq.wd = wd
	return wd
}

// Start zeroes the timer and arms the 1 s tick (ifsq_watchdog_start).
func (wd *Watchdog) Start() {
	wd.timer.Store(0)
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if wd.callout != nil {
		wd.callout.Stop()
	}
	wd.running = true
	wd.callout = wd.sq.ifp.net.clock.AfterFunc(time.Second, wd.fire)
}

// Stop zeroes the timer and stops the tick (ifsq_watchdog_stop).
func (wd *Watchdog) Stop() {
	wd.timer.Store(0)
	wd.mu.Lock()
	defer wd.mu.Unlock()
	wd.running = false
	if wd.callout != nil {
		wd.callout.Stop()
		wd.callout = nil
	}
}

// Set arms the countdown: the callback runs after n ticks.
func (wd *Watchdog) Set(n int) { wd.timer.Store(int32(n)) }

// Timer returns the countdown.
func (wd *Watchdog) Timer() int { return int(wd.timer.Load()) }

func (wd *Watchdog) expire() {
	if wd.sq.ifp.dead.Load() {
		return
	}
	if wd.inflight.CompareAndSwap(false, true) {
		wd.sq.ifp.net.workers.Get(wd.sq.Owner()).Send(&wd.msg)
	}
}

func (wd *Watchdog) dispatch(w *Worker) {
	wd.inflight.Store(false)
	if t := wd.timer.Load(); t != 0 {
		t--
		wd.timer.Store(t)
		if t == 0 {
			if wd.sq.hw.TryLock() {
				wd.fn(w, wd.sq)
				wd.sq.hw.Unlock()
			} else {
				wd.timer.Store(1) // retry in a second
			}
		}
	}
	wd.mu.Lock()
	if wd.running && !wd.sq.ifp.dead.Load() {
		wd.callout = wd.sq.ifp.net.clock.AfterFunc(time.Second, wd.fire)
	}
	wd.mu.Unlock()
}
