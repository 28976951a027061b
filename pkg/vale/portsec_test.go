package vale

import (
	"bytes"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// A known-only port gets the unicast addressed to it and broadcast, never
// unknown unicast; other ports still get unknown unicast flooded, and every
// port gets its frames in source order.
func TestKnownOnlyPort(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	k := openPort(t, nm, "vale0:k", mac(3))
	c := openPort(t, nm, "vale0:c", mac(4))
	sw, _ := r.Switch("vale0")
	if err := sw.SetKnownOnly("nope", true); !errors.Is(err, ErrNoPort) {
		t.Fatalf("known-only on a missing port: %v", err)
	}
	if err := sw.SetKnownOnly("k", true); err != nil {
		t.Fatal(err)
	}
	stranger := mac(0x77)
	u := ethFrame(stranger, a.mac, 64)
	a.send(u)
	b.expect(u)
	c.expect(u)
	k.expect()
	bc := ethFrame(bcast, a.mac, 65)
	a.send(bc)
	b.expect(bc)
	c.expect(bc)
	k.expect(bc)
	// Once the switch knows k's and b's addresses, their unicast reaches
	// them alone.
	for _, p := range []*userPort{k, b} {
		p.send(ethFrame(bcast, p.mac, 60))
		a.recv()
		b.recv()
		c.recv()
		k.recv()
	}
	toK := ethFrame(k.mac, a.mac, 66)
	a.send(toK)
	k.expect(toK)
	b.expect()
	c.expect()

	// A mixed batch: k and b each have unicast (merged with the broadcast
	// and, for b, the unknown list), c only floods.
	var all, forK, forB, forC [][]byte
	for i, kind := range "UBKUPKBUPBUK" {
		var f []byte
		switch kind {
		case 'U':
			f = ethFrame(mac(0x70, byte(i)), a.mac, 64+i)
		case 'B':
			f = ethFrame(bcast, a.mac, 64+i)
		case 'K':
			f = ethFrame(k.mac, a.mac, 64+i)
		case 'P':
			f = ethFrame(b.mac, a.mac, 64+i)
		}
		all = append(all, f)
		if kind == 'B' || kind == 'K' {
			forK = append(forK, f)
		}
		if kind != 'K' {
			forB = append(forB, f)
		}
		if kind == 'U' || kind == 'B' {
			forC = append(forC, f)
		}
	}
	a.send(all...)
	k.expect(forK...)
	b.expect(forB...)
	c.expect(forC...)
	// k without unicast in the batch: the broadcast list alone.
	a.send(u, bc, u, bc)
	k.expect(bc, bc)
	b.expect(u, bc, u, bc)
	c.expect(u, bc, u, bc)
	// Unknown unicast only: nothing for k, and nothing counted against it.
	a.send(u, u)
	k.expect()
	b.expect(u, u)
	c.expect(u, u)
	if pk, _ := r.PortInfo("vale0:k"); pk.Counters.Dropped() != 0 || pk.Counters.OutFrames != uint64(1+1+1+len(forK)+2) {
		t.Fatalf("port k counters %+v", pk.Counters)
	}

	// Off again: k gets unknown unicast like everyone.
	if err := sw.SetKnownOnly("k", false); err != nil {
		t.Fatal(err)
	}
	a.send(u)
	k.expect(u)
	b.expect(u)
	c.expect(u)

	// The mark goes with the port: a new port at k's index starts without it.
	if err := sw.SetKnownOnly("k", true); err != nil {
		t.Fatal(err)
	}
	kp, _ := sw.Port("k")
	idx := kp.Index()
	k.h.Close()
	k2 := openPort(t, nm, "vale0:k2", mac(5))
	if kp2, _ := sw.Port("k2"); kp2.Index() != idx {
		t.Fatalf("k2 got index %d, want k's %d", kp2.Index(), idx)
	}
	a.send(u)
	k2.expect(u)
	b.expect(u)
	c.expect(u)
}

// podGuard is port security as a lookup wrapper builds it on the switch's
// primitives: the pod port's frames must come from its (static) address or
// are DstRefused, and are resolved without learning; other ports learn.
type podGuard struct {
	l      *Learning
	pod    uint16
	podMAC net.HardwareAddr
}

func (g *podGuard) Lookup(src uint16, frames []Frame, now int64) {
	if src != g.pod {
		g.l.Lookup(src, frames, now)
		return
	}
	g.l.Resolve(frames, now)
	for i := range frames {
		if !bytes.Equal(frames[i].Data[6:12], g.podMAC) {
			frames[i].Dst = DstRefused
		}
	}
}
func (g *podGuard) PortDetached(uint16)        {}
func (g *podGuard) WrappedLearning() *Learning { return g.l }

// A frame the lookup refuses is counted as DropRefused on its source and
// the switch, not as no-destination; what the pod port sends is not learned.
func TestRefusedCounted(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	pod := openPort(t, nm, "vale0:pod", mac(2))
	sw, _ := r.Switch("vale0")
	pp, _ := sw.Port("pod")
	if err := sw.AddStatic(pod.mac, "pod"); err != nil {
		t.Fatal(err)
	}
	sw.SetLookup(&podGuard{l: sw.Learning(), pod: pp.Index(), podMAC: pod.mac})
	good := ethFrame(bcast, pod.mac, 64)
	unknown := ethFrame(a.mac, pod.mac, 66) // a is not known yet: flooded
	pod.send(good, ethFrame(bcast, mac(0x66), 64), ethFrame(a.mac, mac(0x67), 64), unknown)
	a.expect(good, unknown)
	// Now a is known (learned from a's frame): the pod's unicast to it arrives.
	a.send(ethFrame(pod.mac, a.mac, 64))
	pod.recv()
	toA := ethFrame(a.mac, pod.mac, 70)
	pod.send(toA)
	a.expect(toA)

	pc, _ := r.PortInfo("vale0:pod")
	if pc.Counters.Drops[DropRefused] != 2 || pc.Counters.Drops[DropNoDest] != 0 {
		t.Fatalf("pod counters %+v", pc.Counters)
	}
	if sc := sw.Counters(); sc.Drops[DropRefused] != 2 || sc.Drops[DropNoDest] != 0 {
		t.Fatalf("switch counters %+v", sc)
	}
	if DropRefused.String() != "refused" || int(DropRefused) != NumDropReasons-1 || DropBadFrame != 3 {
		t.Fatalf("DropRefused is %d %q", DropRefused, DropRefused)
	}
	es, err := sw.FDB()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Port == pp.Index() && (!e.Static || e.MAC.String() != pod.mac.String()) {
			t.Fatalf("learned from the pod port: %v", es)
		}
	}
}

// Resolve decides like Lookup and learns nothing.
func TestResolveLearnsNothing(t *testing.T) {
	for _, hdr := range []int{0, VnetHdrLen} {
		fdb, _ := NewFDB(64, time.Minute)
		l, err := NewLearningVnet(fdb, 8, hdr)
		if err != nil {
			t.Fatal(err)
		}
		if err := fdb.AddStatic(mac(5), 3); err != nil {
			t.Fatal(err)
		}
		if !fdb.learn(macKey(mac(6)), 2, 0) {
			t.Fatal("not learned")
		}
		mc := net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1}
		frame := func(dst, src net.HardwareAddr) []byte {
			if hdr == 0 {
				return ethFrame(dst, src, 64)
			}
			return vnetFrame(hdr, ethFrame(dst, src, 64))
		}
		datas := [][]byte{
			frame(mac(5), mac(9)),
			frame(mac(6), mac(10)),
			frame(mac(7), mac(11)),
			frame(mac(9), mac(12)), // to a source seen earlier in the batch
			frame(bcast, mac(13)),
			frame(mc, mac(14)),
			frame(mac(5), mac(15))[:hdr+13],
		}
		want := []uint16{3, 2, DstUnknown, DstUnknown, DstBroadcast, DstBroadcast, DstDrop}
		fr := make([]Frame, len(datas))
		for i, d := range datas {
			fr[i] = Frame{Data: d, Len: int32(len(d)), Dst: 0x1234}
		}
		l.Resolve(fr, 1)
		for i := range fr {
			if fr[i].Dst != want[i] {
				t.Fatalf("hdr %d: frame %d: dst %#x, want %#x", hdr, i, fr[i].Dst, want[i])
			}
		}
		if es := fdb.Entries(1); len(es) != 2 {
			t.Fatalf("hdr %d: Resolve learned: %v", hdr, es)
		}
		// Lookup decides the same for these frames (and learns).
		fr2 := make([]Frame, len(datas))
		for i, d := range datas {
			fr2[i] = Frame{Data: d, Len: int32(len(d))}
		}
		l.Lookup(1, fr2, 1)
		for i := range fr2 {
			w := want[i]
			if i == 3 {
				w = 1 // mac(9) was just learned on port 1
			}
			if fr2[i].Dst != w {
				t.Fatalf("hdr %d: Lookup frame %d: dst %#x, want %#x", hdr, i, fr2[i].Dst, w)
			}
		}
		if es := fdb.Entries(1); len(es) != 2+6 {
			t.Fatalf("hdr %d: Lookup learned %d entries", hdr, len(es)-2)
		}
	}
}

// countingDeliverer counts Deliver calls and accepts everything.
type countingDeliverer struct{ calls, frames atomic.Int64 }

func (d *countingDeliverer) Deliver(b *Delivery) int {
	d.calls.Add(1)
	d.frames.Add(int64(b.Len()))
	return b.Len()
}

// A known-only port is not visited at all for a batch with nothing for it
// (its deliverer is not called with an empty delivery).
func TestKnownOnlySkipsEmptyDelivery(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	openPort(t, nm, "vale0:k", mac(2))
	sw, _ := r.Switch("vale0")
	d := &countingDeliverer{}
	if err := sw.SetDeliverer("k", d); err != nil {
		t.Fatal(err)
	}
	if err := sw.SetKnownOnly("k", true); err != nil {
		t.Fatal(err)
	}
	a.send(ethFrame(mac(0x77), a.mac, 64), ethFrame(mac(0x78), a.mac, 64))
	if d.calls.Load() != 0 {
		t.Fatalf("deliverer called %d times for a batch of unknown unicast", d.calls.Load())
	}
	a.send(ethFrame(mac(0x77), a.mac, 64), ethFrame(bcast, a.mac, 64))
	if d.calls.Load() != 1 || d.frames.Load() != 1 {
		t.Fatalf("deliverer: %d calls, %d frames; want 1 call with the broadcast", d.calls.Load(), d.frames.Load())
	}
}

// Config.KnownOnly: every port is known-only from its attach on, until its
// owner clears the mark.
func TestKnownOnlyByDefault(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	cfg := DefaultConfig()
	cfg.KnownOnly = true
	sw, err := r.CreateSwitch("vale0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	h := openPort(t, nm, "vale0:h", mac(3))
	u := ethFrame(mac(0x77), a.mac, 64)
	a.send(u)
	b.expect()
	h.expect()
	if err := sw.SetKnownOnly("h", false); err != nil {
		t.Fatal(err)
	}
	a.send(u)
	b.expect()
	h.expect(u)
	bc := ethFrame(bcast, a.mac, 60)
	a.send(bc)
	b.expect(bc)
	h.expect(bc)
}
