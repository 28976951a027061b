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
	"sync"
	"testing"
	"time"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
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
	// A secondary switch needs its own ranges, the primary must not have any, and a
	// secondary waits (is retried) until the agent runs.
	var fe *controller.FieldError
	if err := c.ApplySwitch(ctx, controller.SwitchConfig{Name: "vale1", MTU: 1500}); !errors.As(err, &fe) || fe.Field != "podCIDRs" {
		t.Fatalf("ApplySwitch(secondary without podCIDRs) = %v, want a podCIDRs FieldError", err)
	}
	sec := controller.SwitchConfig{Name: "vale1", MTU: 1500, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}
	if err := c.ApplySwitch(ctx, sec); !errors.Is(err, errNotStarted) {
		t.Fatalf("ApplySwitch(secondary) before start = %v, want errNotStarted", err)
	}
	if err := c.ApplySwitch(ctx, controller.SwitchConfig{Name: "vale0", MTU: 1500, PodCIDRs: sec.PodCIDRs}); !errors.As(err, &fe) || fe.Field != "podCIDRs" {
		t.Fatalf("ApplySwitch(primary with podCIDRs) = %v, want a podCIDRs FieldError", err)
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
	sc := controller.SwitchConfig{Name: "vale0", Generation: 2, MTU: 1400, FDBAging: time.Minute, MaxPorts: 100,
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
	if got := c.cfg.Switches[0]; got.MTU != 1400 || len(got.Ranges) != 1 || got.Ranges[0].Subnet != "10.244.3.0/24" ||
		got.MaxPorts != 100 || got.FDBAging != Duration(time.Minute) || got.antiSpoofing() {
		t.Fatalf("prepared switch config %+v", got)
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

// fakePolicies is the controller's side of PodPolicies: a PortPolicy per pod, and the
// PortAttached notices.
type fakePolicies struct {
	mu       sync.Mutex
	pols     map[string]controller.PolicyConfig
	attached []string
	annots   map[string]string // "ns/name/key"
	annotErr error             // PodAnnotation's error, when set
}

func (f *fakePolicies) PodAnnotation(_ context.Context, ns, name, key string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.annots[ns+"/"+name+"/"+key]
	return v, ok, f.annotErr
}

func (f *fakePolicies) PolicyFor(ns, name string) (controller.PolicyConfig, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pols[ns+"/"+name]
	return p, ok
}

func (f *fakePolicies) PortAttached(pod controller.PodRef) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attached = append(f.attached, pod.String())
}

// nsLinks are the veth pairs of a test's network namespace as the agent's Links: List
// reports those given to add, Destroy deletes the link.
type nsLinks struct {
	t  *testing.T
	ns string
	memLinks
}

func (l *nsLinks) add(name, owner string) epair.Pair {
	l.t.Helper()
	if out, err := exec.Command("ip", "-n", l.ns, "link", "set", "dev", name, "alias", epair.AliasPrefix+owner).CombinedOutput(); err != nil {
		l.t.Fatalf("set alias of %s: %v: %s", name, err, out)
	}
	out, err := exec.Command("ip", "-n", l.ns, "-o", "link", "show", "dev", name).Output()
	if err != nil {
		l.t.Fatalf("ip link show %s: %v", name, err)
	}
	idx, _, _ := strings.Cut(string(out), ":")
	p := epair.Pair{HostName: name, Owner: owner}
	fmt.Sscan(idx, &p.HostIndex)
	l.mu.Lock()
	l.pairs[name] = p
	l.mu.Unlock()
	return p
}

func (l *nsLinks) Destroy(name string) error {
	if err := l.memLinks.Destroy(name); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "-n", l.ns, "link", "del", "dev", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link del %s: %v: %s", name, err, out)
	}
	return nil
}

// liveCluster is a cluster dataplane over a real internal/dataplane and agent in a network
// namespace of the test's own, with veth pairs standing for pods.
type liveCluster struct {
	t     *testing.T
	ns    string
	c     *clusterDataplane
	a     *Agent
	links *nsLinks
	pods  *fakePolicies
	macs  int
}

func newLiveCluster(t *testing.T, sc controller.SwitchConfig, cidr string, mods ...func(*Config)) *liveCluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace, veth, TAP)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	l := &liveCluster{t: t, ns: fmt.Sprintf("eptest-agentcl-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6),
		pods: &fakePolicies{pols: map[string]controller.PolicyConfig{}}}
	l.ip("netns", "add", l.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", l.ns).Run() })
	l.links = &nsLinks{t: t, ns: l.ns, memLinks: memLinks{pairs: map[string]epair.Pair{}}}
	ctx := context.Background()
	l.c = testClusterDP(t)
	l.c.cfg.Backend = "packet"
	l.c.cfg.StateDir = t.TempDir()
	for _, mod := range mods {
		mod(l.c.cfg)
	}
	if err := l.c.SetPodCIDRs(ctx, []netip.Prefix{netip.MustParsePrefix(cidr)}); err != nil {
		t.Fatal(err)
	}
	if err := l.c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if err := l.c.prepareConfig(); err != nil {
		t.Fatal(err)
	}
	dc, err := DataplaneConfig(l.c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc.NetNS = "/run/netns/" + l.ns
	d, err := dataplane.New(dc)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := newRealDataplane(l.c.cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Config: l.c.cfg, Dataplane: rd, Links: l.links, Policies: l.pods, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		d.Close(dataplane.CloseOptions{})
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Uninstall() })
	if err := a.SetSwitchDefault(sc.Name, switchDefaultPolicy(sc)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	l.c.mu.Lock()
	l.c.a, l.a = a, a
	l.c.mu.Unlock()
	return l
}

func (l *liveCluster) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// pod adds a veth pair host/host+"p" and does what the plugin's ADD does with it: allocate
// for pod ns/name on sw, attach the host end. It returns the port's name.
func (l *liveCluster) pod(id, ifname, sw, host string) string {
	l.t.Helper()
	l.ip("-n", l.ns, "link", "add", host, "type", "veth", "peer", "name", host+"p")
	l.ip("-n", l.ns, "link", "set", host, "up")
	l.ip("-n", l.ns, "link", "set", host+"p", "up")
	ctx := context.Background()
	k := agentapi.Key{ContainerID: id, IfName: ifname}
	if _, err := l.a.Allocate(ctx, &agentapi.AllocateRequest{Key: k, Network: "net", Switch: sw, PodNamespace: "ns", PodName: id}); err != nil {
		l.t.Fatalf("allocate %s: %v", k, err)
	}
	p := l.links.add(host, epair.OwnerKey("net", id, ifname))
	l.macs++
	mac := fmt.Sprintf("02:00:00:00:01:%02x", l.macs)
	port, err := l.a.Attach(ctx, &agentapi.AttachRequest{Key: k, HostIfName: host, HostIfIndex: p.HostIndex, PodMAC: mac})
	if err != nil {
		l.t.Fatalf("attach %s: %v", k, err)
	}
	return port.Name
}

// policy is the policy of the dataplane's port name.
func (l *liveCluster) policy(name string) dataplane.PortPolicy {
	l.t.Helper()
	p, err := l.a.dp.(*realDataplane).d.Port(name)
	if err != nil {
		l.t.Fatal(err)
	}
	return p.Policy
}

// primarySwitch is the conflist's VirtualSwitch of the live tests: a 128-frame default
// queue and the chart's port security.
func primarySwitch() controller.SwitchConfig {
	return controller.SwitchConfig{Name: "vale0", Generation: 1, MTU: 1500,
		DefaultQueue: controller.QueueConfig{Length: 128, Discipline: epairv1.Discipline("classic")},
		PortSecurity: controller.PortSecurityConfig{AntiSpoofing: true, BroadcastRate: 1000, MulticastRate: 5000}}
}

// TestClusterDataplaneLive drives the cluster dataplane over a real agent and
// internal/dataplane in a network namespace of its own: a live port gets a PortPolicy and
// loses it, the switch's default queue and port security change live on ports without a
// policy and reach ports attached afterwards, an MTU change needs a restart, and the status
// snapshot shows the pod, the policy and the queue.
func TestClusterDataplaneLive(t *testing.T) {
	sc := primarySwitch()
	l := newLiveCluster(t, sc, "10.250.7.0/24")
	c, ctx := l.c, context.Background()
	name := l.pod("p", "eth0", "", "epcl0a")
	pod := controller.PodRef{Namespace: "ns", Name: "p"}
	if got := l.policy(name); got.QueueLen != 128 || got.AllowSpoofing || got.BroadcastRate != 1000 || got.MulticastRate != 5000 {
		t.Fatalf("attached with %+v, want the switch's default queue of 128 and its port security", got)
	}
	if !slices.Equal(l.pods.attached, []string{"ns/p"}) {
		t.Fatalf("PortAttached notices %v, want ns/p", l.pods.attached)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 10_000_000, Priority: 2}); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(name); got.RateBitsPerSec != 10_000_000 || got.Priority != 2 || got.QueueLen != 128 || got.AllowSpoofing {
		t.Fatalf("policy after apply %+v, want the switch's anti-spoofing kept", got)
	}
	// Anti-spoofing off and on again, live; the port carries the pod's identity.
	off := false
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/as", RateBPS: 10_000_000, Priority: 2, AntiSpoofing: &off}); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(name); !got.AllowSpoofing || got.RateBitsPerSec != 10_000_000 {
		t.Fatalf("policy opting out of anti-spoofing %+v", got)
	}
	if p, _ := l.a.dp.(*realDataplane).d.Port(name); p.PodMAC.String() != "02:00:00:00:01:01" || len(p.PodIPs) != 1 || !netip.MustParsePrefix("10.250.7.0/24").Contains(p.PodIPs[0]) {
		t.Fatalf("port identity %v %v", p.PodMAC, p.PodIPs)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 10_000_000, Priority: 2}); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(name); got.AllowSpoofing {
		t.Fatalf("anti-spoofing still off after the policy dropped the opt-out: %+v", got)
	}
	// Mirror on and off, live; a mirror to the port itself is refused.
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/m", RateBPS: 10_000_000, Priority: 2,
		Mirror: &controller.MirrorConfig{Monitor: "mon0", RX: true, TX: true}}); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(name); got.Mirror != (dataplane.Mirror{Monitor: "mon0", RX: true, TX: true}) {
		t.Fatalf("policy with mirror %+v", got)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/m", Mirror: &controller.MirrorConfig{Monitor: "epcl0a", RX: true}}); !errors.Is(err, dataplane.ErrInvalid) {
		t.Fatalf("mirror to itself = %v, want ErrInvalid", err)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 10_000_000, Priority: 2}); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(name); got.Mirror.RX || got.Mirror.TX {
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
	if !found || len(snap.Switches) != 1 || snap.Switches[0].Ports != 1 || snap.Switches[0].ObservedGeneration != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	// Live default queue: the port keeps its PortPolicy; after clearing it gets the new default.
	sc.Generation, sc.DefaultQueue.Length = 2, 300
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(name); got.RateBitsPerSec != 10_000_000 || got.QueueLen != 300 {
		t.Fatalf("after a default queue change %+v, want the PortPolicy's rate kept and the new queue length it leaves to the switch", got)
	}
	if err := c.ClearPortPolicy(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(name); got.RateBitsPerSec != 0 || got.QueueLen != 300 {
		t.Fatalf("policy after clear %+v, want the new default queue", got)
	}
	// Live port security: a port without a PortPolicy gets the switch's new default, and so
	// does a port attached afterwards (not the start-up default).
	sc.Generation, sc.PortSecurity = 3, controller.PortSecurityConfig{AntiSpoofing: false, BroadcastRate: 50, MulticastRate: 60}
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(name); !got.AllowSpoofing || got.BroadcastRate != 50 || got.MulticastRate != 60 {
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
	if got := l.policy(name); got.AllowSpoofing || got.BroadcastRate != 70 || got.RateBitsPerSec != 10_000_000 {
		t.Fatalf("a port with a PortPolicy after a live port security change: %+v, want the switch's new port security and the policy's rate", got)
	}
	if err := c.ClearPortPolicy(ctx, pod); err != nil {
		t.Fatal(err)
	}
	sc.PortSecurity = controller.PortSecurityConfig{AntiSpoofing: false, BroadcastRate: 50, MulticastRate: 60}
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatal(err)
	}
	name2 := l.pod("q", "eth0", "", "epcl1a")
	if got := l.policy(name2); got.QueueLen != 300 || !got.AllowSpoofing || got.BroadcastRate != 50 {
		t.Fatalf("port attached after the live changes: %+v; want queue 300 and the new port security", got)
	}
	// A pod the controller has a PortPolicy for gets it at attach.
	l.pods.mu.Lock()
	l.pods.pols["ns/r"] = controller.PolicyConfig{Policy: "ns/fast", Priority: 1, RateBPS: 5_000_000}
	l.pods.mu.Unlock()
	name3 := l.pod("r", "eth0", "", "epcl2a")
	if got := l.policy(name3); got.RateBitsPerSec != 5_000_000 || got.QueueLen != 300 || !got.AllowSpoofing {
		t.Fatalf("port of a pod with a PortPolicy at attach: %+v", got)
	}
	sc.Generation, sc.MTU = 4, 1400
	if err := c.ApplySwitch(ctx, sc); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("MTU change = %v, want ErrRestartRequired", err)
	}
	on := true
	sc.Generation, sc.MTU, sc.Offload = 5, 1500, &on
	if err := c.ApplySwitch(ctx, sc); err != nil {
		t.Fatalf("a (deprecated, ignored) offload in the spec = %v, want it applied", err)
	}
	if _, err := l.a.Release(ctx, &agentapi.ReleaseRequest{Key: agentapi.Key{ContainerID: "p", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 1e6}); !errors.Is(err, controller.ErrNoPort) {
		t.Fatalf("policy after release = %v, want ErrNoPort", err)
	}
}

// TestClusterSecondarySwitch adds a second VirtualSwitch to the running agent, gives a pod
// a second interface on it, applies a PortPolicy to both of the pod's ports, and deletes
// the switch: the pod loses that interface (link, port, addresses) and keeps its first one,
// and another pod on the first switch is untouched.
func TestClusterSecondarySwitch(t *testing.T) {
	sc := primarySwitch()
	l := newLiveCluster(t, sc, "10.250.8.0/24")
	c, ctx := l.c, context.Background()
	sec := controller.SwitchConfig{Name: "vale1", Generation: 7, MTU: 1400,
		DefaultQueue: controller.QueueConfig{Length: 64, Discipline: epairv1.Discipline("fair")},
		PortSecurity: controller.PortSecurityConfig{AntiSpoofing: true, BroadcastRate: 10, MulticastRate: 20},
		PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.251.0.0/24")}}
	if err := c.ApplySwitch(ctx, sec); err != nil {
		t.Fatal(err)
	}
	if got := l.a.SwitchNames(); !slices.Equal(got, []string{"vale0", "vale1"}) {
		t.Fatalf("switches %v", got)
	}
	first := l.pod("p", "eth0", "", "epcl0a")
	second := l.pod("p", "net1", "vale1", "epcl1a")
	other := l.pod("o", "eth0", "", "epcl2a")
	at, err := l.a.Check(ctx, &agentapi.CheckRequest{Key: agentapi.Key{ContainerID: "p", IfName: "net1"}})
	if err != nil {
		t.Fatal(err)
	}
	if at.MTU != 1400 || len(at.IPs) != 1 || !sec.PodCIDRs[0].Contains(at.IPs[0].Address.Addr()) || len(at.Routes) != 0 {
		t.Fatalf("second interface %+v, want MTU 1400, an address in %v and no default route", at, sec.PodCIDRs)
	}
	if got := l.policy(second); got.QueueLen != 64 || got.Discipline != dataplane.DiscFair || got.BroadcastRate != 10 {
		t.Fatalf("secondary port policy %+v, want the secondary switch's default", got)
	}
	// The pod's PortPolicy reaches both of its ports, over each switch's default.
	pod := controller.PodRef{Namespace: "ns", Name: "p"}
	if err := c.ApplyPortPolicy(ctx, pod, controller.PolicyConfig{Policy: "ns/lim", RateBPS: 2_000_000}); err != nil {
		t.Fatal(err)
	}
	if a, b := l.policy(first), l.policy(second); a.RateBitsPerSec != 2_000_000 || b.RateBitsPerSec != 2_000_000 || a.QueueLen != 128 || b.QueueLen != 64 {
		t.Fatalf("policies after a PortPolicy: %+v and %+v", a, b)
	}
	// The host reaches the secondary network through its gateway on the host port.
	out, err := exec.Command("ip", "-n", l.ns, "-o", "addr", "show").Output()
	if err != nil || !strings.Contains(string(out), "10.251.0.1/24") {
		t.Fatalf("gateway of the secondary switch not on the node: %v\n%s", err, out)
	}
	snap, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gens := map[string]int64{}
	for _, s := range snap.Switches {
		gens[s.Name] = s.ObservedGeneration
	}
	if gens["vale0"] != 1 || gens["vale1"] != 7 {
		t.Fatalf("switch generations %v", gens)
	}
	// A changed range needs a restart; the queue still applies live.
	moved := sec
	moved.Generation, moved.PodCIDRs, moved.DefaultQueue.Length = 8, []netip.Prefix{netip.MustParsePrefix("10.252.0.0/24")}, 32
	if err := c.ApplySwitch(ctx, moved); !errors.Is(err, ErrRestartRequired) || !strings.Contains(err.Error(), "podCIDRs") {
		t.Fatalf("podCIDRs change = %v, want ErrRestartRequired naming podCIDRs", err)
	}
	if err := c.ClearPortPolicy(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := l.policy(second); got.QueueLen != 32 {
		t.Fatalf("secondary queue after a live change %+v", got)
	}

	if err := c.DeleteSwitch(ctx, "vale1"); err != nil {
		t.Fatal(err)
	}
	if got := l.a.SwitchNames(); !slices.Equal(got, []string{"vale0"}) {
		t.Fatalf("switches after delete %v", got)
	}
	if _, err := l.a.Check(ctx, &agentapi.CheckRequest{Key: agentapi.Key{ContainerID: "p", IfName: "net1"}}); !errors.Is(err, agentapi.ErrNotFound) {
		t.Fatalf("second interface after delete: %v, want not found", err)
	}
	if err := exec.Command("ip", "-n", l.ns, "link", "show", "dev", "epcl1a").Run(); err == nil {
		t.Fatal("the second interface's link survived the switch")
	}
	for _, n := range []string{first, other} {
		if _, err := l.a.dp.(*realDataplane).d.Port(n); err != nil {
			t.Fatalf("port %s of the first switch after deleting the second: %v", n, err)
		}
	}
	if err := exec.Command("ip", "-n", l.ns, "link", "show", "dev", "epcl0a").Run(); err != nil {
		t.Fatal("the pod's first interface went with the second switch")
	}
	if _, err := os.Stat(filepath.Join(l.c.cfg.StateDir, "ipam-vale1.db")); !os.IsNotExist(err) {
		t.Fatalf("IPAM store of the deleted switch: %v", err)
	}
	out, _ = exec.Command("ip", "-n", l.ns, "-o", "addr", "show").Output()
	if strings.Contains(string(out), "10.251.0.1") {
		t.Fatalf("gateway of the deleted switch still on the node:\n%s", out)
	}
	// The switch can come back, empty.
	if err := c.ApplySwitch(ctx, sec); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSwitch(ctx, "vale1"); err != nil {
		t.Fatal(err)
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
	want := map[string]uint64{"no-destination": 2, "queue-full": 1, "spoofed-mac": 3, "spoofed-ip": 2, "storm": 4}
	if got.Dropped != 12 || !maps.Equal(got.Drops, want) {
		t.Fatalf("counters %+v, want 12 dropped as %v", got, want)
	}
}

// A frame the full output queue refused is the switch's queue-full and the queue's drop at
// once: NodeState counts it once; frames the queue evicted after queueing them add to it.
func TestPortStateCountsQueueDropsOnce(t *testing.T) {
	var p dataplane.PortInfo
	p.Kind, p.HostIfName = dataplane.KindPod, "epair0a"
	p.Counters.Drops[vale.DropNoSpace] = 5 // refused by the full queue
	p.Queue.Drops, p.Queue.Evicted = 7, 2  // the same 5, and 2 evicted
	p.Counters.Drops[vale.DropRefused] = 3
	p.Refused[dataplane.RefusedMAC] = 3
	pi := portInfo(p)
	pi.Pod = "ns/p"
	ps := portState("vale0", pi)
	want := []epairv1.DropCount{{Reason: "queue-full", Packets: 7}, {Reason: "spoofed-mac", Packets: 3}}
	if !slices.Equal(ps.Drops, want) {
		t.Fatalf("drops %+v, want %+v", ps.Drops, want)
	}
}

// TestPortStateCountsFastPath: a port's NodeState counters are its traffic, what the switch
// carried and what the kernel fast path moved without it; the agent API keeps them apart.
func TestPortStateCountsFastPath(t *testing.T) {
	var p dataplane.PortInfo
	p.Kind, p.HostIfName = dataplane.KindPod, "epair0a"
	p.Counters.InFrames, p.Counters.InBytes = 10, 1000
	p.Queue.TxFrames, p.Queue.TxBytes = 4, 400
	p.FastPath = dataplane.FastPathInfo{Source: true, Dest: true}
	p.FastPath.InFrames, p.FastPath.InBytes, p.FastPath.OutFrames, p.FastPath.OutBytes = 100, 100000, 50, 5000
	pi := portInfo(p)
	if f := pi.FastPath; f == nil || f.InFrames != 100 || f.OutBytes != 5000 || pi.Stats.InFrames != 10 {
		t.Fatalf("agent API: fast path %+v, switch %+v", pi.FastPath, pi.Stats)
	}
	ps := portState("vale0", pi)
	if ps.RxPackets != 110 || ps.RxBytes != 101000 || ps.TxPackets != 54 || ps.TxBytes != 5400 {
		t.Fatalf("NodeState: rx %d/%d tx %d/%d; want 110/101000 and 54/5400", ps.RxPackets, ps.RxBytes, ps.TxPackets, ps.TxBytes)
	}
}

// TestDropReasonsOneVocabulary: a port's drops carry the same reason names and totals in
// the agent API (valectl), NodeState and the metrics: the switch's and the dataplane's
// names, with nothing renamed on the way.
func TestDropReasonsOneVocabulary(t *testing.T) {
	var p dataplane.PortInfo
	p.Name, p.Kind, p.HostIfName = "vale0:epair0a", dataplane.KindPod, "epair0a"
	p.Counters.Drops[vale.DropNoSpace] = 5
	p.Counters.Drops[vale.DropNoDest] = 2
	p.Counters.Drops[vale.DropRefused] = 7
	p.Refused[dataplane.RefusedMAC] = 3
	p.Refused[dataplane.RefusedStorm] = 4
	api := portInfo(p)
	want := map[string]uint64{"queue-full": 5, "no-destination": 2, "spoofed-mac": 3, "storm": 4}
	if !maps.Equal(api.Stats.Drops, want) {
		t.Fatalf("agent API drops %v, want %v", api.Stats.Drops, want)
	}
	node := map[string]uint64{}
	for _, d := range portState("vale0", api).Drops {
		node[d.Reason] = uint64(d.Packets)
	}
	if !maps.Equal(node, want) {
		t.Fatalf("NodeState drops %v, want the agent API's %v", node, want)
	}
	a := &Agent{dp: statsDataplane{sl: &agentapi.SwitchList{Items: []agentapi.SwitchInfo{{Name: "vale0", Ports: []agentapi.PortInfo{api}}}}}}
	mfs, err := a.registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	metric := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "epair_port_drops_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					metric[l.GetValue()] = uint64(m.GetCounter().GetValue())
				}
			}
		}
	}
	if !maps.Equal(metric, want) {
		t.Fatalf("metrics drops %v, want the agent API's %v", metric, want)
	}
}

// TestClusterPeersLive: the Node-derived peers reach the real dataplane: a peer on a
// subnet of the node gets its pod CIDR routed to its address (proto 77), a peer whose pod
// CIDR overlaps the node's is left out (the others still routed), and an empty set removes
// the routes.
func TestClusterPeersLive(t *testing.T) {
	l := newLiveCluster(t, primarySwitch(), "10.250.10.0/24")
	ctx := context.Background()
	l.ip("-n", l.ns, "link", "add", "under0", "type", "veth", "peer", "name", "under1")
	l.ip("-n", l.ns, "link", "set", "under1", "up")
	l.ip("-n", l.ns, "addr", "add", "192.168.240.1/24", "dev", "under0")
	l.ip("-n", l.ns, "link", "set", "under0", "up")
	good := controller.PeerConfig{Name: "n2", Addresses: []netip.Addr{netip.MustParseAddr("192.168.240.2")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.250.11.0/24")}}
	bad := controller.PeerConfig{Name: "n3", Addresses: []netip.Addr{netip.MustParseAddr("192.168.240.3")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.250.10.0/25")}}
	if err := l.c.SetPeers(ctx, []controller.PeerConfig{good, bad}); err != nil {
		t.Fatal(err)
	}
	routes := func() string {
		out, err := exec.Command("ip", "-n", l.ns, "route", "show", "proto", "77").CombinedOutput()
		if err != nil {
			t.Fatalf("ip route: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := routes(); !strings.HasPrefix(got, "10.250.11.0/24 via 192.168.240.2 dev under0") || strings.Contains(got, "10.250.10.0/25") {
		t.Fatalf("peer routes %q", got)
	}
	pl, err := l.a.Peers(ctx)
	if err != nil || len(pl.Items) != 1 || pl.Items[0].Name != "n2" || pl.Items[0].Mode != "routed" {
		t.Fatalf("peers %+v, %v", pl, err)
	}
	// A peer behind a router (VXLAN); the metrics have both, and the tunnel's counters.
	l.ip("-n", l.ns, "route", "add", "203.0.113.0/24", "via", "192.168.240.254")
	far := controller.PeerConfig{Name: "n4", Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.4")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.250.12.0/24")}}
	if err := l.c.SetPeers(ctx, []controller.PeerConfig{good, bad, far}); err != nil {
		t.Fatal(err)
	}
	mfs, err := l.a.registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = fmt.Sprint(v)
		}
	}
	for k, v := range map[string]string{"epair_peer_routes{mode=routed,peer=n2}": "1", "epair_peer_routes{mode=vxlan,peer=n4}": "1"} {
		if got[k] != v {
			t.Errorf("metric %s = %q, want %s", k, got[k], v)
		}
	}
	for _, k := range []string{"epair_vxlan_packets_total{direction=tx}", "epair_vxlan_errors_total{direction=rx}"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no metric %s with a VXLAN peer", k)
		}
	}
	if err := l.c.SetPeers(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := routes(); got != "" {
		t.Fatalf("peer routes after the last peer left: %q", got)
	}
}

// TestClusterPeerCountersLive: with masquerading on (the counters live in the agent's
// nftables table), what the node sends toward a peer's pod CIDR shows in the metrics'
// epair_peer_frames_total and epair_peer_bytes_total (tx) and in GET /v1/peers; nothing
// came from the peer's pods (rx stays 0); without masquerading (TestClusterPeersLive's
// agent) there are no such series.
func TestClusterPeerCountersLive(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (the peer counters are nftables counters)")
	}
	l := newLiveCluster(t, primarySwitch(), "10.250.20.0/24", func(c *Config) { c.Masquerade = true })
	ctx := context.Background()
	l.ip("-n", l.ns, "link", "add", "under0", "type", "veth", "peer", "name", "under1")
	l.ip("-n", l.ns, "link", "set", "under1", "up")
	l.ip("-n", l.ns, "addr", "add", "192.168.241.1/24", "dev", "under0")
	l.ip("-n", l.ns, "link", "set", "under0", "up")
	// The peer's address resolves (to under1, which drops what it gets): the pings leave.
	l.ip("-n", l.ns, "neigh", "replace", "192.168.241.2", "lladdr", "02:00:00:00:24:02", "dev", "under0", "nud", "permanent")
	n2 := controller.PeerConfig{Name: "n2", Addresses: []netip.Addr{netip.MustParseAddr("192.168.241.2")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.250.21.0/24")}}
	n3 := controller.PeerConfig{Name: "n3", Addresses: []netip.Addr{netip.MustParseAddr("192.168.241.3")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.250.22.0/24")}}
	if err := l.c.SetPeers(ctx, []controller.PeerConfig{n2, n3}); err != nil {
		t.Fatal(err)
	}
	// 5 pings of 500 bytes (IP) from the node to a pod address of n2, unanswered.
	exec.Command("ip", "netns", "exec", l.ns, "ping", "-c", "5", "-i", "0.05", "-W", "0.1", "-s", "472", "10.250.21.5").Run()
	gather := func(a *Agent) map[string]float64 {
		mfs, err := a.registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "epair_peer_") {
				continue
			}
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, lp := range m.GetLabel() {
					labels = append(labels, lp.GetName()+"="+lp.GetValue())
				}
				got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue()
			}
		}
		return got
	}
	got := gather(l.a)
	for k, min := range map[string]float64{"epair_peer_frames_total{direction=tx,peer=n2}": 5, "epair_peer_bytes_total{direction=tx,peer=n2}": 2500} {
		if v, ok := got[k]; !ok || v < min {
			t.Errorf("metric %s = %v (present %v), want at least %v", k, v, ok, min)
		}
	}
	for _, k := range []string{"epair_peer_frames_total{direction=rx,peer=n2}", "epair_peer_frames_total{direction=tx,peer=n3}", "epair_peer_bytes_total{direction=rx,peer=n3}"} {
		if v, ok := got[k]; !ok || v != 0 {
			t.Errorf("metric %s = %v (present %v), want 0", k, v, ok)
		}
	}
	pl, err := l.a.Peers(ctx)
	if err != nil || len(pl.Items) != 2 || pl.Items[0].Name != "n2" || pl.Items[0].Counters == nil || pl.Items[0].Counters.TxFrames < 5 {
		t.Fatalf("GET /v1/peers: %+v, %v; want n2 with at least 5 frames sent", pl, err)
	}

	// Without masquerading: no table, no counters, no series.
	l2 := newLiveCluster(t, primarySwitch(), "10.250.30.0/24")
	if err := l2.c.SetPeers(ctx, []controller.PeerConfig{n2}); err != nil {
		t.Fatal(err)
	}
	for k := range gather(l2.a) {
		if !strings.HasPrefix(k, "epair_peer_routes{") {
			t.Errorf("series %s without masquerading, want only epair_peer_routes", k)
		}
	}
	if pl, err := l2.a.Peers(ctx); err != nil || len(pl.Items) != 1 || pl.Items[0].Counters != nil {
		t.Errorf("GET /v1/peers without masquerading: %+v, %v; want n2 without counters", pl, err)
	}
}

// TestDetectMTU: the pods' MTU is the MTU of the interface holding the node's address, less
// the VXLAN overhead of that address's family unless peers are only routed; without such an
// interface or a default route, the default less the overhead.
func TestDetectMTU(t *testing.T) {
	ns := netnsutil.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "under0", "mtu", "1400", "type", "veth", "peer", "name", "under1"},
		{"ip", "addr", "add", "192.168.9.1/24", "dev", "under0"},
		{"ip", "addr", "add", "fd00:9::1/64", "dev", "under0", "nodad"},
		{"ip", "link", "set", "under0", "up"},
	} {
		if out, err := ns.Exec(c[0], c[1:]...); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	for _, tc := range []struct {
		addr, mode string
		want       int
		how        string
	}{
		{"192.168.9.1", "", 1350, "under0's (it holds 192.168.9.1) less 50 for VXLAN"},
		{"fd00:9::1", "auto", 1330, "less 70 for VXLAN"},
		{"192.168.9.1", "routed", 1400, "under0's"},
		{"10.9.9.9", "vxlan", 1450, "the default 1500"},
	} {
		var got int
		var how string
		if err := ns.Do(func() error { got, how = detectMTU([]netip.Addr{netip.MustParseAddr(tc.addr)}, tc.mode); return nil }); err != nil {
			t.Fatal(err)
		}
		if got != tc.want || !strings.Contains(how, tc.how) {
			t.Errorf("node address %s, peer mode %q: MTU %d (%s), want %d (%s)", tc.addr, tc.mode, got, how, tc.want, tc.how)
		}
	}
}
