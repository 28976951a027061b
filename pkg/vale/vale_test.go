package vale

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/netmap"
)

func TestEphemeralPortLifecycle(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	info, err := r.Info("vale0")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Ports) != 2 || info.Ports[0].Name != "vale0:a" || info.Ports[1].Name != "vale0:b" || !info.Ports[0].Active {
		t.Fatalf("ports %+v", info.Ports)
	}
	if info.Ports[0].Kind != PortEphemeral || info.Config != DefaultConfig() {
		t.Fatalf("info %+v", info)
	}
	// A second registration of the same name shares the port.
	a2 := openPort(t, nm, "vale0:a", mac(1))
	if a2.h.Adapter() != a.h.Adapter() {
		t.Fatal("second open of vale0:a got another adapter")
	}
	a2.h.Close()
	a.h.Close()
	if _, err := r.PortInfo("vale0:a"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("port a after last close: %v, want ENXIO", err)
	}
	b.h.Close()
	if _, err := r.Switch("vale0"); !errors.Is(err, ErrNoSwitch) {
		t.Fatalf("switch after its last port left: %v", err)
	}
	if len(r.List()) != 0 {
		t.Fatalf("list not empty: %+v", r.List())
	}
}

func TestRegisterInvalidNames(t *testing.T) {
	nm, _ := newTestRegistry(t, nil)
	for _, name := range []string{"vale:p", "vale0:", "vale0:a b", "vale-x:p", "vale0:p:q"} {
		h := nm.Open()
		err := h.Register(&netmap.Req{Name: name, Version: netmap.API, Flags: netmap.RegAllNIC})
		h.Close()
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("register %q: %v, want EINVAL", name, err)
		}
	}
}

func TestForwardLearnFlood(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	c := openPort(t, nm, "vale0:c", mac(3))

	f1 := ethFrame(b.mac, a.mac, 64) // b unknown: flooded to b and c, not a
	a.send(f1)
	b.expect(f1)
	c.expect(f1)
	a.expect()

	f2 := ethFrame(a.mac, b.mac, 100) // a known: only a
	b.send(f2)
	a.expect(f2)
	c.expect()
	b.expect()

	f3 := ethFrame(b.mac, a.mac, 60) // b learned now: only b
	a.send(f3)
	b.expect(f3)
	c.expect()

	f4 := ethFrame(bcast, c.mac, 64) // broadcast: everyone but c
	c.send(f4)
	a.expect(f4)
	b.expect(f4)
	c.expect()

	f5 := ethFrame(a.mac, a.mac, 64) // to itself: dropped (no destination)
	a.send(f5)
	a.expect()

	sw, _ := r.Switch("vale0")
	fdb, err := sw.FDB()
	if err != nil || len(fdb) != 3 {
		t.Fatalf("fdb %v %v", fdb, err)
	}
	pa, _ := r.PortInfo("vale0:a")
	if pa.Counters.InFrames != 3 || pa.Counters.OutFrames != 2 || pa.Counters.Drops[DropNoDest] != 1 {
		t.Fatalf("port a counters %+v", pa.Counters)
	}
	if pa.Counters.OutBytes != 100+64 || pa.Counters.InBytes != 64+60+64 {
		t.Fatalf("port a bytes %+v", pa.Counters)
	}
	sc := sw.Counters()
	if sc.InFrames != 5 || sc.OutFrames != 6 || sc.Drops[DropNoDest] != 1 {
		t.Fatalf("switch counters %+v", sc)
	}
}

func TestForwardOrderMixedBroadcast(t *testing.T) {
	nm, _ := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	b.send(ethFrame(bcast, b.mac, 64)) // learn b
	a.recv()
	var fs [][]byte
	for i := 0; i < 10; i++ {
		dst := b.mac
		if i%3 == 0 {
			dst = bcast
		}
		f := ethFrame(dst, a.mac, 64+i)
		fs = append(fs, f)
	}
	a.send(fs...)
	b.expect(fs...) // unicast and broadcast merged in source order
}

func TestDropOnFullCountsNoSpace(t *testing.T) {
	nm, r := newTestRegistry(t, func(o *Options) { o.PortGeometry.RxSlots = 8 })
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	b.send(ethFrame(bcast, b.mac, 64))
	a.recv()
	var fs [][]byte
	for i := 0; i < 20; i++ {
		fs = append(fs, ethFrame(b.mac, a.mac, 64))
	}
	if n := a.send(fs...); n != 20 {
		t.Fatalf("sent %d", n)
	}
	got := b.recv()
	if len(got) != 7 { // 8 slots, one always empty
		t.Fatalf("b got %d frames, want 7", len(got))
	}
	pb, _ := r.PortInfo("vale0:b")
	if pb.Counters.Drops[DropNoSpace] != 13 || pb.Counters.OutFrames != 7 {
		t.Fatalf("port b counters %+v", pb.Counters)
	}
	sw, _ := r.Switch("vale0")
	if sw.Counters().Drops[DropNoSpace] != 13 {
		t.Fatalf("switch counters %+v", sw.Counters())
	}
	// Room again after the drain.
	a.send(fs[:3]...)
	if got := b.recv(); len(got) != 3 {
		t.Fatalf("after drain b got %d", len(got))
	}
}

func TestFrameSizeLimits(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	okMax := ethFrame(bcast, a.mac, 1514)
	tooLong := ethFrame(bcast, a.mac, 1515)
	short := ethFrame(bcast, a.mac, 14)[:13]
	a.send(okMax, tooLong, short)
	b.expect(okMax)
	pa, _ := r.PortInfo("vale0:a")
	if pa.Counters.Drops[DropTooLong] != 1 || pa.Counters.Drops[DropBadFrame] != 1 || pa.Counters.InFrames != 3 {
		t.Fatalf("counters %+v", pa.Counters)
	}
	// A frame sent in fragments is reassembled for the limit check.
	a.sendFrag(1000, tooLong)
	b.expect()
	if pa, _ = r.PortInfo("vale0:a"); pa.Counters.Drops[DropTooLong] != 2 {
		t.Fatalf("fragmented too-long frame: %+v", pa.Counters)
	}
}

func TestJumboFramesMultiSlot(t *testing.T) {
	nm, r := newTestRegistry(t, func(o *Options) { o.Defaults.MaxFrame = 9014; o.PortGeometry.TxSlots = 256 })
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	c := openPort(t, nm, "vale0:c", mac(3))
	jumbo := ethFrame(bcast, a.mac, 9014)
	small := ethFrame(bcast, a.mac, 64)
	mid := ethFrame(bcast, a.mac, 3000)
	// Sent in 1500-byte fragments; delivered re-cut to 2048-byte buffers.
	a.sendFrag(1500, small, jumbo, mid)
	var slots []int
	got := b.recvSlots(&slots)
	if len(got) != 3 || string(got[1]) != string(jumbo) || string(got[0]) != string(small) || string(got[2]) != string(mid) {
		t.Fatalf("b got %d frames", len(got))
	}
	if slots[0] != 1 || slots[1] != 5 || slots[2] != 2 {
		t.Fatalf("slots per frame %v, want [1 5 2]", slots)
	}
	c.expect(small, jumbo, mid)
	// Too many fragments (more than 64) is a bad frame.
	if n := a.sendFrag(100, ethFrame(bcast, a.mac, 6500+14)); n != 1 {
		t.Fatal("the 66-fragment frame did not fit the TX ring")
	}
	b.expect()
	if pa, _ := r.PortInfo("vale0:a"); pa.Counters.Drops[DropBadFrame] != 1 {
		t.Fatalf("counters %+v", pa.Counters)
	}
}

// A chain whose end the user has not released yet stays in the TX ring
// until the user completes it.
func TestIncompleteChainWaits(t *testing.T) {
	nm, _ := newTestRegistry(t, func(o *Options) { o.Defaults.MaxFrame = 9014 })
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	f := ethFrame(bcast, a.mac, 3000)
	r := a.h.TxRing(0)
	s := &r.Slot[r.Head]
	s.Len = uint16(copy(r.Buf(r.Head), f[:2000]))
	s.Flags = netmap.MoreFrag
	r.Advance(r.Next(r.Head))
	if err := a.h.TxSync(); err != nil {
		t.Fatal(err)
	}
	b.expect()
	s = &r.Slot[r.Head]
	s.Len = uint16(copy(r.Buf(r.Head), f[2000:]))
	s.Flags = 0
	r.Advance(r.Next(r.Head))
	if err := a.h.TxSync(); err != nil {
		t.Fatal(err)
	}
	b.expect(f)
}

func TestNoLearnFlag(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	openPort(t, nm, "vale0:b", mac(2))
	tr := a.h.TxRing(0)
	s := &tr.Slot[tr.Head]
	s.Len = uint16(copy(tr.Buf(tr.Head), ethFrame(bcast, a.mac, 64)))
	s.Flags = netmap.NoLearn
	tr.Advance(tr.Next(tr.Head))
	a.h.TxSync()
	sw, _ := r.Switch("vale0")
	if fdb, _ := sw.FDB(); len(fdb) != 0 {
		t.Fatalf("NoLearn frame was learned: %v", fdb)
	}
}

func TestAgingWithInjectedClock(t *testing.T) {
	clk := &fakeClock{}
	nm, r := newTestRegistry(t, func(o *Options) { o.Clock = clk.read; o.Defaults.Aging = MinAging })
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	c := openPort(t, nm, "vale0:c", mac(3))
	b.send(ethFrame(bcast, b.mac, 64))
	a.recv()
	c.recv()
	f := ethFrame(b.mac, a.mac, 64)
	a.send(f)
	c.expect() // known
	b.expect(f)
	clk.now += int64(MinAging) + 1
	a.send(f)
	c.expect(f) // aged out: flooded
	b.expect(f)
	sw, _ := r.Switch("vale0")
	if n := sw.Age(); n != 1 { // b expired; a was just re-learned
		t.Fatalf("Age removed %d entries, want 1", n)
	}
	fdb, _ := sw.FDB()
	if len(fdb) != 1 || fdb[0].MAC.String() != a.mac.String() || fdb[0].Port != 0 {
		t.Fatalf("fdb after aging: %v", fdb)
	}
}

func TestStaticEntryThroughSwitch(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	c := openPort(t, nm, "vale0:c", mac(3))
	sw, _ := r.Switch("vale0")
	if err := sw.AddStatic(mac(9), "c"); err != nil {
		t.Fatal(err)
	}
	if err := sw.AddStatic(mac(9), "nope"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("static on unknown port: %v", err)
	}
	f := ethFrame(mac(9), a.mac, 64)
	a.send(f)
	c.expect(f)
	b.expect()
	// A frame sourced from mac(9) on b does not move the static entry.
	b.send(ethFrame(bcast, mac(9), 64))
	a.recv()
	c.recv()
	a.send(f)
	c.expect(f)
	b.expect()
	if err := sw.DeleteStatic(mac(9)); err != nil {
		t.Fatal(err)
	}
}

// A receiver blocked in poll is woken by a sender's publish (the RX
// ring's notify after the lease completes).
func TestPollWakesReceiver(t *testing.T) {
	nm, _ := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	f := ethFrame(bcast, a.mac, 64)
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ev, err := b.h.Poll(ctx, netmap.PollIn)
		if err == nil && ev&netmap.PollIn == 0 {
			err = fmt.Errorf("poll returned %#x", ev)
		}
		res <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the poller block
	a.send(f)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	b.expect(f)
}
