package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// TestDropReasonsLive refuses real frames by anti-spoofing (a pod sending from an address
// that is not its own) and by a full output queue (a pod flooding another whose PortPolicy
// lets one frame out in minutes), and reads the drops back from everything that shows them:
// the captures of both ports (pcapng comments "dropped: <reason>"), the trace of one more
// such frame, the agent API (what valectl prints), NodeState and the Prometheus metrics.
// Each names them spoofed-ip and queue-full, and every count agrees. Then a third pod
// floods its own port faster than the switch reads the link, until the kernel drops frames
// before the switch sees them: socket-full, the same in the agent API, NodeState and the
// metrics, and in no capture or trace (the switch never had those frames).
func TestDropReasonsLive(t *testing.T) {
	l := newLiveCluster(t, primarySwitch(), "10.250.9.0/24")
	ctx := context.Background()
	pa := l.pod("a", "eth0", "", "epdr0a")
	pb := l.pod("b", "eth0", "", "epdr1a")
	// 8 bit/s with a 1-byte bucket: one frame passes, then one every minute or so.
	if err := l.c.ApplyPortPolicy(ctx, controller.PodRef{Namespace: "ns", Name: "b"},
		controller.PolicyConfig{Policy: "ns/slow", RateBPS: 8, BurstBytes: 1, QueueLength: 4}); err != nil {
		t.Fatal(err)
	}
	dp := l.a.dp.(*realDataplane).d
	a, err := dp.Port(pa)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dp.Port(pb)
	if err != nil {
		t.Fatal(err)
	}

	// Capture both ports while the frames are sent.
	var wg sync.WaitGroup
	var capA, capB bytes.Buffer
	for _, c := range []struct {
		port, dir string
		w         *bytes.Buffer
	}{{pa, "rx", &capA}, {pb, "tx", &capB}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.a.Capture(ctx, &agentapi.CaptureRequest{Port: c.port, Direction: c.dir, Duration: 3 * time.Second}, c.w); err != nil {
				t.Errorf("capture %s: %v", c.port, err)
			}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // both taps on
		pia, _ := dp.Port(pa)
		pib, _ := dp.Port(pb)
		if pia.Captures == 1 && pib.Captures == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("captures not started: %d on %s, %d on %s", pia.Captures, pa, pib.Captures, pb)
		}
	}
	fd, ifindex := rawSocket(t, l.ns, "epdr0ap")
	send := func(src net.IP, n int) {
		t.Helper()
		f := udpFrame(t, a.PodMAC, b.PodMAC, src, b.PodIPs[0].AsSlice())
		for range n {
			if err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
	}
	send(net.ParseIP("10.250.9.250"), 10) // spoofed
	send(a.PodIPs[0].AsSlice(), 60)       // fills b's queue, the rest is refused
	for last := uint64(0); ; {            // every frame sent has reached the switch
		time.Sleep(100 * time.Millisecond)
		p, _ := dp.Port(pa)
		if p.Counters.InFrames == last {
			break
		}
		last = p.Counters.InFrames
	}

	// The trace of one more of each says the same.
	for _, tc := range []struct {
		req  agentapi.TraceRequest
		want string
	}{
		{agentapi.TraceRequest{Port: pa, DstIP: b.PodIPs[0].String(), SrcIP: "10.250.9.250", Proto: "udp", DstPort: 9}, "spoofed-ip"},
		{agentapi.TraceRequest{Port: pa, DstIP: b.PodIPs[0].String(), Proto: "udp", DstPort: 9}, "queue-full"},
	} {
		r, err := l.a.Trace(ctx, &tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if r.Reason != tc.want || len(r.DeliveredTo) != 0 {
			t.Errorf("trace from %s: %s, delivered to %v; want dropped as %s; steps %+v", tc.req.SrcIP, r.Reason, r.DeliveredTo, tc.want, r.Steps)
		}
	}
	wg.Wait()

	// The third pod sends to its own MAC (the switch drops what it reads as no-destination,
	// so nothing reaches another port or a reason compared here) until its socket overflows.
	pc := l.pod("c", "eth0", "", "epdr2a")
	c, err := dp.Port(pc)
	if err != nil {
		t.Fatal(err)
	}
	fdc, ifc := rawSocket(t, l.ns, "epdr2ap")
	sent := flood(t, fdc, ifc, udpFrame(t, c.PodMAC, c.PodMAC, c.PodIPs[0].AsSlice(), c.PodIPs[0].AsSlice()), func() bool {
		p, _ := dp.Port(pc)
		return p.KernelDrops > 0
	})
	for last := c; ; { // what the socket still holds is read, and the counts stay put
		time.Sleep(100 * time.Millisecond)
		p, _ := dp.Port(pc)
		if p.Counters.InFrames == last.Counters.InFrames && p.KernelDrops == last.KernelDrops {
			c = p
			break
		}
		last = p
	}
	t.Logf("%s: %d frames sent, %d read by the switch, %d dropped by the kernel", pc, sent, c.Counters.InFrames, c.KernelDrops)

	captured := dropComments(t, &capA)
	for k, v := range dropComments(t, &capB) {
		captured[k] += v
	}
	// The API (valectl's source), NodeState and the metrics, for the two reasons.
	sl, err := l.a.Switches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	api, node := map[string]uint64{}, map[string]uint64{}
	for _, s := range sl.Items {
		for _, p := range s.Ports {
			var sum uint64
			for r, n := range p.Stats.Drops {
				sum += n
				if liveReasons[r] {
					api[r] += n
				}
			}
			if sum != p.Stats.Dropped {
				t.Errorf("%s: drops %v add up to %d, its total is %d", p.Name, p.Stats.Drops, sum, p.Stats.Dropped)
			}
			for _, d := range portState(s.Name, p).Drops {
				if liveReasons[d.Reason] {
					node[d.Reason] += uint64(d.Packets)
				}
			}
		}
	}
	metric := dropMetrics(t, l.a)
	if api["spoofed-ip"] != 10 || api["queue-full"] < 40 {
		t.Fatalf("agent API drops %v, want 10 spoofed-ip and most of the 60 as queue-full", api)
	}
	if api["socket-full"] == 0 || api["socket-full"] != c.KernelDrops {
		t.Fatalf("agent API drops %v, want socket-full = the %d frames the kernel dropped at %s", api, c.KernelDrops, pc)
	}
	seen := maps.Clone(api) // what the switch saw: all but socket-full
	delete(seen, "socket-full")
	for what, m := range map[string]map[string]uint64{"capture": captured, "NodeState": node, "metrics": metric} {
		want := api
		if what == "capture" {
			want = seen
		}
		if !maps.Equal(m, want) {
			t.Errorf("%s drops %v, the agent API's (valectl's) %v", what, m, want)
		}
	}
	t.Logf("drops %v, the same in NodeState, the metrics and the agent API, and (socket-full aside) in the captures", api)
}

// dropComments counts the pcapng packets by "dropped: <reason>" comment, and checks the
// capture's closing statistics: every packet written, none lost.
func dropComments(t *testing.T, b *bytes.Buffer) map[string]uint64 {
	t.Helper()
	r, err := pcapgo.NewNgReader(b, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	var packets uint64
	for {
		_, _, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			ifc, ierr := r.Interface(0)
			if st := ifc.Statistics; ierr != nil || st.PacketsReceived != packets || st.PacketsDropped != 0 {
				t.Errorf("capture statistics %+v (%v): want %d received, 0 dropped", ifc.Statistics, ierr, packets)
			}
			return out
		}
		packets++
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range opts.Comments {
			if reason, ok := strings.CutPrefix(c, "dropped: "); ok && liveReasons[reason] {
				out[reason]++
			}
		}
	}
}

// liveReasons are the reasons TestDropReasonsLive counts.
var liveReasons = map[string]bool{"spoofed-ip": true, "queue-full": true, "socket-full": true}

// flood sends frame on ifindex through fd in sendmmsg(2) batches of 64 until enough says
// so (asked every 32 batches, and once at least 20000 frames are out) or 30 s have passed,
// and returns the frames sent.
func flood(t *testing.T, fd, ifindex int, frame []byte, enough func() bool) uint64 {
	t.Helper()
	m := new(struct { // on the heap: the kernel follows its pointers
		sa   unix.RawSockaddrLinklayer
		iov  unix.Iovec
		msgs [64]unix.Mmsghdr
	})
	m.sa = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Ifindex: int32(ifindex), Halen: 6}
	m.iov.Base = &frame[0]
	m.iov.SetLen(len(frame))
	for i := range m.msgs {
		h := &m.msgs[i].Hdr
		h.Name, h.Namelen = (*byte)(unsafe.Pointer(&m.sa)), uint32(unsafe.Sizeof(m.sa))
		h.Iov = &m.iov
		h.SetIovlen(1)
	}
	var sent uint64
	for start := time.Now(); ; {
		for range 32 {
			n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.msgs[0])), uintptr(len(m.msgs)), 0, 0, 0)
			if e != 0 && e != unix.ENOBUFS && e != unix.EAGAIN {
				t.Fatalf("sendmmsg: %v", e)
			}
			sent += uint64(n)
		}
		if sent >= 20000 && enough() {
			return sent
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("flooded %d frames for %v without enough", sent, time.Since(start))
		}
	}
}

// dropMetrics sums epair_port_drops_total by reason, for liveReasons.
func dropMetrics(t *testing.T, a *Agent) map[string]uint64 {
	t.Helper()
	mfs, err := a.registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "epair_port_drops_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v := lp.GetValue(); lp.GetName() == "reason" && liveReasons[v] {
					out[v] += uint64(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}

// rawSocket opens an AF_PACKET socket in namespace ns for sending on ifname.
func rawSocket(t *testing.T, ns, ifname string) (fd, ifindex int) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return fd, ifi.Index
}

func udpFrame(t *testing.T, src, dst net.HardwareAddr, sip, dip net.IP) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: sip.To4(), DstIP: dip.To4()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 9}
	_ = udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload(make([]byte, 58))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
