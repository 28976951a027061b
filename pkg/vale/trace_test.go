package vale

import (
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func outPorts(tr Trace) []string {
	var o []string
	for _, x := range tr.Out {
		o = append(o, x.Port)
	}
	slices.Sort(o)
	return o
}

// TestTrace traces frames through a learning switch and then sends the same frames for real:
// each trace names the destinations the frame then reaches (unicast, broadcast, unknown
// unicast, a full ring) or the drop the counters then count (to itself, too short, too long),
// and tracing itself learns, counts and delivers nothing.
func TestTrace(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	c := openPort(t, nm, "vale0:c", mac(3))
	sw, _ := r.Switch("vale0")
	a.send(ethFrame(bcast, a.mac, 60)) // a is learned
	b.recv()
	c.recv()
	before := sw.Counters()
	fdbBefore, _ := sw.FDB()

	trace := func(port string, f []byte) Trace {
		t.Helper()
		tr, err := sw.Trace(port, f)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	// Known unicast: one destination, a's RX ring.
	uni := ethFrame(a.mac, b.mac, 64)
	tr := trace("b", uni)
	if tr.Drop != "" || tr.DstPort != "a" || len(tr.Out) != 1 || tr.Out[0].Port != "a" || !tr.Out[0].Accepted || !strings.Contains(tr.Out[0].Detail, "free slots") || !tr.Delivered() {
		t.Fatalf("unicast trace: %+v", tr)
	}
	// Broadcast and unknown unicast flood to every other port.
	for _, f := range [][]byte{ethFrame(bcast, c.mac, 64), ethFrame(mac(9), c.mac, 64)} {
		tr = trace("c", f)
		if tr.Drop != "" || (tr.Dst != DstBroadcast && tr.Dst != DstUnknown) || !slices.Equal(outPorts(tr), []string{"a", "b"}) {
			t.Fatalf("flood trace: %+v", tr)
		}
	}
	// To itself, too short, too long: dropped before any destination.
	for _, tc := range []struct {
		f    []byte
		drop string
	}{
		{ethFrame(a.mac, a.mac, 64), "no-destination"},
		{make([]byte, 13), "bad-frame"},
		{ethFrame(b.mac, a.mac, sw.Config().MaxFrame+1), "too-long"},
	} {
		if tr = trace("a", tc.f); tr.Drop != tc.drop || len(tr.Out) != 0 || tr.Delivered() {
			t.Fatalf("trace of a %d-byte frame: %+v, want dropped as %s", len(tc.f), tr, tc.drop)
		}
	}
	// Nothing moved: no counter, no FDB entry (c's and b's sources were not learned),
	// nothing received.
	if after := sw.Counters(); after != before {
		t.Fatalf("tracing moved the counters: %+v → %+v", before, after)
	}
	if fdb, _ := sw.FDB(); len(fdb) != len(fdbBefore) {
		t.Fatalf("tracing learned: %v → %v", fdbBefore, fdb)
	}
	for _, u := range []*userPort{a, b, c} {
		if got := u.recv(); len(got) != 0 {
			t.Fatalf("%s received %d frames from traces", u.name, len(got))
		}
	}
	if _, err := sw.Trace("zz", uni); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("trace from an unknown port: %v", err)
	}

	// Now for real: what the traces said happens.
	b.send(uni)
	a.expect(uni)
	a.send(ethFrame(a.mac, a.mac, 64))
	if d := sw.Counters().Drops[DropNoDest] - before.Drops[DropNoDest]; d != 1 {
		t.Fatalf("no-destination drops after a frame to itself: %d, want 1", d)
	}

	// A full ring: fill b's RX ring (b is learned now, and does not read), trace, then send
	// one more.
	f := ethFrame(b.mac, a.mac, 64)
	for a.send(f) > 0 {
		if tr = trace("a", f); !tr.Out[0].Accepted {
			break
		}
	}
	tr = trace("a", f)
	if len(tr.Out) != 1 || tr.Out[0].Accepted || tr.Out[0].Drop != "queue-full" || !strings.Contains(tr.Out[0].Detail, "has 0 free slots") {
		t.Fatalf("trace into a full ring: %+v", tr)
	}
	full := sw.Counters().Drops[DropNoSpace]
	a.send(f)
	if d := sw.Counters().Drops[DropNoSpace] - full; d != 1 {
		t.Fatalf("queue-full drops after the traced frame: %d, want 1", d)
	}
}

// TestTraceNeedsProber: a lookup that cannot decide without side effects cannot be traced.
func TestTraceNeedsProber(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	sw, _ := r.Switch("vale0")
	sw.SetLookup(&sendToPort{})
	if _, err := sw.Trace("a", ethFrame(bcast, a.mac, 60)); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("trace with a lookup that is not a Prober: %v", err)
	}
}

// dropTap is a countingTap that also records the frames its port refused.
type dropTap struct {
	countingTap
	dropped [][]byte
}

func (d *dropTap) TappedDropped(dl *Delivery) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; i < dl.Len(); i++ {
		b := make([]byte, dl.Frame(i).Len)
		d.dropped = append(d.dropped, b[:dl.CopyFrame(i, b)])
	}
}

// TestDropTap: a DropTap of a port whose ring is full gets the frames the port refused, as
// many as its queue-full drops; a plain Tap of the same port only the delivered ones.
func TestDropTap(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	sw, _ := r.Switch("vale0")
	b.send(ethFrame(bcast, b.mac, 60)) // b is learned
	a.recv()
	dt, plain := &dropTap{}, &countingTap{}
	for _, tp := range []Tap{dt, plain} {
		rm, err := sw.AddTap("b", tp)
		if err != nil {
			t.Fatal(err)
		}
		defer rm()
	}
	f := ethFrame(b.mac, a.mac, 64)
	for range 100 { // more than b's ring holds
		a.send(f)
	}
	full := sw.Counters().Drops[DropNoSpace]
	if full == 0 || uint64(len(dt.dropped)) != full || len(dt.tx)+len(dt.dropped) != 100 || len(plain.tx) != len(dt.tx) {
		t.Fatalf("%d queue-full drops; the drop tap saw %d dropped and %d delivered, the plain tap %d delivered (of 100)",
			full, len(dt.dropped), len(dt.tx), len(plain.tx))
	}
}
