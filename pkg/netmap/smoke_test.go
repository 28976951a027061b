package netmap

import (
	"context"
	"testing"
	"time"
)

func TestPipeSmoke(t *testing.T) {
	nm, p := newMem(t, g8(1, 1), false)
	m, s := nm.Open(), nm.Open()
	mustRegister(t, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 1})
	mustRegister(t, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 1})
	tx := m.TxRing(0)
	fillTx(tx, 5, 60, 1)
	if err := m.TxSync(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ev, err := s.Poll(ctx, PollIn)
	if err != nil || ev&PollIn == 0 {
		t.Fatalf("poll: %v %v", ev, err)
	}
	rx := s.RxRing(0)
	if rx.Space() != 5 {
		t.Fatalf("space %d", rx.Space())
	}
	if rx.Buf(rx.Cur)[0] != 1 {
		t.Fatal("bad data")
	}
	m.Close()
	s.Close()
	if err := nm.Detach("m0"); err != nil {
		t.Fatal(err)
	}
	if o := p.Mem.Outstanding(); o != 0 {
		t.Fatalf("outstanding %d", o)
	}
}
