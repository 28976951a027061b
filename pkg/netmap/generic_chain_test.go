package netmap

import (
	"bytes"
	"testing"
)

// chainFrame is a frame of n bytes whose content depends on seq and position.
func chainFrame(n int, seq byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = seq + byte(i*13)
	}
	return f
}

// putChain writes f on TX ring r as a slot chain of bufSize-byte fragments.
func putChain(r *Ring, f []byte, bufSize int) {
	for len(f) > 0 {
		s := &r.Slot[r.Head]
		c := copy(r.Buf(r.Head), f[:min(len(f), bufSize)])
		f = f[c:]
		s.Len = uint16(c)
		s.Flags = 0
		if len(f) > 0 {
			s.Flags = MoreFrag
		}
		r.Advance(r.Next(r.Head))
	}
}

// readChains collects the frames on RX ring r, joining NS_MOREFRAG chains, and
// returns how many slots the longest one used.
func readChains(r *Ring) (frames [][]byte, maxSlots int) {
	var cur []byte
	slots := 0
	for !r.Empty() {
		s := &r.Slot[r.Cur]
		cur = append(cur, r.Buf(r.Cur)[:s.Len]...)
		slots++
		if s.Flags&MoreFrag == 0 {
			frames = append(frames, cur)
			maxSlots = max(maxSlots, slots)
			cur, slots = nil, 0
		}
		r.Advance(r.Next(r.Cur))
	}
	return frames, maxSlots
}

// In chain mode (backend frames larger than a buffer) the generic adapter
// gathers TX chains into whole frames and scatters received frames over
// chains; outside it chains are still dropped (TestGenericAdapterGoroutines).
func TestGenericChains(t *testing.T) {
	t.Run("gather", func(t *testing.T) { testGenericChains(t, false) })
	t.Run("frags", func(t *testing.T) { testGenericChains(t, true) })
}

// fragMem is a TEST DOUBLE GenericFragBackend over memBackend: TxFrags
// records the joined frame (refusing while txCap < 0), RxScatter spreads
// the next pending frame over the offered buffers.
type fragMem struct{ *memBackend }

func (f fragMem) TxFrags(q int, frags [][]byte) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.txCap < 0 {
		return false, nil
	}
	var j []byte
	for _, p := range frags {
		j = append(j, p...)
	}
	f.sent[q] = append(f.sent[q], j)
	return true, nil
}

func (f fragMem) RxScatter(q int, bufs [][]byte) (int, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending[q]) == 0 {
		return 0, false, nil
	}
	fr := f.pending[q][0]
	f.pending[q] = f.pending[q][1:]
	n := 0
	for _, b := range bufs {
		n += copy(b, fr[n:])
	}
	if n < len(fr) {
		return 0, true, nil // dropped: does not fit
	}
	return n, true, nil
}

func testGenericChains(t *testing.T, frag bool) {
	nm := New(Config{})
	b := newMemBackend(1, 1)
	b.frame = 20000
	var be GenericBackend = b
	if frag {
		be = fragMem{b}
	}
	g, err := NewGenericAdapter("eth0", be, GenericConfig{Slots: 64, Native: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := nm.Attach(g); err != nil {
		t.Fatal(err)
	}
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "eth0"})
	bs := int(g.Mem.BufSize())

	// TX: a small frame, a 3-slot chain, an oversize chain (dropped), a 10-slot chain.
	small, mid, big := chainFrame(100, 1), chainFrame(2*bs+7, 2), chainFrame(20000, 3)
	tx := h.TxRing(0)
	putChain(tx, small, bs)
	putChain(tx, mid, bs)
	putChain(tx, chainFrame(20001, 4), bs)
	putChain(tx, big, bs)
	if err := h.TxSync(); err != nil {
		t.Fatal(err)
	}
	sent := b.sentFrames(0)
	if len(sent) != 3 || !bytes.Equal(sent[0], small) || !bytes.Equal(sent[1], mid) || !bytes.Equal(sent[2], big) {
		t.Fatalf("sent %d frames (want small, 3-slot and 10-slot chains, gathered)", len(sent))
	}
	if g.TxDropped.Load() != 1 || g.TxChains.Load() != 2 || (g.fb != nil) != frag {
		t.Errorf("TxDropped %d, TxChains %d; want 1, 2", g.TxDropped.Load(), g.TxChains.Load())
	}

	// TX: an incomplete chain waits for its end; the scratch area filling up
	// and a backend taking one frame per call still deliver everything in order.
	putChain(tx, big, bs)
	tx.Slot[(tx.Head+uint32(len(tx.Slot))-1)%uint32(len(tx.Slot))].Flags |= MoreFrag // the user has not written the end yet
	if err := h.TxSync(); err != nil {
		t.Fatal(err)
	}
	if len(b.sentFrames(0)) != 3 {
		t.Fatal("an incomplete chain was sent")
	}
	tx.Slot[(tx.Head+uint32(len(tx.Slot))-1)%uint32(len(tx.Slot))].Flags &^= MoreFrag
	b.mu.Lock()
	b.txCap = -1 // no room: nothing moves, nothing is lost
	b.mu.Unlock()
	putChain(tx, chainFrame(bs+1, 9), bs)
	if err := h.TxSync(); err != nil {
		t.Fatal(err)
	}
	if len(b.sentFrames(0)) != 3 {
		t.Fatal("frames sent while the backend had no room")
	}
	b.mu.Lock()
	b.txCap = 1
	b.mu.Unlock()
	for i := 0; i < 4; i++ {
		putChain(tx, chainFrame(bs+1, byte(10+i)), bs)
	}
	for i := 0; i < 8 && len(b.sentFrames(0)) < 9; i++ {
		if err := h.TxSync(); err != nil {
			t.Fatal(err)
		}
	}
	sent = b.sentFrames(0)
	if len(sent) != 9 || !bytes.Equal(sent[3], big) || !bytes.Equal(sent[4], chainFrame(bs+1, 9)) {
		t.Fatalf("sent %d frames; want 9 with the completed chain 4th and the refused one 5th", len(sent))
	}
	for i := 0; i < 4; i++ {
		if !bytes.Equal(sent[5+i], chainFrame(bs+1, byte(10+i))) {
			t.Errorf("frame %d differs", 5+i)
		}
	}

	// Five 10-slot chains overflow the 4-frame scratch area: it is flushed midway.
	b.mu.Lock()
	b.txCap = 0
	b.mu.Unlock()
	for i := 0; i < 5; i++ {
		putChain(tx, chainFrame(20000, byte(20+i)), bs)
	}
	if err := h.TxSync(); err != nil {
		t.Fatal(err)
	}
	sent = b.sentFrames(0)
	if len(sent) != 14 {
		t.Fatalf("sent %d frames; want 14", len(sent))
	}
	for i := 0; i < 5; i++ {
		if !bytes.Equal(sent[9+i], chainFrame(20000, byte(20+i))) {
			t.Errorf("frame %d differs", 9+i)
		}
	}

	// RX: whole frames are scattered over chains.
	b.inject(0, small, big, mid)
	if err := h.RxSync(); err != nil {
		t.Fatal(err)
	}
	got, maxSlots := readChains(h.RxRing(0))
	if len(got) != 3 || !bytes.Equal(got[0], small) || !bytes.Equal(got[1], big) || !bytes.Equal(got[2], mid) {
		t.Fatalf("received %d frames; want the three injected, intact", len(got))
	}
	if want := (len(big) + bs - 1) / bs; maxSlots != want {
		t.Errorf("longest chain %d slots; want %d", maxSlots, want)
	}
	if g.RxChains.Load() != 2 {
		t.Errorf("RxChains %d; want 2", g.RxChains.Load())
	}
	// More frames than free slots hold at the largest size wait in the backend.
	many := make([][]byte, 12)
	for i := range many {
		many[i] = chainFrame(1000, byte(i))
	}
	b.inject(0, many...)
	var all [][]byte
	for i := 0; i < 10 && len(all) < len(many); i++ {
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		f, _ := readChains(h.RxRing(0))
		all = append(all, f...)
	}
	if len(all) != len(many) {
		t.Fatalf("received %d of %d frames", len(all), len(many))
	}
	for i := range many {
		if !bytes.Equal(all[i], many[i]) {
			t.Errorf("frame %d differs", i)
		}
	}
	if frag {
		testAdaptiveRx(t, h, g, b)
	}
}

// testAdaptiveRx: over a GenericFragBackend, a run of short frames switches the adapter
// to batches (RxBatch into the scratch, copied into the slots); more frames than the ring
// holds wait in the scratch, in order; a super-frame among them arrives intact as a chain
// and switches it back to one RxScatter per frame.
func testAdaptiveRx(t *testing.T, h *Handle, g *GenericAdapter, b *memBackend) {
	t.Helper()
	rx := func(want int) [][]byte {
		var all [][]byte
		for i := 0; i < 50 && len(all) < want; i++ {
			if err := h.RxSync(); err != nil {
				t.Fatal(err)
			}
			f, _ := readChains(h.RxRing(0))
			all = append(all, f...)
		}
		return all
	}
	b.mu.Lock()
	batches0 := b.batches
	b.mu.Unlock()
	// 100 short frames and a super-frame: more than the 64-slot ring holds.
	var frames [][]byte
	for i := range 100 {
		frames = append(frames, chainFrame(60+i, byte(i)))
	}
	frames = append(frames, chainFrame(20000, 0xee))
	check := func(frames [][]byte) {
		t.Helper()
		b.inject(0, frames...)
		got := rx(len(frames))
		if len(got) != len(frames) {
			t.Fatalf("received %d of %d frames", len(got), len(frames))
		}
		for i := range frames {
			if !bytes.Equal(got[i], frames[i]) {
				t.Fatalf("frame %d (%d bytes) differs or is out of order", i, len(frames[i]))
			}
		}
	}
	check(frames)
	b.mu.Lock()
	batches := b.batches - batches0
	b.mu.Unlock()
	if batches == 0 {
		t.Fatal("no frame was received in a batch: the short frames went one system call each")
	}
	if !g.rxStash[0].big {
		t.Error("after a super-frame the adapter still takes frames in batches")
	}
	// Short frames again: back to batches once a run of them is seen.
	frames = frames[:0]
	for i := range 30 {
		frames = append(frames, chainFrame(1500, byte(0x80+i)))
	}
	check(frames)
	if g.rxStash[0].big {
		t.Error("after a run of short frames the adapter still takes one frame per call")
	}
}

func TestGenericChainConfig(t *testing.T) {
	b := newMemBackend(1, 1)
	b.frame = MaxGenericFrame + 1
	if _, err := NewGenericAdapter("x", b, GenericConfig{Slots: 64}); err == nil {
		t.Error("frame size above MaxGenericFrame accepted")
	}
	b.frame = 65535
	if _, err := NewGenericAdapter("x", b, GenericConfig{Slots: 16}); err == nil {
		t.Error("16-slot rings accepted for 33-slot chains")
	}
}

// TestGenericRxShortFrameBatches: over a GenericFragBackend, a sync that saw short frames
// only, even a single one (ping-pong traffic), puts the queue back in batch mode, where a
// batch that comes back short also tells the backend is empty; a super-frame puts it back
// in scatter mode.
func TestGenericRxShortFrameBatches(t *testing.T) {
	b := newMemBackend(1, 1)
	b.frame = 20000
	_, h := openGeneric(t, "eth0", fragMem{b}, GenericConfig{Slots: 64, Native: true})
	rx := h.RxRing(0)
	recv := func(f []byte) {
		t.Helper()
		b.inject(0, f)
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		got := 0
		for j := rx.Head; j != rx.Tail; j = rx.Next(j) {
			got += int(rx.Slot[j].Len)
		}
		if got != len(f) {
			t.Fatalf("%d bytes in the ring, want a %d-byte frame", got, len(f))
		}
		rx.Head, rx.Cur = rx.Tail, rx.Tail
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
	}
	batches := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.batches
	}
	recv(chainFrame(20000, 1)) // scatter mode
	recv(chainFrame(100, 2))   // one short frame, scattered
	if n := batches(); n != 0 {
		t.Fatalf("%d batches before any short frame came alone", n)
	}
	recv(chainFrame(100, 3)) // now in a batch
	if n := batches(); n != 1 {
		t.Fatalf("%d batches after a sync of one short frame, want 1", n)
	}
	recv(chainFrame(20000, 4)) // a super-frame in a batch, then scatter again
	recv(chainFrame(20000, 5))
	if n := batches(); n != 2 {
		t.Fatalf("%d batches, want 2 (the super-frame that ended batch mode)", n)
	}
}
