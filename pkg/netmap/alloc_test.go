package netmap

import "testing"

// TestHotPathAllocs: syncs, slot walks, buffer access and a satisfied poll
// allocate nothing.
func TestHotPathAllocs(t *testing.T) {
	nm, _ := newMem(t, g8(1, 1), false)
	m, s := nm.Open(), nm.Open()
	defer m.Close()
	defer s.Close()
	mustRegister(t, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 1, TxSlots: 64})
	mustRegister(t, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 1})
	tx, rx := m.TxRing(0), s.RxRing(0)
	pipe := func() {
		for tx.Space() > 0 {
			tx.Buf(tx.Head)[0] = 1
			tx.Slot[tx.Head].Len = 64
			tx.Advance(tx.Next(tx.Head))
		}
		_ = m.TxSync()
		_ = s.PollNow(PollIn)
		for !rx.Empty() {
			_ = rx.Buf(rx.Cur)[0]
			rx.Advance(rx.Next(rx.Cur))
		}
		_ = s.RxSync()
	}
	if n := testing.AllocsPerRun(200, pipe); n != 0 {
		t.Errorf("pipe round: %v allocs", n)
	}

	a, _ := NewMemPort("a", Geometry{1, 1, 64, 64}, 0, 0)
	b, _ := NewMemPort("b", Geometry{1, 1, 64, 64}, 0, 0)
	_ = ConnectMemPorts(a, b)
	_ = nm.Attach(a)
	_ = nm.Attach(b)
	ha, hb := nm.Open(), nm.Open()
	defer ha.Close()
	defer hb.Close()
	mustRegister(t, ha, Req{Name: "a"})
	mustRegister(t, hb, Req{Name: "b"})
	atx, brx := ha.TxRing(0), hb.RxRing(0)
	copyRound := func() {
		for i := 0; i < 16; i++ {
			atx.Slot[atx.Head].Len = 64
			atx.Advance(atx.Next(atx.Head))
		}
		_ = ha.TxSync()
		_ = hb.RxSync()
		brx.Advance(brx.Tail)
		_ = hb.RxSync()
	}
	if n := testing.AllocsPerRun(200, copyRound); n != 0 {
		t.Errorf("memport copy round: %v allocs", n)
	}
	if a.Dropped.Load() != 0 {
		t.Errorf("dropped %d", a.Dropped.Load())
	}
}
