package netmap

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

func frame(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// hostSetup: a generic adapter with host rings, 1 TX / 1 RX queue, 8 slots,
// bound NIC_SW (all rings, host included) on one handle.
func hostSetup(t *testing.T, cfg Config) (*Netmap, *GenericAdapter, *memBackend, *hostSink, *Handle) {
	t.Helper()
	nm := New(cfg)
	sink := &hostSink{}
	g, b := newGeneric(t, nm, "eth0", 1, 1, 8, true, sink)
	h := nm.Open()
	t.Cleanup(func() { h.Close() })
	mustRegister(t, h, Req{Name: "eth0", Flags: RegNICSW})
	return nm, g, b, sink, h
}

func TestNT17_HostTransmit(t *testing.T) {
	nm := New(Config{})
	g, _ := newGeneric(t, nm, "eth0", 1, 1, 8, true, nil)
	if err := g.HostTransmit(frame(60, 1)); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("not in netmap mode: %v", err)
	}
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "eth0", Flags: RegSW})
	hk := h.Kring(RX, 1)
	notifies := 0
	inner := hk.Notify
	hk.Notify = func(k *Kring, f uint32) { notifies++; inner(k, f) }

	// D-N16: oversize is ENOBUFS, not EMSGSIZE.
	if err := g.HostTransmit(frame(int(g.Mem.BufSize())+1, 1)); !errors.Is(err, syscall.ENOBUFS) {
		t.Errorf("oversize: %v", err)
	}
	// The user holds 3 slots.
	for i := 0; i < 3; i++ {
		if err := g.HostTransmit(frame(60, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.RxSync(); err != nil {
		t.Fatal(err)
	}
	if s := h.RxRing(1).Space(); s != 3 {
		t.Fatalf("user holds %d", s)
	}
	for i := 0; i < 4; i++ {
		if err := g.HostTransmit(frame(60, byte(i))); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if err := g.HostTransmit(frame(60, 9)); !errors.Is(err, syscall.ENOBUFS) {
		t.Errorf("5th frame: %v, want ENOBUFS (3 + 4 >= 7)", err)
	}
	if g.HostQueueLen() != 4 {
		t.Errorf("queue %d", g.HostQueueLen())
	}
	if notifies != 9 {
		t.Errorf("notify called %d times, want 9 (every outcome)", notifies)
	}
}

func TestNT18_HostRxSync(t *testing.T) {
	nm := New(Config{})
	g, _ := newGeneric(t, nm, "eth0", 1, 1, 8, true, nil)
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "eth0", Flags: RegSW})
	r := h.RxRing(1)
	k := h.Kring(RX, 1)
	// Move hwtail away from 0 first.
	for i := 0; i < 2; i++ {
		_ = g.HostTransmit(frame(20, 0xee))
	}
	_ = h.RxSync()
	r.Advance(r.Tail)
	_ = h.RxSync()
	if k.NrHwcur.Load() != 2 {
		t.Fatalf("released slots did not advance hwcur: %d", k.NrHwcur.Load())
	}
	k.NkrSlotFlags = Forward
	for i := 0; i < 3; i++ {
		if err := g.HostTransmit(frame(30+i, byte(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	oldTail := k.NrHwtail.Load()
	if err := h.RxSync(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		j := k.Add(oldTail, uint32(i))
		s := r.Slot[j]
		if s.Len != uint16(30+i) || s.Flags != Forward || r.Buf(j)[0] != byte(i+1) {
			t.Errorf("slot %d: len %d flags %#x data %d", j, s.Len, s.Flags, r.Buf(j)[0])
		}
	}
	if g.HostQueueLen() != 0 {
		t.Errorf("source packets not freed: %d queued", g.HostQueueLen())
	}
}

// TestNT19_HostTxSync: netmap_txsync_to_host grabs with force=1, so every
// slot in [hwcur, head) goes to the host stack in ring order whatever its
// NS_FORWARD flag; slots shorter than an Ethernet header or longer than a
// buffer are consumed without being delivered. As in netmap_grab_packets,
// NS_FORWARD is cleared on the delivered slots (other flags kept) and the
// skipped slots are left as they were. Afterwards hwcur = head and
// hwtail = nm_prev(head). The second sync starts at a non-zero hwcur and
// wraps.
func TestNT19_HostTxSync(t *testing.T) {
	nm := New(Config{})
	sink := &hostSink{}
	g, _ := newGeneric(t, nm, "eth0", 1, 1, 8, true, sink)
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "eth0", Flags: RegSW})
	r := h.TxRing(1)
	k := h.Kring(TX, 1)
	bufSize := int(g.Mem.BufSize())
	type slot struct {
		len   int
		flags uint16
	}
	var delivered, total int
	round := func(slots []slot) {
		t.Helper()
		first := r.Head
		if first != k.NrHwcur.Load() {
			t.Fatalf("head %d, hwcur %d", first, k.NrHwcur.Load())
		}
		var want [][]byte
		var idx []uint32
		for _, c := range slots {
			j := r.Head
			tag := byte(0x40 + total)
			total++
			f := frame(min(c.len, bufSize), tag)
			copy(r.Buf(j), f)
			r.Slot[j].Len = uint16(c.len)
			r.Slot[j].Flags = c.flags
			if c.len >= 14 && c.len <= bufSize {
				want = append(want, f)
			}
			idx = append(idx, j)
			r.Advance(r.Next(j))
		}
		head := r.Head
		if err := h.TxSync(); err != nil {
			t.Fatal(err)
		}
		got := sink.got()[delivered:]
		delivered += len(got)
		if len(got) != len(want) {
			t.Fatalf("delivered %d frames, want %d (every slot of a good length, Forward or not)", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("frame %d: len %d tag %#x, want len %d tag %#x", i, len(got[i]), got[i][0], len(want[i]), want[i][0])
			}
		}
		for i, c := range slots {
			fl := r.Slot[idx[i]].Flags
			exp := c.flags
			if c.len >= 14 && c.len <= bufSize {
				exp &^= Forward
			}
			if fl != exp {
				t.Errorf("slot %d (len %d, flags %#x): flags %#x after the sync, want %#x", idx[i], c.len, c.flags, fl, exp)
			}
		}
		if k.NrHwcur.Load() != head || k.NrHwtail.Load() != k.Prev(head) || r.Tail != k.Prev(head) {
			t.Fatalf("head %d: hwcur %d hwtail %d tail %d, want %d %d %d",
				head, k.NrHwcur.Load(), k.NrHwtail.Load(), r.Tail, head, k.Prev(head), k.Prev(head))
		}
	}
	round([]slot{
		{60, 0},                // delivered without Forward
		{10, Forward},          // too short: consumed, untouched
		{14, Forward | Report}, // delivered, Forward cleared, Report kept
		{bufSize + 1, Forward}, // too long: consumed, untouched
		{100, 0},               // delivered without Forward
	})
	round([]slot{ // slots 5, 6, 7, 0, 1
		{20, Forward},
		{30, 0},
		{13, 0},
		{bufSize, 0},
		{61, Forward},
	})
	if delivered != 7 {
		t.Fatalf("delivered %d frames in all, want 7", delivered)
	}
}

func TestNT20_TransparentMode(t *testing.T) {
	t.Run("NIC RX to host: poll only, Forward slots only", func(t *testing.T) {
		_, _, b, sink, h := hostSetup(t, Config{})
		r := h.RxRing(0)
		r.Flags |= RingForward
		b.inject(0, frame(60, 1), frame(60, 2), frame(60, 3))
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		if r.Space() != 3 {
			t.Fatalf("rx space %d", r.Space())
		}
		r.Slot[r.Cur].Flags |= Forward
		r.Slot[r.Next(r.Next(r.Cur))].Flags |= Forward
		r.Advance(r.Tail)
		// RXSYNC does not forward.
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		if n := len(sink.got()); n != 0 {
			t.Fatalf("RXSYNC forwarded %d frames", n)
		}
		// Now through poll.
		b.inject(0, frame(60, 4), frame(60, 5))
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		s0 := r.Cur
		r.Slot[s0].Flags |= Forward
		r.Advance(r.Tail)
		h.PollNow(PollIn)
		got := sink.got()
		if len(got) != 1 || got[0][0] != 4 {
			t.Fatalf("poll forwarded %d frames", len(got))
		}
		if r.Slot[s0].Flags&Forward != 0 {
			t.Error("Forward not cleared on a forwarded slot")
		}
	})
	t.Run("fwd=1 forwards every released slot", func(t *testing.T) {
		_, _, b, sink, h := hostSetup(t, Config{Fwd: true})
		r := h.RxRing(0)
		b.inject(0, frame(60, 1), frame(60, 2))
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		r.Advance(r.Tail)
		h.PollNow(PollIn)
		if n := len(sink.got()); n != 2 {
			t.Errorf("forwarded %d, want 2", n)
		}
	})
	t.Run("host RX to NIC TX: buffer swap, BufChanged, transmitted (D-N8)", func(t *testing.T) {
		_, g, b, _, h := hostSetup(t, Config{})
		hr := h.RxRing(1)
		hr.Flags |= RingForward
		h.Kring(RX, 1).NkrSlotFlags = Forward
		for i := 0; i < 3; i++ {
			if err := g.HostTransmit(frame(60, byte(10+i))); err != nil {
				t.Fatal(err)
			}
		}
		if ev := h.PollNow(PollIn); ev&PollIn == 0 {
			t.Fatalf("poll did not report the host frames: %#x", ev)
		}
		if hr.Space() != 3 {
			t.Fatalf("host ring holds %d", hr.Space())
		}
		srcIdx := hr.Slot[hr.Cur].BufIdx
		hr.Slot[hr.Next(hr.Cur)].Flags = 0 // the application drops this one
		tx := h.TxRing(0)
		dstIdx := tx.Slot[tx.Head].BufIdx
		hr.Advance(hr.Tail)
		h.PollNow(PollIn)
		sent := b.sentFrames(0)
		if len(sent) != 2 || sent[0][0] != 10 || sent[1][0] != 12 {
			t.Fatalf("NIC sent %d frames", len(sent))
		}
		if tx.Slot[0].BufIdx != srcIdx || tx.Slot[0].Flags != BufChanged {
			t.Errorf("TX slot: idx %d (want %d) flags %#x", tx.Slot[0].BufIdx, srcIdx, tx.Slot[0].Flags)
		}
		if hr.Slot[0].BufIdx != dstIdx || hr.Slot[0].Flags != BufChanged {
			t.Errorf("host slot: idx %d (want %d) flags %#x", hr.Slot[0].BufIdx, dstIdx, hr.Slot[0].Flags)
		}
		if err := h.Kring(TX, 0).CheckInvariants(); err != nil {
			t.Error(err)
		}
	})
}

// TestDN02_HostKringSyncPerDirection: with num_rx != num_tx the host RX kring
// still gets rxsync_from_host (the seed keyed it on num_tx_rings).
func TestDN02_HostKringSyncPerDirection(t *testing.T) {
	nm := New(Config{})
	g, _ := newGeneric(t, nm, "eth0", 3, 1, 8, true, nil)
	h := nm.Open()
	defer h.Close()
	mustRegister(t, h, Req{Name: "eth0", Flags: RegSW})
	if err := g.HostTransmit(frame(60, 7)); err != nil {
		t.Fatal(err)
	}
	if err := h.RxSync(); err != nil {
		t.Fatal(err)
	}
	if r := h.RxRing(1); r.Space() != 1 || r.Buf(r.Cur)[0] != 7 {
		t.Errorf("host RX ring of a 3 TX / 1 RX adapter did not import (space %d)", r.Space())
	}
}
