package dataplane

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/fastpath"
	"github.com/epair-cni/epair/pkg/linkport"
)

// fastInfo is the pod's port's FastPathInfo.
func (e *env) fastInfo(p *pod) PortInfo {
	e.t.Helper()
	pi, err := e.dp.Port(p.portName())
	if err != nil {
		e.t.Fatal(err)
	}
	return pi
}

// tcxPrograms is how many tcx ingress programs the pod's host link has.
func (e *env) tcxPrograms(p *pod) int {
	e.t.Helper()
	var n int
	err := e.host.Do(func() error {
		r, err := link.QueryPrograms(link.QueryOptions{Target: p.pair.HostIndex, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			n = len(r.Programs)
		}
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// hostPortInfo is the switch's host port's PortInfo.
func (e *env) hostPortInfo() PortInfo {
	e.t.Helper()
	si, err := e.dp.Switch("vale0")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, pi := range si.Ports {
		if pi.Name == si.HostPort {
			return pi
		}
	}
	e.t.Fatalf("switch vale0 lists no host port %s", si.HostPort)
	return PortInfo{}
}

// traceFastTo traces an echo request from pod a to address to and checks whether the
// trace has the fast path's step.
func (e *env) traceFastTo(a *pod, to string, want bool) {
	e.t.Helper()
	r, err := e.dp.Trace(TraceRequest{Port: a.portName(), DstIP: netip.MustParseAddr(to)})
	if err != nil {
		e.t.Fatal(err)
	}
	if got := slices.ContainsFunc(r.Steps, func(s TraceStep) bool { return s.Stage == "fastpath" && s.Verdict == "delivered" }); got != want {
		e.t.Fatalf("trace %s → %s: fast path step %v, want %v: %+v", a.ip, to, got, want, r.Steps)
	}
}

// traceFast traces an echo request from pod a to pod b (from srcIP, "" for a's own) and
// checks whether the trace has the fast path's step, to b's port.
func (e *env) traceFast(a, b *pod, srcIP string, want bool) {
	e.t.Helper()
	req := TraceRequest{Port: a.portName(), DstIP: netip.MustParseAddr(b.ip)}
	if srcIP != "" {
		req.SrcIP = netip.MustParseAddr(srcIP)
	}
	r, err := e.dp.Trace(req)
	if err != nil {
		e.t.Fatal(err)
	}
	i := slices.IndexFunc(r.Steps, func(s TraceStep) bool { return s.Stage == "fastpath" })
	if got := i >= 0; got != want {
		e.t.Fatalf("trace %s → %s from %q: fast path step %v, want %v: %+v", a.ip, b.ip, srcIP, got, want, r.Steps)
	}
	if want && (r.Steps[i].Verdict != "delivered" || r.Steps[i].Port != b.portName()) {
		e.t.Fatalf("trace: fast path step %+v, want delivered to %s", r.Steps[i], b.portName())
	}
}

// waitFast waits until the pod's port is on the fast path both ways (it is put there in
// the background after its attach).
func (e *env) waitFast(p *pod) {
	e.t.Helper()
	waitFor(e.t, p.portName()+" on the fast path", 5*time.Second, func() bool {
		fi := e.fastInfo(p).FastPath
		return fi.Source && fi.Dest
	})
}

// TestFastPath: with Config.FastPath, TCP between two pods (IPv4 and IPv6, TSO on)
// crosses in the kernel, intact, counted by the fast path and not by the switch; a
// spoofed frame still meets port security; a capture, a rate limit and a mirror take a
// port's frames back to the switch while they last; detaching and closing leave no
// program on the links.
func TestFastPath(t *testing.T) {
	e := newEnv(t, 3, linkport.Auto, variants[2].mod(func(c *Config) { c.FastPath = true }))
	a, b, c := e.pods[0], e.pods[1], e.pods[2]
	e.ping(a, b.ip)
	e.ping(a, b.ip6)
	e.ping(a, testGW) // the node, through the host port's fast path
	for _, p := range e.pods {
		e.waitFast(p)
		if n := e.tcxPrograms(p); n != 1 {
			t.Fatalf("%s: %d tcx programs, want 1", p.portName(), n)
		}
	}

	// A trace says when the fast path would take the frame.
	e.traceFast(a, b, "", true)
	e.traceFast(a, b, "10.99.0.99", false) // a spoofed source: the switch refuses it

	a0, b0 := e.fastInfo(a), e.fastInfo(b)
	const size = 32 << 20
	netnsutil.TCPTransfer(t, a.ns, b.ns, b.ip, 5301, size)
	netnsutil.TCPTransfer(t, a.ns, b.ns, b.ip6, 5302, size)
	a1, b1 := e.fastInfo(a), e.fastInfo(b)
	if moved := a1.FastPath.InBytes - a0.FastPath.InBytes; moved < 2*size {
		t.Fatalf("the fast path moved %d bytes from pod A, want at least %d", moved, 2*size)
	}
	if moved := b1.FastPath.OutBytes - b0.FastPath.OutBytes; moved < 2*size {
		t.Fatalf("the fast path moved %d bytes to pod B, want at least %d", moved, 2*size)
	}
	if n := a1.FastPath.InFrames - a0.FastPath.InFrames; n > 2*size/1500/4 {
		t.Errorf("%d frames for %d bytes: no GSO super-frames", n, 2*size)
	}
	if seen := a1.Counters.InBytes - a0.Counters.InBytes; seen > 1<<20 {
		t.Errorf("the switch saw %d bytes from pod A during the transfers", seen)
	}

	// To the node and back through the host port's fast path: the switch's host port
	// sees next to nothing of it.
	h0 := e.hostPortInfo()
	a0 = e.fastInfo(a)
	netnsutil.TCPTransfer(t, a.ns, e.host, testGW, 5303, size)
	netnsutil.TCPTransfer(t, e.host, a.ns, a.ip, 5304, size)
	h1, a1 := e.hostPortInfo(), e.fastInfo(a)
	if in, out := a1.FastPath.InBytes-a0.FastPath.InBytes, a1.FastPath.OutBytes-a0.FastPath.OutBytes; in < size || out < size {
		t.Fatalf("pod A ↔ node: the fast path moved %d bytes from A and %d to it, want at least %d each", in, out, size)
	}
	if in, out := h1.Counters.InBytes-h0.Counters.InBytes, h1.Counters.OutBytes-h0.Counters.OutBytes; in > 1<<20 || out > 1<<20 {
		t.Errorf("pod A ↔ node: the switch's host port saw %d bytes in and %d out", in, out)
	}
	// The host port's own fast-path counters: the node's frames out to A (In), A's into
	// the node (Out).
	if fi := h1.FastPath; !fi.Source || !fi.Dest || fi.InBytes-h0.FastPath.InBytes < size || fi.OutBytes-h0.FastPath.OutBytes < size {
		t.Errorf("pod A ↔ node: the host port's fast path %+v (before %+v), want on and at least %d bytes each way", fi, h0.FastPath, size)
	}
	e.traceFastTo(a, testGW, true)

	// A capture of the host port takes the node's traffic back to the switch.
	hc, err := e.dp.Capture(e.dp.Switches()[0].HostPort, CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.traceFastTo(a, testGW, false)
	if fi := e.hostPortInfo().FastPath; fi.Source || fi.Dest {
		t.Errorf("capturing the host port: its fast path %+v, want off", fi)
	}
	e.ping(a, testGW)
	hc.Close()
	e.traceFastTo(a, testGW, true)

	// A frame from another address reaches port security.
	sendRaw(t, a, udpFrame(a.pair.PodMAC, b.pair.PodMAC, "10.99.0.99", b.ip))
	waitFor(t, "spoofed frame refused", 2*time.Second, func() bool { return e.spoofDrops(a) == 1 })

	// A capture of B takes B's frames (both ways) to the switch, until it closes.
	capt, err := e.dp.Capture(b.portName(), CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fi := e.fastInfo(b).FastPath; fi.Source || fi.Dest {
		t.Fatalf("capturing: B's fast path %+v, want off", fi)
	}
	e.traceFast(a, b, "", false)
	e.ping(a, b.ip)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var req, rep int
	for req < 2 || rep < 2 {
		f, err := capt.Next(ctx)
		if err != nil {
			t.Fatalf("capture: after %d requests and %d replies: %v", req, rep, err)
		}
		switch typ, _, _, ok := icmpEcho(f.Data); {
		case ok && typ == 8 && f.TX:
			req++
		case ok && typ == 0 && !f.TX:
			rep++
		}
	}
	capt.Close()
	if fi := e.fastInfo(b).FastPath; !fi.Source || !fi.Dest {
		t.Fatalf("capture closed: B's fast path %+v, want on", fi)
	}

	// A rate limit on B: the frames to B go through its output queue; a mirror of A's
	// frames: A's frames go through the switch.
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{RateBitsPerSec: 100e6}); err != nil {
		t.Fatal(err)
	}
	if fi := e.fastInfo(b).FastPath; !fi.Source || fi.Dest {
		t.Fatalf("rate-limited: B's fast path %+v, want Source only", fi)
	}
	q0 := e.fastInfo(b).Queue.TxFrames
	e.ping(a, b.ip)
	if q := e.fastInfo(b).Queue.TxFrames; q < q0+2 {
		t.Fatalf("rate-limited: B's queue sent %d frames during a ping, want ≥ 2", q-q0)
	}
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{}); err != nil {
		t.Fatal(err)
	}
	if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{Mirror: Mirror{Monitor: c.pair.HostName, RX: true}}); err != nil {
		t.Fatal(err)
	}
	if fi := e.fastInfo(a).FastPath; fi.Source || !fi.Dest {
		t.Fatalf("mirrored RX: A's fast path %+v, want Dest only", fi)
	}
	if fi := e.fastInfo(b).FastPath; !fi.Source || !fi.Dest {
		t.Fatalf("policy back to default: B's fast path %+v, want on", fi)
	}
	if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{}); err != nil {
		t.Fatal(err)
	}

	// Detached: B's link keeps no program, and A and C still reach each other.
	if err := e.dp.DetachPort(context.Background(), b.portName()); err != nil {
		t.Fatal(err)
	}
	if n := e.tcxPrograms(b); n != 0 {
		t.Errorf("detached B keeps %d tcx programs", n)
	}
	e.ping(a, c.ip)
	if err := e.dp.Close(CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*pod{a, c} {
		if n := e.tcxPrograms(p); n != 0 {
			t.Errorf("%s keeps %d tcx programs after Close", p.portName(), n)
		}
	}
}

// TestFastPathAttachDetach: a port detached right after its attach, while it is being put
// on the fast path in the background, leaves no program on its link, again and again; the
// other pod's port stays on the fast path.
func TestFastPathAttachDetach(t *testing.T) {
	e := newEnv(t, 1, linkport.Auto, variants[2].mod(func(c *Config) { c.FastPath = true }))
	c := e.makePod()
	for i := range 20 {
		e.attach(c)
		if err := e.dp.DetachPort(context.Background(), c.portName()); err != nil {
			t.Fatal(err)
		}
		settle(t, e.dp)
		if n := e.tcxPrograms(c); n != 0 {
			t.Fatalf("round %d: the detached port's link keeps %d tcx programs", i, n)
		}
	}
	e.waitFast(e.pods[0])
	if err := e.dp.Close(CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := e.tcxPrograms(e.pods[0]); n != 0 {
		t.Errorf("%d tcx programs left after Close", n)
	}
}

// TestFastPathUnavailable: where the fast path cannot start, a dataplane with
// FastPathError (the agent's default, "where the kernel can") reports why and runs its
// pods through the switch; one without it (the fast path required) does not start, and
// says why.
func TestFastPathUnavailable(t *testing.T) {
	newFastPath = func() (*fastpath.FastPath, error) { return nil, errors.New("no tcx here") }
	t.Cleanup(func() { newFastPath = fastpath.New })
	var reported error
	e := newEnv(t, 2, linkport.Auto, variants[2].mod(func(c *Config) {
		c.FastPath = true
		c.FastPathError = func(err error) { reported = err }
	}))
	if reported == nil || !strings.Contains(reported.Error(), "no tcx here") {
		t.Fatalf("reported %v, want the fast path's error", reported)
	}
	a, b := e.pods[0], e.pods[1]
	e.ping(a, b.ip)
	settle(t, e.dp)
	if pi := e.fastInfo(a); pi.FastPath != (FastPathInfo{}) || pi.Counters.InFrames < 2 {
		t.Fatalf("port of a: fast path %+v, switch counters %+v; want no fast path and the pings through the switch", pi.FastPath, pi.Counters)
	}
	if n := e.tcxPrograms(a); n != 0 {
		t.Fatalf("%d tcx programs without a fast path", n)
	}

	cfg := e.cfg
	cfg.FastPathError = nil
	if err := e.dp.Close(CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	dp, err := New(cfg)
	if err == nil {
		dp.Close(CloseOptions{})
		t.Fatal("New with a required fast path that cannot start succeeded")
	}
	if !strings.Contains(err.Error(), "fast path") || !strings.Contains(err.Error(), "no tcx here") {
		t.Fatalf("New: %v; want an error naming the fast path and why", err)
	}
}
