package netmap

import "time"

// TxSyncPrologue is nm_txsync_prologue (004:1439-1514), hardened per D-N5:
// head or cur >= num_slots is rejected explicitly. It reads Head and Cur once,
// validates them against the previous validated rhead/rtail, restores a
// user-overwritten Tail, stores rhead/rcur and returns (head, true). On error
// it returns (NumSlots, false) and changes nothing.
func (k *Kring) TxSyncPrologue() (uint32, bool) {
	r := k.Ring
	head, cur := r.Head, r.Cur // read only once
	n := k.NumSlots
	if k.NrHwcur.Load() >= n || k.RHead >= n || k.RTail >= n || k.NrHwtail.Load() >= n {
		return n, false // kernel sanity
	}
	if head >= n || cur >= n { // D-N5
		return n, false
	}
	if k.RTail >= k.RHead {
		if head < k.RHead || head > k.RTail { // want rhead <= head <= rtail
			return n, false
		}
		if cur < head || cur > k.RTail { // and head <= cur <= rtail
			return n, false
		}
	} else { // wrapped: rtail < rhead
		if head > k.RTail && head < k.RHead {
			return n, false
		}
		if head <= k.RTail {
			if cur < head || cur > k.RTail {
				return n, false
			}
		} else if cur > k.RTail && cur < head { // head >= rhead
			return n, false
		}
	}
	if r.Tail != k.RTail {
		r.Tail = k.RTail // "tail overwritten"
	}
	k.RHead, k.RCur = head, cur
	return head, true
}

// RxSyncPrologue is nm_rxsync_prologue (004:1516-1589), hardened: values are
// validated before they are stored (the seed stores first), and head/cur >= n
// are rejected (D-N5). Checks are against hwcur/hwtail.
func (k *Kring) RxSyncPrologue() (uint32, bool) {
	r := k.Ring
	head, cur := r.Head, r.Cur // read only once
	n := k.NumSlots
	hwcur, hwtail := k.NrHwcur.Load(), k.NrHwtail.Load()
	if hwcur >= n || hwtail >= n {
		return n, false
	}
	if head >= n || cur >= n {
		return n, false
	}
	if hwtail >= hwcur {
		if head < hwcur || head > hwtail {
			return n, false
		}
		if cur < head || cur > hwtail {
			return n, false
		}
	} else {
		if head < hwcur && head > hwtail {
			return n, false
		}
		if head <= hwtail {
			if cur < head || cur > hwtail {
				return n, false
			}
		} else if cur < head && cur > hwtail {
			return n, false
		}
	}
	if r.Tail != k.RTail {
		r.Tail = k.RTail
	}
	k.RHead, k.RCur = head, cur
	return head, true
}

// Reinit is netmap_ring_reinit (004:1592-1647), hardened per D-N6: it never
// adopts user values. It repairs slots (buf_idx < 2 or >= objtotal -> idx 0,
// len 0; len > buf size -> len 0) and always resets head = cur = hwcur and
// tail = hwtail in both views. It returns true when the user view had
// out-of-range indexes (the seed's "errors" count).
func (k *Kring) Reinit() bool {
	r := k.Ring
	lim := k.NumSlots - 1
	errs := r.Cur > lim || r.Head > lim || r.Tail > lim
	p := r.pool
	for i := range r.Slot {
		s := &r.Slot[i]
		if !p.Valid(s.BufIdx) {
			s.BufIdx, s.Len = 0, 0
		} else if uint32(s.Len) > p.bufSize {
			s.Len = 0
		}
	}
	hwcur, hwtail := k.NrHwcur.Load(), k.NrHwtail.Load()
	r.Head, k.RHead = hwcur, hwcur
	r.Cur, k.RCur = hwcur, hwcur
	r.Tail, k.RTail = hwtail, hwtail
	return errs
}

// TxSyncFinalize is nm_txsync_finalize: tail = rtail = hwtail.
func (k *Kring) TxSyncFinalize() {
	t := k.NrHwtail.Load()
	k.RTail = t
	k.Ring.Tail = t
}

// RxSyncFinalize is nm_rxsync_finalize: tail = rtail = hwtail. Unlike the
// seed (D-N12) rhead/rcur keep the validated values instead of re-reading the
// user ring.
func (k *Kring) RxSyncFinalize() {
	t := k.NrHwtail.Load()
	k.RTail = t
	k.Ring.Tail = t
}

// SyncTx runs one TX sync on a kring whose busy flag the caller holds:
// prologue, then reinit on failure (returning ErrBadRing), else nm_sync and
// finalize. Monitors of the ring see the slots being transmitted.
func (k *Kring) SyncTx(flags SyncFlags) error {
	if _, ok := k.TxSyncPrologue(); !ok {
		k.Reinit()
		return ErrBadRing
	}
	if err := k.callSync(flags); err != nil {
		return err
	}
	k.TxSyncFinalize()
	return nil
}

// SyncRx runs one RX sync on a kring whose busy flag the caller holds; see
// SyncTx. It does not stamp the ring.
func (k *Kring) SyncRx(flags SyncFlags) error {
	if _, ok := k.RxSyncPrologue(); !ok {
		k.Reinit()
		return ErrBadRing
	}
	if err := k.callSync(flags); err != nil {
		return err
	}
	k.RxSyncFinalize()
	return nil
}

// callSync calls nm_sync, letting copy monitors see the traffic: for TX the
// slots in [hwcur, rhead) before the sync, for RX the slots that arrived since
// the monitors last looked, after it.
func (k *Kring) callSync(flags SyncFlags) error {
	mons := k.monitors.Load()
	if mons == nil || len(*mons) == 0 {
		return k.Sync(k, flags)
	}
	if k.Dir == TX {
		monitorCopy(k, *mons, k.NrHwcur.Load(), k.RHead)
		return k.Sync(k, flags)
	}
	// As netmap_monitor_parent_rxsync: copy from the last position the
	// monitors saw (mon_tail), since a foreign producer (pipe peer, VALE
	// sender) may have advanced hwtail outside any sync.
	err := k.Sync(k, flags)
	t := k.NrHwtail.Load()
	monitorCopy(k, *mons, k.monTail, t)
	k.monTail = t
	return err
}

func stamp(r *Ring) { r.Ts = time.Now().UnixNano() }
