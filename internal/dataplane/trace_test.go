package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

func stepOf(r TraceResult, stage string) (TraceStep, bool) {
	for _, s := range r.Steps {
		if s.Stage == stage {
			return s, true
		}
	}
	return TraceStep{}, false
}

func mustTrace(t *testing.T, dp *Dataplane, req TraceRequest) TraceResult {
	t.Helper()
	r, err := dp.Trace(req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTrace traces frames from a pod and then sends the same frames for real, checking that
// the port counters move as each trace said: a unicast ping to a pod (delivered to that pod
// only), an address nobody has (the ARP request floods to every other port), a spoofed
// source (refused as spoofed-ip) and a frame into a full, rate-limited queue (queue-full);
// a frame off the pod network is routed by the kernel out of the host port.
func TestTrace(t *testing.T) {
	e := newEnv(t, 3, linkport.Auto, func(c *Config) { c.Masquerade = true })
	e.staticNeighbors()
	a, b, c := e.pods[0], e.pods[1], e.pods[2]
	port := func(p *pod) PortInfo {
		pi, err := e.dp.Port(p.portName())
		if err != nil {
			t.Fatal(err)
		}
		return pi
	}
	host := "vale0:" + testTap

	// Unicast to b.
	r := mustTrace(t, e.dp, TraceRequest{Port: a.portName(), DstIP: netip.MustParseAddr(b.ip)})
	if !slices.Equal(r.DeliveredTo, []string{b.portName()}) || r.Reason != "" {
		t.Fatalf("unicast trace: delivered to %v (%s); steps %+v", r.DeliveredTo, r.Reason, r.Steps)
	}
	if s, _ := stepOf(r, "fdb"); s.Verdict != "unicast" || s.Port != b.portName() {
		t.Fatalf("fdb step %+v", s)
	}
	if s, _ := stepOf(r, "output"); !strings.Contains(s.Detail, "queued") || !strings.Contains(s.Detail, "output queue") {
		t.Fatalf("output step %+v", s)
	}
	// 50 pings: b gets every request, c none of them (the pods' own IPv6 multicast, such as
	// router solicitations and MLD reports, still reaches c now and then: a flood would bring
	// it 50).
	b0, c0 := port(b), port(c)
	if out, err := a.ns.Exec("ping", "-c", "50", "-i", "0.01", "-W", "2", b.ip); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	if db, dc := port(b).Counters.OutFrames-b0.Counters.OutFrames, port(c).Counters.OutFrames-c0.Counters.OutFrames; db < 50 || dc >= 25 {
		t.Fatalf("after 50 traced pings: b got %d frames, c %d; the trace said 50 and 0", db, dc)
	}

	// Nobody has .99: the ARP request floods to b, c and the host port.
	r = mustTrace(t, e.dp, TraceRequest{Port: a.portName(), DstIP: netip.MustParseAddr("10.78.0.99")})
	if s, _ := stepOf(r, "resolve"); s.Verdict != "unreachable" {
		t.Fatalf("resolve step %+v", s)
	}
	want := []string{b.portName(), c.portName(), host}
	slices.Sort(want)
	got := slices.Sorted(slices.Values(r.DeliveredTo))
	if s, _ := stepOf(r, "fdb"); s.Verdict != "flood" || !slices.Equal(got, want) {
		t.Fatalf("flood trace: fdb %+v, delivered to %v, want %v", s, got, want)
	}
	b0, c0 = port(b), port(c)
	a.ns.Exec("ping", "-c", "1", "-W", "1", "10.78.0.99")
	if port(b).Counters.OutFrames == b0.Counters.OutFrames || port(c).Counters.OutFrames == c0.Counters.OutFrames {
		t.Fatal("the ARP request the trace flooded reached neither b nor c")
	}

	// A spoofed source: refused as spoofed-ip, and the real frame is counted so.
	r = mustTrace(t, e.dp, TraceRequest{Port: a.portName(), SrcIP: netip.MustParseAddr("10.78.0.250"), DstIP: netip.MustParseAddr(b.ip)})
	if s, _ := stepOf(r, "port-security"); s.Verdict != "refused" || s.Reason != "spoofed-ip" || r.Reason != "spoofed-ip" || len(r.DeliveredTo) != 0 {
		t.Fatalf("spoofed trace: %+v; steps %+v", r, r.Steps)
	}
	a0 := port(a)
	if out, err := a.ns.Exec("ip", "addr", "add", "10.78.0.250/24", "dev", "eth0"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	a.ns.Exec("ping", "-c", "1", "-W", "1", "-I", "10.78.0.250", b.ip)
	if d := port(a).Refused[RefusedIP] - a0.Refused[RefusedIP]; d != 1 {
		t.Fatalf("spoofed-ip refusals after the traced frame: %d, want 1", d)
	}
	// The trace itself counted nothing.
	mustTrace(t, e.dp, TraceRequest{Port: a.portName(), SrcIP: netip.MustParseAddr("10.78.0.250"), DstIP: netip.MustParseAddr(b.ip)})
	if d := port(a).Refused[RefusedIP] - a0.Refused[RefusedIP]; d != 1 {
		t.Fatalf("tracing counted a refusal: %d", d)
	}

	// Off the pod network: to the gateway's MAC, the host port, then the kernel's route.
	r = mustTrace(t, e.dp, TraceRequest{Port: a.portName(), DstIP: netip.MustParseAddr(testGW), Proto: "tcp", DstPort: 80})
	if !slices.Equal(r.DeliveredTo, []string{host}) {
		t.Fatalf("to the gateway: %+v", r)
	}
	if s, ok := stepOf(r, "host"); !ok || s.Verdict != "local" {
		t.Fatalf("host step %+v (%v)", s, ok)
	}

	// A full queue: b's queue holds 4 frames (plus staging headroom) and, at 8 bit/s with a
	// 1-byte bucket, sends one a minute or so: it stays full while the test looks.
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{QueueLen: 4, RateBitsPerSec: 8, BurstBytes: 1}); err != nil {
		t.Fatal(err)
	}
	bl := blast(t, a, b, 100)
	time.Sleep(300 * time.Millisecond)
	bl.close()
	// Wait for the datagrams on their way to the switch to get there.
	for last := port(a).Counters.InFrames; ; {
		time.Sleep(100 * time.Millisecond)
		now := port(a).Counters.InFrames
		if now == last {
			break
		}
		last = now
	}
	udp := TraceRequest{Port: a.portName(), DstIP: netip.MustParseAddr(b.ip), Proto: "udp", DstPort: 9}
	for try := 0; ; try++ {
		r = mustTrace(t, e.dp, udp)
		s, _ := stepOf(r, "output")
		if s.Reason != "queue-full" || r.Reason != "queue-full" || !strings.Contains(s.Detail, "8 bit/s") || !strings.Contains(s.Detail, "full: refused") {
			t.Fatalf("trace into a full queue: %+v; steps %+v", r, r.Steps)
		}
		b0 = port(b)
		sendUDP(t, a, b.ip)
		b1 := port(b)
		d := b1.Counters.Drops[vale.DropNoSpace] - b0.Counters.Drops[vale.DropNoSpace]
		if (b1.Queue.TxFrames != b0.Queue.TxFrames || d > 1) && try < 3 {
			continue // the queue sent one in between (it had room), or a late frame of the blast came too: again
		}
		if d != 1 || b1.Counters.OutFrames != b0.Counters.OutFrames {
			t.Fatalf("after the traced datagram: %d queue-full drops, %d frames queued; the trace said 1 and 0", d, b1.Counters.OutFrames-b0.Counters.OutFrames)
		}
		break
	}

	// Bad requests.
	for _, tc := range []struct {
		req  TraceRequest
		want string
	}{
		{TraceRequest{Port: "vale0:nope", DstIP: netip.MustParseAddr(b.ip)}, "no such port"},
		{TraceRequest{Port: "vale9:x", DstIP: netip.MustParseAddr(b.ip)}, "no such switch"},
		{TraceRequest{Port: a.portName()}, "give an IP address or a MAC"},
		{TraceRequest{Port: a.portName(), DstIP: netip.MustParseAddr(b.ip), Proto: "sctp"}, `protocol "sctp"`},
		{TraceRequest{Port: a.portName(), DstIP: netip.MustParseAddr(b.ip), DstPort: 80}, "ports are for tcp and udp"},
		{TraceRequest{Port: a.portName(), SrcIP: netip.MustParseAddr("fd00::1"), DstIP: netip.MustParseAddr(b.ip)}, "different families"},
	} {
		if _, err := e.dp.Trace(tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("trace %+v: %v, want an error with %q", tc.req, err, tc.want)
		} else if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNoPort) && !errors.Is(err, ErrNoSwitch) {
			t.Errorf("trace %+v: %v is not ErrInvalid, ErrNoPort or ErrNoSwitch", tc.req, err)
		}
	}
	// A broadcast given by MAC from the host port, once b's queue is back to the default.
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{}); err != nil {
		t.Fatal(err)
	}
	r = mustTrace(t, e.dp, TraceRequest{Port: host, DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
	if len(r.DeliveredTo) != 3 {
		t.Fatalf("broadcast from the host port: delivered to %v", r.DeliveredTo)
	}
}

// sendUDP sends one datagram from pod a to ip port 9.
func sendUDP(t *testing.T, a *pod, ip string) {
	t.Helper()
	if out, err := a.ns.Exec("python3", "-c", "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x'*58, (sys.argv[1], 9))", ip); err != nil {
		t.Fatalf("send a datagram: %v\n%s", err, out)
	}
}
