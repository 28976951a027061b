package netmap

import "context"

// Events are poll(2) event bits.
type Events uint16

const (
	PollIn  Events = 0x0001 // POLLIN | POLLRDNORM
	PollOut Events = 0x0004 // POLLOUT | POLLWRNORM
	PollErr Events = 0x0008 // POLLERR
)

// Poll is netmap_poll (004:2333-2598) as a blocking call: it returns the
// ready events, PollErr for an unbound handle, an adapter that is off, or a
// ring that failed validation, or ctx's error if ctx ends first.
//
// Order, as in the seed, so that no wake-up is lost: a lock-free check of the
// user rings; then txsync/rxsync of the bound rings; if nothing is ready,
// record the wait queues (per-ring, or adapter-global when the handle spans
// several rings) and run the syncs once more; only then block. A notify after
// the recording closes the recorded channel, so the block returns at once.
func (h *Handle) Poll(ctx context.Context, events Events) (Events, error) {
	for {
		rev, tx, rx := h.pollOnce(events, true)
		if rev != 0 {
			return rev, nil
		}
		if tx == nil && rx == nil {
			return 0, nil // nothing was requested
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tx:
		case <-rx:
		}
	}
}

// PollNow is a non-blocking poll (timeout 0).
func (h *Handle) PollNow(events Events) Events {
	rev, _, _ := h.pollOnce(events, false)
	return rev
}

// pollOnce runs one netmap_poll call. When record is set and nothing is ready
// it returns the recorded channels to wait on.
func (h *Handle) pollOnce(events Events, record bool) (revents Events, txw, rxw <-chan struct{}) {
	b := h.bind.Load()
	if b == nil {
		return PollErr, nil, nil
	}
	na := b.na
	if !na.On() {
		return PollErr, nil, nil
	}
	var want [2]Events
	want[TX] = events & PollOut
	want[RX] = events & PollIn
	checkAll := [2]bool{b.qlast[TX]-b.qfirst[TX] > 1, b.qlast[RX]-b.qfirst[RX] > 1}
	cfg := h.nm.cfgSnapshot()

	// Lock-free first round.
	for t := TX; t <= RX; t++ {
		rs := b.rings[t]
		for i := b.qfirst[t]; want[t] != 0 && i < b.qlast[t]; i++ {
			if !rs[i].Ring.Empty() {
				revents |= want[t]
				want[t] = 0
			}
		}
	}
	waitq := func(t Direction) *waitq {
		if checkAll[t] {
			return &na.si[t]
		}
		return &b.rings[t][b.qfirst[t]].si
	}

	retryTx, retryRx := record, record
	if b.txpoll || want[TX] != 0 {
	flushTx:
		for {
			rs := b.rings[TX]
			for i := b.qfirst[TX]; i < b.qlast[TX]; i++ { // D-N3: TX bound
				k := rs[i]
				if want[TX] == 0 && k.Ring.Cur == k.NrHwcur.Load() {
					continue
				}
				if k.TryGet() != nil {
					continue
				}
				if err := k.SyncTx(0); err != nil {
					revents |= PollErr
				}
				found := k.RCur != k.RTail
				k.Put()
				if found {
					revents |= want[TX]
					want[TX] = 0
					k.NotifyNow()
				}
			}
			if want[TX] != 0 && retryTx {
				txw = waitq(TX).record()
				retryTx = false
				continue flushTx
			}
			break
		}
	}

	if want[RX] != 0 {
		for pass := 0; pass < 3; pass++ {
			sendDown := 0
			rs := b.rings[RX]
			for i := b.qfirst[RX]; i < b.qlast[RX]; i++ {
				k := rs[i]
				if k.TryGet() != nil {
					continue
				}
				if _, ok := k.RxSyncPrologue(); !ok {
					k.Reinit()
					revents |= PollErr // D-N4: no sync after a failed prologue
				} else {
					if i < na.NumRxRings && (cfg.Fwd || k.Ring.Flags&RingForward != 0) {
						na.grabPackets(k, cfg.Fwd)
					}
					if err := k.callSync(0); err != nil {
						revents |= PollErr
					} else {
						k.RxSyncFinalize()
					}
					if !cfg.NoTimestamp || k.Ring.Flags&RingTimestamp != 0 {
						stamp(k.Ring)
					}
				}
				found := k.RCur != k.RTail
				k.Put()
				if found {
					revents |= want[RX]
					retryRx = false
					k.NotifyNow()
				}
			}
			// Transparent mode on the host RX ring (004:2555-2566).
			if na.Flags()&NAFHostRings != 0 {
				k := b.rings[RX][na.NumRxRings]
				if checkAll[RX] && (cfg.Fwd || k.Ring.Flags&RingForward != 0) {
					if k.Ring.Empty() && k.TryGet() == nil {
						if _, ok := k.RxSyncPrologue(); ok {
							sendDown = na.rxsyncFromHostCount(k, 0)
							k.RxSyncFinalize()
						} else {
							k.Reinit()
						}
						k.Put()
					}
					if !k.Ring.Empty() {
						revents |= want[RX]
					}
				}
			}
			if retryRx {
				rxw = waitq(RX).record()
			}
			if sendDown > 0 || retryRx {
				// Packets moved to the NIC TX rings were already pushed by
				// swToNIC's txsync (D-N8), so only the RX retry remains.
				retryRx = false
				continue
			}
			break
		}
	}
	if revents != 0 {
		return revents, nil, nil
	}
	return 0, txw, rxw
}

func (nm *Netmap) cfgSnapshot() *Config { return nm.cfgp.Load() }
