package netmap

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"
)

func TestNT13_SyncErrors(t *testing.T) {
	nm, _ := newMem(t, g8(2, 2), false)
	h := nm.Open()
	defer h.Close()
	if err := h.TxSync(); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("txsync before REGIF: %v", err)
	}
	if err := h.RxSync(); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("rxsync before REGIF: %v", err)
	}
	mustRegister(t, h, Req{Name: "m0"})
	na := h.Adapter().NA()

	na.DisableAllRings()
	if err := h.TxSync(); !errors.Is(err, syscall.EBUSY) || !errors.Is(err, ErrStopped) {
		t.Errorf("txsync on stopped rings: %v", err)
	}
	na.EnableAllRings()
	if err := h.TxSync(); err != nil {
		t.Errorf("txsync after enable: %v", err)
	}

	// Two syncers on one ring: hold the busy flag as the other goroutine
	// would while inside its sync.
	k := h.Kring(RX, 1)
	if err := k.TryGet(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- h.RxSync() }()
	if err := <-done; !errors.Is(err, syscall.EBUSY) || !errors.Is(err, ErrBusy) {
		t.Errorf("concurrent rxsync: %v, want EBUSY", err)
	}
	k.Put()
	if err := h.RxSync(); err != nil {
		t.Errorf("rxsync after release: %v", err)
	}
	// Real concurrency: many goroutines sync the same ring; each call
	// either succeeds or reports EBUSY, never anything else (and -race
	// checks the kring state).
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			var e error
			for j := 0; j < 200; j++ {
				if err := h.TxSync(); err != nil && !errors.Is(err, syscall.EBUSY) {
					e = err
				}
			}
			errs <- e
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	// Backend detach: later syncs fail with ENXIO.
	if err := nm.Detach("m0"); err != nil {
		t.Fatal(err)
	}
	if err := h.TxSync(); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("txsync after detach: %v", err)
	}
	if err := h.RxSync(); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("rxsync after detach: %v", err)
	}
}

func TestNT14_Timestamps(t *testing.T) {
	nm, _ := newMem(t, g8(1, 1), false)
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "m0"})
	r := h.RxRing(0)
	if err := h.RxSync(); err != nil || r.Ts == 0 {
		t.Fatalf("RXSYNC did not stamp: ts %d err %v", r.Ts, err)
	}
	// Poll stamps by default.
	r.Ts = 0
	h.PollNow(PollIn)
	if r.Ts == 0 {
		t.Error("poll with no_timestamp=0 did not stamp")
	}
	// With no_timestamp only NR_TIMESTAMP rings are stamped in poll...
	nm.SetConfig(Config{NoTimestamp: true})
	r.Ts = 0
	h.PollNow(PollIn)
	if r.Ts != 0 {
		t.Error("poll stamped with no_timestamp=1")
	}
	r.Flags |= RingTimestamp
	h.PollNow(PollIn)
	if r.Ts == 0 {
		t.Error("poll did not stamp an NR_TIMESTAMP ring")
	}
	// ...but RXSYNC always stamps.
	r.Flags = 0
	r.Ts = 0
	if err := h.RxSync(); err != nil || r.Ts == 0 {
		t.Error("RXSYNC did not stamp with no_timestamp=1")
	}
}

func TestNT15_UpdateConfig(t *testing.T) {
	nm := New(Config{})
	p := newTestPort(t, "tp", g8(1, 1), false)
	if err := nm.Attach(p); err != nil {
		t.Fatal(err)
	}
	// Changed geometry, nobody bound: adopted.
	p.geo = &Geometry{2, 3, 16, 16}
	req := Req{Version: API, Name: "tp"}
	if err := nm.Info(&req); err != nil {
		t.Fatal(err)
	}
	if req.TxRings != 2 || req.RxRings != 3 || req.TxSlots != 16 {
		t.Fatalf("idle config change not adopted: %+v", req)
	}
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "tp"})
	// Changed while active: refused (reported) and the old geometry kept.
	p.geo = &Geometry{1, 1, 8, 8}
	if !nm.UpdateConfig(p) {
		t.Error("UpdateConfig did not report the refused change")
	}
	if p.NumTxRings != 2 || p.NumRxDesc != 16 || len(p.TxRings) != 3 {
		t.Errorf("geometry changed while active: %d rings %d slots", p.NumTxRings, p.NumRxDesc)
	}
}

func TestNT16_Poll(t *testing.T) {
	t.Run("unbound", func(t *testing.T) {
		nm := New(Config{})
		h := nm.Open()
		defer h.Close()
		if ev, err := h.Poll(context.Background(), PollIn); ev != PollErr || err != nil {
			t.Errorf("unbound poll: %#x %v", ev, err)
		}
	})
	t.Run("lock-free check skips sync", func(t *testing.T) {
		nm := New(Config{})
		p := newTestPort(t, "tp", g8(1, 1), false)
		if err := nm.Attach(p); err != nil {
			t.Fatal(err)
		}
		h := nm.Open()
		defer h.Close()
		mustRegister(t, h, Req{Name: "tp"})
		rx := h.Kring(RX, 0)
		rx.NrHwtail.Store(3) // three frames arrived
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		before := p.rxs.Load()
		ev, err := h.Poll(context.Background(), PollIn)
		if err != nil || ev != PollIn {
			t.Fatalf("poll: %#x %v", ev, err)
		}
		if p.rxs.Load() != before {
			t.Error("poll synced although the ring already had cur != tail")
		}
	})
	t.Run("txpoll", func(t *testing.T) {
		for _, noTxPoll := range []bool{false, true} {
			nm := New(Config{})
			p := newTestPort(t, "tp", g8(1, 1), false)
			if err := nm.Attach(p); err != nil {
				t.Fatal(err)
			}
			h := nm.Open()
			var rid uint16
			if noTxPoll {
				rid = NoTxPoll
			}
			mustRegister(t, h, Req{Name: "tp", RingID: rid})
			// Fill the ring, so the lock-free check cannot satisfy POLLOUT.
			fillTx(h.TxRing(0), 7, 60, 0)
			h.PollNow(PollIn)
			flushed := h.Kring(TX, 0).NrHwcur.Load() == 7
			if flushed == noTxPoll {
				t.Errorf("NO_TX_POLL=%v: flushed=%v on POLLIN", noTxPoll, flushed)
			}
			if noTxPoll {
				h.PollNow(PollOut)
				if h.Kring(TX, 0).NrHwcur.Load() != 7 {
					t.Error("POLLOUT did not flush with NO_TX_POLL")
				}
			}
			h.Close()
		}
	})
	t.Run("TX loop uses the TX bound (D-N3)", func(t *testing.T) {
		nm := New(Config{})
		g, b := newGeneric(t, nm, "eth0", 3, 1, 8, false, nil)
		_ = g
		h := nm.Open()
		defer h.Close()
		mustRegister(t, h, Req{Name: "eth0"})
		b.mu.Lock()
		b.txCap = -1 // accept nothing for now
		b.mu.Unlock()
		for i := 0; i < 3; i++ {
			fillTx(h.TxRing(i), 7, 60, 0) // all three look full to the user
		}
		if err := h.TxSync(); err != nil {
			t.Fatal(err)
		}
		// Queue 2 can transmit now; 0 and 1 stay blocked.
		b.mu.Lock()
		b.txCap = 0
		b.blockQ = map[int]bool{0: true, 1: true}
		b.mu.Unlock()
		ev := h.PollNow(PollOut)
		if ev&PollOut == 0 {
			t.Errorf("poll: %#x, want POLLOUT from TX ring 2", ev)
		}
		if got := len(b.sentFrames(2)); got != 7 {
			t.Errorf("ring 2 sent %d", got)
		}
	})
	t.Run("no lost wake-up", func(t *testing.T) {
		nm, _ := newMem(t, g8(1, 1), false)
		m, s := nm.Open(), nm.Open()
		defer m.Close()
		defer s.Close()
		mustRegister(t, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 3})
		mustRegister(t, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 3})
		rx := s.RxRing(0)
		for i := 0; i < 300; i++ {
			got := make(chan Events, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				ev, _ := s.Poll(ctx, PollIn)
				got <- ev
			}()
			fillTx(m.TxRing(0), 1, 60, byte(i))
			if err := m.TxSync(); err != nil {
				t.Fatal(err)
			}
			if ev := <-got; ev&PollIn == 0 {
				t.Fatalf("iteration %d: poll returned %#x (lost wake-up)", i, ev)
			}
			rx.Advance(rx.Tail) // release
			if err := s.RxSync(); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("context cancel", func(t *testing.T) {
		nm, _ := newMem(t, g8(1, 1), false)
		h := nm.Open()
		defer h.Close()
		mustRegister(t, h, Req{Name: "m0"})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := h.Poll(ctx, PollIn); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("poll on empty ring: %v", err)
		}
	})
}

// TestDN04_PollSkipsSyncAfterBadPrologue: the seed syncs an RX ring even
// after its prologue failed; here the sync is skipped and POLLERR reported.
func TestDN04_PollSkipsSyncAfterBadPrologue(t *testing.T) {
	nm := New(Config{})
	p := newTestPort(t, "tp", g8(1, 1), false)
	if err := nm.Attach(p); err != nil {
		t.Fatal(err)
	}
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "tp"})
	r := h.RxRing(0)
	// Beyond hwtail 0; tail is overwritten too so the lock-free check sees
	// an empty ring and the RX loop runs.
	r.Head, r.Cur, r.Tail = 5, 5, 5
	before := p.rxs.Load()
	if ev := h.PollNow(PollIn); ev&PollErr == 0 {
		t.Errorf("poll: %#x, want POLLERR", ev)
	}
	if p.rxs.Load() != before {
		t.Error("rxsync ran after a failed prologue")
	}
	if r.Head != 0 || r.Cur != 0 {
		t.Errorf("ring not reset: head %d cur %d", r.Head, r.Cur)
	}
}

// TestCloseWakesPoll: Close while another goroutine is blocked in Poll makes
// it return PollErr instead of hanging or touching deleted rings.
func TestCloseWakesPoll(t *testing.T) {
	for _, ringid := range []uint16{0, 1} { // per-ring and adapter-global queues
		nm, _ := newMem(t, g8(2, 2), false)
		h := nm.Open()
		f := RegAllNIC
		if ringid == 1 {
			f = RegOneNIC
		}
		mustRegister(t, h, Req{Name: "m0", Flags: f, RingID: ringid})
		other := nm.Open() // keeps the rings alive: only Close's wake-up helps
		mustRegister(t, other, Req{Name: "m0", Flags: f, RingID: ringid})
		defer other.Close()
		got := make(chan Events)
		go func() {
			ev, _ := h.Poll(context.Background(), PollIn)
			got <- ev
		}()
		time.Sleep(20 * time.Millisecond)
		h.Close()
		select {
		case ev := <-got:
			if ev != PollErr {
				t.Errorf("poll after close: %#x", ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("poll still blocked after Close")
		}
	}
}

// TestCloseDuringSyncs: goroutines keep syncing a handle (one per direction,
// as the handle's contract requires) while it is closed; they see only nil,
// EBUSY or ENXIO, never a race (-race) or a panic, and no buffer leaks. (Poll
// during Close is TestCloseWakesPoll.)
func TestCloseDuringSyncs(t *testing.T) {
	for round := 0; round < 20; round++ {
		nm, p := newMem(t, g8(2, 2), false)
		h := nm.Open()
		mustRegister(t, h, Req{Name: "m0"})
		stop := make(chan struct{})
		errs := make(chan error, 2)
		for i := 0; i < 2; i++ {
			go func(i int) {
				var bad error
				for {
					select {
					case <-stop:
						errs <- bad
						return
					default:
					}
					var err error
					if i == 0 {
						err = h.TxSync()
					} else {
						err = h.RxSync()
					}
					if err != nil && !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.ENXIO) {
						bad = err
					}
				}
			}(i)
		}
		time.Sleep(time.Millisecond)
		h.Close()
		time.Sleep(time.Millisecond)
		close(stop)
		for i := 0; i < 2; i++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if o := p.Mem.Outstanding(); o != 0 {
			t.Fatalf("leak %d", o)
		}
	}
}
