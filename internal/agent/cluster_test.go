package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/vale"
)

func TestPortPolicyMapping(t *testing.T) {
	def := dataplane.PortPolicy{Discipline: dataplane.DiscFair, QueueLen: 100, BroadcastRate: 1000, MulticastRate: 5000}
	off, zero, seven := false, int64(0), int64(7)
	cases := []struct {
		name string
		in   controller.PolicyConfig
		want dataplane.PortPolicy
	}{
		{"empty keeps default queue, priority 0 is FIFO", controller.PolicyConfig{},
			dataplane.PortPolicy{Discipline: dataplane.DiscFair, QueueLen: 100, PriorityFIFO: true, BroadcastRate: 1000, MulticastRate: 5000}},
		{"all fields", controller.PolicyConfig{Priority: 2, Discipline: epairv1.Discipline("prioclass"), RateBPS: 10_000_000,
			BurstBytes: 15000, PacketRate: 1000, PacketBurst: 10, QueueLength: 64},
			dataplane.PortPolicy{Discipline: dataplane.DiscPrioClass, QueueLen: 64, Priority: 2, RateBitsPerSec: 10_000_000,
				BurstBytes: 15000, RatePktsPerSec: 1000, BurstPkts: 10, BroadcastRate: 1000, MulticastRate: 5000}},
		{"priority 1 FIFO, classic", controller.PolicyConfig{Priority: 1, Discipline: epairv1.Discipline("classic")},
			dataplane.PortPolicy{Discipline: dataplane.DiscClassic, QueueLen: 100, Priority: 1, PriorityFIFO: true, BroadcastRate: 1000, MulticastRate: 5000}},
		{"fair, priority 3", controller.PolicyConfig{Priority: 3, Discipline: epairv1.Discipline("fair")},
			dataplane.PortPolicy{Discipline: dataplane.DiscFair, QueueLen: 100, Priority: 3, BroadcastRate: 1000, MulticastRate: 5000}},
		{"anti-spoofing opt-out and storm overrides", controller.PolicyConfig{Priority: 3, AntiSpoofing: &off, BroadcastRate: &zero, MulticastRate: &seven},
			dataplane.PortPolicy{Discipline: dataplane.DiscFair, QueueLen: 100, Priority: 3, AllowSpoofing: true, MulticastRate: 7}},
		{"mirror", controller.PolicyConfig{Priority: 3, Mirror: &controller.MirrorConfig{Monitor: "mon0", TX: true}},
			dataplane.PortPolicy{Discipline: dataplane.DiscFair, QueueLen: 100, Priority: 3, Mirror: dataplane.Mirror{Monitor: "mon0", TX: true}, BroadcastRate: 1000, MulticastRate: 5000}},
	}
	for _, c := range cases {
		got := portPolicy(c.in, def)
		if got != c.want {
			t.Errorf("%s: portPolicy(%+v) = %+v, want %+v", c.name, c.in, got, c.want)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%s: %+v does not validate: %v", c.name, got, err)
		}
	}
	q := switchDefaultPolicy(controller.SwitchConfig{DefaultQueue: controller.QueueConfig{Length: 256, Discipline: epairv1.Discipline("fair"), RateBPS: 5e6},
		PortSecurity: controller.PortSecurityConfig{AntiSpoofing: true, BroadcastRate: 10, MulticastRate: 20}})
	if q != (dataplane.PortPolicy{Discipline: dataplane.DiscFair, QueueLen: 256, RateBitsPerSec: 5e6, BroadcastRate: 10, MulticastRate: 20}) {
		t.Errorf("switchDefaultPolicy = %+v", q)
	}
	if q := switchDefaultPolicy(controller.SwitchConfig{}); !q.AllowSpoofing {
		t.Errorf("switchDefaultPolicy without anti-spoofing = %+v, want AllowSpoofing", q)
	}
}

func testClusterDP(t *testing.T) *clusterDataplane {
	t.Helper()
	cfg, err := ParseConfig(DefaultConfigJSON())
	if err != nil {
		t.Fatal(err)
	}
	return newClusterDataplane(cfg, "vale0", slog.New(slog.DiscardHandler))
}

func TestClusterDataplaneBeforeStart(t *testing.T) {
	ctx := context.Background()
	c := testClusterDP(t)
	if c.Ready() {
		t.Fatal("Ready before the agent started")
	}
	if err := c.SetPodCIDRs(ctx, nil); err == nil {
		t.Fatal("SetPodCIDRs(nil) succeeded")
	}
	if err := c.ApplySwitch(ctx, controller.SwitchConfig{Name: "vale1", MTU: 1500}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("ApplySwitch(other switch) = %v, want ErrUnsupported", err)
	}
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}
	if err := c.SetPodCIDRs(ctx, cidrs); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.startable:
		t.Fatal("startable without the switch")
	default:
	}
	// A switch deleted before start is forgotten.
	sc := controller.SwitchConfig{Name: "vale0", Generation: 2, MTU: 1400, FDBAging: time.Minute,
		DefaultQueue: controller.QueueConfig{Length: 128, Discipline: epairv1.Discipline("fair")}}
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.startable:
	default:
		t.Fatal("not startable with pod CIDRs and switch")
	}
	if err := c.prepareConfig(); err != nil {
		t.Fatal(err)
	}
	if got := c.cfg.Switches[0]; got.MTU != 1400 || len(got.Ranges) != 1 || got.Ranges[0].Subnet != "10.244.3.0/24" {
		t.Fatalf("prepared switch config %+v", got)
	}
	if c.defPolicy.Discipline != dataplane.DiscFair || c.defPolicy.QueueLen != 128 {
		t.Fatalf("default policy %+v", c.defPolicy)
	}
	// Started: a changed pod CIDR or switch needs a restart; the same ones are fine.
	if err := c.SetPodCIDRs(ctx, cidrs); err != nil {
		t.Fatalf("same pod CIDRs after start: %v", err)
	}
	err := c.SetPodCIDRs(ctx, []netip.Prefix{netip.MustParsePrefix("10.244.4.0/24")})
	if !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("changed pod CIDRs = %v, want ErrRestartRequired", err)
	}
	if err := c.ApplySwitch(ctx, sc); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("ApplySwitch while starting = %v, want ErrRestartRequired", err)
	}
	if err := c.DeleteSwitch(ctx, "vale0"); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("DeleteSwitch(running) = %v, want ErrRestartRequired", err)
	}
	if err := c.DeleteSwitch(ctx, "other"); err != nil {
		t.Fatalf("DeleteSwitch(unknown) = %v", err)
	}
}

func TestClusterDataplanePolicies(t *testing.T) {
	ctx := context.Background()
	on := true
	c := testClusterDP(t)
	pod := controller.PodRef{Namespace: "ns", Name: "p"}
	for _, p := range []controller.PolicyConfig{
		{Policy: "ns/m", Mirror: &controller.MirrorConfig{Monitor: "x", RX: true}},
		{Policy: "ns/a", AntiSpoofing: &on},
	} {
		if err := c.ApplyPortPolicy(ctx, pod, p); !errors.Is(err, controller.ErrNoPort) {
			t.Errorf("ApplyPortPolicy(%s) without a port = %v, want ErrNoPort", p.Policy, err)
		}
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/r", RateBPS: 1e6}); !errors.Is(err, controller.ErrNoPort) {
		t.Errorf("ApplyPortPolicy without a port = %v, want ErrNoPort", err)
	}
	if err := c.ClearPortPolicy(ctx, pod); err != nil {
		t.Errorf("ClearPortPolicy without a port = %v", err)
	}
	snap, err := c.Status(ctx)
	if err != nil || len(snap.Ports) != 0 || len(snap.Switches) != 0 {
		t.Errorf("Status before start = %+v, %v", snap, err)
	}
}

func TestClusterForwarding(t *testing.T) {
	dir := t.TempDir()
	old := procSys
	procSys = dir
	t.Cleanup(func() { procSys = old })
	cfg, err := ParseConfig(DefaultConfigJSON())
	if err != nil {
		t.Fatal(err)
	}
	// No writable /proc/sys and forwarding unknown: a clear error.
	if err := clusterForwarding(cfg); err == nil || !strings.Contains(err.Error(), "net.ipv4.ip_forward=1") {
		t.Fatalf("clusterForwarding without /proc/sys = %v, want an error naming the sysctl", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "net/ipv4"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := clusterForwarding(cfg); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "net/ipv4/ip_forward")); string(b) != "1\n" {
		t.Fatalf("ip_forward = %q", b)
	}
}

// TestClusterDataplaneLive drives the cluster dataplane over a real internal/dataplane in a
// network namespace of its own: a live port gets a PortPolicy and loses it, the switch's
// default queue changes live on ports without a policy, an MTU change needs a restart,
// and the status snapshot shows the pod, the policy and the queue.
func TestClusterDataplaneLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace, veth, TAP)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	ns := fmt.Sprintf("eptest-agentcl-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	run("-n", ns, "link", "add", "epcl0a", "type", "veth", "peer", "name", "epcl0b")
	run("-n", ns, "link", "set", "epcl0a", "up")
	run("-n", ns, "link", "set", "epcl0b", "up")
	run("-n", ns, "link", "add", "epcl1a", "type", "veth", "peer", "name", "epcl1b")
	run("-n", ns, "link", "set", "epcl1a", "up")
	run("-n", ns, "link", "set", "epcl1b", "up")

	ctx := context.Background()
	c := testClusterDP(t)
	c.cfg.Backend = "packet"
	c.cfg.StateDir = t.TempDir()
	if err := c.SetPodCIDRs(ctx, []netip.Prefix{netip.MustParsePrefix("10.250.7.0/24")}); err != nil {
		t.Fatal(err)
	}
	sc := controller.SwitchConfig{Name: "vale0", Generation: 1, MTU: 1500,
		DefaultQueue: controller.QueueConfig{Length: 128, Discipline: epairv1.Discipline("classic")},
		PortSecurity: controller.PortSecurityConfig{AntiSpoofing: true, BroadcastRate: 1000, MulticastRate: 5000}}
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if err := c.prepareConfig(); err != nil {
		t.Fatal(err)
	}
	dc, err := DataplaneConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc.NetNS = "/run/netns/" + ns
	dc.DefaultPolicy = c.defPolicy
	d, err := dataplane.New(dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(dataplane.CloseOptions{Uninstall: true}) })
	c.mu.Lock()
	c.d = d
	c.mu.Unlock()
	ports := &clusterPorts{realDataplane: newRealDataplane(c.cfg, d), c: c}
	pi, err := ports.AttachPort(ctx, PortRequest{Switch: "vale0", HostIfName: "epcl0a", Owner: "test/cid/eth0",
		PodMAC: "02:00:00:0a:fa:07", PodIPs: []netip.Addr{netip.MustParseAddr("10.250.7.5")}})
	if err != nil {
		t.Fatal(err)
	}
	pod := controller.PodRef{Namespace: "ns", Name: "p"}
	c.mu.Lock()
	c.podPorts[pod.String()], c.portPods[pi.Name] = pi.Name, pod.String()
	c.mu.Unlock()

	policy := func() dataplane.PortPolicy {
		t.Helper()
		p, err := d.Port(pi.Name)
		if err != nil {
			t.Fatal(err)
		}
		return p.Policy
	}
	if got := policy(); got.QueueLen != 128 || got.AllowSpoofing || got.BroadcastRate != 1000 || got.MulticastRate != 5000 {
		t.Fatalf("attached with %+v, want the switch's default queue of 128 and its port security", got)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 10_000_000, Priority: 2}); err != nil {
		t.Fatal(err)
	}
	if got := policy(); got.RateBitsPerSec != 10_000_000 || got.Priority != 2 || got.QueueLen != 128 || got.AllowSpoofing {
		t.Fatalf("policy after apply %+v, want the switch's anti-spoofing kept", got)
	}
	// Anti-spoofing off and on again, live; the port carries the pod's identity.
	off := false
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/as", RateBPS: 10_000_000, Priority: 2, AntiSpoofing: &off}); err != nil {
		t.Fatal(err)
	}
	if got := policy(); !got.AllowSpoofing || got.RateBitsPerSec != 10_000_000 {
		t.Fatalf("policy opting out of anti-spoofing %+v", got)
	}
	if p, _ := d.Port(pi.Name); p.PodMAC.String() != "02:00:00:0a:fa:07" || len(p.PodIPs) != 1 || p.PodIPs[0] != netip.MustParseAddr("10.250.7.5") {
		t.Fatalf("port identity %v %v", p.PodMAC, p.PodIPs)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 10_000_000, Priority: 2}); err != nil {
		t.Fatal(err)
	}
	if got := policy(); got.AllowSpoofing {
		t.Fatalf("anti-spoofing still off after the policy dropped the opt-out: %+v", got)
	}
	// Mirror on and off, live; a mirror to the port itself is refused.
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/m", RateBPS: 10_000_000, Priority: 2,
		Mirror: &controller.MirrorConfig{Monitor: "mon0", RX: true, TX: true}}); err != nil {
		t.Fatal(err)
	}
	if got := policy(); got.Mirror != (dataplane.Mirror{Monitor: "mon0", RX: true, TX: true}) {
		t.Fatalf("policy with mirror %+v", got)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/m", Mirror: &controller.MirrorConfig{Monitor: "epcl0a", RX: true}}); !errors.Is(err, dataplane.ErrInvalid) {
		t.Fatalf("mirror to itself = %v, want ErrInvalid", err)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 10_000_000, Priority: 2}); err != nil {
		t.Fatal(err)
	}
	if got := policy(); got.Mirror.RX || got.Mirror.TX {
		t.Fatalf("mirror still on after the policy dropped it: %+v", got)
	}
	snap, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range snap.Ports {
		if p.Name == "epcl0a" {
			found = p.Pod == "ns/p" && p.Policy == "ns/lim" && p.QueueLength >= 128
		}
	}
	if !found || len(snap.Switches) != 1 || snap.Switches[0].Ports != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	// Live default queue: the port keeps its PortPolicy; after clearing it gets the new default.
	sc.Generation, sc.DefaultQueue.Length = 2, 300
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if got := policy(); got.RateBitsPerSec != 10_000_000 || got.QueueLen != 300 {
		t.Fatalf("after a default queue change %+v, want the PortPolicy's rate kept and the new queue length it leaves to the switch", got)
	}
	if err := c.ClearPortPolicy(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := policy(); got.RateBitsPerSec != 0 || got.QueueLen != 300 {
		t.Fatalf("policy after clear %+v, want the new default queue", got)
	}
	// Live port security: a port without a PortPolicy gets the switch's new default, and so
	// does a port attached afterwards (not the dataplane's start-up default).
	sc.Generation, sc.PortSecurity = 3, controller.PortSecurityConfig{AntiSpoofing: false, BroadcastRate: 50, MulticastRate: 60}
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if got := policy(); !got.AllowSpoofing || got.BroadcastRate != 50 || got.MulticastRate != 60 {
		t.Fatalf("policy after a live port security change %+v", got)
	}
	// A port with a PortPolicy that leaves port security to the switch follows it too.
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 10_000_000, Priority: 2}); err != nil {
		t.Fatal(err)
	}
	sc.PortSecurity = controller.PortSecurityConfig{AntiSpoofing: true, BroadcastRate: 70, MulticastRate: 80}
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if got := policy(); got.AllowSpoofing || got.BroadcastRate != 70 || got.RateBitsPerSec != 10_000_000 {
		t.Fatalf("a port with a PortPolicy after a live port security change: %+v, want the switch's new port security and the policy's rate", got)
	}
	if err := c.ClearPortPolicy(ctx, pod); err != nil {
		t.Fatal(err)
	}
	sc.PortSecurity = controller.PortSecurityConfig{AntiSpoofing: false, BroadcastRate: 50, MulticastRate: 60}
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	pi2, err := ports.AttachPort(ctx, PortRequest{Switch: "vale0", HostIfName: "epcl1a", Owner: "test/cid1/eth0",
		PodMAC: "02:00:00:0a:fa:08", PodIPs: []netip.Addr{netip.MustParseAddr("10.250.7.6")}})
	if err != nil {
		t.Fatal(err)
	}
	if p2, err := d.Port(pi2.Name); err != nil || p2.Policy.QueueLen != 300 || !p2.Policy.AllowSpoofing || p2.Policy.BroadcastRate != 50 {
		t.Fatalf("port attached after the live changes: %+v, %v; want queue 300 and the new port security", p2.Policy, err)
	}
	sc.Generation, sc.MTU = 4, 1400
	if err := c.ApplySwitch(ctx, sc); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("MTU change = %v, want ErrRestartRequired", err)
	}
	sc.Generation, sc.MTU, sc.Offload = 5, 1500, true
	if err := c.ApplySwitch(ctx, sc); !errors.Is(err, ErrRestartRequired) || !strings.Contains(err.Error(), "offload false→true") {
		t.Fatalf("offload change = %v, want ErrRestartRequired naming offload", err)
	}
	if err := ports.DetachPort("vale0", "epcl0a"); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 1e6}); !errors.Is(err, controller.ErrNoPort) {
		t.Fatalf("policy after detach = %v, want ErrNoPort", err)
	}
}

func TestPortInfoRefused(t *testing.T) {
	var p dataplane.PortInfo
	p.Counters.Drops[vale.DropNoDest] = 2
	p.Counters.Drops[vale.DropNoSpace] = 1
	p.Counters.Drops[vale.DropRefused] = 9
	p.Refused[dataplane.RefusedMAC] = 3
	p.Refused[dataplane.RefusedIP] = 2
	p.Refused[dataplane.RefusedStorm] = 4
	got := portInfo(p).Stats
	want := map[string]uint64{"no_destination": 2, "no_space": 1, "spoofed_mac": 3, "spoofed_ip": 2, "storm": 4}
	if got.Dropped != 12 || !maps.Equal(got.Drops, want) {
		t.Fatalf("counters %+v, want 12 dropped as %v", got, want)
	}
}

// A frame the full output queue refused is the switch's no_space and the queue's drop at
// once: NodeState counts it once; frames the queue evicted after queueing them add to it.
func TestPortStateCountsQueueDropsOnce(t *testing.T) {
	var p dataplane.PortInfo
	p.Kind, p.HostIfName = dataplane.KindPod, "epair0a"
	p.Counters.Drops[vale.DropNoSpace] = 5 // refused by the full queue
	p.Queue.Drops, p.Queue.Evicted = 7, 2  // the same 5, and 2 evicted
	p.Counters.Drops[vale.DropRefused] = 3
	p.Refused[dataplane.RefusedMAC] = 3
	ps := portState("vale0", p, "ns/p", "")
	want := []epairv1.DropCount{{Reason: "queue-full", Packets: 7}, {Reason: "spoofed-mac", Packets: 3}}
	if !slices.Equal(ps.Drops, want) {
		t.Fatalf("drops %+v, want %+v", ps.Drops, want)
	}
}
