package netmap

import "sync/atomic"

// waitq is a selinfo: a wait queue whose waiters never miss a wake-up
// recorded after they registered. A waiter calls record() to get a channel,
// re-checks its condition, then blocks on the channel. wake() closes the
// current channel (if anyone recorded one) and forgets it, so a later
// record() gets a fresh one. When nobody waits, wake() is one atomic swap and
// allocates nothing.
//
// Happens-before: everything the waker did before wake() happens before the
// waiter's receive from the closed channel.
type waitq struct {
	ch   atomic.Pointer[chan struct{}]
	hook atomic.Pointer[func()] // Kring.OnWake
}

// record is selrecord: returns the channel that the next wake() closes.
func (w *waitq) record() <-chan struct{} {
	for {
		if p := w.ch.Load(); p != nil {
			return *p
		}
		c := make(chan struct{})
		if w.ch.CompareAndSwap(nil, &c) {
			return c
		}
	}
}

// wake is selwakeup.
func (w *waitq) wake() {
	if h := w.hook.Load(); h != nil {
		(*h)()
	}
	if w.ch.Load() == nil {
		return
	}
	if p := w.ch.Swap(nil); p != nil {
		close(*p)
	}
}

// OnWake makes f run on every wake-up of the kring's own wait queue (every
// nm_notify of the ring), before waiters are released; nil removes it. It is
// how a sync loop outside Handle.Poll (the agent's loop for an application's
// port) learns that a ring moved without a channel per wake-up: f must be
// cheap and must not block (a non-blocking send, an eventfd write).
func (k *Kring) OnWake(f func()) {
	if f == nil {
		k.si.hook.Store(nil)
		return
	}
	k.si.hook.Store(&f)
}
