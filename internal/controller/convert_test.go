package controller

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
)

func TestSwitchConfigFromSpec(t *testing.T) {
	vs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: "vale0", Generation: 3}}
	c, err := SwitchConfigFromSpec(vs)
	if err != nil {
		t.Fatal(err)
	}
	want := SwitchConfig{Name: "vale0", Generation: 3, MTU: 0 /* detected on the node */, BatchSize: 1024, MaxPorts: 254, FDBSize: 4096,
		DefaultQueue: QueueConfig{Length: 1024, Discipline: epairv1.DisciplineClassic},
		PortSecurity: PortSecurityConfig{AntiSpoofing: true, BroadcastRate: DefaultBroadcastRate, MulticastRate: DefaultMulticastRate}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("zero spec: got %+v, want %+v", c, want)
	}
	rate := resource.MustParse("1.5M")
	vs.Spec = epairv1.VirtualSwitchSpec{MTU: 4000, FDB: epairv1.FDBSpec{Size: 1 << 20, Aging: metav1.Duration{Duration: time.Hour}},
		DefaultQueue: epairv1.QueueSpec{Rate: &rate, Discipline: epairv1.DisciplineFair, Length: 1}}
	on, off := true, false
	vs.Spec.Offload = &on
	vs.Spec.PortSecurity = epairv1.PortSecuritySpec{AntiSpoofing: &off, BroadcastRate: ptr(int64(0)), MulticastRate: ptr(int64(77))}
	if c, err = SwitchConfigFromSpec(vs); err != nil || c.DefaultQueue.RateBPS != 1_500_000 || c.FDBAging != time.Hour || c.MTU != 4000 || c.Offload == nil || !*c.Offload ||
		c.PortSecurity != (PortSecurityConfig{AntiSpoofing: false, BroadcastRate: 0, MulticastRate: 77}) {
		t.Fatalf("got %+v, %v", c, err)
	}
	bad := []struct {
		field string
		mod   func(*epairv1.VirtualSwitch)
	}{
		{"metadata.name", func(v *epairv1.VirtualSwitch) { v.Name = "br0" }},
		{"metadata.name", func(v *epairv1.VirtualSwitch) { v.Name = "vale0123456789ab" }},
		{"spec.mtu", func(v *epairv1.VirtualSwitch) { v.Spec.MTU = 575 }},
		{"spec.mtu", func(v *epairv1.VirtualSwitch) { v.Spec.MTU = 9001 }},
		{"spec.batchSize", func(v *epairv1.VirtualSwitch) { v.Spec.BatchSize = 8193 }},
		{"spec.maxPorts", func(v *epairv1.VirtualSwitch) { v.Spec.MaxPorts = 1 }},
		{"spec.fdb.size", func(v *epairv1.VirtualSwitch) { v.Spec.FDB.Size = 1000 }},
		{"spec.fdb.aging", func(v *epairv1.VirtualSwitch) { v.Spec.FDB.Aging.Duration = time.Millisecond }},
		{"spec.defaultQueue.discipline", func(v *epairv1.VirtualSwitch) { v.Spec.DefaultQueue.Discipline = "red" }},
		{"spec.defaultQueue.length", func(v *epairv1.VirtualSwitch) { v.Spec.DefaultQueue.Length = 65537 }},
		{"spec.portSecurity.broadcastRate", func(v *epairv1.VirtualSwitch) { v.Spec.PortSecurity.BroadcastRate = ptr(int64(-1)) }},
		{"spec.portSecurity.multicastRate", func(v *epairv1.VirtualSwitch) { v.Spec.PortSecurity.MulticastRate = ptr(int64(100_000_001)) }},
		{"spec.defaultQueue.rate", func(v *epairv1.VirtualSwitch) { q := resource.MustParse("-1"); v.Spec.DefaultQueue.Rate = &q }},
		{"spec.defaultQueue.rate", func(v *epairv1.VirtualSwitch) { q := resource.MustParse("1P"); v.Spec.DefaultQueue.Rate = &q }},
		{"spec.podCIDRs[0]", func(v *epairv1.VirtualSwitch) { v.Spec.PodCIDRs = []string{"10.100.0.0"} }},
		{"spec.podCIDRs[1]", func(v *epairv1.VirtualSwitch) { v.Spec.PodCIDRs = []string{"10.100.0.0/24", "fd00::/129"} }},
		{"spec.podCIDRs[0]", func(v *epairv1.VirtualSwitch) { v.Spec.PodCIDRs = []string{"10.100.0.1/24"} }},
		{"spec.podCIDRs[0]", func(v *epairv1.VirtualSwitch) { v.Spec.PodCIDRs = []string{"::ffff:10.100.0.0/120"} }},
		{"spec.podCIDRs[1]", func(v *epairv1.VirtualSwitch) { v.Spec.PodCIDRs = []string{"10.100.0.0/24", "10.101.0.0/24"} }},
		{"spec.podCIDRs", func(v *epairv1.VirtualSwitch) { v.Spec.PodCIDRs = []string{"10.100.0.0/24", "fd00::/64", "fd01::/64"} }},
	}
	for _, b := range bad {
		v := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: "vale1"}}
		b.mod(v)
		_, err := SwitchConfigFromSpec(v)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != b.field || !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: got %v, want a FieldError for %s", b.field, err, b.field)
		}
	}
}

// TestSwitchConfigPodCIDRs: spec.podCIDRs convert to canonical prefixes in
// the spec's order, nil when absent; a malformed, non-canonical or
// second-of-a-family entry is a FieldError naming its index and saying why.
func TestSwitchConfigPodCIDRs(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []netip.Prefix
		// field and allowed ("want ..." part) of the error; "" for success.
		field, allowed string
	}{
		{name: "absent", in: nil, want: nil},
		{name: "empty", in: []string{}, want: nil},
		{name: "ipv4", in: []string{"10.100.0.0/24"}, want: []netip.Prefix{netip.MustParsePrefix("10.100.0.0/24")}},
		{name: "ipv6", in: []string{"fd00:100::/64"}, want: []netip.Prefix{netip.MustParsePrefix("fd00:100::/64")}},
		{name: "dual stack, order kept", in: []string{"fd00:100::/64", "10.100.0.0/24"},
			want: []netip.Prefix{netip.MustParsePrefix("fd00:100::/64"), netip.MustParsePrefix("10.100.0.0/24")}},
		{name: "host route", in: []string{"192.0.2.7/32"}, want: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}},
		{name: "no prefix length", in: []string{"10.100.0.0"}, field: "spec.podCIDRs[0]", allowed: "an IPv4 or IPv6 CIDR"},
		{name: "not an address", in: []string{"pods"}, field: "spec.podCIDRs[0]", allowed: "an IPv4 or IPv6 CIDR"},
		{name: "prefix too long", in: []string{"10.100.0.0/24", "fd00::/129"}, field: "spec.podCIDRs[1]", allowed: "an IPv4 or IPv6 CIDR"},
		{name: "ipv4-mapped ipv6", in: []string{"::ffff:10.100.0.0/120"}, field: "spec.podCIDRs[0]", allowed: "an IPv4 or IPv6 CIDR"},
		{name: "host bits v4", in: []string{"10.100.0.1/24"}, field: "spec.podCIDRs[0]", allowed: "canonical CIDR, no bits set after the prefix length (10.100.0.0/24)"},
		{name: "host bits v6", in: []string{"10.100.0.0/24", "fd00::1/64"}, field: "spec.podCIDRs[1]", allowed: "canonical CIDR, no bits set after the prefix length (fd00::/64)"},
		{name: "two ipv4", in: []string{"10.100.0.0/24", "10.101.0.0/24"}, field: "spec.podCIDRs[1]", allowed: "at most one IPv4 CIDR (spec.podCIDRs[0] is 10.100.0.0/24)"},
		{name: "two ipv6", in: []string{"fd00::/64", "10.100.0.0/24", "fd01::/64"}, field: "spec.podCIDRs", allowed: "at most one IPv4 and one IPv6 CIDR"},
		{name: "two ipv6 of two", in: []string{"fd00::/64", "fd01::/64"}, field: "spec.podCIDRs[1]", allowed: "at most one IPv6 CIDR (spec.podCIDRs[0] is fd00::/64)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: "vale2"}, Spec: epairv1.VirtualSwitchSpec{PodCIDRs: tc.in}}
			c, err := SwitchConfigFromSpec(vs)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("%v: %v", tc.in, err)
				}
				if !slices.Equal(c.PodCIDRs, tc.want) || (tc.want == nil) != (c.PodCIDRs == nil) {
					t.Fatalf("%v: PodCIDRs %v (nil: %v), want %v (nil: %v)", tc.in, c.PodCIDRs, c.PodCIDRs == nil, tc.want, tc.want == nil)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("%v: got %v (%+v), want a FieldError", tc.in, err, c)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Allowed, tc.allowed) {
				t.Fatalf("%v: FieldError %q / %q, want field %q allowing %q", tc.in, fe.Field, fe.Allowed, tc.field, tc.allowed)
			}
		})
	}
}

func TestPolicyConfigFromSpec(t *testing.T) {
	off := false
	pp := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: epairv1.PortPolicySpec{
		PriorityClass: epairv1.PriorityCritical,
		Rate:          ptr(resource.MustParse("100M")),
		PacketRate:    ptr(int64(10)),
		QueueLength:   ptr(int32(64)),
		Mirror:        &epairv1.MirrorSpec{Monitor: "mon", Direction: epairv1.MirrorTX},
		AntiSpoofing:  &off,
	}}
	c, err := PolicyConfigFromSpec(pp)
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy != "ns/p" || c.Priority != 0 || c.RateBPS != 100_000_000 || c.BurstBytes != 125_000 ||
		c.PacketRate != 10 || c.PacketBurst != 1 || c.QueueLength != 64 || c.AntiSpoofing == nil || *c.AntiSpoofing ||
		c.Mirror == nil || c.Mirror.RX || !c.Mirror.TX {
		t.Fatalf("got %+v (mirror %+v)", c, c.Mirror)
	}
	// Small rates get a burst of at least one 64 KiB frame; port security is the switch's
	// unless the policy says otherwise.
	pp.Spec = epairv1.PortPolicySpec{Rate: ptr(resource.MustParse("1M"))}
	if c, err = PolicyConfigFromSpec(pp); err != nil || c.BurstBytes != 64<<10 || c.AntiSpoofing != nil || c.BroadcastRate != nil || c.Priority != 2 {
		t.Fatalf("got %+v, %v", c, err)
	}
	bad := []struct {
		field string
		spec  epairv1.PortPolicySpec
	}{
		{"spec.priorityClass", epairv1.PortPolicySpec{PriorityClass: "urgent"}},
		{"spec.discipline", epairv1.PortPolicySpec{Discipline: "red"}},
		{"spec.rate", epairv1.PortPolicySpec{Rate: ptr(resource.MustParse("0"))}},
		{"spec.rate", epairv1.PortPolicySpec{Rate: ptr(resource.MustParse("500G"))}},
		{"spec.burst", epairv1.PortPolicySpec{Burst: ptr(resource.MustParse("1M"))}},
		{"spec.burst", epairv1.PortPolicySpec{Rate: ptr(resource.MustParse("1M")), Burst: ptr(resource.MustParse("10"))}},
		{"spec.packetRate", epairv1.PortPolicySpec{PacketRate: ptr(int64(0))}},
		{"spec.packetBurst", epairv1.PortPolicySpec{PacketBurst: ptr(int64(5))}},
		{"spec.queueLength", epairv1.PortPolicySpec{QueueLength: ptr(int32(0))}},
		{"spec.mirror.monitor", epairv1.PortPolicySpec{Mirror: &epairv1.MirrorSpec{}}},
		{"spec.mirror.direction", epairv1.PortPolicySpec{Mirror: &epairv1.MirrorSpec{Monitor: "m", Direction: "up"}}},
		{"spec.broadcastRate", epairv1.PortPolicySpec{BroadcastRate: ptr(int64(-5))}},
		{"spec.multicastRate", epairv1.PortPolicySpec{MulticastRate: ptr(int64(200_000_000))}},
	}
	for _, b := range bad {
		pp.Spec = b.spec
		_, err := PolicyConfigFromSpec(pp)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != b.field {
			t.Errorf("%s: got %v", b.field, err)
		} else if !strings.Contains(err.Error(), "want ") {
			t.Errorf("%s: error %q does not say what is allowed", b.field, err)
		}
	}
}

func TestSelectPolicy(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(1000, 0))
	t1 := metav1.NewTime(time.Unix(2000, 0))
	mk := func(name string, ts metav1.Time, sel map[string]string) epairv1.PortPolicy {
		return epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: ts},
			Spec: epairv1.PortPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}}}
	}
	ps := []epairv1.PortPolicy{
		mk("z-new", t1, map[string]string{"a": "1"}),
		mk("b-old", t0, map[string]string{"a": "1"}),
		mk("a-old", t0, nil), // selects everything
		mk("other", t0, map[string]string{"a": "2"}),
	}
	w, losers := SelectPolicy(ps, map[string]string{"a": "1"})
	if w == nil || w.Name != "a-old" || strings.Join(losers, ",") != "b-old,z-new" {
		t.Fatalf("winner %v losers %v", w, losers)
	}
	bad := mk("bad", t0, nil)
	bad.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Near"}}
	if w, _ := SelectPolicy([]epairv1.PortPolicy{bad}, nil); w != nil {
		t.Fatalf("unparsable selector selected")
	}
	if w, l := SelectPolicy(nil, nil); w != nil || l != nil {
		t.Fatal("empty list")
	}
}

func TestWriteFileAtomicAndInstall(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "10-epair.conflist")
	for _, content := range []string{"one", "two, longer than one"} {
		if err := WriteFileAtomic(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != content {
			t.Fatalf("content %q", b)
		}
	}
	src := filepath.Join(dir, "src")
	os.WriteFile(src, []byte("#!binary"), 0o600)
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	if err := InstallFile(src, bin, "epair-cni"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(bin, "epair-cni"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed: %v %v", fi, err)
	}
	if err := InstallFile(src, filepath.Join(dir, "missing"), "epair-cni"); err == nil || !strings.Contains(err.Error(), "an existing directory") {
		t.Fatalf("missing dir: %v", err)
	}
	if err := InstallFile(filepath.Join(dir, "nope"), bin, "x"); err == nil {
		t.Fatal("missing source accepted")
	}
	// No temporary files are left behind, on success or failure.
	if err := WriteFileAtomic(filepath.Join(dir, "nodir", "f"), nil, 0o644); err == nil {
		t.Fatal("write into a missing dir succeeded")
	}
	for _, d := range []string{dir, bin} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Fatalf("temporary file left: %s", e.Name())
			}
		}
	}
}

func TestCNIConfigValidate(t *testing.T) {
	ok := CNIConfig{Dir: "/etc/cni/net.d", FileName: "10-epair.conflist", ConfList: []byte(`{"cniVersion":"1.0.0","name":"epair","plugins":[{"type":"epair-cni"}]}`)}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*CNIConfig){
		func(c *CNIConfig) { c.Dir = "relative" },
		func(c *CNIConfig) { c.FileName = "../x.conflist" },
		func(c *CNIConfig) { c.FileName = "x.json" },
		func(c *CNIConfig) { c.ConfList = []byte("{") },
		func(c *CNIConfig) { c.ConfList = []byte(`{"cniVersion":"1.0.0","name":"epair","plugins":[]}`) },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}

// FuzzPolicyConfigFromSpec: any spec either converts to a configuration
// within the documented bounds or fails with a FieldError; never a panic.
func FuzzPolicyConfigFromSpec(f *testing.F) {
	f.Add("10M", "64Ki", int64(1000), int64(10), int32(64), "high", "classic", "mon", "rx")
	f.Add("", "", int64(0), int64(0), int32(0), "", "", "", "")
	f.Add("1.5", "1e3", int64(-1), int64(1<<40), int32(-5), "x", "fair", "", "both")
	f.Fuzz(func(t *testing.T, rate, burst string, prate, pburst int64, qlen int32, prio, disc, mon, dir string) {
		var s epairv1.PortPolicySpec
		if q, err := resource.ParseQuantity(rate); err == nil {
			s.Rate = &q
		}
		if q, err := resource.ParseQuantity(burst); err == nil {
			s.Burst = &q
		}
		if prate != 0 {
			s.PacketRate = &prate
		}
		if pburst != 0 {
			s.PacketBurst = &pburst
		}
		if qlen != 0 {
			s.QueueLength = &qlen
		}
		s.PriorityClass, s.Discipline = epairv1.PriorityClass(prio), epairv1.Discipline(disc)
		if mon != "" || dir != "" {
			s.Mirror = &epairv1.MirrorSpec{Monitor: mon, Direction: epairv1.MirrorDirection(dir)}
		}
		c, err := PolicyConfigFromSpec(&epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n"}, Spec: s})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a FieldError", err)
			}
			return
		}
		if c.RateBPS < 0 || c.RateBPS > maxRateBPS || (c.RateBPS > 0) != (c.BurstBytes > 0) ||
			c.BurstBytes > maxBurstBytes || c.PacketRate < 0 || (c.PacketRate > 0) != (c.PacketBurst > 0) ||
			c.QueueLength < 0 || c.QueueLength > epairv1.MaxQueueLength || c.Priority < 0 || c.Priority > 3 {
			t.Fatalf("out of bounds: %+v from %+v", c, s)
		}
	})
}
