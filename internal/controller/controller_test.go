package controller

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/pkg/limits"
)

func TestSchemaRejectsInvalidVirtualSwitch(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	q := resource.MustParse
	cases := []struct {
		name, want string
		spec       epairv1.VirtualSwitchSpec
		objName    string
	}{
		{"bad name", "metadata.name must be 'vale'", epairv1.VirtualSwitchSpec{}, "switch-a"},
		{"mtu too small", "spec.mtu", epairv1.VirtualSwitchSpec{MTU: 575}, ""},
		{"mtu too large", "spec.mtu", epairv1.VirtualSwitchSpec{MTU: 9001}, ""},
		{"batch", "spec.batchSize", epairv1.VirtualSwitchSpec{BatchSize: 9000}, ""},
		{"max ports", "spec.maxPorts", epairv1.VirtualSwitchSpec{MaxPorts: 1}, ""},
		{"fdb not power of two", "fdb.size must be a power of two", epairv1.VirtualSwitchSpec{FDB: epairv1.FDBSpec{Size: 1000}}, ""},
		{"aging too long", "fdb.aging must be 0s (off) or between 1s and 24h", epairv1.VirtualSwitchSpec{FDB: epairv1.FDBSpec{Aging: metav1.Duration{Duration: 48 * time.Hour}}}, ""},
		{"discipline", "spec.defaultQueue.discipline", epairv1.VirtualSwitchSpec{DefaultQueue: epairv1.QueueSpec{Discipline: "fifo"}}, ""},
		{"negative rate", "rate must not be negative", epairv1.VirtualSwitchSpec{DefaultQueue: epairv1.QueueSpec{Rate: ptr(q("-1M"))}}, ""},
		{"huge rate", "rate must be at most 400G", epairv1.VirtualSwitchSpec{DefaultQueue: epairv1.QueueSpec{Rate: ptr(q("1T"))}}, ""},
		{"queue length", "spec.defaultQueue.length", epairv1.VirtualSwitchSpec{DefaultQueue: epairv1.QueueSpec{Length: 100000}}, ""},
		{"selector operator", "operator must be In, NotIn, Exists or DoesNotExist", epairv1.VirtualSwitchSpec{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}, ""},
		{"pod cidr syntax", "each entry must be an IPv4 or IPv6 CIDR", epairv1.VirtualSwitchSpec{PodCIDRs: []string{"10.100.0.0"}}, ""},
		{"pod cidr prefix length", "each entry must be an IPv4 or IPv6 CIDR", epairv1.VirtualSwitchSpec{PodCIDRs: []string{"fd00::/129"}}, ""},
		{"pod cidr ipv4-mapped", "each entry must be an IPv4 or IPv6 CIDR", epairv1.VirtualSwitchSpec{PodCIDRs: []string{"::ffff:10.100.0.0/120"}}, ""},
		{"pod cidr host bits", "each entry must be canonical", epairv1.VirtualSwitchSpec{PodCIDRs: []string{"10.100.0.1/24"}}, ""},
		{"pod cidr host bits v6", "each entry must be canonical", epairv1.VirtualSwitchSpec{PodCIDRs: []string{"10.100.0.0/24", "fd00::1/64"}}, ""},
		{"two ipv4 pod cidrs", "at most one IPv4 CIDR", epairv1.VirtualSwitchSpec{PodCIDRs: []string{"10.100.0.0/24", "10.101.0.0/24"}}, ""},
		{"two ipv6 pod cidrs", "at most one IPv6 CIDR", epairv1.VirtualSwitchSpec{PodCIDRs: []string{"fd00::/64", "fd01::/64"}}, ""},
		{"three pod cidrs", "spec.podCIDRs: Too many", epairv1.VirtualSwitchSpec{PodCIDRs: []string{"10.100.0.0/24", "fd00::/64", "10.101.0.0/24"}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.objName
			if name == "" {
				name = uniq("valebad")
			}
			vs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: tc.spec}
			err := testClient.Create(ctx, vs)
			if err == nil {
				_ = testClient.Delete(ctx, vs)
				t.Fatalf("create accepted %+v; want a rejection mentioning %q", tc.spec, tc.want)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v; want Invalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSchemaDefaultsVirtualSwitch(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	vs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: uniq("valedef")}}
	if err := testClient.Create(ctx, vs); err != nil {
		t.Fatalf("create: %v", err)
	}
	defer testClient.Delete(ctx, vs)
	s := vs.Spec
	if s.MTU != 0 || s.BatchSize != 1024 || s.MaxPorts != 254 || s.FDB.Size != 4096 ||
		s.FDB.Aging.Duration != 5*time.Minute || s.DefaultQueue.Length != limits.DefaultQueueLen || s.DefaultQueue.Discipline != epairv1.DisciplineClassic {
		t.Fatalf("defaults not applied: %+v", s)
	}
	if ps := s.PortSecurity; ps.AntiSpoofing == nil || !*ps.AntiSpoofing || ps.BroadcastRate == nil || *ps.BroadcastRate != limits.DefaultBroadcastRate ||
		ps.MulticastRate == nil || *ps.MulticastRate != limits.DefaultMulticastRate {
		t.Fatalf("port security defaults not applied: %+v", ps)
	}
	cfg, err := SwitchConfigFromSpec(vs)
	if err != nil {
		t.Fatalf("convert defaulted switch: %v", err)
	}
	if cfg.FDBAging != 5*time.Minute || cfg.DefaultQueue.RateBPS != 0 {
		t.Fatalf("converted %+v", cfg)
	}
}

func TestSchemaPortPolicy(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	q := resource.MustParse
	bad := []struct {
		name, want string
		spec       epairv1.PortPolicySpec
	}{
		{"burst without rate", "burst needs rate", epairv1.PortPolicySpec{Burst: ptr(q("64Ki"))}},
		{"packet burst without rate", "packetBurst needs packetRate", epairv1.PortPolicySpec{PacketBurst: ptr(int64(10))}},
		{"zero rate", "rate must be positive", epairv1.PortPolicySpec{Rate: ptr(q("0"))}},
		{"tiny burst", "burst must be at least 1500 bytes", epairv1.PortPolicySpec{Rate: ptr(q("10M")), Burst: ptr(q("100"))}},
		{"priority", "spec.priorityClass", epairv1.PortPolicySpec{PriorityClass: "urgent"}},
		{"packet rate", "spec.packetRate", epairv1.PortPolicySpec{PacketRate: ptr(int64(0))}},
		{"queue", "spec.queueLength", epairv1.PortPolicySpec{QueueLength: ptr(int32(0))}},
		{"mirror", "spec.mirror.monitor", epairv1.PortPolicySpec{Mirror: &epairv1.MirrorSpec{Monitor: "a b"}}},
		{"selector values", "In and NotIn need values", epairv1.PortPolicySpec{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "In"}}}}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			pp := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniq("pp-"), Namespace: ns}, Spec: tc.spec}
			err := testClient.Create(ctx, pp)
			if err == nil {
				t.Fatalf("create accepted %+v; want a rejection mentioning %q", tc.spec, tc.want)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v; want Invalid mentioning %q", err, tc.want)
			}
		})
	}
	good := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "good", Namespace: ns}, Spec: epairv1.PortPolicySpec{
		Rate: ptr(q("10M")), PacketRate: ptr(int64(1000)), Mirror: &epairv1.MirrorSpec{Monitor: "mon0"},
	}}
	if err := testClient.Create(ctx, good); err != nil {
		t.Fatalf("create valid policy: %v", err)
	}
	// antiSpoofing has no default: absent keeps the switch's port security.
	if good.Spec.PriorityClass != epairv1.PriorityNormal || good.Spec.AntiSpoofing != nil || good.Spec.Mirror.Direction != epairv1.MirrorBoth {
		t.Fatalf("defaults not applied: %+v", good.Spec)
	}
}

func TestNodePodCIDRsAndNodeState(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dp := newRecordingDataplane()
	dp.snap = Snapshot{
		Switches: []epairv1.SwitchState{{Name: "vale0", Ports: 1}},
		Ports:    []epairv1.PortState{{Name: "epair1a", Switch: "vale0", Pod: "ns/p", RxPackets: 5, QueueDepth: 3, QueueLength: 256, Drops: []epairv1.DropCount{{Reason: "queue-full", Packets: 2}}}},
		Drops:    []epairv1.DropCount{{Reason: "queue-full", Packets: 2}, {Reason: "no-destination", Packets: 7}},
	}
	_, node := startController(t, dp, nil, nil, "10.244.3.0/24", "fd00:10:244:3::/64")
	want := []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:10:244:3::/64")}
	if _, ok := waitFor(5*time.Second, func() bool { return slices.Equal(dp.podCIDRs(), want) }); !ok {
		t.Fatalf("SetPodCIDRs never got %v; calls %v", want, dp.callLog())
	}
	var ns epairv1.NodeState
	if _, ok := waitFor(10*time.Second, func() bool {
		if err := testClient.Get(ctx, client.ObjectKey{Name: node.Name}, &ns); err != nil {
			return false
		}
		return meta.IsStatusConditionTrue(ns.Status.Conditions, epairv1.ConditionReady)
	}); !ok {
		t.Fatalf("NodeState never Ready: %+v", ns.Status)
	}
	if ns.Spec.NodeName != node.Name || len(ns.OwnerReferences) != 1 || ns.OwnerReferences[0].UID != node.UID {
		t.Fatalf("NodeState spec/owner: %+v %+v", ns.Spec, ns.OwnerReferences)
	}
	if strings.Join(ns.Status.PodCIDRs, ",") != "10.244.3.0/24,fd00:10:244:3::/64" {
		t.Fatalf("status podCIDRs %v", ns.Status.PodCIDRs)
	}
	if len(ns.Status.Ports) != 1 || ns.Status.Ports[0].QueueDepth != 3 || len(ns.Status.Drops) != 2 {
		t.Fatalf("status ports/drops %+v / %+v", ns.Status.Ports, ns.Status.Drops)
	}
	// The dataplane going unready turns Ready false with the reason.
	dp.setReady(false)
	if _, ok := waitFor(5*time.Second, func() bool {
		if err := testClient.Get(ctx, client.ObjectKey{Name: node.Name}, &ns); err != nil {
			return false
		}
		c := meta.FindStatusCondition(ns.Status.Conditions, epairv1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "dataplane not ready")
	}); !ok {
		t.Fatalf("Ready did not turn false: %+v", ns.Status.Conditions)
	}
	// A NodeState whose name differs from spec.nodeName is rejected.
	bad := &epairv1.NodeState{ObjectMeta: metav1.ObjectMeta{Name: uniq("x")}, Spec: epairv1.NodeStateSpec{NodeName: "other"}}
	if err := testClient.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "metadata.name must equal spec.nodeName") {
		t.Fatalf("create mismatched NodeState: %v", err)
	}
}

func TestNodeWithoutPodCIDRsIsNotReady(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dp := newRecordingDataplane()
	_, node := startController(t, dp, nil, nil)
	var ns epairv1.NodeState
	if _, ok := waitFor(10*time.Second, func() bool {
		if testClient.Get(ctx, client.ObjectKey{Name: node.Name}, &ns) != nil {
			return false
		}
		c := meta.FindStatusCondition(ns.Status.Conditions, epairv1.ConditionPodCIDRs)
		return c != nil && c.Status == metav1.ConditionFalse
	}); !ok {
		t.Fatalf("PodCIDRsAssigned not false: %+v", ns.Status.Conditions)
	}
	// kube-controller-manager assigns the CIDR later: picked up from the update.
	node.Spec.PodCIDR, node.Spec.PodCIDRs = "10.244.9.0/24", []string{"10.244.9.0/24"}
	if err := testClient.Update(ctx, node); err != nil {
		t.Fatalf("update node: %v", err)
	}
	if _, ok := waitFor(5*time.Second, func() bool { return len(dp.podCIDRs()) == 1 }); !ok {
		t.Fatalf("pod CIDR update not applied: %v", dp.callLog())
	}
}

func TestVirtualSwitchFollowsNodeSelector(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dp := newRecordingDataplane()
	zone := uniq("z")
	_, node := startController(t, dp, nil, map[string]string{"zone": zone}, "10.244.4.0/24")

	all := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: uniq("valeall")}}
	sel := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: uniq("valesel")}, Spec: epairv1.VirtualSwitchSpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"zone": zone}}, MTU: 4000,
	}}
	other := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: uniq("valeoth")}, Spec: epairv1.VirtualSwitchSpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "elsewhere"}},
	}}
	for _, vs := range []*epairv1.VirtualSwitch{all, sel, other} {
		if err := testClient.Create(ctx, vs); err != nil {
			t.Fatalf("create %s: %v", vs.Name, err)
		}
		defer testClient.Delete(ctx, vs)
	}
	if _, ok := waitFor(5*time.Second, func() bool {
		_, a := dp.switchCfg(all.Name)
		s, b := dp.switchCfg(sel.Name)
		return a && b && s.MTU == 4000
	}); !ok {
		t.Fatalf("switches not applied: %v", dp.callLog())
	}
	if _, ok := dp.switchCfg(other.Name); ok {
		t.Fatalf("switch %s for another zone applied", other.Name)
	}
	// A spec change is applied live with the new generation.
	sel.Spec.MTU = 1400
	if err := testClient.Update(ctx, sel); err != nil {
		t.Fatalf("update: %v", err)
	}
	if _, ok := waitFor(5*time.Second, func() bool { s, _ := dp.switchCfg(sel.Name); return s.MTU == 1400 && s.Generation == sel.Generation }); !ok {
		t.Fatalf("update not applied: %v", dp.callLog())
	}
	// Relabelling the node moves it out of sel's selection and into other's.
	node.Labels["zone"] = "elsewhere"
	if err := testClient.Update(ctx, node); err != nil {
		t.Fatalf("relabel node: %v", err)
	}
	if _, ok := waitFor(5*time.Second, func() bool {
		_, s := dp.switchCfg(sel.Name)
		_, o := dp.switchCfg(other.Name)
		return !s && o
	}); !ok {
		t.Fatalf("relabel not followed: %v", dp.callLog())
	}
	// Deleting a VirtualSwitch deletes the switch.
	if err := testClient.Delete(ctx, all); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, ok := waitFor(5*time.Second, func() bool { _, a := dp.switchCfg(all.Name); return !a }); !ok {
		t.Fatalf("delete not applied: %v", dp.callLog())
	}
	// The Applied event is recorded on the VirtualSwitch.
	if _, ok := waitFor(5*time.Second, func() bool { return hasEvent(ctx, other.Name, "Applied") }); !ok {
		t.Fatalf("no Applied event for %s", other.Name)
	}
}

func TestVirtualSwitchApplyFailureRetriesAndReports(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dp := newRecordingDataplane()
	dp.failNext = errors.New("switch busy")
	_, node := startController(t, dp, nil, nil, "10.244.5.0/24")
	vs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: uniq("valefail")}}
	if err := testClient.Create(ctx, vs); err != nil {
		t.Fatalf("create: %v", err)
	}
	defer testClient.Delete(ctx, vs)
	// The first apply fails, the retry (backoff) succeeds.
	if _, ok := waitFor(10*time.Second, func() bool { _, ok := dp.switchCfg(vs.Name); return ok }); !ok {
		t.Fatalf("no retry: %v", dp.callLog())
	}
	// Events are written asynchronously (the recorder's broadcaster): wait for it.
	if _, ok := waitFor(5*time.Second, func() bool { return hasEvent(ctx, vs.Name, "ApplyFailed") }); !ok {
		t.Fatalf("no ApplyFailed event")
	}
	var ns epairv1.NodeState
	if _, ok := waitFor(5*time.Second, func() bool {
		return testClient.Get(ctx, client.ObjectKey{Name: node.Name}, &ns) == nil &&
			meta.IsStatusConditionTrue(ns.Status.Conditions, epairv1.ConditionSwitches)
	}); !ok {
		t.Fatalf("SwitchesApplied not true after retry: %+v", ns.Status.Conditions)
	}
}

func TestPortPolicyAppliesLiveWithinOneSecond(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dp := newRecordingDataplane()
	_, node := startController(t, dp, nil, nil, "10.244.6.0/24")
	ns := newNamespace(t)
	newPod(t, ns, "web", node.Name, map[string]string{"app": "web"})
	db := newPod(t, ns, "db", node.Name, map[string]string{"app": "db"})
	elsewhere := newPod(t, ns, "web-elsewhere", "another-node", map[string]string{"app": "web"})
	dp.addPort(ns + "/web")
	dp.addPort(ns + "/db")
	dp.addPort(ns + "/web-elsewhere") // the reconciler must not even look at it
	_, _ = db, elsewhere

	pp := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "limit", Namespace: ns}, Spec: epairv1.PortPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Rate:        ptr(resource.MustParse("10M")),
	}}
	start := time.Now()
	if err := testClient.Create(ctx, pp); err != nil {
		t.Fatalf("create policy: %v", err)
	}
	_, ok := waitFor(5*time.Second, func() bool { p, ok := dp.policy(ns + "/web"); return ok && p.RateBPS == 10_000_000 })
	d := time.Since(start)
	if !ok || d > time.Second {
		t.Fatalf("policy applied ok=%v after %v (want within 1s); calls %v", ok, d, dp.callLog())
	}
	t.Logf("create → applied in %v", d)
	// A change to the policy reaches the running pod's port.
	pp.Spec.Rate = ptr(resource.MustParse("20M"))
	start = time.Now()
	if err := testClient.Update(ctx, pp); err != nil {
		t.Fatalf("update policy: %v", err)
	}
	_, ok = waitFor(5*time.Second, func() bool { p, _ := dp.policy(ns + "/web"); return p.RateBPS == 20_000_000 })
	if d = time.Since(start); !ok || d > time.Second {
		t.Fatalf("update applied ok=%v after %v", ok, d)
	}
	t.Logf("update → applied in %v", d)
	// Relabelling a pod into the selection applies it; out of it clears it.
	db.Labels["app"] = "web"
	if err := testClient.Update(ctx, db); err != nil {
		t.Fatalf("relabel: %v", err)
	}
	if _, ok := waitFor(2*time.Second, func() bool { _, ok := dp.policy(ns + "/db"); return ok }); !ok {
		t.Fatalf("relabelled pod not applied: %v", dp.callLog())
	}
	// Deleting the policy clears every port it set.
	start = time.Now()
	if err := testClient.Delete(ctx, pp); err != nil {
		t.Fatalf("delete policy: %v", err)
	}
	_, ok = waitFor(5*time.Second, func() bool {
		_, a := dp.policy(ns + "/web")
		_, b := dp.policy(ns + "/db")
		return !a && !b
	})
	d = time.Since(start)
	if !ok || d > time.Second {
		t.Fatalf("delete cleared ok=%v after %v: %v", ok, d, dp.callLog())
	}
	for _, c := range dp.callLog() {
		if strings.Contains(c, "web-elsewhere") {
			t.Fatalf("pod of another node reconciled: %q", c)
		}
	}
	if _, ok := waitFor(5*time.Second, func() bool { return hasEvent(ctx, "web", "PortPolicyApplied") }); !ok {
		t.Fatalf("no PortPolicyApplied event on the pod")
	}
}

func TestPortPolicyWaitsForPortAttach(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dp := newRecordingDataplane()
	c, node := startController(t, dp, nil, nil, "10.244.7.0/24")
	ns := newNamespace(t)
	pp := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: epairv1.PortPolicySpec{
		PacketRate: ptr(int64(5000)), PriorityClass: epairv1.PriorityHigh,
	}}
	if err := testClient.Create(ctx, pp); err != nil {
		t.Fatalf("create policy: %v", err)
	}
	pod := newPod(t, ns, "late", node.Name, nil)
	// No port yet: the desired policy is known to the attach path...
	if _, ok := waitFor(5*time.Second, func() bool { p, ok := c.PolicyFor(ns, "late"); return ok && p.PacketRate == 5000 }); !ok {
		t.Fatalf("PolicyFor never knew the policy: %v", dp.callLog())
	}
	if _, ok := dp.policy(ns + "/late"); ok {
		t.Fatal("applied to a pod without a port")
	}
	// ...and the attach notice applies it at once.
	dp.addPort(ns + "/late")
	c.PortAttached(PodRef{Namespace: ns, Name: "late", UID: pod.UID})
	d, ok := waitFor(5*time.Second, func() bool { p, ok := dp.policy(ns + "/late"); return ok && p.Priority == 1 && p.PacketBurst == 50 })
	if !ok || d > time.Second {
		t.Fatalf("applied after attach ok=%v in %v: %v", ok, d, dp.callLog())
	}
}

func TestPortPolicyConflictOldestWins(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dp := newRecordingDataplane()
	_, node := startController(t, dp, nil, nil, "10.244.8.0/24")
	ns := newNamespace(t)
	newPod(t, ns, "p", node.Name, map[string]string{"tier": "a"})
	dp.addPort(ns + "/p")
	older := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "older", Namespace: ns}, Spec: epairv1.PortPolicySpec{Rate: ptr(resource.MustParse("1M"))}}
	if err := testClient.Create(ctx, older); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has a resolution of one second
	newer := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "aaa-newer", Namespace: ns}, Spec: epairv1.PortPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "a"}}, Rate: ptr(resource.MustParse("2M")),
	}}
	if err := testClient.Create(ctx, newer); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitFor(5*time.Second, func() bool { return hasEvent(ctx, "p", "PortPolicyConflict") }); !ok {
		t.Fatalf("no conflict event: %v", dp.callLog())
	}
	if p, _ := dp.policy(ns + "/p"); p.Policy != ns+"/older" || p.RateBPS != 1_000_000 {
		t.Fatalf("applied %+v; want the older policy", p)
	}
	// Removing the winner hands the port to the other policy.
	if err := testClient.Delete(ctx, older); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitFor(5*time.Second, func() bool { p, _ := dp.policy(ns + "/p"); return p.Policy == ns+"/aaa-newer" }); !ok {
		t.Fatalf("newer policy not applied: %v", dp.callLog())
	}
}

func TestCNIConfigWrittenOnlyWhenReadyAndRemovedOnUninstall(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dir := t.TempDir()
	confList := []byte(`{"cniVersion":"1.0.0","name":"epair","plugins":[{"type":"epair-cni","switch":"valecni"}]}`)
	dsNS := newNamespace(t)
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "epair-agent", Namespace: dsNS},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "a"}}},
			},
		},
	}
	if err := testClient.Create(ctx, ds); err != nil {
		t.Fatalf("create daemonset: %v", err)
	}
	dp := newRecordingDataplane()
	dp.setReady(false)
	path := filepath.Join(dir, "10-epair.conflist")

	plugin := filepath.Join(t.TempDir(), "epair-cni")
	if err := os.WriteFile(plugin, []byte("plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	var last *Controller
	run := func() (stop func()) {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: uniq("node-")}}
		node.Spec.PodCIDRs = []string{"10.244.10.0/24"}
		if err := testClient.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		c, err := New(testCfg, Options{NodeName: node.Name, Dataplane: dp, StatusInterval: 300 * time.Millisecond,
			CNI:       CNIConfig{Dir: dir, FileName: "10-epair.conflist", ConfList: confList, Switch: "valecni", PluginPath: plugin},
			DaemonSet: types.NamespacedName{Namespace: dsNS, Name: ds.Name},
		})
		if err != nil {
			t.Fatal(err)
		}
		last = c
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Start(runCtx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller: %v", err)
			}
			_ = testClient.Delete(ctx, node)
		}
	}
	stop := run()
	// Not ready, no switch: nothing written.
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("conflist written before ready: %v", err)
	}
	dp.setReady(true)
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("conflist written before its switch was applied: %v", err)
	}
	vs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: "valecni"}}
	if err := testClient.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	defer testClient.Delete(ctx, vs)
	if _, ok := waitFor(5*time.Second, func() bool { b, err := os.ReadFile(path); return err == nil && string(b) == string(confList) }); !ok {
		t.Fatalf("conflist not written once ready: %v", dp.callLog())
	}
	// A rolling restart (DaemonSet still there) keeps the file.
	stop()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("conflist removed on a restart: %v", err)
	}
	if _, err := os.Stat(plugin); err != nil || last.Uninstalling() {
		t.Fatalf("restart taken for an uninstall: plugin %v, Uninstalling %v", err, last.Uninstalling())
	}
	// Uninstall (DaemonSet gone) removes it.
	stop = run()
	if err := testClient.Delete(ctx, ds); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("conflist left after uninstall: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left in the CNI dir: %v", ents)
	}
	if _, err := os.Stat(plugin); !os.IsNotExist(err) || !last.Uninstalling() {
		t.Fatalf("uninstall: plugin %v, Uninstalling %v", err, last.Uninstalling())
	}
}

// TestSecondarySwitchConflist: with two VirtualSwitches selecting the node,
// both are applied (the secondary with its spec.podCIDRs), the conflist's
// switch gets the primary conflist and the other its own conflist in
// NetworksDir; deleting the secondary removes its file and leaves the
// primary's. The schema accepts a dual-stack pair.
func TestSecondarySwitchConflist(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dir, netDir := t.TempDir(), filepath.Join(t.TempDir(), "multus")
	zone := uniq("z")
	primary, secondary := uniq("valepri"), uniq("valesec")
	confList := []byte(`{"cniVersion":"1.0.0","name":"epair","plugins":[{"type":"epair-cni","switch":"` + primary + `"},{"type":"portmap"}]}`)
	dp := newRecordingDataplane()
	_, node := startController(t, dp, func(o *Options) {
		o.CNI = CNIConfig{Dir: dir, FileName: "10-epair.conflist", ConfList: confList, Switch: primary, NetworksDir: netDir}
	}, map[string]string{"zone": zone}, "10.244.11.0/24")
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"zone": zone}}
	pvs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: primary}, Spec: epairv1.VirtualSwitchSpec{NodeSelector: sel}}
	svs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: secondary}, Spec: epairv1.VirtualSwitchSpec{
		NodeSelector: sel, PodCIDRs: []string{"10.100.0.0/24", "fd00:100::/64"},
	}}
	for _, vs := range []*epairv1.VirtualSwitch{pvs, svs} {
		if err := testClient.Create(ctx, vs); err != nil {
			t.Fatalf("create %s: %v", vs.Name, err)
		}
		defer testClient.Delete(ctx, vs)
	}
	primaryPath := filepath.Join(dir, "10-epair.conflist")
	secPath := filepath.Join(netDir, "epair-"+secondary+".conflist")
	if _, ok := waitFor(5*time.Second, func() bool {
		_, a := dp.switchCfg(primary)
		_, b := dp.switchCfg(secondary)
		_, e1 := os.Stat(primaryPath)
		_, e2 := os.Stat(secPath)
		return a && b && e1 == nil && e2 == nil
	}); !ok {
		t.Fatalf("switches applied / conflists written: %v, files %v %v", dp.callLog(), readDir(t, dir), readDir(t, netDir))
	}
	if p, _ := dp.switchCfg(primary); p.PodCIDRs != nil {
		t.Fatalf("primary switch has PodCIDRs %v", p.PodCIDRs)
	}
	s, _ := dp.switchCfg(secondary)
	if want := []netip.Prefix{netip.MustParsePrefix("10.100.0.0/24"), netip.MustParsePrefix("fd00:100::/64")}; !slices.Equal(s.PodCIDRs, want) {
		t.Fatalf("secondary switch PodCIDRs %v, want %v", s.PodCIDRs, want)
	}
	var l struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type, Switch string
		} `json:"plugins"`
	}
	b, _ := os.ReadFile(secPath)
	if err := json.Unmarshal(b, &l); err != nil || l.Name != "epair-"+secondary || len(l.Plugins) != 1 || l.Plugins[0].Type != "epair-cni" || l.Plugins[0].Switch != secondary {
		t.Fatalf("secondary conflist %s (%v)", b, err)
	}
	if got := readDir(t, netDir); len(got) != 1 {
		t.Fatalf("networks dir holds %v; want the secondary's conflist only", got)
	}
	var ns epairv1.NodeState
	if _, ok := waitFor(5*time.Second, func() bool {
		if testClient.Get(ctx, client.ObjectKey{Name: node.Name}, &ns) != nil {
			return false
		}
		c := meta.FindStatusCondition(ns.Status.Conditions, epairv1.ConditionCNIConfig)
		return c != nil && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, secondary)
	}); !ok {
		t.Fatalf("CNIConfigInstalled does not name the secondary network: %+v", ns.Status.Conditions)
	}
	if err := testClient.Delete(ctx, svs); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitFor(5*time.Second, func() bool { _, err := os.Stat(secPath); return os.IsNotExist(err) }); !ok {
		t.Fatalf("secondary conflist left after its VirtualSwitch was deleted: %v", dp.callLog())
	}
	if b, err := os.ReadFile(primaryPath); err != nil || string(b) != string(confList) {
		t.Fatalf("primary conflist %q, %v", b, err)
	}
}

func hasEvent(ctx context.Context, regarding, reason string) bool {
	var l eventsv1.EventList
	if err := testClient.List(ctx, &l); err != nil {
		return false
	}
	for _, e := range l.Items {
		if e.Regarding.Name == regarding && e.Reason == reason {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }
