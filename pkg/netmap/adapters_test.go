package netmap

import (
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestLeases(t *testing.T) {
	_, k, _ := boundKring(t, RX)
	k.QLock.Lock()
	defer k.QLock.Unlock()
	if k.Space() != 7 {
		t.Fatalf("space %d", k.Space())
	}
	s1, g1, l1 := k.LeaseAcquire(3)
	s2, g2, l2 := k.LeaseAcquire(2)
	s3, g3, l3 := k.LeaseAcquire(5) // only 2 left
	if s1 != 0 || g1 != 3 || s2 != 3 || g2 != 2 || s3 != 5 || g3 != 2 {
		t.Fatalf("leases (%d,%d) (%d,%d) (%d,%d)", s1, g1, s2, g2, s3, g3)
	}
	if k.Space() != 0 {
		t.Fatalf("space after leasing all: %d", k.Space())
	}
	// Complete out of order: hwtail moves only when the first lease is done.
	if k.LeaseComplete(l3, s3, s3+g3) || k.NrHwtail.Load() != 0 {
		t.Fatal("lease 3 published before 1 and 2")
	}
	if k.LeaseComplete(l2, s2, s2+g2) || k.NrHwtail.Load() != 0 {
		t.Fatal("lease 2 published before 1")
	}
	if !k.LeaseComplete(l1, s1, s1+g1) || k.NrHwtail.Load() != 7 {
		t.Fatalf("after lease 1: hwtail %d, want 7 (all three)", k.NrHwtail.Load())
	}
	// Consumer releases 4; leases wrap around.
	k.NrHwcur.Store(4)
	s4, g4, l4 := k.LeaseAcquire(10)
	if s4 != 7 || g4 != 4 {
		t.Fatalf("wrapped lease (%d,%d)", s4, g4)
	}
	if !k.LeaseComplete(l4, s4, k.Add(s4, g4)) || k.NrHwtail.Load() != 3 {
		t.Fatalf("wrapped publish: hwtail %d", k.NrHwtail.Load())
	}
}

// TestMemPortConcurrentSenders: four goroutines, each owning one TX ring of
// port A (ONE_NIC binds), feed the single RX ring of port B through leases.
// Every frame carries (sender, seq): per sender the receiver must see an
// increasing sequence, and delivered + dropped = sent.
func TestMemPortConcurrentSenders(t *testing.T) {
	nm := New(Config{})
	a, err := NewMemPort("a", Geometry{4, 1, 64, 64}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewMemPort("b", Geometry{1, 1, 64, 64}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ConnectMemPorts(a, b); err != nil {
		t.Fatal(err)
	}
	if err := nm.Attach(a); err != nil {
		t.Fatal(err)
	}
	if err := nm.Attach(b); err != nil {
		t.Fatal(err)
	}
	hb := nm.Open()
	mustRegister(t, hb, Req{Name: "b"})
	const perSender = 3000
	var wg sync.WaitGroup
	for s := 0; s < 4; s++ {
		h := nm.Open()
		mustRegister(t, h, Req{Name: "a", Flags: RegOneNIC, RingID: uint16(s)})
		wg.Add(1)
		go func(s int, h *Handle) {
			defer wg.Done()
			defer h.Close()
			r := h.TxRing(s)
			for seq := 0; seq < perSender; {
				for r.Space() > 0 && seq < perSender {
					buf := r.Buf(r.Head)
					binary.LittleEndian.PutUint32(buf, uint32(s))
					binary.LittleEndian.PutUint32(buf[4:], uint32(seq))
					r.Slot[r.Head].Len = 60
					r.Advance(r.Next(r.Head))
					seq++
				}
				if err := h.TxSync(); err != nil {
					t.Error(err)
					return
				}
			}
		}(s, h)
	}
	last := [4]int{-1, -1, -1, -1}
	got := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	r := hb.RxRing(0)
	finished := false
	for !finished {
		select {
		case <-done:
			finished = true
		default:
		}
		if err := hb.RxSync(); err != nil {
			t.Fatal(err)
		}
		if err := hb.Kring(RX, 0).CheckInvariants(); err != nil {
			t.Fatal(err)
		}
		for r.Cur != r.Tail {
			buf := r.Buf(r.Cur)
			s, seq := binary.LittleEndian.Uint32(buf), int(binary.LittleEndian.Uint32(buf[4:]))
			if s > 3 || seq <= last[s] {
				t.Fatalf("sender %d seq %d after %d", s, seq, last[s])
			}
			last[s] = seq
			got++
			r.Advance(r.Next(r.Cur))
		}
	}
	if uint64(got)+a.Dropped.Load() != 4*perSender || a.Sent.Load() != uint64(got) {
		t.Errorf("got %d + dropped %d != sent %d (Sent %d)", got, a.Dropped.Load(), 4*perSender, a.Sent.Load())
	}
	hb.Close()
	if a.Mem.Outstanding() != 0 || b.Mem.Outstanding() != 0 {
		t.Errorf("leak: %d %d", a.Mem.Outstanding(), b.Mem.Outstanding())
	}
}

func TestPipeZeroCopy(t *testing.T) {
	nm, _ := newMem(t, g8(1, 1), false)
	m, s := nm.Open(), nm.Open()
	mustRegister(t, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 7})
	mustRegister(t, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 7})
	pool := PipePool(m.Adapter())
	if pool == nil || PipePool(s.Adapter()) != pool {
		t.Fatal("pipe ends do not share a pool")
	}
	before := pool.Outstanding()
	tx := m.TxRing(0)
	idx := tx.Slot[0].BufIdx
	fillTx(tx, 3, 64, 1)
	if err := m.TxSync(); err != nil {
		t.Fatal(err)
	}
	if err := s.RxSync(); err != nil {
		t.Fatal(err)
	}
	rx := s.RxRing(0)
	if rx.Slot[0].BufIdx != idx || rx.Slot[0].Flags&BufChanged == 0 || tx.Slot[0].Flags&BufChanged == 0 {
		t.Errorf("no buffer swap: rx idx %d want %d, flags %#x/%#x", rx.Slot[0].BufIdx, idx, rx.Slot[0].Flags, tx.Slot[0].Flags)
	}
	if pool.Outstanding() != before {
		t.Error("swap changed the outstanding count")
	}
	// Backpressure: the slave does not consume; the master can push at
	// most n-1 frames in total.
	for i := 0; i < 3; i++ {
		fillTx(tx, int(tx.Space()), 64, 0)
		_ = m.TxSync()
	}
	_ = s.RxSync()
	if rx.Space() != 7 {
		t.Errorf("pipe RX holds %d", rx.Space())
	}
	// The slave releases: the master is notified and can push again.
	ch := m.Kring(TX, 0).si.record()
	rx.Advance(rx.Tail)
	_ = s.RxSync()
	select {
	case <-ch:
	default:
		t.Error("release did not notify the peer TX ring")
	}
	m.Close()
	if pool.Outstanding() == 0 {
		t.Error("krings deleted while the peer is still bound")
	}
	s.Close()
	if pool.Outstanding() != 0 {
		t.Errorf("pipe leak: %d", pool.Outstanding())
	}
	// Re-open creates a fresh pair.
	m2 := nm.Open()
	mustRegister(t, m2, Req{Name: "m0", Flags: RegPipeMaster, RingID: 7})
	m2.Close()
}

func TestMonitor(t *testing.T) {
	nm, a := newMem(t, g8(1, 1), false)
	b, _ := NewMemPort("m1", g8(1, 1), 0, 0)
	_ = ConnectMemPorts(a, b)
	_ = nm.Attach(b)
	ha, hb := nm.Open(), nm.Open()
	mustRegister(t, ha, Req{Name: "m0"})
	mustRegister(t, hb, Req{Name: "m1"})
	// Monitor before the port is up: EINVAL.
	hm := nm.Open()
	if err := hm.Register(&Req{Version: API, Name: "nope", Flags: MonitorTX}); err == nil {
		t.Error("monitor of an unknown port")
	}
	mustRegister(t, hm, Req{Name: "m0", Flags: MonitorTX})
	hmr := nm.Open()
	mustRegister(t, hmr, Req{Name: "m1", Flags: MonitorRX})
	fillTx(ha.TxRing(0), 3, 60, 5)
	if err := ha.TxSync(); err != nil {
		t.Fatal(err)
	}
	if err := hb.RxSync(); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Handle{hm, hmr} {
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		r := h.RxRing(0)
		if r.Space() != 3 || r.Buf(r.Cur)[0] != 5 || r.Slot[r.Cur].Len != 60 {
			t.Errorf("%s: monitor holds %d", h.Adapter().NA().Name, r.Space())
		}
	}
	// A full monitor drops, never blocks the port.
	for i := 0; i < 4; i++ {
		fillTx(ha.TxRing(0), 7, 60, 0)
		_ = ha.TxSync()
	}
	mon := hm.Adapter().(*monitorAdapter)
	if mon.Dropped.Load() == 0 {
		t.Error("full monitor did not drop")
	}
	hm.Close()
	hmr.Close()
	if p := a.TxRings[0].monitors.Load(); p != nil {
		t.Error("monitor still linked after close")
	}
	ha.Close()
	hb.Close()
	if a.Mem.Outstanding()+b.Mem.Outstanding()+mon.Mem.Outstanding() != 0 {
		t.Error("leak")
	}
}

func TestGenericAdapterGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	nm := New(Config{})
	g, b := newGeneric(t, nm, "eth0", 2, 2, 64, false, nil)
	h := nm.Open()
	mustRegister(t, h, Req{Name: "eth0"})
	// RX readiness wakes a blocked poll.
	go func() {
		time.Sleep(10 * time.Millisecond)
		b.inject(1, frame(100, 9))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := h.Poll(ctx, PollIn)
	if err != nil || ev&PollIn == 0 {
		t.Fatalf("poll: %#x %v", ev, err)
	}
	r := h.RxRing(1)
	if r.Space() != 1 || r.Slot[r.Cur].Len != 100 {
		t.Errorf("rx ring 1: %d frames", r.Space())
	}
	// TX with a backend that accepts 2 frames per call.
	b.mu.Lock()
	b.txCap = 2
	b.mu.Unlock()
	fillTx(h.TxRing(0), 5, 60, 1)
	for i := 0; i < 3; i++ {
		if err := h.TxSync(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(b.sentFrames(0)); n != 5 {
		t.Errorf("sent %d", n)
	}
	// Multi-fragment frames are dropped on the generic path.
	tx := h.TxRing(0)
	tx.Slot[tx.Head].Flags = MoreFrag
	fillTx(tx, 2, 60, 1)
	_ = h.TxSync()
	if g.TxDropped.Load() != 2 || len(b.sentFrames(0)) != 5 {
		t.Errorf("fragments: dropped %d", g.TxDropped.Load())
	}
	h.Close()
	if err := nm.Detach("eth0"); err != nil {
		t.Fatal(err)
	}
	if !b.closed || b.closes != 1 {
		t.Errorf("backend closed %v (%d times)", b.closed, b.closes)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines leaked: %d > %d", n, before)
	}
	if g.Mem.Outstanding() != 0 {
		t.Errorf("leak %d", g.Mem.Outstanding())
	}
}

// TestGenericTxReadiness: a TX sync that leaves frames pending arms the TX
// readiness goroutine; when the backend has room again it notifies the ring
// and a Poll(POLLOUT) blocked on the full ring wakes and flushes.
func TestGenericTxReadiness(t *testing.T) {
	nm := New(Config{})
	_, b := newGeneric(t, nm, "eth0", 1, 1, 8, false, nil)
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "eth0"})
	b.mu.Lock()
	b.txCap = -1 // the queue is full
	b.mu.Unlock()
	tx := h.TxRing(0)
	fillTx(tx, 7, 60, 0)
	if err := h.TxSync(); err != nil {
		t.Fatal(err)
	}
	if tx.Space() != 0 {
		t.Fatalf("space %d with a blocked backend", tx.Space())
	}
	got := make(chan Events, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ev, _ := h.Poll(ctx, PollOut)
		got <- ev
	}()
	time.Sleep(20 * time.Millisecond)
	b.mu.Lock()
	b.txCap = 0
	b.mu.Unlock()
	b.txReady <- struct{}{} // the backend's "writable" edge
	if ev := <-got; ev&PollOut == 0 {
		t.Fatalf("poll: %#x", ev)
	}
	if n := len(b.sentFrames(0)); n != 7 {
		t.Errorf("sent %d", n)
	}
}

// TestPipeRebindWhilePeerBound: the master unbinds while the slave stays
// bound (the pair's krings are kept), then binds again and still works.
func TestPipeRebindWhilePeerBound(t *testing.T) {
	nm, _ := newMem(t, g8(1, 1), false)
	m, s := nm.Open(), nm.Open()
	mustRegister(t, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 4})
	mustRegister(t, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 4})
	defer s.Close()
	m.Close()
	m2 := nm.Open()
	defer m2.Close()
	mustRegister(t, m2, Req{Name: "m0", Flags: RegPipeMaster, RingID: 4})
	fillTx(m2.TxRing(0), 2, 60, 1)
	if err := m2.TxSync(); err != nil {
		t.Fatalf("txsync after rebind: %v", err)
	}
	if err := s.RxSync(); err != nil {
		t.Fatal(err)
	}
	if s.RxRing(0).Space() != 2 {
		t.Errorf("slave got %d frames", s.RxRing(0).Space())
	}
}
