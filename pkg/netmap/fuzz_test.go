package netmap

import (
	"encoding/binary"
	"testing"
)

// bareKring builds a kring with n slots outside any adapter, for the
// prologue fuzzers.
func bareKring(n uint32) *Kring {
	pool, err := NewPool(int(n)+reservedBufs, 64)
	if err != nil {
		panic(err)
	}
	r := &Ring{NumSlots: n, BufSize: 64, Slot: make([]Slot, n), pool: pool}
	for i := range r.Slot {
		r.Slot[i].BufIdx, _ = pool.Alloc()
	}
	return &Kring{Ring: r, NumSlots: n}
}

// cyc is the reference model: (b - a) mod n for a, b < n.
func cyc(a, b, n uint32) uint32 { return (b + n - a) % n }

func FuzzTxPrologue(f *testing.F) {
	f.Add(uint8(8), uint8(0), uint8(7), uint8(0), uint8(7), uint8(3), uint8(3), uint8(7))
	f.Add(uint8(8), uint8(6), uint8(2), uint8(6), uint8(2), uint8(7), uint8(9), uint8(2))
	f.Add(uint8(8), uint8(6), uint8(2), uint8(6), uint8(2), uint8(4), uint8(4), uint8(2))
	f.Add(uint8(8), uint8(6), uint8(2), uint8(6), uint8(2), uint8(7), uint8(5), uint8(5))
	f.Add(uint8(2), uint8(1), uint8(0), uint8(1), uint8(0), uint8(1), uint8(0), uint8(0))
	f.Add(uint8(8), uint8(9), uint8(7), uint8(0), uint8(7), uint8(3), uint8(3), uint8(7))
	f.Fuzz(func(t *testing.T, nn, hwcur, hwtail, rhead, rtail, head, cur, tail uint8) {
		n := uint32(nn)%63 + 2
		k := bareKring(n)
		k.NrHwcur.Store(uint32(hwcur))
		k.NrHwtail.Store(uint32(hwtail))
		k.RHead, k.RCur, k.RTail = uint32(rhead), uint32(rhead), uint32(rtail)
		r := k.Ring
		r.Head, r.Cur, r.Tail = uint32(head), uint32(cur), uint32(tail)

		kernelOK := uint32(hwcur) < n && uint32(hwtail) < n && uint32(rhead) < n && uint32(rtail) < n
		userOK := uint32(head) < n && uint32(cur) < n
		want := kernelOK && userOK &&
			cyc(uint32(rhead), uint32(head), n) <= cyc(uint32(rhead), uint32(rtail), n) &&
			cyc(uint32(head), uint32(cur), n) <= cyc(uint32(head), uint32(rtail), n)

		got, ok := k.TxSyncPrologue()
		if ok != want {
			t.Fatalf("n %d hwcur %d hwtail %d rhead %d rtail %d head %d cur %d: ok %v, model %v", n, hwcur, hwtail, rhead, rtail, head, cur, ok, want)
		}
		if ok {
			if got != uint32(head) || k.RHead != uint32(head) || k.RCur != uint32(cur) || r.Tail != uint32(rtail) {
				t.Fatalf("accepted but state %d/%d/%d tail %d", got, k.RHead, k.RCur, r.Tail)
			}
			return
		}
		if got < n || k.RHead != uint32(rhead) || k.RCur != uint32(rhead) {
			t.Fatalf("rejected but returned %d or changed rhead/rcur", got)
		}
		if !kernelOK {
			return
		}
		// Recovery never trusts user memory.
		k.Reinit()
		if r.Head != uint32(hwcur) || r.Cur != uint32(hwcur) || r.Tail != uint32(hwtail) || k.RTail != uint32(hwtail) {
			t.Fatalf("reinit left head %d cur %d tail %d", r.Head, r.Cur, r.Tail)
		}
	})
}

func FuzzRxPrologue(f *testing.F) {
	f.Add(uint8(8), uint8(2), uint8(5), uint8(3), uint8(4), uint8(5))
	f.Add(uint8(8), uint8(6), uint8(1), uint8(7), uint8(4), uint8(1))
	f.Add(uint8(8), uint8(6), uint8(1), uint8(0), uint8(1), uint8(1))
	f.Add(uint8(8), uint8(2), uint8(5), uint8(6), uint8(6), uint8(5))
	f.Add(uint8(8), uint8(8), uint8(5), uint8(6), uint8(6), uint8(5))
	f.Fuzz(func(t *testing.T, nn, hwcur, hwtail, head, cur, tail uint8) {
		n := uint32(nn)%63 + 2
		k := bareKring(n)
		k.NrHwcur.Store(uint32(hwcur))
		k.NrHwtail.Store(uint32(hwtail))
		k.RHead, k.RCur, k.RTail = uint32(hwcur)%n, uint32(hwcur)%n, uint32(hwtail)%n
		r := k.Ring
		r.Head, r.Cur, r.Tail = uint32(head), uint32(cur), uint32(tail)
		oldRHead := k.RHead

		kernelOK := uint32(hwcur) < n && uint32(hwtail) < n
		want := kernelOK && uint32(head) < n && uint32(cur) < n &&
			cyc(uint32(hwcur), uint32(head), n) <= cyc(uint32(hwcur), uint32(hwtail), n) &&
			cyc(uint32(head), uint32(cur), n) <= cyc(uint32(head), uint32(hwtail), n)
		got, ok := k.RxSyncPrologue()
		if ok != want {
			t.Fatalf("n %d hwcur %d hwtail %d head %d cur %d: ok %v model %v", n, hwcur, hwtail, head, cur, ok, want)
		}
		if ok {
			if got != uint32(head) || k.RHead != uint32(head) || k.RCur != uint32(cur) || r.Tail != k.RTail {
				t.Fatal("accepted but state wrong")
			}
			return
		}
		if k.RHead != oldRHead {
			t.Fatal("rejected values were stored")
		}
		if kernelOK {
			k.Reinit()
			if r.Head != uint32(hwcur) || r.Cur != uint32(hwcur) || r.Tail != uint32(hwtail) {
				t.Fatal("reinit did not reset to the kernel view")
			}
		}
	})
}

// ringModel drives a pipe (master TX -> slave RX) from an operation string
// and checks it against a simple model: frames carry sequence numbers and
// must arrive exactly in order, once, intact; a reinit rolls the producer
// back to hwcur and the consumer back to its last release. CheckInvariants
// runs on both rings after every step.
type ringModel struct {
	t        testing.TB
	m, s     *Handle
	n        uint32
	produced uint32   // next sequence number the producer writes
	expect   uint32   // next sequence number the consumer must read
	released uint32   // sequence at the consumer's hwcur
	txSeq    []uint32 // sequence written into each master TX slot
}

func frameLen(seq uint32) uint16 { return uint16(8 + seq%50) }

func (m *ringModel) produce(k int) {
	r := m.m.TxRing(0)
	for ; k > 0 && r.Space() > 0; k-- {
		i := r.Head
		buf := r.Buf(i)
		binary.LittleEndian.PutUint32(buf, m.produced)
		binary.LittleEndian.PutUint32(buf[4:], ^m.produced)
		r.Slot[i].Len = frameLen(m.produced)
		m.txSeq[i] = m.produced
		m.produced++
		r.Advance(r.Next(i))
	}
}

func (m *ringModel) consume(k int) {
	r := m.s.RxRing(0)
	for ; k > 0 && r.Cur != r.Tail; k-- {
		i := r.Cur
		buf := r.Buf(i)
		seq := binary.LittleEndian.Uint32(buf)
		if seq != m.expect || binary.LittleEndian.Uint32(buf[4:]) != ^seq || r.Slot[i].Len != frameLen(seq) {
			m.t.Fatalf("read seq %d (len %d), want %d", seq, r.Slot[i].Len, m.expect)
		}
		m.expect++
		r.Advance(r.Next(i))
	}
}

func (m *ringModel) check(h *Handle, t Direction) {
	if err := h.Kring(t, 0).CheckInvariants(); err != nil {
		m.t.Fatal(err)
	}
	if r := h.Ring(t, 0); r.Space() > m.n-1 {
		m.t.Fatalf("%s ring exposes %d slots", t, r.Space())
	}
}

func (m *ringModel) step(op byte) {
	arg := int(op >> 3)
	switch op % 8 {
	case 0:
		m.produce(arg)
	case 1:
		if err := m.m.TxSync(); err != nil {
			m.t.Fatal(err)
		}
		m.check(m.m, TX)
	case 2:
		if err := m.s.RxSync(); err != nil {
			m.t.Fatal(err)
		}
		m.released = m.expect
		m.check(m.s, RX)
	case 3:
		m.consume(arg)
	case 4:
		// The lock-free check answers without a sync when frames are
		// already visible.
		synced := m.s.RxRing(0).Empty()
		if ev := m.s.PollNow(PollIn); ev&PollErr != 0 {
			m.t.Fatalf("poll in: %#x", ev)
		}
		if synced {
			m.released = m.expect
			m.check(m.s, RX)
		}
	case 5:
		r := m.m.TxRing(0)
		synced := r.Empty() || r.Cur != m.m.Kring(TX, 0).NrHwcur.Load()
		if ev := m.m.PollNow(PollOut); ev&PollErr != 0 {
			m.t.Fatalf("poll out: %#x", ev)
		}
		if synced {
			m.check(m.m, TX)
		}
	case 6: // producer writes garbage into head: reinit, staged frames are lost
		r, k := m.m.TxRing(0), m.m.Kring(TX, 0)
		hwcur := k.NrHwcur.Load()
		if hwcur != r.Head {
			m.produced = m.txSeq[hwcur]
		}
		r.Head = m.n + uint32(arg)
		if err := m.m.TxSync(); err != nil {
			m.t.Fatal(err)
		}
		if r.Head != hwcur || r.Cur != hwcur {
			m.t.Fatalf("TX reinit: head %d, want hwcur %d", r.Head, hwcur)
		}
		m.check(m.m, TX)
	case 7: // consumer writes garbage into cur: reinit, unreleased frames come back
		r := m.s.RxRing(0)
		r.Cur = m.n + uint32(arg)
		if err := m.s.RxSync(); err != nil {
			m.t.Fatal(err)
		}
		m.expect = m.released
		m.check(m.s, RX)
	}
}

func runRingModel(t testing.TB, n uint32, ops []byte) {
	nm, _ := newMem(t, g8(1, 1), false)
	m, s := nm.Open(), nm.Open()
	mustRegister(t, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 1, TxSlots: n})
	mustRegister(t, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 1})
	pool := PipePool(m.Adapter())
	rm := &ringModel{t: t, m: m, s: s, n: n, txSeq: make([]uint32, n)}
	for _, op := range ops {
		rm.step(op)
		rm.check(m, TX) // after every step, user-only steps included
		rm.check(s, RX)
	}
	// Drain: everything committed must arrive, in order.
	for i := 0; i < 4*int(n) && rm.expect != rm.produced; i++ {
		r := m.TxRing(0)
		r.Advance(r.Head)
		rm.step(1)
		rm.step(2)
		rm.consume(int(n))
		rm.step(2)
	}
	if rm.expect != rm.produced {
		t.Fatalf("drained to %d, produced %d", rm.expect, rm.produced)
	}
	m.Close()
	s.Close()
	if o := pool.Outstanding(); o != 0 {
		t.Fatalf("outstanding buffers %d", o)
	}
}

func FuzzRingOps(f *testing.F) {
	f.Add(uint8(8), []byte{0x38, 1, 2, 0x3b, 2})
	f.Add(uint8(4), []byte{0xf8, 1, 1, 0xf8, 1, 2, 0x0b, 7, 3 | 8<<3, 2, 6, 1, 2})
	f.Add(uint8(16), []byte{0xff, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xf8, 0x40, 0x41, 0x42, 0x43})
	f.Add(uint8(2), []byte{0x08, 1, 4, 3 | 1<<3, 5, 2, 0x08, 6, 7})
	f.Fuzz(func(t *testing.T, nn uint8, ops []byte) {
		if len(ops) > 1024 {
			ops = ops[:1024]
		}
		runRingModel(t, uint32(nn)%30+2, ops)
	})
}
