package netmap

import (
	"errors"
	"syscall"
	"testing"
)

// boundKring registers a handle on a fresh 8-slot MemPort and returns it with
// kring 0 of direction t.
func boundKring(t *testing.T, dir Direction) (*Handle, *Kring, *MemPort) {
	t.Helper()
	nm, p := newMem(t, g8(1, 1), false)
	h := nm.Open()
	mustRegister(t, h, Req{Name: "m0", Flags: RegAllNIC})
	t.Cleanup(func() { h.Close() })
	return h, h.Kring(dir, 0), p
}

// setK forces a kring into a state (kernel view and the user view consistent
// with it).
func setK(k *Kring, hwcur, hwtail, rhead, rtail uint32) {
	k.NrHwcur.Store(hwcur)
	k.NrHwtail.Store(hwtail)
	k.RHead, k.RCur, k.RTail = rhead, rhead, rtail
	k.Ring.Head, k.Ring.Cur, k.Ring.Tail = rhead, rhead, rtail
}

func TestNT01_InitialKringState(t *testing.T) {
	nm, p := newMem(t, g8(2, 3), false)
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "m0", Flags: RegAllNIC})
	for i, k := range p.TxRings {
		if k.NrHwcur.Load() != 0 || k.RHead != 0 || k.RCur != 0 || k.NrHwtail.Load() != 7 || k.RTail != 7 {
			t.Errorf("TX%d kernel view: %v", i, invariantError(k, ""))
		}
		r := k.Ring
		if r.Head != 0 || r.Cur != 0 || r.Tail != 7 {
			t.Errorf("TX%d user view head %d cur %d tail %d", i, r.Head, r.Cur, r.Tail)
		}
		if r.Space() != 7 {
			t.Errorf("TX%d space %d, want 7 (one slot always empty)", i, r.Space())
		}
	}
	for i, k := range p.RxRings {
		if k.Ring.Tail != 0 || k.NrHwtail.Load() != 0 || !k.Ring.Empty() {
			t.Errorf("RX%d not empty: tail %d", i, k.Ring.Tail)
		}
	}
	// Host krings exist although NAFHostRings is not set, same slot count.
	if len(p.TxRings) != 3 || len(p.RxRings) != 4 {
		t.Fatalf("krings %d/%d, want 3/4 (host rings included)", len(p.TxRings), len(p.RxRings))
	}
	if p.TxRings[2].NumSlots != 8 || p.RxRings[3].NumSlots != 8 {
		t.Error("host krings have a different slot count")
	}
	for _, k := range p.TxRings {
		if err := k.CheckInvariants(); err != nil {
			t.Error(err)
		}
	}
}

func TestNT02_TxPrologueNotWrapped(t *testing.T) {
	_, k, _ := boundKring(t, TX)
	cases := []struct {
		head, cur uint32
		ok        bool
	}{
		{3, 3, true},
		{3, 2, false}, // cur < head
		{0, 7, true},
		{8, 8, false}, // head >= n
		{7, 7, true},
		{2, 8, false},
	}
	for _, c := range cases {
		setK(k, 0, 7, 0, 7)
		k.Ring.Head, k.Ring.Cur = c.head, c.cur
		got, ok := k.TxSyncPrologue()
		if ok != c.ok || (ok && got != c.head) {
			t.Errorf("head %d cur %d: got (%d,%v), want ok=%v", c.head, c.cur, got, ok, c.ok)
		}
		if !ok && (k.RHead != 0 || k.RCur != 0) {
			t.Errorf("head %d cur %d: failed prologue modified rhead/rcur", c.head, c.cur)
		}
	}
	// A user-overwritten tail is restored and the call still succeeds.
	setK(k, 0, 7, 0, 7)
	k.Ring.Tail = 5
	if _, ok := k.TxSyncPrologue(); !ok || k.Ring.Tail != 7 {
		t.Errorf("tail overwrite: ok=%v tail=%d", ok, k.Ring.Tail)
	}
}

func TestNT03_TxPrologueWrapped(t *testing.T) {
	_, k, _ := boundKring(t, TX)
	cases := []struct {
		head, cur uint32
		ok        bool
	}{
		{7, 7, true},
		{1, 1, true},
		{1, 2, true},
		{4, 4, false}, // inside (rtail, rhead)
		{7, 0, true},
		{7, 5, false},
		{6, 6, true},
		{2, 2, true},
		{1, 3, false},
		{7, 9, false}, // D-N5: the seed accepts cur >= n here
		{9, 9, false},
	}
	for _, c := range cases {
		setK(k, 6, 2, 6, 2)
		k.Ring.Head, k.Ring.Cur = c.head, c.cur
		got, ok := k.TxSyncPrologue()
		if ok != c.ok || (ok && got != c.head) {
			t.Errorf("wrapped head %d cur %d: got (%d,%v), want ok=%v", c.head, c.cur, got, ok, c.ok)
		}
	}
}

func TestNT04_RxPrologue(t *testing.T) {
	_, k, _ := boundKring(t, RX)
	check := func(hwcur, hwtail, head, cur uint32, want bool) {
		t.Helper()
		setK(k, hwcur, hwtail, hwcur, hwtail)
		k.Ring.Head, k.Ring.Cur = head, cur
		got, ok := k.RxSyncPrologue()
		if ok != want || (ok && got != head) {
			t.Errorf("hwcur %d hwtail %d head %d cur %d: got (%d,%v) want %v", hwcur, hwtail, head, cur, got, ok, want)
		}
		if !ok && (k.RHead != hwcur || k.RCur != hwcur) {
			t.Errorf("failed RX prologue stored user values (rhead %d rcur %d)", k.RHead, k.RCur)
		}
	}
	for h := uint32(2); h <= 5; h++ {
		check(2, 5, h, h, true)
	}
	check(2, 5, 2, 5, true)
	check(2, 5, 6, 6, false) // beyond tail
	check(2, 5, 1, 1, false)
	check(2, 5, 3, 2, false)
	check(2, 5, 3, 8, false) // D-N5
	// Wrapped.
	check(6, 1, 7, 7, true)
	check(6, 1, 0, 0, true)
	check(6, 1, 0, 1, true)
	check(6, 1, 3, 3, false)
	check(6, 1, 7, 4, false)
	check(6, 1, 7, 9, false) // D-N5
	// Kernel-side corruption.
	setK(k, 0, 0, 0, 0)
	k.NrHwcur.Store(8)
	if _, ok := k.RxSyncPrologue(); ok {
		t.Error("hwcur >= n accepted")
	}
	setK(k, 0, 0, 0, 0)
	k.NrHwtail.Store(9)
	if _, ok := k.RxSyncPrologue(); ok {
		t.Error("hwtail >= n accepted")
	}
}

func TestNT05_Reinit(t *testing.T) {
	h, k, p := boundKring(t, TX)
	r := k.Ring
	pool := p.Mem
	// Advance the kernel so hwcur != 0.
	fillTx(r, 3, 60, 1)
	if err := h.TxSync(); err != nil {
		t.Fatal(err)
	}
	hwcur, hwtail := k.NrHwcur.Load(), k.NrHwtail.Load()
	if hwcur != 3 || hwtail != 2 {
		t.Fatalf("after send: hwcur %d hwtail %d", hwcur, hwtail)
	}
	// D-N6: logically invalid but in-range values (cur inside (rtail, head))
	// are NOT adopted: the ring is reset to the kernel's view.
	r.Head, r.Cur = 5, 4
	if err := h.TxSync(); err != nil {
		t.Fatalf("compat mode must return nil after reinit: %v", err)
	}
	if r.Head != hwcur || r.Cur != hwcur || r.Tail != hwtail || k.RHead != hwcur || k.RTail != hwtail {
		t.Fatalf("after reinit: head %d cur %d tail %d rhead %d rtail %d", r.Head, r.Cur, r.Tail, k.RHead, k.RTail)
	}
	// Out-of-range values, bad slots.
	saved := []uint32{r.Slot[0].BufIdx, r.Slot[1].BufIdx, r.Slot[2].BufIdx}
	r.Slot[0].BufIdx = 0
	r.Slot[1].BufIdx = 1
	r.Slot[2].BufIdx = pool.Total()
	r.Slot[3].Len = uint16(pool.BufSize() + 1)
	okIdx := r.Slot[3].BufIdx
	r.Head, r.Cur, r.Tail = 12, 13, 99
	if !k.Reinit() {
		t.Error("Reinit did not report out-of-range indexes")
	}
	for i := 0; i < 3; i++ {
		if r.Slot[i].BufIdx != 0 || r.Slot[i].Len != 0 {
			t.Errorf("slot %d not repaired: idx %d len %d", i, r.Slot[i].BufIdx, r.Slot[i].Len)
		}
	}
	if r.Slot[3].Len != 0 || r.Slot[3].BufIdx != okIdx {
		t.Errorf("slot 3: idx %d len %d", r.Slot[3].BufIdx, r.Slot[3].Len)
	}
	if r.Head != hwcur || r.Cur != hwcur || r.Tail != hwtail {
		t.Errorf("reinit: head %d cur %d tail %d", r.Head, r.Cur, r.Tail)
	}
	// The user "lost" those buffers by overwriting the indexes: give them
	// back so the leak check below is about the library only.
	for _, idx := range saved {
		if err := pool.Free(idx); err != nil {
			t.Fatal(err)
		}
	}
	// Strict mode returns EINVAL.
	h.nm.SetConfig(Config{StrictSync: true})
	r.Head = 9
	if err := h.TxSync(); !errors.Is(err, syscall.EINVAL) || !errors.Is(err, ErrBadRing) {
		t.Errorf("strict mode: %v", err)
	}
	if r.Head != hwcur {
		t.Errorf("strict mode did not reset the ring")
	}
	// Poll reports POLLERR.
	h.nm.SetConfig(Config{})
	r.Head, r.Cur = 9, 9
	if ev := h.PollNow(PollOut); ev&PollErr == 0 {
		t.Errorf("poll after bad head: %#x, want PollErr", ev)
	}
	h.Close()
	if o := pool.Outstanding(); o != 0 {
		t.Errorf("outstanding %d", o)
	}
}

func TestNT06_Finalize(t *testing.T) {
	_, k, _ := boundKring(t, TX)
	setK(k, 0, 7, 0, 7)
	k.NrHwtail.Store(5)
	k.TxSyncFinalize()
	if k.Ring.Tail != 5 || k.RTail != 5 {
		t.Errorf("TX finalize: tail %d rtail %d", k.Ring.Tail, k.RTail)
	}
	_, rk, _ := boundKring(t, RX)
	setK(rk, 0, 4, 0, 4)
	rk.Ring.Head, rk.Ring.Cur = 2, 3
	if _, ok := rk.RxSyncPrologue(); !ok {
		t.Fatal("prologue")
	}
	rk.NrHwtail.Store(6)
	// D-N12: a user write between prologue and finalize is not adopted.
	rk.Ring.Head, rk.Ring.Cur = 7, 7
	rk.RxSyncFinalize()
	if rk.Ring.Tail != 6 || rk.RTail != 6 || rk.RHead != 2 || rk.RCur != 3 {
		t.Errorf("RX finalize: tail %d rtail %d rhead %d rcur %d", rk.Ring.Tail, rk.RTail, rk.RHead, rk.RCur)
	}
}

func TestNT07_OneEmptySlot(t *testing.T) {
	// TX: never more than n-1 free slots, before and after a full cycle.
	nm, a := newMem(t, g8(1, 1), false)
	b, err := NewMemPort("m1", g8(1, 1), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ConnectMemPorts(a, b); err != nil {
		t.Fatal(err)
	}
	if err := nm.Attach(b); err != nil {
		t.Fatal(err)
	}
	ha, hb := nm.Open(), nm.Open()
	defer ha.Close()
	defer hb.Close()
	mustRegister(t, ha, Req{Name: "m0"})
	mustRegister(t, hb, Req{Name: "m1"})
	tx := ha.TxRing(0)
	for round := 0; round < 3; round++ {
		if tx.Space() != 7 {
			t.Fatalf("round %d: TX space %d", round, tx.Space())
		}
		fillTx(tx, 7, 64, 0)
		if err := ha.TxSync(); err != nil {
			t.Fatal(err)
		}
	}
	// RX: 21 frames were sent, at most 7 are held.
	if err := hb.RxSync(); err != nil {
		t.Fatal(err)
	}
	if s := hb.RxRing(0).Space(); s != 7 {
		t.Errorf("RX holds %d, want n-1 = 7", s)
	}
	if d := a.Dropped.Load(); d != 14 {
		t.Errorf("dropped %d, want 14", d)
	}
	if err := ha.Kring(TX, 0).CheckInvariants(); err != nil {
		t.Error(err)
	}
	if err := hb.Kring(RX, 0).CheckInvariants(); err != nil {
		t.Error(err)
	}
}

func TestNT07_HostTxTailAndImportBound(t *testing.T) {
	nm := New(Config{})
	sink := &hostSink{}
	g, _ := newGeneric(t, nm, "eth0", 1, 1, 8, true, sink)
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "eth0", Flags: RegSW})
	tx := h.TxRing(1)
	fillTx(tx, 5, 60, 0)
	if err := h.TxSync(); err != nil {
		t.Fatal(err)
	}
	k := h.Kring(TX, 1)
	if k.NrHwtail.Load() != k.Prev(tx.Head) || tx.Tail != 4 {
		t.Errorf("after txsync to host: hwtail %d, want nm_prev(head=%d)", k.NrHwtail.Load(), tx.Head)
	}
	// D-N7: the user holds 3 frames; even with more queued than the
	// admission check allows, the import stops at the free slots.
	for i := 0; i < 3; i++ {
		if err := g.HostTransmit(make([]byte, 60)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.RxSync(); err != nil {
		t.Fatal(err)
	}
	rx := h.RxRing(1)
	if rx.Space() != 3 {
		t.Fatalf("host RX holds %d, want 3", rx.Space())
	}
	hk := h.Kring(RX, 1)
	hk.QLock.Lock()
	for i := 0; i < 10; i++ {
		hk.hostq.enqueue(make([]byte, 60)) // bypass admission on purpose
	}
	hk.QLock.Unlock()
	if err := h.RxSync(); err != nil {
		t.Fatal(err)
	}
	if rx.Space() != 7 {
		t.Errorf("host RX holds %d after import, want 7 = 3 held + 4 imported", rx.Space())
	}
	if rx.Head != 0 {
		t.Errorf("user-held slots moved: head %d", rx.Head)
	}
	if err := hk.CheckInvariants(); err != nil {
		t.Error(err)
	}
}
