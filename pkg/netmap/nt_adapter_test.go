package netmap

import (
	"encoding/binary"
	"errors"
	"strings"
	"syscall"
	"testing"
)

func TestNT21_IRQ(t *testing.T) {
	nm := New(Config{})
	p := newTestPort(t, "tp", g8(2, 2), false)
	if err := nm.Attach(p); err != nil {
		t.Fatal(err)
	}
	wd := 0
	if p.RxIRQ(0, &wd) != 0 {
		t.Error("RxIRQ with netmap off returned 1")
	}
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "tp"})
	var counts [2][3]int
	for t2 := TX; t2 <= RX; t2++ {
		for i, k := range p.Rings(t2) {
			d, i := t2, i
			k.Notify = func(*Kring, uint32) { counts[d][i]++ }
		}
	}
	if p.RxIRQ(1, &wd) != 1 || wd != 1 {
		t.Errorf("RxIRQ: work_done %d", wd)
	}
	if p.RxRings[1].NrKflags.Load()&KringPendIntr == 0 || counts[RX][1] != 1 {
		t.Error("RxIRQ did not set PENDINTR / notify")
	}
	// q beyond the rings (after masking): no notify.
	p.RxIRQ(2, nil)
	p.RxIRQ(0x1000|2, nil)
	if counts[RX][2] != 0 {
		t.Error("irq on a non-physical queue notified the host ring")
	}
	// Masking: 0x1000|1 is queue 1.
	p.RxIRQ(0x1000|1, nil)
	if counts[RX][1] != 2 {
		t.Error("masked queue not notified")
	}
	p.TxIRQ(0)
	if counts[TX][0] != 1 {
		t.Error("TxIRQ did not notify the TX kring")
	}
	p.SetFlags(NAFSkipIntr)
	wd = 0
	if p.RxIRQ(0, &wd) != 0 || wd != 0 {
		t.Error("NAFSkipIntr: RxIRQ returned 1")
	}
}

func TestNT22_Reset(t *testing.T) {
	nm := New(Config{})
	p := newTestPort(t, "tp", g8(1, 1), false)
	if err := nm.Attach(p); err != nil {
		t.Fatal(err)
	}
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "tp"})
	if p.Reset(TX, 1, 0) != nil || p.Reset(TX, -1, 0) != nil {
		t.Error("out-of-range ring reset")
	}
	notified := 0
	for _, k := range append(append([]*Kring{}, p.TxRings...), p.RxRings...) {
		k.Notify = func(*Kring, uint32) { notified++ }
	}
	tk := p.TxRings[0]
	setK(tk, 5, 4, 5, 4)
	if s := p.Reset(TX, 0, 2); s == nil {
		t.Fatal("reset returned nil")
	}
	if tk.NkrHwofs != 3 || tk.NrHwtail.Load() != 4 || notified != 1 {
		t.Errorf("TX reset: hwofs %d hwtail %d notified %d", tk.NkrHwofs, tk.NrHwtail.Load(), notified)
	}
	setK(tk, 1, 3, 1, 3)
	p.Reset(TX, 0, 6) // negative offset is kept (only positive overflow is corrected)
	if tk.NkrHwofs != -5 || tk.NrHwtail.Load() != 0 {
		t.Errorf("TX reset wrap: hwofs %d hwtail %d", tk.NkrHwofs, tk.NrHwtail.Load())
	}
	rk := p.RxRings[0]
	setK(rk, 0, 6, 0, 6)
	p.Reset(RX, 0, 1)
	if rk.NkrHwofs != 5 {
		t.Errorf("RX reset: hwofs %d", rk.NkrHwofs)
	}
	p.ClearFlags(NAFNative)
	if p.Reset(TX, 0, 0) != nil {
		t.Error("reset of a non-native adapter")
	}
}

func TestNT23_AdapterRefcount(t *testing.T) {
	nm := New(Config{})
	p := newTestPort(t, "tp", g8(1, 1), false)
	p.Get()
	p.Get()
	if p.Put() || p.dtorCalls != 0 {
		t.Fatal("put with refs left destroyed")
	}
	if !p.Put() || p.dtorCalls != 1 {
		t.Fatalf("last put: dtor %d", p.dtorCalls)
	}
	var nilNA *BaseAdapter
	if !nilNA.Put() {
		t.Error("nil put must count as destroyed")
	}

	q := newTestPort(t, "tq", g8(1, 1), false)
	if err := nm.Attach(q); err != nil {
		t.Fatal(err)
	}
	h := nm.Open()
	mustRegister(t, h, Req{Name: "tq"})
	if err := nm.Detach("tq"); err != nil {
		t.Fatal(err)
	}
	if q.dtorCalls != 0 || q.Refs() != 1 || !q.Detached() || q.On() {
		t.Fatalf("detach with a bound user: dtor %d refs %d detached %v on %v", q.dtorCalls, q.Refs(), q.Detached(), q.On())
	}
	if q.TxRings[0].Stopped() {
		t.Error("rings left stopped after detach (they are restarted to notice)")
	}
	if err := h.TxSync(); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("sync after detach: %v", err)
	}
	h2 := nm.Open()
	if err := h2.Register(&Req{Version: API, Name: "tq"}); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("re-register a detached adapter: %v", err)
	}
	if _, err := nm.doRegif(q, 0, RegAllNIC); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("doRegif on a detached adapter: %v", err)
	}
	h2.Close()
	h.Close()
	if q.dtorCalls != 1 || q.Refs() != 0 {
		t.Errorf("after last close: dtor %d refs %d", q.dtorCalls, q.Refs())
	}
	if o := q.Mem.Outstanding(); o != 0 {
		t.Errorf("outstanding %d", o)
	}
}

func TestNT24_Admode(t *testing.T) {
	setup := func(mode Admode, native bool) (*Netmap, *testPort, *int) {
		nm := New(Config{Admode: mode})
		var p *testPort
		if native {
			p = newTestPort(t, "eth0", g8(1, 1), false)
			if err := nm.Attach(p); err != nil {
				t.Fatal(err)
			}
		}
		made := 0
		if err := nm.AttachGeneric("eth0", func() (Adapter, error) {
			made++
			return NewGenericAdapter("eth0", newMemBackend(1, 1), GenericConfig{Slots: 8})
		}); err != nil {
			t.Fatal(err)
		}
		return nm, p, &made
	}
	// Native available, BEST -> native.
	nm, p, made := setup(AdmodeBest, true)
	h := nm.Open()
	mustRegister(t, h, Req{Name: "eth0"})
	if h.Adapter() != Adapter(p) || *made != 0 {
		t.Error("BEST did not pick native")
	}
	// ... GENERIC but already bound -> the existing native.
	nm.SetConfig(Config{Admode: AdmodeGeneric})
	h2 := nm.Open()
	mustRegister(t, h2, Req{Name: "eth0"})
	if h2.Adapter() != Adapter(p) || *made != 0 {
		t.Error("GENERIC on a bound native did not return the native")
	}
	h.Close()
	h2.Close()
	// GENERIC and idle -> generic wrapping native (D-N15: its reference on
	// the native adapter is released when it goes).
	refs := p.Refs()
	h3 := nm.Open()
	mustRegister(t, h3, Req{Name: "eth0"})
	g, ok := h3.Adapter().(*GenericAdapter)
	if !ok || *made != 1 || g.Prev() != Adapter(p) || p.Refs() != refs+1 {
		t.Fatalf("GENERIC idle: got %T made %d refs %d", h3.Adapter(), *made, p.Refs())
	}
	h3.Close()
	if p.Refs() != refs {
		t.Errorf("generic adapter kept its reference on the native one: %d", p.Refs())
	}
	if !g.Backend().(*memBackend).closed {
		t.Error("backend not closed with its adapter")
	}
	// Not native, NATIVE -> EOPNOTSUPP.
	nm, _, _ = setup(AdmodeNative, false)
	if err := nm.Open().Register(&Req{Version: API, Name: "eth0"}); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("NATIVE without native: %v", err)
	}
	// Invalid admode resets to BEST.
	nm = New(Config{Admode: 7})
	if nm.cfgSnapshot().Admode != AdmodeBest {
		t.Error("admode 7 not reset to BEST")
	}
	nm, _, made = setup(AdmodeBest, false)
	nm.SetConfig(Config{Admode: 7})
	h4 := nm.Open()
	mustRegister(t, h4, Req{Name: "eth0"})
	if *made != 1 || nm.cfgSnapshot().Admode != AdmodeBest {
		t.Error("invalid admode at lookup not reset to BEST")
	}
	h4.Close()
}

func TestNT25_AttachCommonZeroRings(t *testing.T) {
	pool, _ := NewPool(64, 2048)
	for _, g := range []Geometry{{0, 1, 8, 8}, {1, 0, 8, 8}} {
		na := &BaseAdapter{}
		if err := na.Init(na, AdapterConfig{Name: "x", Geometry: g, Pool: pool}); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%+v: %v", g, err)
		}
	}
}

// TestDN10_AttachErrnos: bad arguments are EINVAL, never ENOMEM.
func TestDN10_AttachErrnos(t *testing.T) {
	na := &BaseAdapter{}
	cases := []AdapterConfig{
		{Name: "x", Geometry: g8(1, 1)}, // nil pool
		{Geometry: g8(1, 1)},            // no name
		{Name: "x", Geometry: Geometry{1, 1, 1, 8}},
	}
	pool, _ := NewPool(64, 2048)
	cases[1].Pool, cases[2].Pool = pool, pool
	for _, c := range cases {
		if err := na.Init(na, c); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%+v: %v", c, err)
		}
	}
	if err := na.Init(nil, AdapterConfig{Name: "x", Geometry: g8(1, 1), Pool: pool}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("nil self: %v", err)
	}
	if _, err := NewPool(1, 2048); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("tiny pool: %v", err)
	}
	if _, err := NewMemPort("m", Geometry{0, 1, 8, 8}, 0, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("mem port zero rings: %v", err)
	}
	if _, err := NewGenericAdapter("g", nil, GenericConfig{}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("nil backend: %v", err)
	}
	nm := New(Config{})
	if err := nm.Attach(&MemPort{}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("attach uninitialized: %v", err)
	}
}

func TestNT26_CloseSemantics(t *testing.T) {
	nm, p := newMem(t, g8(1, 1), false)
	h := nm.Open()
	mustRegister(t, h, Req{Name: "m0"})
	h.Dup()
	if nm.UseCount() != 1 {
		t.Fatalf("use count %d", nm.UseCount())
	}
	h.Close()
	if p.ActiveFds() != 1 || h.Adapter() == nil {
		t.Fatal("first close of a dup'ed handle unbound it")
	}
	if err := h.TxSync(); err != nil {
		t.Errorf("sync through the remaining reference: %v", err)
	}
	h.Close()
	if p.ActiveFds() != 0 || nm.UseCount() != 0 || h.Adapter() != nil {
		t.Errorf("last close: fds %d use %d", p.ActiveFds(), nm.UseCount())
	}
	if err := h.Close(); err != nil {
		t.Errorf("extra close: %v", err)
	}
}

func TestNT27_BoundVar(t *testing.T) {
	cases := []struct{ v, dflt, lo, hi, want int }{
		{0, 5, 1, 10, 5},
		{20, 5, 1, 10, 10},
		{0, 0, 1, 10, 1},
		{0, 50, 1, 10, 10},
		{7, 5, 1, 10, 7},
		{1, 5, 1, 10, 1},
		{10, 5, 1, 10, 10},
	}
	for _, c := range cases {
		got, changed := BoundVar(c.v, c.dflt, c.lo, c.hi)
		if got != c.want || changed != (c.v != c.want) {
			t.Errorf("BoundVar(%d,%d,%d,%d) = %d,%v want %d", c.v, c.dflt, c.lo, c.hi, got, changed, c.want)
		}
	}
}

func TestNT28_DumpBuf(t *testing.T) {
	p := []byte("ABCDEFGHIJKLMNOP\x00\x01z~")
	out := DumpBuf(p, 0)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	if !strings.HasPrefix(lines[0], "buf 0x") || !strings.HasSuffix(lines[0], " len 20 lim 20") {
		t.Errorf("header %q", lines[0])
	}
	want1 := "    0: 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50 ABCDEFGHIJKLMNOP"
	want2 := "   16: 00 01 7a 7e " + strings.Repeat(" ", 36) + "..z~"
	if lines[1] != want1 || lines[2] != want2 {
		t.Errorf("rows:\n%q\n%q", lines[1], lines[2])
	}
	if l := strings.Count(DumpBuf(p, 5), "\n"); l != 2 {
		t.Errorf("lim 5: %d lines", l)
	}
}

func TestNT29_ExtraBuffers(t *testing.T) {
	nm, p := newMem(t, g8(1, 1), false) // 16 extra buffers in the pool
	h := nm.Open()
	req := mustRegister(t, h, Req{Name: "m0", Arg3: 4})
	if req.Arg3 != 4 {
		t.Fatalf("got %d extra buffers", req.Arg3)
	}
	seen := map[uint32]bool{}
	for idx, n := h.BufsHead, 0; idx != 0; n++ {
		if n > 4 || seen[idx] || !p.Mem.Valid(idx) {
			t.Fatalf("bad chain at %d (idx %d)", n, idx)
		}
		seen[idx] = true
		idx = binary.LittleEndian.Uint32(h.Buf(idx))
	}
	if len(seen) != 4 {
		t.Errorf("chain has %d buffers", len(seen))
	}
	// Asking for more than the pool has returns fewer.
	h2 := nm.Open()
	req2 := mustRegister(t, h2, Req{Name: "m0", Arg3: 1000})
	if req2.Arg3 != 12 {
		t.Errorf("got %d of 1000, want the 12 left", req2.Arg3)
	}
	h.Close()
	h2.Close()
	if o := p.Mem.Outstanding(); o != 0 {
		t.Errorf("extra buffers not returned: outstanding %d", o)
	}
}

func TestAttachKeepsGenericAdaptersGeneric(t *testing.T) {
	nm := New(Config{})
	g, err := NewGenericAdapter("pk0", newMemBackend(1, 1), GenericConfig{Slots: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := nm.Attach(g); err != nil {
		t.Fatal(err)
	}
	if g.Flags()&NAFNative != 0 || g.Flags()&NAFSkipIntr == 0 {
		t.Errorf("flags %#x", g.Flags())
	}
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "pk0"})
	if g.Reset(TX, 0, 0) != nil {
		t.Error("netmap_reset on a generic adapter")
	}
	if err := nm.Attach(g); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("second attach: %v", err)
	}
}

func TestPoolRegionAndSharedGenericPool(t *testing.T) {
	pool, err := NewPool(2+4*8+8, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if len(pool.Region()) != 42*2048 || pool.Offset(5) != 5*2048 || pool.IndexOf(5*2048+100) != 5 {
		t.Error("region/offset/index mismatch")
	}
	if pool.IndexOf(100) != 0 || pool.IndexOf(42*2048) != 0 {
		t.Error("reserved or out-of-range offsets must map to 0")
	}
	if &pool.Buf(5)[0] != &pool.Region()[pool.Offset(5)] {
		t.Error("Buf and Region disagree")
	}
	g, err := NewGenericAdapter("x", newMemBackend(1, 1), GenericConfig{Slots: 8, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if g.Mem != pool {
		t.Error("pool not used")
	}
	if _, err := NewGenericAdapter("y", newMemBackend(4, 4), GenericConfig{Slots: 8, Pool: pool}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("too small a pool: %v", err)
	}
}
