package netmap

import (
	"context"
	"sync"
	"testing"
)

// memBackend is a TEST DOUBLE for GenericBackend: in-memory queues standing
// in for an AF_XDP/AF_PACKET socket. Sent frames are recorded per queue;
// frames to receive are injected with inject. Readiness uses channels, so
// WaitReady blocks without polling.
type memBackend struct {
	mu      sync.Mutex
	ntx     int
	nrx     int
	frame   int
	txCap   int // max frames accepted per TxBatch call (0 = unlimited, <0 = none)
	blockQ  map[int]bool
	sent    [][][]byte
	pending [][][]byte
	rxReady []chan struct{}
	txReady chan struct{}
	closed  bool
	closes  int
	batches int // RxBatch calls that returned frames
}

func newMemBackend(ntx, nrx int) *memBackend {
	b := &memBackend{ntx: ntx, nrx: nrx, frame: 1514, sent: make([][][]byte, ntx), pending: make([][][]byte, nrx), txReady: make(chan struct{}, 1)}
	for i := 0; i < nrx; i++ {
		b.rxReady = append(b.rxReady, make(chan struct{}, 1))
	}
	return b
}

func (b *memBackend) Queues() (int, int) { return b.ntx, b.nrx }
func (b *memBackend) FrameSize() int     { return b.frame }

func (b *memBackend) TxBatch(q int, frames [][]byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(frames)
	if b.txCap > 0 && n > b.txCap {
		n = b.txCap
	}
	if b.txCap < 0 || b.blockQ[q] {
		n = 0
	}
	for _, f := range frames[:n] {
		b.sent[q] = append(b.sent[q], append([]byte(nil), f...))
	}
	return n, nil
}

func (b *memBackend) RxBatch(q int, bufs [][]byte, lens []int) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for n < len(bufs) && len(b.pending[q]) > 0 {
		lens[n] = copy(bufs[n], b.pending[q][0])
		b.pending[q] = b.pending[q][1:]
		n++
	}
	if n > 0 {
		b.batches++
	}
	return n, nil
}

func (b *memBackend) WaitReady(ctx context.Context, q int, dir Direction) error {
	ch := b.txReady
	if dir == RX {
		b.mu.Lock()
		has := len(b.pending[q]) > 0
		b.mu.Unlock()
		if has {
			return nil
		}
		ch = b.rxReady[q]
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
		return nil
	}
}

func (b *memBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.closes++
	return nil
}

func (b *memBackend) inject(q int, frames ...[]byte) {
	b.mu.Lock()
	for _, f := range frames {
		b.pending[q] = append(b.pending[q], append([]byte(nil), f...))
	}
	b.mu.Unlock()
	select {
	case b.rxReady[q] <- struct{}{}:
	default:
	}
}

func (b *memBackend) sentFrames(q int) [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.sent[q]...)
}

// hostSink is a TEST DOUBLE HostStack that records what is sent up.
type hostSink struct {
	mu     sync.Mutex
	frames [][]byte
}

func (h *hostSink) SendUp(frames [][]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range frames {
		h.frames = append(h.frames, append([]byte(nil), f...))
	}
}

func (h *hostSink) got() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.frames...)
}

// newMem returns a netmap instance with a registered MemPort "m0".
func newMem(t testing.TB, g Geometry, host bool) (*Netmap, *MemPort) {
	t.Helper()
	nm := New(Config{})
	p, err := NewMemPort("m0", g, 0, 16)
	if err != nil {
		t.Fatal(err)
	}
	if host {
		p.SetFlags(NAFHostRings)
	}
	if err := nm.Attach(p); err != nil {
		t.Fatal(err)
	}
	return nm, p
}

func g8(ntx, nrx int) Geometry { return Geometry{ntx, nrx, 8, 8} }

func mustRegister(t testing.TB, h *Handle, req Req) *Req {
	t.Helper()
	if req.Version == 0 {
		req.Version = API
	}
	if err := h.Register(&req); err != nil {
		t.Fatalf("register %+v: %v", req, err)
	}
	return &req
}

// newGeneric attaches a generic adapter over a memBackend under name.
func newGeneric(t testing.TB, nm *Netmap, name string, ntx, nrx int, slots uint32, host bool, sink HostStack) (*GenericAdapter, *memBackend) {
	t.Helper()
	b := newMemBackend(ntx, nrx)
	g, err := NewGenericAdapter(name, b, GenericConfig{Slots: slots, HostRings: host, Native: true, Host: sink})
	if err != nil {
		t.Fatal(err)
	}
	if err := nm.Attach(g); err != nil {
		t.Fatal(err)
	}
	return g, b
}

// openGeneric attaches a generic adapter over b under name to a new Netmap and registers
// a handle on all its rings; both go at the end of the test.
func openGeneric(t testing.TB, name string, b GenericBackend, cfg GenericConfig) (*GenericAdapter, *Handle) {
	t.Helper()
	g, err := NewGenericAdapter(name, b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	nm := New(Config{})
	if err := nm.Attach(g); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nm.Detach(name) })
	h := nm.Open()
	t.Cleanup(func() { h.Close() })
	mustRegister(t, h, Req{Name: name})
	return g, h
}

// send fills n frames on TX ring r starting at head, each frame filled with
// its sequence byte, and advances head/cur.
func fillTx(r *Ring, n int, size int, seq byte) {
	for i := 0; i < n; i++ {
		s := &r.Slot[r.Head]
		b := r.Buf(r.Head)
		for j := 0; j < size; j++ {
			b[j] = seq
		}
		s.Len = uint16(size)
		seq++
		r.Advance(r.Next(r.Head))
	}
}
