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
	ch atomic.Pointer[chan struct{}]
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
	if w.ch.Load() == nil {
		return
	}
	if p := w.ch.Swap(nil); p != nil {
		close(*p)
	}
}
