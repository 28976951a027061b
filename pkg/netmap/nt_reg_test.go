package netmap

import (
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
)

// testPort is an adapter defined the way another package (pkg/vale) defines
// one: it embeds a concrete adapter and overrides callbacks. It counts calls
// and can be told to fail.
type testPort struct {
	*MemPort
	on, off   int
	failReg   error
	failKr    error
	geo       *Geometry
	txs, rxs  atomic.Int32
	dtorCalls int
}

func newTestPort(t testing.TB, name string, g Geometry, host bool) *testPort {
	t.Helper()
	mp, err := NewMemPort(name, g, 0, 256)
	if err != nil {
		t.Fatal(err)
	}
	tp := &testPort{MemPort: mp}
	flags := uint32(0)
	if host {
		flags = NAFHostRings
	}
	if err := mp.Init(tp, AdapterConfig{Name: name, Geometry: g, Pool: mp.Mem, Flags: flags}); err != nil {
		t.Fatal(err)
	}
	return tp
}

func (p *testPort) Register(on bool) error {
	if on {
		if p.failReg != nil {
			return p.failReg
		}
		p.on++
	} else {
		p.off++
	}
	return nil
}

func (p *testPort) KringsCreate() error {
	if p.failKr != nil {
		return p.failKr
	}
	return p.MemPort.KringsCreate()
}

func (p *testPort) TxSync(k *Kring, f SyncFlags) error {
	p.txs.Add(1)
	return p.MemPort.TxSync(k, f)
}

func (p *testPort) RxSync(k *Kring, f SyncFlags) error {
	p.rxs.Add(1)
	return p.MemPort.RxSync(k, f)
}

func (p *testPort) Config() (Geometry, error) {
	if p.geo != nil {
		return *p.geo, nil
	}
	return p.MemPort.Config()
}

func (p *testPort) Dtor() { p.dtorCalls++ }

var _ Adapter = (*testPort)(nil)

func TestNT08_InterpRingID(t *testing.T) {
	type iv struct{ tf, tl, rf, rl int }
	cases := []struct {
		name   string
		host   bool
		ringid uint16
		flags  uint32
		want   iv
		err    bool
	}{
		{"ALL_NIC", true, 0, RegAllNIC, iv{0, 4, 0, 2}, false},
		{"SW", true, 0, RegSW, iv{4, 5, 2, 3}, false},
		{"NIC_SW", true, 0, RegNICSW, iv{0, 5, 0, 3}, false},
		{"ONE_NIC 3", true, 3, RegOneNIC, iv{3, 4, 0, 1}, false},
		{"ONE_NIC 1", true, 1, RegOneNIC, iv{1, 2, 1, 2}, false},
		{"ONE_NIC 4", true, 4, RegOneNIC, iv{}, true},
		{"SW no host", false, 0, RegSW, iv{}, true},
		{"NIC_SW no host", false, 0, RegNICSW, iv{}, true},
		{"reg 7", true, 0, 7, iv{}, true},
		{"PIPE_MASTER", true, 0, RegPipeMaster, iv{0, 4, 0, 2}, false},
		{"PIPE_SLAVE", true, 0, RegPipeSlave, iv{0, 4, 0, 2}, false},
		{"legacy SW_RING", true, SWRing, 0, iv{4, 5, 2, 3}, false},
		{"legacy HW_RING|2", true, HWRing | 2, 0, iv{2, 3, 0, 1}, false}, // RX falls back to ring 0
		{"legacy 0", true, 0, 0, iv{0, 4, 0, 2}, false},
	}
	for _, c := range cases {
		qf, ql, _, err := InterpRingID(4, 2, c.host, c.ringid, c.flags)
		if c.err {
			if !errors.Is(err, syscall.EINVAL) {
				t.Errorf("%s: err %v, want EINVAL", c.name, err)
			}
			continue
		}
		got := iv{qf[TX], ql[TX], qf[RX], ql[RX]}
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v err %v, want %+v", c.name, got, err, c.want)
		}
	}
	// TX-only / RX-only binds leave the other direction empty.
	qf, ql, _, err := InterpRingID(4, 2, true, 0, RegAllNIC|TxRingsOnly)
	if err != nil || qf[TX] != 0 || ql[TX] != 4 || ql[RX]-qf[RX] != 0 {
		t.Errorf("TX only: %v %v %v", qf, ql, err)
	}
	qf, ql, _, err = InterpRingID(4, 2, true, 1, RegOneNIC|RxRingsOnly)
	if err != nil || ql[TX]-qf[TX] != 0 || qf[RX] != 1 || ql[RX] != 2 {
		t.Errorf("RX only: %v %v %v", qf, ql, err)
	}
	if _, _, _, err := InterpRingID(4, 2, true, 0, TxRingsOnly|RxRingsOnly); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("TX-only|RX-only: %v", err)
	}
	// np_flags keeps the non-reg bits; the legacy mode is made explicit.
	_, _, f, _ := InterpRingID(4, 2, true, 0, RegOneNIC|Exclusive|MonitorTX)
	if f != RegOneNIC|Exclusive|MonitorTX {
		t.Errorf("np_flags %#x", f)
	}
	_, _, f, _ = InterpRingID(4, 2, true, SWRing, Exclusive)
	if f != RegSW|Exclusive {
		t.Errorf("legacy np_flags %#x", f)
	}
	// NETMAP_NO_TX_POLL clears txpoll on a real bind.
	nm, _ := newMem(t, g8(4, 2), true)
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "m0", Flags: RegAllNIC, RingID: NoTxPoll})
	if h.TxPoll() {
		t.Error("NO_TX_POLL left txpoll on")
	}
	h2 := nm.Open()
	defer h2.Close()
	mustRegister(t, h2, Req{Name: "m0", Flags: RegSW})
	if !h2.TxPoll() {
		t.Error("txpoll off without NO_TX_POLL")
	}
}

func TestNT09_SIUsers(t *testing.T) {
	nm, p := newMem(t, g8(4, 2), false)
	h := nm.Open()
	mustRegister(t, h, Req{Name: "m0", Flags: RegAllNIC})
	if p.SIUsers(TX) != 1 || p.SIUsers(RX) != 1 {
		t.Fatalf("si_users %d/%d after ALL_NIC bind", p.SIUsers(TX), p.SIUsers(RX))
	}
	h1 := nm.Open()
	mustRegister(t, h1, Req{Name: "m0", Flags: RegOneNIC, RingID: 3}) // TX [3,4) RX [0,1): single rings
	if p.SIUsers(TX) != 1 || p.SIUsers(RX) != 1 {
		t.Fatalf("single-ring bind changed si_users: %d/%d", p.SIUsers(TX), p.SIUsers(RX))
	}
	h1.Close()
	// D-N9: a bind failing after set_ringid (exclusive conflict) leaves the
	// counters unchanged.
	h2 := nm.Open()
	err := h2.Register(&Req{Version: API, Name: "m0", Flags: RegAllNIC | Exclusive})
	if !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("exclusive over a shared bind: %v", err)
	}
	if p.SIUsers(TX) != 1 || p.SIUsers(RX) != 1 {
		t.Errorf("failed bind leaked si_users: %d/%d", p.SIUsers(TX), p.SIUsers(RX))
	}
	h2.Close()
	// Notify wakes the global queue only when si_users > 0.
	k := p.TxRings[0]
	ch := p.si[TX].record()
	k.NotifyNow()
	select {
	case <-ch:
	default:
		t.Error("global waiters not woken with si_users > 0")
	}
	h.Close()
	if p.SIUsers(TX) != 0 || p.SIUsers(RX) != 0 {
		t.Errorf("si_users %d/%d after unbind", p.SIUsers(TX), p.SIUsers(RX))
	}
	h3 := nm.Open()
	defer h3.Close()
	mustRegister(t, h3, Req{Name: "m0", Flags: RegOneNIC, RingID: 0})
	ch = p.si[TX].record()
	p.TxRings[0].NotifyNow()
	select {
	case <-ch:
		t.Error("global waiters woken with si_users == 0")
	default:
	}
}

func TestNT10_ExclusiveBinds(t *testing.T) {
	nm, p := newMem(t, g8(2, 2), false)
	reg := func(h *Handle, ring uint16, excl bool) error {
		f := RegOneNIC
		if excl {
			f |= Exclusive
		}
		return h.Register(&Req{Version: API, Name: "m0", Flags: f, RingID: ring})
	}
	a, b, c := nm.Open(), nm.Open(), nm.Open()
	defer a.Close()
	if err := reg(a, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := reg(b, 0, true); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("B exclusive on ring 0: %v, want EBUSY", err)
	}
	if u := p.TxRings[0].Users; u != 1 {
		t.Errorf("failed exclusive check changed users: %d", u)
	}
	if u := p.TxRings[1].Users; u != 0 {
		t.Errorf("users on ring 1: %d", u)
	}
	if err := reg(b, 1, true); err != nil {
		t.Fatalf("B exclusive on ring 1: %v", err)
	}
	if err := reg(c, 1, false); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("C on exclusive ring 1: %v, want EBUSY", err)
	}
	b.Close()
	if p.TxRings[1].NrKflags.Load()&KringExclusive != 0 {
		t.Error("exclusive flag not cleared on unbind")
	}
	if err := reg(c, 1, false); err != nil {
		t.Fatalf("C after B unbinds: %v", err)
	}
	c.Close()
	// Exclusive TX-only and exclusive RX-only binds of the same ring do not
	// conflict: they hold disjoint krings.
	d, e := nm.Open(), nm.Open()
	defer d.Close()
	defer e.Close()
	if err := d.Register(&Req{Version: API, Name: "m0", Flags: RegOneNIC | Exclusive | TxRingsOnly, RingID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.Register(&Req{Version: API, Name: "m0", Flags: RegOneNIC | Exclusive | RxRingsOnly, RingID: 1}); err != nil {
		t.Errorf("RX-only exclusive next to TX-only exclusive: %v", err)
	}
}

func TestNT11_RegisterLifecycle(t *testing.T) {
	nm := New(Config{})
	p := newTestPort(t, "tp", g8(2, 2), false)
	if err := nm.Attach(p); err != nil {
		t.Fatal(err)
	}
	refs := p.Refs()
	h1, h2 := nm.Open(), nm.Open()
	mustRegister(t, h1, Req{Name: "tp"})
	if p.TxRings == nil || p.on != 1 || p.ActiveFds() != 1 {
		t.Fatalf("first bind: krings %v on %d fds %d", p.TxRings != nil, p.on, p.ActiveFds())
	}
	rings := p.TxRings
	mustRegister(t, h2, Req{Name: "tp"})
	if p.on != 1 || p.ActiveFds() != 2 || &p.TxRings[0] != &rings[0] {
		t.Fatalf("second bind: on %d fds %d", p.on, p.ActiveFds())
	}
	if err := h1.Register(&Req{Version: API, Name: "tp"}); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second REGIF on a bound handle: %v", err)
	}
	for _, cmd := range []uint16{BdgRegops, BdgList, 99} {
		h := nm.Open()
		if err := h.Register(&Req{Version: API, Name: "tp", Cmd: cmd}); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("nr_cmd %d: %v, want EINVAL", cmd, err)
		}
		h.Close()
	}
	h1.Close()
	if p.off != 0 || p.TxRings == nil {
		t.Fatal("unbind of one of two handles turned the adapter off")
	}
	h2.Close()
	if p.off != 1 || p.TxRings != nil || p.ActiveFds() != 0 || p.On() {
		t.Fatalf("last unbind: off %d krings %v fds %d", p.off, p.TxRings != nil, p.ActiveFds())
	}
	if p.Refs() != refs {
		t.Errorf("refs %d, want %d", p.Refs(), refs)
	}
	// Every failure path leaves refcount and active_fds unchanged.
	fails := []struct {
		name  string
		setup func()
		req   Req
		errno syscall.Errno
	}{
		{"bad mode", func() {}, Req{Name: "tp", Flags: 9}, syscall.EINVAL},
		{"SW without host rings", func() {}, Req{Name: "tp", Flags: RegSW}, syscall.EINVAL},
		{"krings create", func() { p.failKr = syscall.ENOMEM }, Req{Name: "tp"}, syscall.ENOMEM},
		{"register", func() { p.failKr = nil; p.failReg = syscall.EIO }, Req{Name: "tp"}, syscall.EIO},
		{"unknown name", func() { p.failReg = nil }, Req{Name: "nope"}, syscall.ENXIO},
		{"bad version", func() {}, Req{Name: "tp", Version: 3}, syscall.EINVAL},
	}
	for _, f := range fails {
		f.setup()
		h := nm.Open()
		if f.req.Version == 0 {
			f.req.Version = API
		}
		err := h.Register(&f.req)
		if !errors.Is(err, f.errno) {
			t.Errorf("%s: %v, want %v", f.name, err, f.errno)
		}
		if p.Refs() != refs || p.ActiveFds() != 0 || p.TxRings != nil || p.SIUsers(TX) != 0 {
			t.Errorf("%s: refs %d fds %d krings %v", f.name, p.Refs(), p.ActiveFds(), p.TxRings != nil)
		}
		h.Close()
	}
	if o := p.Mem.Outstanding(); o != 0 {
		t.Errorf("outstanding buffers %d", o)
	}
}

func TestNT12_Info(t *testing.T) {
	nm, _ := newMem(t, g8(4, 2), false)
	req := Req{Version: API}
	if err := nm.Info(&req); err != nil {
		t.Fatal(err)
	}
	if req.TxRings != 0 || req.TxSlots != 0 {
		t.Errorf("empty name reported port info: %+v", req)
	}
	req = Req{Version: API, Name: "m0"}
	if err := nm.Info(&req); err != nil {
		t.Fatal(err)
	}
	if req.TxRings != 4 || req.RxRings != 2 || req.TxSlots != 8 || req.RxSlots != 8 || req.Memsize == 0 {
		t.Errorf("named info: %+v", req)
	}
	if err := nm.Info(&Req{Version: API, Name: "nope"}); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("unknown: %v", err)
	}
	for _, v := range []uint32{10, 16, 0} {
		req = Req{Version: v, Name: "m0"}
		if err := nm.Info(&req); !errors.Is(err, syscall.EINVAL) || req.Version != API {
			t.Errorf("version %d: err %v, version written back %d", v, err, req.Version)
		}
	}
	req = Req{Version: 15, Name: "m0"}
	if err := nm.Info(&req); err != nil || req.Version != API {
		t.Errorf("version 15: %v %d", err, req.Version)
	}
	// D-N11: Info does not create a generic adapter as a side effect.
	created := 0
	if err := nm.AttachGeneric("eth9", func() (Adapter, error) {
		created++
		return NewGenericAdapter("eth9", newMemBackend(1, 1), GenericConfig{Slots: 8})
	}); err != nil {
		t.Fatal(err)
	}
	err := nm.Info(&Req{Version: API, Name: "eth9"})
	if created != 0 || !errors.Is(err, syscall.ENXIO) {
		t.Errorf("info on generic-only iface: created %d err %v", created, err)
	}
}
