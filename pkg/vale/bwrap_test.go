package vale

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/netmap"
)

// memBackend is an in-memory GenericBackend (the kernel side of a NIC in
// tests): Inject queues frames for the adapter to receive; frames the
// adapter transmits are collected.
type memBackend struct {
	mu      sync.Mutex
	rx      [][]byte
	tx      [][]byte
	txLimit int // when > 0, the "wire" holds at most txLimit frames until sent() drains it
	ready   chan struct{}
	txRoom  chan struct{}
	closed  bool
}

func newMemBackend() *memBackend {
	return &memBackend{ready: make(chan struct{}, 1), txRoom: make(chan struct{}, 1)}
}

func (m *memBackend) Queues() (int, int) { return 1, 1 }
func (m *memBackend) FrameSize() int     { return 2048 }

func (m *memBackend) TxBatch(q int, frames [][]byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, f := range frames {
		if m.txLimit > 0 && len(m.tx) >= m.txLimit {
			break
		}
		m.tx = append(m.tx, append([]byte(nil), f...))
		n++
	}
	return n, nil
}

func (m *memBackend) RxBatch(q int, bufs [][]byte, lens []int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for n < len(bufs) && len(m.rx) > 0 {
		lens[n] = copy(bufs[n], m.rx[0])
		m.rx = m.rx[1:]
		n++
	}
	return n, nil
}

func (m *memBackend) WaitReady(ctx context.Context, q int, dir netmap.Direction) error {
	for {
		m.mu.Lock()
		ok := len(m.rx) > 0
		if dir == netmap.TX {
			ok = m.txLimit == 0 || len(m.tx) < m.txLimit
		}
		m.mu.Unlock()
		if ok {
			return nil
		}
		ch := m.ready
		if dir == netmap.TX {
			ch = m.txRoom
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (m *memBackend) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

func (m *memBackend) inject(frames ...[]byte) {
	m.mu.Lock()
	m.rx = append(m.rx, frames...)
	m.mu.Unlock()
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

func (m *memBackend) sent() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.tx
	m.tx = nil
	select {
	case m.txRoom <- struct{}{}:
	default:
	}
	return out
}

// hostSink collects what the switch sends up to the host stack.
type hostSink struct {
	mu     sync.Mutex
	frames [][]byte
}

func (h *hostSink) SendUp(frames [][]byte) {
	h.mu.Lock()
	for _, f := range frames {
		h.frames = append(h.frames, append([]byte(nil), f...))
	}
	h.mu.Unlock()
}

func (h *hostSink) take() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.frames
	h.frames = nil
	return out
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func newGeneric(t *testing.T, name string, host netmap.HostStack) (*netmap.GenericAdapter, *memBackend) {
	t.Helper()
	be := newMemBackend()
	g, err := netmap.NewGenericAdapter(name, be, netmap.GenericConfig{Slots: 64, HostRings: host != nil, Host: host})
	if err != nil {
		t.Fatal(err)
	}
	return g, be
}

func TestBwrapGenericAdapter(t *testing.T) {
	before := runtime.NumGoroutine()
	nm, r := newTestRegistry(t, func(o *Options) { o.PortGeometry.RxSlots = 256; o.Defaults.BatchSize = 16 })
	g, be := newGeneric(t, "eth0", nil)
	g.NA().Get() // the test's reference
	defer g.NA().Put()
	if err := r.AttachAdapter("vale0:eth0", g, false); err != nil {
		t.Fatal(err)
	}
	if err := r.AttachAdapter("vale0:eth1", g, false); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("second attach of the same adapter: %v, want EBUSY", err)
	}
	if err := r.AttachAdapter("vale0:x", g, true); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("attach busy adapter: %v", err)
	}
	a := openPort(t, nm, "vale0:a", mac(1))
	ext := mac(0x55)

	// NIC → switch: flooded to a, and ext is learned on eth0.
	f := ethFrame(bcast, ext, 64)
	be.inject(f)
	var got [][]byte
	eventually(t, "frame from the NIC", func() bool { got = append(got, a.recv()...); return len(got) == 1 })
	if !bytes.Equal(got[0], f) {
		t.Fatal("frame from the NIC differs")
	}
	// switch → NIC.
	f2 := ethFrame(ext, a.mac, 128)
	a.send(f2)
	out := be.sent()
	if len(out) != 1 || !bytes.Equal(out[0], f2) {
		t.Fatalf("NIC transmitted %d frames", len(out))
	}
	pi, err := r.PortInfo("vale0:eth0")
	if err != nil || pi.Kind != PortBwrap || pi.Counters.InFrames != 1 || pi.Counters.OutFrames != 1 {
		t.Fatalf("port info %+v %v", pi, err)
	}
	// A burst larger than the NIC ring arrives complete (pulled in batches).
	var burst [][]byte
	for i := 0; i < 200; i++ {
		burst = append(burst, ethFrame(a.mac, ext, 60+i))
	}
	be.inject(burst...)
	got = nil
	eventually(t, "burst from the NIC", func() bool { got = append(got, a.recv()...); return len(got) >= 200 })
	for i := range burst {
		if !bytes.Equal(got[i], burst[i]) {
			t.Fatalf("burst frame %d differs", i)
		}
	}
	if err := r.Detach("vale0:eth0"); err != nil {
		t.Fatal(err)
	}
	if g.NA().Flags()&netmap.NAFBusy != 0 || g.NA().On() {
		t.Fatal("adapter still owned after detach")
	}
	if err := r.Detach("vale0:eth0"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("second detach: %v", err)
	}
	// Re-attach works after detach.
	if err := r.AttachAdapter("vale0:eth0", g, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Detach("vale0:eth0"); err != nil {
		t.Fatal(err)
	}
	a.h.Close()
	eventually(t, "goroutines to stop", func() bool { return runtime.NumGoroutine() <= before })
}

func TestBwrapHostRings(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	sink := &hostSink{}
	g, be := newGeneric(t, "eth0", sink)
	g.NA().Get()
	defer g.NA().Put()
	if err := r.AttachAdapter("vale0:eth0", g, true); err != nil {
		t.Fatal(err)
	}
	info, _ := r.Info("vale0")
	if len(info.Ports) != 2 || info.Ports[1].Name != "vale0:eth0^" || info.Ports[1].Kind != PortHost {
		t.Fatalf("ports %+v", info.Ports)
	}
	a := openPort(t, nm, "vale0:a", mac(1))
	hostMAC := mac(0x77)
	// host stack → switch → a
	f := ethFrame(bcast, hostMAC, 98)
	if err := g.HostTransmit(f); err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	eventually(t, "frame from the host stack", func() bool { got = append(got, a.recv()...); return len(got) == 1 })
	if !bytes.Equal(got[0], f) {
		t.Fatal("host frame differs")
	}
	if fl := be.sent(); len(fl) != 1 || !bytes.Equal(fl[0], f) { // the broadcast was flooded to the NIC too
		t.Fatalf("NIC got %d flooded frames", len(fl))
	}
	// a → host stack (learned on the host port), not to the NIC.
	f2 := ethFrame(hostMAC, a.mac, 70)
	a.send(f2)
	up := sink.take()
	if len(up) != 1 || !bytes.Equal(up[0], f2) {
		t.Fatalf("host stack got %d frames", len(up))
	}
	if n := len(be.sent()); n != 0 {
		t.Fatalf("NIC got %d frames meant for the host", n)
	}
	if err := r.Detach("vale0:eth0^"); err != nil { // detaching either side unwraps both
		t.Fatal(err)
	}
	if info, _ := r.Info("vale0"); len(info.Ports) != 1 {
		t.Fatalf("ports after detach %+v", info.Ports)
	}
	// No host rings → EOPNOTSUPP.
	g2, _ := newGeneric(t, "eth1", nil)
	g2.NA().Get()
	defer g2.NA().Put()
	if err := r.AttachAdapter("vale0:eth1", g2, true); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("host attach without host rings: %v", err)
	}
}

// ATTACH by name through netmap's bridge command, for an adapter known to
// netmap, and the user side sees the port as owned (EBUSY).
func TestAttachByNameAndUserBusy(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	g, _ := newGeneric(t, "eth0", nil)
	if err := nm.Attach(g); err != nil {
		t.Fatal(err)
	}
	h := nm.Open()
	defer h.Close()
	if err := h.Register(&netmap.Req{Name: "vale0:eth0", Version: netmap.API, Cmd: netmap.BdgAttach}); err != nil {
		t.Fatal(err)
	}
	u := nm.Open()
	defer u.Close()
	if err := u.Register(&netmap.Req{Name: "eth0", Version: netmap.API, Flags: netmap.RegAllNIC}); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("user register of an attached NIC: %v, want EBUSY", err)
	}
	if err := u.Register(&netmap.Req{Name: "vale0:eth0", Version: netmap.API, Flags: netmap.RegAllNIC}); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("user register of vale0:eth0: %v, want EBUSY", err)
	}
	// LIST by name and by index.
	req := &netmap.Req{Name: "vale0:eth0", Version: netmap.API, Cmd: netmap.BdgList}
	if err := nm.Info(req); err != nil || req.Arg2 != 0 {
		t.Fatalf("list by name: %v %+v", err, req)
	}
	req = &netmap.Req{Version: netmap.API, Cmd: netmap.BdgList}
	if err := nm.Info(req); err != nil || req.Name != "vale0:eth0" {
		t.Fatalf("list by index: %v %+v", err, req)
	}
	req.Name, req.Arg2 = "", req.Arg2+1
	if err := nm.Info(req); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("list past the end: %v", err)
	}
	if err := h.Register(&netmap.Req{Name: "vale0:eth0", Version: netmap.API, Cmd: netmap.BdgDetach}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Switch("vale0"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("switch after its only port was detached: %v", err)
	}
	if err := u.Register(&netmap.Req{Name: "eth0", Version: netmap.API, Flags: netmap.RegAllNIC}); err != nil {
		t.Fatalf("user register after detach: %v", err)
	}
}

// A backend that cannot take everything at once gets the rest when it has
// room again, without new traffic (the TX ring's notify wakes the bwrap).
func TestBwrapTxBackpressure(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	g, be := newGeneric(t, "eth0", nil)
	be.txLimit = 5
	g.NA().Get()
	defer g.NA().Put()
	if err := r.AttachAdapter("vale0:eth0", g, false); err != nil {
		t.Fatal(err)
	}
	a := openPort(t, nm, "vale0:a", mac(1))
	var fs [][]byte
	for i := 0; i < 12; i++ {
		fs = append(fs, ethFrame(bcast, a.mac, 60+i))
	}
	a.send(fs...)
	var got [][]byte
	eventually(t, "all frames on the wire", func() bool { got = append(got, be.sent()...); return len(got) >= 12 })
	for i := range fs {
		if !bytes.Equal(got[i], fs[i]) {
			t.Fatalf("frame %d differs", i)
		}
	}
	if err := r.Detach("vale0:eth0"); err != nil {
		t.Fatal(err)
	}
}

// TestAttachAdapterWith: a port attached with its Deliverer and Mirror has them from the
// first frame on: the switch never writes the adapter's TX ring (the Deliverer is the
// link's only transmitter), and the mirror copies the first frame the port receives.
func TestAttachAdapterWith(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	g, be := newGeneric(t, "eth0", nil)
	g.NA().Get()
	defer g.NA().Put()
	if err := r.AttachAdapterWith("vale0:eth0", g, false, PortOptions{Mirror: &Mirror{Monitor: "eth0", RX: true}}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("attach with a mirror to itself: %v, want EINVAL", err)
	}
	if _, err := r.PortInfo("vale0:eth0"); err == nil {
		t.Fatal("a refused attach left the port")
	}
	d := &recordingDeliverer{limit: 100}
	if err := r.AttachAdapterWith("vale0:eth0", g, false, PortOptions{Deliverer: d, Mirror: &Mirror{Monitor: "a", RX: true}}); err != nil {
		t.Fatal(err)
	}
	f := ethFrame(bcast, a.mac, 64)
	a.send(f)
	d.mu.Lock()
	n := len(d.frames)
	d.mu.Unlock()
	if n != 1 {
		t.Fatalf("deliverer got %d frames, want the first one", n)
	}
	if out := be.sent(); len(out) != 0 {
		t.Fatalf("the switch wrote %d frames to the adapter's TX ring beside the Deliverer", len(out))
	}
	// RX mirror: a frame from the link reaches a as its mirror copy (it is unicast to an
	// unknown MAC, flooded to a too: two copies).
	in := ethFrame(mac(0x77), mac(0x55), 80)
	be.inject(in)
	var got [][]byte
	eventually(t, "the mirrored frame", func() bool { got = append(got, a.recv()...); return len(got) >= 2 })
	for _, g := range got {
		if !bytes.Equal(g, in) {
			t.Fatal("mirrored frame differs")
		}
	}
}
