package vale

import (
	"errors"
	"testing"
)

func TestMirror(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	sw, err := r.Switch("vale0")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.SetMirror("a", &Mirror{Monitor: "a", RX: true}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mirror to itself: %v", err)
	}
	if err := sw.SetMirror("nope", &Mirror{Monitor: "mon", RX: true}); !errors.Is(err, ErrNoPort) {
		t.Fatalf("mirror of a missing port: %v", err)
	}
	fab := ethFrame(mac(2), mac(1), 64)
	fba := ethFrame(mac(1), mac(2), 80)
	// Both MACs learned, so nothing floods to the monitor.
	a.send(fab)
	b.expect(fab)
	b.send(fba)
	a.expect(fba)
	// The monitor does not exist yet: copies are counted drops.
	if err := sw.SetMirror("a", &Mirror{Monitor: "mon", RX: true}); err != nil {
		t.Fatal(err)
	}
	a.send(fab)
	b.expect(fab)
	if c := sw.Counters(); c.Drops[DropNoDest] != 1 {
		t.Fatalf("mirror without monitor: %+v", c)
	}
	mon := openPort(t, nm, "vale0:mon", mac(9))
	// RX only: what a sends, not what it receives.
	a.send(fab)
	b.expect(fab)
	b.send(fba)
	a.expect(fba)
	mon.expect(fab)
	// TX only.
	if err := sw.SetMirror("a", &Mirror{Monitor: "mon", TX: true}); err != nil {
		t.Fatal(err)
	}
	a.send(fab)
	b.expect(fab)
	b.send(fba)
	a.expect(fba)
	mon.expect(fba)
	// Both, then off.
	if err := sw.SetMirror("a", &Mirror{Monitor: "mon", RX: true, TX: true}); err != nil {
		t.Fatal(err)
	}
	a.send(fab)
	b.send(fba)
	mon.expect(fab, fba)
	b.recv()
	a.recv()
	if err := sw.SetMirror("a", nil); err != nil {
		t.Fatal(err)
	}
	a.send(fab)
	b.send(fba)
	mon.expect()
	// A full monitor drops (counted on it) and never blocks the port.
	if err := sw.SetMirror("a", &Mirror{Monitor: "mon", RX: true}); err != nil {
		t.Fatal(err)
	}
	b.recv()
	for i := 0; i < 100; i++ {
		a.send(fab)
		b.expect(fab)
	}
	pi, _ := r.PortInfo("vale0:mon")
	if pi.Counters.Drops[DropNoSpace] == 0 || pi.Counters.OutFrames+pi.Counters.Drops[DropNoSpace] < 100 {
		t.Fatalf("full monitor: %+v", pi.Counters)
	}
	if got := len(mon.recv()); got == 0 || got >= 100 {
		t.Fatalf("monitor ring held %d frames", got)
	}
}
