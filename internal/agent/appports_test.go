package agent

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// appOwners lists the IPAM owners of application ports in the switch's store.
func appOwners(t *testing.T, a *Agent, sw string) []string {
	t.Helper()
	als, err := a.stores[sw].List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, al := range als {
		if _, app := keyOfOwner(al.Owner); app {
			out = append(out, al.Owner.String())
		}
	}
	slices.Sort(out)
	return out
}

func (f *fixture) servedApps(sw, host string) []dataplane.AppPort {
	f.dp.mu.Lock()
	defer f.dp.mu.Unlock()
	return f.dp.appPorts[sw+"/"+host]
}

// TestAppPorts: a pod's application ports (asked by the plugin and by the pod's
// annotation) get a switch port name that fits netmap's names, a MAC and addresses of
// their own; a retried ADD and a restarted agent keep them; release and GC give the
// addresses back.
func TestAppPorts(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	pods := &fakePolicies{annots: map[string]string{"ns/p1/" + controller.NetmapPortsAnnotation: " tx, rx ,"}}
	f.a.pods = pods

	at, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("c1"), PodNamespace: "ns", PodName: "p1", NetNS: "/run/netns/x",
		NetmapPorts: []string{"rx"}})
	if err != nil {
		t.Fatal(err)
	}
	p := f.links.add("/c1/eth0")
	attach := func() {
		t.Helper()
		if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key("c1"), HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: testPodMAC}); err != nil {
			t.Fatalf("attach: %v", err)
		}
	}
	attach()
	apps := f.servedApps("vale0", p.HostName)
	if len(apps) != 2 || apps[0].Name != "rx" || apps[1].Name != "tx" {
		t.Fatalf("served application ports %+v, want rx (the plugin's) and tx (the annotation's)", apps)
	}
	podIPs := []netip.Addr{at.IPs[0].Address.Addr(), at.IPs[1].Address.Addr()}
	for _, ap := range apps {
		if len("vale0:"+ap.Port) > 15 || !strings.HasPrefix(ap.Port, "nm") {
			t.Errorf("%s: switch port %q does not fit netmap's 15-byte names", ap.Name, ap.Port)
		}
		if ap.MAC[0]&3 != 2 {
			t.Errorf("%s: MAC %v is not locally administered unicast", ap.Name, ap.MAC)
		}
		if len(ap.Addrs) != 2 || slices.Contains(podIPs, ap.Addrs[0].Prefix.Addr()) || slices.Contains(podIPs, ap.Addrs[1].Prefix.Addr()) ||
			ap.Addrs[0].Gateway != netip.MustParseAddr("10.50.0.1") {
			t.Errorf("%s: addresses %v; want one per family of its own, with the gateway (pod has %v)", ap.Name, ap.Addrs, podIPs)
		}
	}
	if apps[0].Port == apps[1].Port || apps[0].MAC.String() == apps[1].MAC.String() || apps[0].Addrs[0] == apps[1].Addrs[0] {
		t.Fatalf("two application ports share an identity: %+v", apps)
	}
	want := []string{"c1/eth0/rx", "c1/eth0/tx"}
	if got := appOwners(t, f.a, "vale0"); !slices.Equal(got, want) {
		t.Fatalf("IPAM owners %v, want %v", got, want)
	}

	// A retried attach and a restarted agent keep every identity.
	attach()
	if again := f.servedApps("vale0", p.HostName); !slices.EqualFunc(again, apps, sameApp) {
		t.Fatalf("after a retried attach %+v, want %+v", again, apps)
	}
	f.stop()
	f.start()
	f.a.pods = pods
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if again := f.servedApps("vale0", p.HostName); !slices.EqualFunc(again, apps, sameApp) {
		t.Fatalf("after a restart %+v, want %+v", again, apps)
	}
	if got := appOwners(t, f.a, "vale0"); !slices.Equal(got, want) {
		t.Fatalf("IPAM owners after a restart %v, want %v", got, want)
	}

	// Release gives the addresses back.
	if _, err := f.c.Release(ctx, &agentapi.ReleaseRequest{Key: key("c1")}); err != nil {
		t.Fatal(err)
	}
	if got := appOwners(t, f.a, "vale0"); len(got) != 0 {
		t.Fatalf("IPAM owners after release: %v", got)
	}

	// GC releases an attachment's application ports with it.
	if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("c2"), NetNS: "/run/netns/y", NetmapPorts: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	p2 := f.links.add("/c2/eth0")
	if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key("c2"), HostIfName: p2.HostName, HostIfIndex: p2.HostIndex, PodMAC: "02:00:00:00:00:0c"}); err != nil {
		t.Fatal(err)
	}
	if got := appOwners(t, f.a, "vale0"); len(got) != 1 {
		t.Fatalf("IPAM owners %v, want c2's", got)
	}
	if _, err := f.c.GC(ctx, &agentapi.GCRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := appOwners(t, f.a, "vale0"); len(got) != 0 {
		t.Fatalf("IPAM owners after GC: %v", got)
	}
	// An owner left by a crash between the two releases: GC still finds it.
	if _, err := f.a.stores["vale0"].Allocate(appOwner(key("c3"), "z"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.GC(ctx, &agentapi.GCRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := appOwners(t, f.a, "vale0"); len(got) != 0 {
		t.Fatalf("IPAM owners after GC of an orphan: %v", got)
	}
}

func sameApp(a, b dataplane.AppPort) bool {
	return a.Name == b.Name && a.Port == b.Port && a.MAC.String() == b.MAC.String() && slices.Equal(a.Addrs, b.Addrs)
}

// TestAppPortErrors: bad names are refused with the field named, before anything is
// allocated.
func TestAppPortErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	for _, names := range [][]string{{"a b"}, {""}, {"x", "x"}, {"0123456789abcdef"}, {"a^"}, {"1", "2", "3", "4", "5", "6", "7", "8", "9"}} {
		_, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("c1"), NetmapPorts: names})
		var ae *agentapi.Error
		if !errors.As(err, &ae) || ae.Code != agentapi.CodeInvalidRequest || !strings.HasPrefix(ae.Field, "netmapPorts") {
			t.Errorf("netmapPorts %q: %v, want an invalid request naming netmapPorts", names, err)
		}
	}
	// The pod's interface name, or a bad annotation, fails the attach and leaves nothing.
	f.a.pods = &fakePolicies{annots: map[string]string{"ns/bad/" + controller.NetmapPortsAnnotation: "ok,no way"}}
	for _, tc := range []struct {
		id, pod string
		ports   []string
		want    string
	}{{"c1", "", []string{"eth0"}, "the name of the pod's interface"}, {"c2", "bad", nil, "annotation epair.dev/netmap-ports"}} {
		if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key(tc.id), NetNS: "/x", PodNamespace: "ns", PodName: tc.pod, NetmapPorts: tc.ports}); err != nil {
			t.Fatal(err)
		}
		p := f.links.add("/" + tc.id + "/eth0")
		_, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key(tc.id), HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: testPodMAC})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("attach %s: %v, want an error saying %q", tc.id, err, tc.want)
		}
		if got := appOwners(t, f.a, "vale0"); len(got) != 0 {
			t.Errorf("attach %s failed and left IPAM owners %v", tc.id, got)
		}
	}
}

func TestParseNetmapPorts(t *testing.T) {
	if got, err := ParseNetmapPorts(" a,b , c.1,,"); err != nil || !slices.Equal(got, []string{"a", "b", "c.1"}) {
		t.Errorf("parse: %v %v", got, err)
	}
	for _, bad := range []string{"a,a", "a/b", "x y", strings.Repeat("n", 16)} {
		if _, err := ParseNetmapPorts(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	k := agentapi.Key{ContainerID: "c", IfName: "eth0"}
	if o := appOwner(k, "rx"); o != (ipam.Owner{ContainerID: "c", IfName: "eth0/rx"}) {
		t.Errorf("owner %v", o)
	}
	if pk, app := keyOfOwner(appOwner(k, "rx")); pk != k || !app {
		t.Errorf("key of an application port's owner: %v %v", pk, app)
	}
	if _, _, err := appPortIdentity("vale_long_name", k, "rx", 0); err == nil {
		t.Errorf("a switch name that leaves no room: no error")
	}
}

// TestAppPortsAPIServerAway: a pod whose annotation cannot be read (the API server is
// away) is attached all the same, with the plugin's ports only.
func TestAppPortsAPIServerAway(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	f.a.pods = &fakePolicies{annotErr: errors.New("connection refused")}
	if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("c1"), PodNamespace: "ns", PodName: "p", NetNS: "/x", NetmapPorts: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	p := f.links.add("/c1/eth0")
	if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key("c1"), HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: testPodMAC}); err != nil {
		t.Fatalf("attach with the API server away: %v", err)
	}
	if apps := f.servedApps("vale0", p.HostName); len(apps) != 1 || apps[0].Name != "a" {
		t.Fatalf("served %+v, want the plugin's port a", apps)
	}
}

// TestAppPortsOff: with podNetmapPorts false, a pod asking for application ports is
// refused with a message naming the setting, and nothing is left allocated.
func TestAppPortsOff(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	off := false
	f.a.cfg.PodNetmapPorts = &off
	f.a.Recover(ctx)
	if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("c1"), NetNS: "/x", NetmapPorts: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	p := f.links.add("/c1/eth0")
	_, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key("c1"), HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: testPodMAC})
	if err == nil || !strings.Contains(err.Error(), "podNetmapPorts: false") {
		t.Fatalf("attach asking for ports with podNetmapPorts false: %v", err)
	}
	if got := appOwners(t, f.a, "vale0"); len(got) != 0 {
		t.Fatalf("IPAM owners %v", got)
	}
}

// TestAppPortNodeState: an application port has no link; NodeState names it by its switch
// port, with its pod and counters.
func TestAppPortNodeState(t *testing.T) {
	ps := portState("vale0", agentapi.PortInfo{Name: "vale0:nm1a2b3c4", Kind: "app", Pod: "ns/p", Active: true,
		Stats: agentapi.Counters{InFrames: 7, Drops: map[string]uint64{"spoofed-ip": 2}}})
	if ps.Name != "vale0:nm1a2b3c4" || ps.Pod != "ns/p" || ps.RxPackets != 7 || len(ps.Drops) != 1 || ps.Drops[0].Packets != 2 {
		t.Fatalf("NodeState entry of an application port: %+v", ps)
	}
}
