package dataplane

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/linkport"
)

// TestUpgradeUnderTraffic: pod ports start ring-less and move to AF_XDP in the
// background while a UDP stream crosses the switch between them: not one
// datagram is lost or duplicated.
func TestUpgradeUnderTraffic(t *testing.T) {
	// No upgrade until the stream is a third through (then the worker is let go).
	e := newEnv(t, 2, linkport.Auto, func(c *Config) { c.UpgradeQuiet, c.UpgradeMaxDelay = time.Minute, time.Hour })
	a, b := e.pods[0], e.pods[1]
	for _, p := range e.pods {
		if pi, err := e.dp.Port(p.portName()); err != nil || pi.Backend != linkport.Ringless.String() {
			t.Fatalf("%s right after attach: %+v, %v; want af_packet_ringless", p.portName(), pi.Backend, err)
		}
	}
	e.staticNeighbors()
	n := max(porttest.Frames(t), 300000)
	before, _ := e.dp.Port(b.portName())
	var atDone atomic.Uint64 // frames delivered to B's port when the upgrades were done
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			pi, err := e.dp.Port(b.portName())
			if err != nil || pi.Queue.TxFrames-before.Queue.TxFrames >= uint64(n/3) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		e.dp.up.setTiming(time.Nanosecond, time.Nanosecond)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.dp.SettleUpgrades(ctx); err != nil {
			t.Errorf("upgrades: %v", err) // not Fatal: another goroutine
		}
		pi, _ := e.dp.Port(b.portName())
		atDone.Store(pi.Queue.TxFrames - before.Queue.TxFrames)
	}()
	got := porttest.UDPStream(t, pairOf(a, b), n, 256)
	<-done
	if got != n {
		t.Fatalf("%d of %d datagrams arrived across the upgrade", got, n)
	}
	for _, p := range e.pods {
		if pi, _ := e.dp.Port(p.portName()); pi.Backend != linkport.XDP.String() || pi.Fallback != "" {
			t.Fatalf("%s after the upgrade: %s (fallback %q); want af_xdp", p.portName(), pi.Backend, pi.Fallback)
		}
	}
	if d := atDone.Load(); d >= uint64(n) {
		t.Fatalf("the upgrades finished after the stream (%d frames delivered by then): nothing was tested", d)
	}
	if got := len(e.xdpProgs()); got != 2 {
		t.Fatalf("%d XDP programs, want 2", got)
	}
	e.ping(a, b.ip)
	t.Logf("%d datagrams, none lost; the upgrades were done after %d", n, atDone.Load())
}

// TestDirectOpen: with DirectOpen the port is on AF_XDP when AttachPort returns.
func TestDirectOpen(t *testing.T) {
	e := newEnv(t, 1, linkport.Auto, func(c *Config) { c.DirectOpen = true })
	pi, err := e.dp.Port(e.pods[0].portName())
	if err != nil || pi.Backend != linkport.XDP.String() {
		t.Fatalf("port right after attach: %s, %v; want af_xdp", pi.Backend, err)
	}
	if e.dp.up.pending() {
		t.Fatal("an upgrade is queued for a DirectOpen port")
	}
	e.ping(e.pods[0], testGW)
}

// TestUpgradeSkipsDetached: a port detached before its upgrade is not upgraded
// (no XDP program appears on its link) and nothing is left queued.
func TestUpgradeSkipsDetached(t *testing.T) {
	e := newEnv(t, 1, linkport.Auto, func(c *Config) { c.UpgradeQuiet, c.UpgradeMaxDelay = time.Minute, time.Hour })
	p := e.pods[0]
	if !e.dp.up.pending() {
		t.Fatal("no upgrade queued after a FastStart attach")
	}
	if err := e.dp.DetachPort(t.Context(), p.portName()); err != nil {
		t.Fatal(err)
	}
	e.dp.up.setTiming(time.Nanosecond, time.Nanosecond) // let the worker look now
	waitFor(t, "the queue to empty", 5*time.Second, func() bool { return !e.dp.up.pending() })
	if n := e.dp.up.skipped.Load(); n != 1 {
		t.Fatalf("%d queued ports skipped, want the detached one", n)
	}
	if got := e.xdpProgs(); len(got) != 0 {
		t.Fatalf("XDP programs after the detached port's turn: %v", got)
	}
}
