package ifcore

import (
	"testing"
)

// TestAdmit: for every discipline, Admit says what the next Enqueue of the same packet then
// does (taken, taken by evicting, refused) and changes nothing itself; the token bucket's
// state is reported.
func TestAdmit(t *testing.T) {
	for _, k := range []DisciplineKind{DiscClassic, DiscPrioClass, DiscFair} {
		t.Run(k.String(), func(t *testing.T) {
			_, sq := newSubqTest(t, 4)
			d, _ := NewDiscipline(k)
			sq.SetDiscipline(d)
			check := func(p *Packet) {
				t.Helper()
				l, drops := sq.Len(), sq.Drops()
				a := sq.Admit(p)
				if !a.Known || a.Discipline != k.String() {
					t.Fatalf("admission %+v: want the %s discipline's own decision", a, k)
				}
				if sq.Len() != l || sq.Drops() != drops {
					t.Fatal("Admit changed the queue")
				}
				err := sq.Enqueue(p)
				switch {
				case a.OK != (err == nil):
					t.Fatalf("Admit said ok=%v, Enqueue returned %v", a.OK, err)
				case a.Evict != (sq.Drops() == drops+1 && err == nil):
					t.Fatalf("Admit said evict=%v; drops %d → %d", a.Evict, drops, sq.Drops())
				}
			}
			for i := range 4 {
				p := pkt(100+i, 0)
				p.Class, p.Hash = 3, 7
				check(p) // taken
			}
			p := pkt(60, 0)
			p.Class, p.Hash = 3, 7
			check(p) // refused (classic, prioclass: nothing lower; fair: its own bucket is the fattest... with more than one packet: evicts)
			hi := pkt(61, PktPrio)
			hi.Class, hi.Hash = 0, 8
			check(hi) // evicts (classic: priority; prioclass: higher band; fair: another flow)
			sq.Purge()
		})
	}
	_, sq := newSubqTest(t, 4)
	p := pkt(60, 0)
	defer p.Free()
	if a := sq.Admit(p); a.Rate != nil {
		t.Fatalf("rate state without a regulator: %+v", a.Rate)
	}
	sq.SetRate(&Rate{PktsPerSec: 100, BurstPkts: 1})
	if a := sq.Admit(p); a.Rate == nil || a.Rate.Rate.PktsPerSec != 100 || a.Rate.PktTokens != 1 || a.Rate.Wait != 0 {
		t.Fatalf("rate state: %+v", a.Rate)
	}
}
