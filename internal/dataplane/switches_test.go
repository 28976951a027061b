package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

// The switch the tests add at run time, next to testConfig's vale0.
const (
	sw1Name   = "vale1"
	sw1Tap    = "eptest1"
	sw1GW     = "10.88.0.1"
	sw1GW6    = "fd00:88::1"
	sw1CIDR   = "10.88.0.0/24"
	sw1Routed = "10.89.0.0/24" // a pod CIDR no gateway covers: routed to the TAP
)

func sw1Config() SwitchConfig {
	return SwitchConfig{
		Name: sw1Name,
		HostPort: HostPortConfig{
			Name:     sw1Tap,
			MAC:      net.HardwareAddr{0x02, 0xee, 0, 0, 0, 2},
			Gateways: []netip.Prefix{netip.MustParsePrefix(sw1GW + "/24"), netip.MustParsePrefix(sw1GW6 + "/64")},
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix(sw1CIDR), netip.MustParsePrefix(sw1Routed)},
		},
	}
}

// makePodOn1 is makePod for a pod of vale1's network (10.88.0.0/24, default
// route through vale1's gateway).
func (e *env) makePodOn1() *pod {
	return e.makePodIn("10.88.0", "fd00:88", sw1GW, false)
}

// reqOn is the pod's attach request for switch sw.
func (p *pod) reqOn(sw string) AttachRequest {
	r := p.req()
	r.Switch = sw
	return r
}

func (e *env) attachOn(sw string, p *pod) PortInfo {
	e.t.Helper()
	pi, err := e.dp.AttachPort(context.Background(), p.reqOn(sw))
	if err != nil {
		e.t.Fatalf("AttachPort %s to %s: %v", p.pair.HostName, sw, err)
	}
	return pi
}

func (e *env) addSwitch1() {
	e.t.Helper()
	if err := e.dp.AddSwitch(sw1Config()); err != nil {
		e.t.Fatalf("AddSwitch %s: %v", sw1Name, err)
	}
}

// routesTo lists the destinations routed to the link named dev in the host
// namespace (none when the link is gone).
func (e *env) routesTo(dev string) []string {
	e.t.Helper()
	l, err := e.host.NL.LinkByName(dev)
	if err != nil {
		return nil
	}
	var out []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := e.host.NL.RouteList(l, fam)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, r := range rs {
			if r.Dst != nil {
				out = append(out, r.Dst.String())
			}
		}
	}
	return out
}

// routedAnywhere reports whether any route of the host namespace's main
// table has destination dst.
func (e *env) routedAnywhere(dst string) bool {
	e.t.Helper()
	_, n, _ := net.ParseCIDR(dst)
	rs, err := e.host.NL.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: n}, netlink.RT_FILTER_DST)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(rs) > 0
}

func portsOf(dp *Dataplane, sw string) []string {
	var out []string
	for _, pi := range dp.Ports() {
		if pi.Switch == sw {
			out = append(out, pi.Name)
		}
	}
	return out
}

func switchNames(dp *Dataplane) []string {
	var out []string
	for _, si := range dp.Switches() {
		out = append(out, si.Name)
	}
	return out
}

// TestAddSwitch adds a switch to a running dataplane: pods on it reach its
// gateway, each other (IPv4 and IPv6) and its routed pod CIDR is routed to
// its TAP; it shows in Switches, FDB and Ports, AnnounceGateways covers it,
// and the pods of the first switch are unaffected.
func TestAddSwitch(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, nil)
	a, b := e.pods[0], e.pods[1]
	e.ping(a, b.ip)
	e.addSwitch1()
	if got := switchNames(e.dp); !slices.Equal(got, []string{"vale0", sw1Name}) {
		t.Fatalf("Switches() = %v, want [vale0 %s]", got, sw1Name)
	}
	if !e.hasLink(sw1Tap) {
		t.Fatalf("no TAP %s after AddSwitch", sw1Tap)
	}
	if r := e.routesTo(sw1Tap); !slices.Contains(r, sw1Routed) || !slices.Contains(r, sw1CIDR) {
		t.Fatalf("routes to %s: %v, want %s and %s", sw1Tap, r, sw1CIDR, sw1Routed)
	}
	c, d := e.makePodOn1(), e.makePodOn1()
	for _, p := range []*pod{c, d} {
		if pi := e.attachOn(sw1Name, p); pi.Switch != sw1Name || pi.Name != vale.JoinName(sw1Name, p.pair.HostName) {
			t.Fatalf("attached as %s on %s", pi.Name, pi.Switch)
		}
	}
	e.ping(c, sw1GW)
	e.ping(c, d.ip)
	e.ping(d, c.ip)
	e.ping(d, c.ip6)
	e.ping(d, sw1GW6)
	// The first switch's pods still reach each other and their gateway; an
	// attach without Switch still goes to the first switch.
	e.ping(a, b.ip)
	e.ping(b, testGW)
	if got := portsOf(e.dp, "vale0"); len(got) != 2 {
		t.Errorf("vale0 ports %v, want a's and b's", got)
	}
	if got := portsOf(e.dp, sw1Name); len(got) != 2 {
		t.Errorf("%s ports %v, want c's and d's", sw1Name, got)
	}
	fdb, err := e.dp.FDB(sw1Name)
	if err != nil {
		t.Fatal(err)
	}
	gw := sw1Config().HostPort.MAC.String()
	want := map[string]string{gw: vale.JoinName(sw1Name, sw1Tap), c.pair.PodMAC.String(): vale.JoinName(sw1Name, c.pair.HostName), d.pair.PodMAC.String(): vale.JoinName(sw1Name, d.pair.HostName)}
	for _, f := range fdb {
		if p, ok := want[f.MAC.String()]; ok && f.Port == p && f.Static {
			delete(want, f.MAC.String())
		}
	}
	if len(want) != 0 {
		t.Errorf("static FDB entries missing on %s: %v (fdb %v)", sw1Name, want, fdb)
	}
	si, err := e.dp.Switch(sw1Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(si.Ports) != 3 || si.HostPort != vale.JoinName(sw1Name, sw1Tap) || si.HostPortStats.RxPackets == 0 {
		t.Errorf("switch info of %s: %d ports, host port %s %+v", sw1Name, len(si.Ports), si.HostPort, si.HostPortStats)
	}
	if err := e.dp.AnnounceGateways(); err != nil {
		t.Errorf("AnnounceGateways with a switch added at run time: %v", err)
	}
}

// TestRemoveSwitch removes a switch with pods attached: its ports leave
// Ports and Switches, its TAP and routes leave the namespace, its pods'
// links stay (without XDP programs), the first switch's pods still reach
// each other, and the name can be added again and used.
func TestRemoveSwitch(t *testing.T) {
	e := newEnv(t, 2, linkport.XDP, nil)
	a, b := e.pods[0], e.pods[1]
	c, d := e.makePodOn1(), e.makePodOn1()
	settle(t, e.dp)
	g0, fd0 := runtime.NumGoroutine(), fdCount(t)
	e.addSwitch1()
	e.attachOn(sw1Name, c)
	e.attachOn(sw1Name, d)
	e.ping(c, d.ip)
	settle(t, e.dp)

	if err := e.dp.RemoveSwitch(context.Background(), sw1Name); err != nil {
		t.Fatalf("RemoveSwitch: %v", err)
	}
	// Everything the switch and its ports had is gone: descriptors (TAP,
	// sockets) at once, goroutines (adapters, bwrap workers, output queue
	// waiters) once they noticed.
	if fd1 := fdCount(t); fd1 > fd0 {
		t.Errorf("%d descriptors before AddSwitch, %d after RemoveSwitch", fd0, fd1)
	}
	waitFor(t, "the switch's goroutines to exit", 5*time.Second, func() bool { return runtime.NumGoroutine() <= g0 })
	if got := portsOf(e.dp, sw1Name); len(got) != 0 {
		t.Errorf("ports of the removed switch: %v", got)
	}
	if n := len(e.dp.Ports()); n != 2 {
		t.Errorf("%d ports left, want 2 (vale0's)", n)
	}
	for _, p := range []*pod{c, d} {
		if _, err := e.dp.Port(vale.JoinName(sw1Name, p.pair.HostName)); Errno(err) != ErrNoPort.Errno() {
			t.Errorf("Port of %s after RemoveSwitch: %v, want ENXIO", p.pair.HostName, err)
		}
		if !e.hasLink(p.pair.HostName) {
			t.Errorf("RemoveSwitch deleted the pod link %s", p.pair.HostName)
		}
		// Detaching a port of the removed switch is detaching a port that is
		// not attached.
		if err := e.dp.DetachPort(context.Background(), vale.JoinName(sw1Name, p.pair.HostName)); err != nil {
			t.Errorf("DetachPort after RemoveSwitch: %v", err)
		}
	}
	if got := switchNames(e.dp); !slices.Equal(got, []string{"vale0"}) {
		t.Errorf("Switches() = %v after RemoveSwitch", got)
	}
	if _, err := e.dp.Switch(sw1Name); !errors.Is(err, ErrNoSwitch) {
		t.Errorf("Switch(%s) after RemoveSwitch: %v, want ErrNoSwitch", sw1Name, err)
	}
	if _, err := e.dp.FDB(sw1Name); !errors.Is(err, ErrNoSwitch) {
		t.Errorf("FDB(%s) after RemoveSwitch: %v, want ErrNoSwitch", sw1Name, err)
	}
	if e.hasLink(sw1Tap) {
		t.Errorf("TAP %s left after RemoveSwitch", sw1Tap)
	}
	for _, dst := range []string{sw1CIDR, sw1Routed} {
		if e.routedAnywhere(dst) {
			t.Errorf("route to %s left after RemoveSwitch", dst)
		}
	}
	if _, err := e.dp.reg.Switch(sw1Name); !errors.Is(err, vale.ErrNoSwitch) {
		t.Errorf("the VALE switch is still registered: %v", err)
	}
	// The sockets are closed by the time RemoveSwitch returns.
	if x := e.xdpProgs(); len(x) != 2 {
		t.Errorf("XDP programs after RemoveSwitch: %v, want vale0's two", x)
	}
	if err := e.dp.AnnounceGateways(); err != nil {
		t.Errorf("AnnounceGateways after RemoveSwitch: %v", err)
	}
	e.ping(a, b.ip)
	e.ping(b, a.ip)
	e.ping(a, testGW)
	if _, err := e.dp.AttachPort(context.Background(), c.reqOn(sw1Name)); !errors.Is(err, ErrNoSwitch) {
		t.Errorf("attach to the removed switch: %v, want ErrNoSwitch", err)
	}

	// The same name again, with the same pods.
	e.addSwitch1()
	if !e.hasLink(sw1Tap) {
		t.Fatalf("no TAP %s after adding the switch again", sw1Tap)
	}
	e.attachOn(sw1Name, c)
	e.attachOn(sw1Name, d)
	e.ping(c, d.ip)
	e.ping(d, sw1GW)
	if err := e.dp.Close(CloseOptions{Uninstall: true}); err != nil {
		t.Fatalf("Close after RemoveSwitch and AddSwitch: %v", err)
	}
	for _, tap := range []string{testTap, sw1Tap} {
		if e.hasLink(tap) {
			t.Errorf("TAP %s left after Close", tap)
		}
	}
}

// TestRemoveFirstSwitch: any switch may be removed. An attach without
// Switch goes to the first remaining switch, and fails with ErrNoSwitch
// once none is left; Close then has nothing to tear down and succeeds.
func TestRemoveFirstSwitch(t *testing.T) {
	e := newEnv(t, 1, linkport.Auto, nil)
	a := e.pods[0]
	e.addSwitch1()
	c := e.makePodOn1()
	if err := e.dp.RemoveSwitch(context.Background(), "vale0"); err != nil {
		t.Fatalf("remove the first switch: %v", err)
	}
	if e.hasLink(testTap) || !e.hasLink(a.pair.HostName) {
		t.Errorf("after removing vale0: its TAP %v, the pod link %v (want false, true)", e.hasLink(testTap), e.hasLink(a.pair.HostName))
	}
	pi, err := e.dp.AttachPort(context.Background(), c.req()) // no Switch
	if err != nil {
		t.Fatalf("attach without Switch after removing the first switch: %v", err)
	}
	if pi.Switch != sw1Name {
		t.Fatalf("attach without Switch went to %s, want %s (the first remaining)", pi.Switch, sw1Name)
	}
	e.ping(c, sw1GW)
	if err := e.dp.RemoveSwitch(context.Background(), sw1Name); err != nil {
		t.Fatalf("remove the last switch: %v", err)
	}
	if got := e.dp.Switches(); len(got) != 0 {
		t.Fatalf("Switches() = %v with none left", got)
	}
	_, err = e.dp.AttachPort(context.Background(), a.req())
	if !errors.Is(err, ErrNoSwitch) {
		t.Fatalf("attach without Switch and no switch left: %v, want ErrNoSwitch", err)
	}
	if err := e.dp.AnnounceGateways(); err != nil {
		t.Errorf("AnnounceGateways without switches: %v", err)
	}
	if err := e.dp.Close(CloseOptions{Uninstall: true}); err != nil {
		t.Fatalf("Close without switches: %v", err)
	}
}

// TestSwitchErrors: every refused AddSwitch and RemoveSwitch names what was
// wrong and wraps the right sentinel, and a refused AddSwitch leaves no
// link, route or VALE switch behind (the one that fails after creating the
// VALE switch too).
func TestSwitchErrors(t *testing.T) {
	e := newEnv(t, 1, linkport.XDP, nil)
	links := e.host.LinkNames(t)
	cases := []struct {
		name  string
		mod   func(*SwitchConfig)
		is    error
		errno syscall.Errno
		want  []string // substrings of the message
	}{
		{"duplicate name", func(c *SwitchConfig) { c.Name = "vale0" }, ErrSwitchExists, syscall.EEXIST, []string{`"vale0"`, "running"}},
		{"duplicate host port", func(c *SwitchConfig) { c.HostPort.Name = testTap }, ErrInvalid, syscall.EINVAL, []string{"hostPort.name", testTap, "vale0"}},
		{"bad mtu", func(c *SwitchConfig) { c.MTU = 100 }, nil, syscall.EINVAL, []string{"mtu 100"}},
		{"bad name", func(c *SwitchConfig) { c.Name = "sw1" }, nil, syscall.EINVAL, []string{"name", `"sw1"`}},
		{"long host port", func(c *SwitchConfig) { c.HostPort.Name = ""; c.Name = "vale0123456789a" }, ErrInvalid, syscall.EINVAL, []string{"hostPort.name"}},
		{"bad gateway", func(c *SwitchConfig) {
			c.HostPort.Gateways = []netip.Prefix{netip.MustParsePrefix("10.88.0.1/32")}
		}, ErrInvalid, syscall.EINVAL, []string{"hostPort.gateways[0]"}},
		{"offload on xdp", func(c *SwitchConfig) { c.Offload = true }, ErrInvalid, syscall.EINVAL, []string{"offload", "xdp"}},
		// Fails after the VALE switch exists: a host port named like a link
		// that is not a TAP (the kernel refuses it).
		{"host port on a veth", func(c *SwitchConfig) { c.HostPort.Name = e.pods[0].pair.HostName }, nil, syscall.EINVAL, []string{"host port", e.pods[0].pair.HostName}},
	}
	for _, tc := range cases {
		sc := sw1Config()
		tc.mod(&sc)
		err := e.dp.AddSwitch(sc)
		switch {
		case err == nil:
			t.Errorf("%s: AddSwitch succeeded", tc.name)
			continue
		case tc.is != nil && !errors.Is(err, tc.is):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		case Errno(err) != tc.errno:
			t.Errorf("%s: %v (errno %v), want %v", tc.name, err, Errno(err), tc.errno)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not name %q", tc.name, err, w)
			}
		}
	}
	if got := e.host.LinkNames(t); !slices.Equal(got, links) {
		t.Errorf("links after the refused AddSwitch calls: %v, before: %v", got, links)
	}
	for _, dst := range []string{sw1CIDR, sw1Routed} {
		if e.routedAnywhere(dst) {
			t.Errorf("route to %s left by a refused AddSwitch", dst)
		}
	}
	if got := switchNames(e.dp); !slices.Equal(got, []string{"vale0"}) {
		t.Errorf("Switches() = %v after refused AddSwitch calls", got)
	}
	if _, err := e.dp.reg.Switch(sw1Name); !errors.Is(err, vale.ErrNoSwitch) {
		t.Errorf("a refused AddSwitch left its VALE switch: %v", err)
	}

	// The bound: here two switches.
	e.dp.mu.Lock()
	e.dp.maxSwitches = 2
	e.dp.mu.Unlock()
	e.addSwitch1()
	sc := sw1Config()
	sc.Name, sc.HostPort.Name = "vale2", "eptest2"
	sc.HostPort.Gateways, sc.HostPort.PodCIDRs, sc.HostPort.MAC = nil, nil, nil
	err := e.dp.AddSwitch(sc)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "MaxSwitches") || !strings.Contains(err.Error(), "vale2") {
		t.Errorf("AddSwitch beyond the bound: %v, want ErrInvalid naming MaxSwitches and vale2", err)
	}
	if e.hasLink("eptest2") {
		t.Error("AddSwitch beyond the bound left its TAP")
	}

	err = e.dp.RemoveSwitch(context.Background(), "vale7")
	if !errors.Is(err, ErrNoSwitch) || !strings.Contains(err.Error(), "vale7") {
		t.Errorf("RemoveSwitch of an unknown name: %v, want ErrNoSwitch naming vale7", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.dp.RemoveSwitch(ctx, sw1Name); !errors.Is(err, context.Canceled) {
		t.Errorf("RemoveSwitch with a cancelled context: %v", err)
	}
	if !e.hasLink(sw1Tap) {
		t.Error("a RemoveSwitch refused for its context removed the switch")
	}

	if err := e.dp.Close(CloseOptions{Uninstall: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.dp.AddSwitch(sc); !errors.Is(err, ErrClosed) {
		t.Errorf("AddSwitch after Close: %v, want ErrClosed", err)
	}
	if err := e.dp.RemoveSwitch(context.Background(), "vale0"); !errors.Is(err, ErrClosed) {
		t.Errorf("RemoveSwitch after Close: %v, want ErrClosed", err)
	}
	if e.hasLink(sw1Tap) || e.hasLink(testTap) {
		t.Error("TAPs left after Close")
	}
}

// TestSwitchMasquerade: with Config.Masquerade the new switch's pod CIDRs
// and TAP are in the nftables rules after AddSwitch, and gone after
// RemoveSwitch (the first switch's stay); a refused AddSwitch leaves the
// rules as they were.
func TestSwitchMasquerade(t *testing.T) {
	requireTool(t, "nft")
	e := newEnv(t, 1, linkport.Auto, func(c *Config) { c.Masquerade = true })
	table := func() string {
		t.Helper()
		out, err := e.host.Exec("nft", "list", "table", "inet", "epair")
		if err != nil {
			t.Fatalf("nft list table: %v", err)
		}
		return out
	}
	before := table()
	if !strings.Contains(before, testCIDR) || strings.Contains(before, sw1CIDR) {
		t.Fatalf("rules before AddSwitch:\n%s", before)
	}
	e.addSwitch1()
	rules := table()
	for _, w := range []string{testCIDR, sw1CIDR, sw1Routed, "fd00:88::/64", `"` + sw1Tap + `"`, `"` + testTap + `"`} {
		if !strings.Contains(rules, w) {
			t.Errorf("rules after AddSwitch lack %s:\n%s", w, rules)
		}
	}
	// The rules are the dataplane's whole pod network, once.
	if n := strings.Count(rules, " saddr "); n != 4 {
		t.Errorf("%d rules after AddSwitch, want 4:\n%s", n, rules)
	}
	bad := sw1Config()
	bad.Name, bad.HostPort.Name = "vale2", e.pods[0].pair.HostName // the kernel refuses the TAP
	bad.HostPort.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.90.0.0/24")}
	if err := e.dp.AddSwitch(bad); err == nil {
		t.Fatal("AddSwitch with a veth's name as TAP succeeded")
	}
	if got := table(); got != rules {
		t.Errorf("a refused AddSwitch changed the rules:\n%s\nwant:\n%s", got, rules)
	}
	if err := e.dp.RemoveSwitch(context.Background(), sw1Name); err != nil {
		t.Fatal(err)
	}
	after := table()
	for _, w := range []string{sw1CIDR, sw1Routed, "fd00:88::", sw1Tap} {
		if strings.Contains(after, w) {
			t.Errorf("rules after RemoveSwitch still have %s:\n%s", w, after)
		}
	}
	if !strings.Contains(after, testCIDR) || !strings.Contains(after, testTap) {
		t.Errorf("RemoveSwitch dropped the first switch's rules:\n%s", after)
	}
}

// TestRemoveSwitchWaitsForAttach holds an attach to a switch after its
// socket is open: RemoveSwitch waits for it, the attach then fails with
// ErrNoSwitch (instead of publishing a port on a destroyed switch) and
// undoes itself, and the link attaches to another switch at once.
func TestRemoveSwitchWaitsForAttach(t *testing.T) {
	e := newEnv(t, 1, linkport.XDP, nil)
	e.addSwitch1()
	c := e.makePodOn1()
	res, release := e.attachHeld(t, c.reqOn(sw1Name))
	removed := make(chan error, 1)
	go func() { removed <- e.dp.RemoveSwitch(context.Background(), sw1Name) }()
	select {
	case err := <-removed:
		t.Fatalf("RemoveSwitch returned (%v) with an attach to its switch in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	// The switch is gone for everyone else already.
	if got := switchNames(e.dp); !slices.Equal(got, []string{"vale0"}) {
		t.Errorf("Switches() = %v during RemoveSwitch", got)
	}
	e.ping(e.pods[0], testGW)
	release()
	if err := <-res; !errors.Is(err, ErrNoSwitch) {
		t.Fatalf("attach across RemoveSwitch: %v, want ErrNoSwitch", err)
	}
	testAttachHook = nil // the next attach of the link goes through
	select {
	case err := <-removed:
		if err != nil {
			t.Fatalf("RemoveSwitch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RemoveSwitch did not return after the attach finished")
	}
	if got := e.dp.Ports(); len(got) != 1 {
		t.Errorf("ports after RemoveSwitch: %v, want the first pod's", got)
	}
	settle(t, e.dp)
	if x := e.xdpProgs(); len(x) != 1 {
		t.Errorf("XDP programs after RemoveSwitch: %v, want the first pod's", x)
	}
	if e.hasLink(sw1Tap) {
		t.Error("TAP left")
	}
	pi, err := e.dp.AttachPort(context.Background(), c.req()) // to vale0
	if err != nil || pi.Switch != "vale0" {
		t.Fatalf("attach to vale0 after the failed one: %+v, %v", pi, err)
	}
}

// TestRemoveSwitchRace attaches and detaches pods on a switch from several
// goroutines while the switch is removed (run it with -race): every attach
// succeeds or fails with ErrNoSwitch, nothing deadlocks, no port, claim,
// socket or VALE switch is left, and the name comes back cleanly.
func TestRemoveSwitchRace(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, nil)
	a, b := e.pods[0], e.pods[1]
	const n = 8
	for round := range 3 {
		if round == 0 {
			e.addSwitch1()
		}
		pods := make([]*pod, n)
		for i := range pods {
			if round == 0 {
				pods[i] = e.makePodOn1()
			} else {
				pods[i] = e.pods[2+i]
			}
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		var attached, refused sync.Map
		var nAttached atomic.Int64
		for _, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; ; i++ {
					_, err := e.dp.AttachPort(context.Background(), p.reqOn(sw1Name))
					if errors.Is(err, ErrNoSwitch) {
						refused.Store(p, true)
						return
					}
					if err != nil {
						t.Errorf("attach %s: %v", p.pair.HostName, err)
						return
					}
					if _, again := attached.LoadOrStore(p, true); !again {
						nAttached.Add(1)
					}
					if i%2 == 1 {
						if err := e.dp.DetachPort(context.Background(), vale.JoinName(sw1Name, p.pair.HostName)); err != nil {
							t.Errorf("detach %s: %v", p.pair.HostName, err)
							return
						}
					}
				}
			}()
		}
		// Readers along: they must never see a half-removed switch.
		stopRead := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopRead:
					return
				default:
				}
				for _, si := range e.dp.Switches() {
					_ = si.Ports
				}
				_ = e.dp.Ports()
				_, _ = e.dp.FDB(sw1Name)
				_ = e.dp.AnnounceGateways()
				time.Sleep(time.Millisecond)
			}
		}()
		close(start)
		// Round 0 removes the switch among the first attaches, round 1 once
		// half the pods were attached, round 2 once all were.
		want := []int64{0, n / 2, n}[round]
		waitFor(t, fmt.Sprintf("%d pods to attach", want), 30*time.Second, func() bool { return nAttached.Load() >= want })
		done := make(chan error, 1)
		go func() { done <- e.dp.RemoveSwitch(context.Background(), sw1Name) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: RemoveSwitch: %v", round, err)
			}
			// RemoveSwitch waited for every attach and detach in flight on
			// the switch, and no new one can claim a link of it: no claim
			// is left even though the attach loops still run.
			e.dp.mu.Lock()
			busy := len(e.dp.busyLink) + len(e.dp.busyOwner)
			e.dp.mu.Unlock()
			if busy != 0 {
				t.Fatalf("round %d: %d claims held when RemoveSwitch returned", round, busy)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: RemoveSwitch under concurrent attaches did not return (deadlock?)", round)
		}
		close(stopRead)
		finished := make(chan struct{})
		go func() { wg.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the attaches did not end after RemoveSwitch", round)
		}
		nAtt, nRef := 0, 0
		attached.Range(func(any, any) bool { nAtt++; return true })
		refused.Range(func(any, any) bool { nRef++; return true })
		t.Logf("round %d: %d pods attached at least once, %d refused with ErrNoSwitch", round, nAtt, nRef)
		if nRef != n {
			t.Fatalf("round %d: %d of %d attach loops ended with ErrNoSwitch", round, nRef, n)
		}
		if got := portsOf(e.dp, sw1Name); len(got) != 0 {
			t.Fatalf("round %d: ports of the removed switch: %v", round, got)
		}
		e.dp.mu.Lock()
		busy := len(e.dp.busyLink) + len(e.dp.busyOwner)
		e.dp.mu.Unlock()
		if busy != 0 {
			t.Fatalf("round %d: %d claims left", round, busy)
		}
		if _, err := e.dp.reg.Switch(sw1Name); !errors.Is(err, vale.ErrNoSwitch) {
			t.Fatalf("round %d: VALE switch left: %v", round, err)
		}
		if e.hasLink(sw1Tap) {
			t.Fatalf("round %d: TAP left", round)
		}
		for _, p := range pods {
			if !e.hasLink(p.pair.HostName) {
				t.Fatalf("round %d: pod link %s deleted", round, p.pair.HostName)
			}
		}
		// Back for the next round, and the pods attach and forward again.
		e.addSwitch1()
		e.attachOn(sw1Name, pods[0])
		e.attachOn(sw1Name, pods[1])
		e.ping(pods[0], pods[1].ip)
		for _, p := range pods[:2] {
			if err := e.dp.DetachPort(context.Background(), vale.JoinName(sw1Name, p.pair.HostName)); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.ping(a, b.ip)
	if err := e.dp.Close(CloseOptions{Uninstall: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sockets' XDP programs to go", 10*time.Second, func() bool { return len(e.xdpProgs()) == 0 })
}

// BenchmarkAddRemoveSwitch is the cost of a switch change at run time: an
// AddSwitch (VALE switch, TAP with two gateway addresses, a route) and the
// RemoveSwitch that undoes it, without ports.
func BenchmarkAddRemoveSwitch(b *testing.B) {
	e := newEnvTB(b, 0, linkport.Auto, nil)
	sc := sw1Config()
	for b.Loop() {
		if err := e.dp.AddSwitch(sc); err != nil {
			b.Fatal(err)
		}
		if err := e.dp.RemoveSwitch(context.Background(), sw1Name); err != nil {
			b.Fatal(err)
		}
	}
}
