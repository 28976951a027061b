package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/linkport"
)

// twoNodes is two dataplanes ("nodes" A and B, each in a host namespace of its own) joined
// by an underlay that link makes before they start; A's pods are in 10.78.0.0/24, B's in
// 10.88.0.0/24.
func twoNodes(t *testing.T, peersA, peersB []Peer, link func(t *testing.T, a, b *env)) (a, b *env) {
	t.Helper()
	a = newEnv(t, -1, linkport.Auto, func(c *Config) { c.Masquerade = true; c.NFTTable = "epaira"; c.Peers = peersA })
	b = newEnv(t, -1, linkport.Auto, func(c *Config) {
		c.Masquerade, c.NFTTable, c.Peers = true, "epairb", peersB
		sw := &c.Switches[0]
		sw.HostPort.Name = "eptestb0"
		sw.HostPort.MAC = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 2}
		sw.HostPort.Gateways = []netip.Prefix{netip.MustParsePrefix("10.88.0.1/24"), netip.MustParsePrefix("fd00:88::1/64")}
		sw.HostPort.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.88.0.0/24")}
	})
	link(t, a, b)
	a.start()
	b.start()
	return a, b
}

// veth joins namespaces x and y with a veth pair nx–ny addressed ax and ay, IP forwarding on
// in both.
func veth(t *testing.T, x, y *netnsutil.NS, nx, ny, ax, ay string) {
	t.Helper()
	if err := x.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nx}, PeerName: ny}); err != nil {
		t.Fatal(err)
	}
	peer, err := x.NL.LinkByName(ny)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.NL.LinkSetNsFd(peer, int(y.Handle)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct {
		ns         *netnsutil.NS
		name, addr string
	}{{x, nx, ax}, {y, ny, ay}} {
		for _, cmd := range [][]string{{"ip", "addr", "add", n.addr, "dev", n.name}, {"ip", "link", "set", n.name, "up"}, {"sysctl", "-qw", "net.ipv4.ip_forward=1"}} {
			if out, err := n.ns.Exec(cmd[0], cmd[1:]...); err != nil {
				t.Fatalf("%v: %v\n%s", cmd, err, out)
			}
		}
	}
}

// sameSegment: A 192.168.230.1/24 and B .2 on one veth.
func sameSegment(t *testing.T, a, b *env) {
	veth(t, a.host, b.host, "under0", "under1", "192.168.230.1/24", "192.168.230.2/24")
}

// throughRouter: A 192.168.232.1/24 and B 192.168.233.2/24 on two subnets joined by a router
// namespace (.254 on both).
func throughRouter(t *testing.T, a, b *env) {
	r := netnsutil.New(t)
	veth(t, a.host, r, "under0", "r0", "192.168.232.1/24", "192.168.232.254/24")
	veth(t, b.host, r, "under1", "r1", "192.168.233.2/24", "192.168.233.254/24")
	for _, c := range []struct {
		e        *env
		dst, via string
	}{{a, "192.168.233.0/24", "192.168.232.254"}, {b, "192.168.232.0/24", "192.168.233.254"}} {
		if out, err := c.e.host.Exec("ip", "route", "add", c.dst, "via", c.via); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
}

// peerRoutes lists the routes of RouteProtocol in e's host namespace, by destination.
func peerRoutes(t *testing.T, e *env) map[string]string {
	t.Helper()
	rs, err := e.host.NL.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rs {
		out[r.Dst.String()] = r.Gw.String()
	}
	return out
}

// countersOf returns the named peer's traffic counters on e (read now); the test fails
// when the peer is not counted.
func countersOf(t *testing.T, e *env, name string) PeerCounters {
	t.Helper()
	for _, p := range e.dp.Peers() {
		if p.Name == name {
			if !p.Counted {
				t.Fatalf("peer %s is not counted: %+v", name, p)
			}
			return p.PeerCounters
		}
	}
	t.Fatalf("no peer %s", name)
	return PeerCounters{}
}

// sub is what the counters moved by from before to c.
func (c PeerCounters) sub(before PeerCounters) PeerCounters {
	return PeerCounters{TxFrames: c.TxFrames - before.TxFrames, TxBytes: c.TxBytes - before.TxBytes,
		RxFrames: c.RxFrames - before.RxFrames, RxBytes: c.RxBytes - before.RxBytes}
}

// pingSized sends n pings of an IP length of size bytes (28 of headers) from pod from to
// address to, every one answered.
func pingSized(t *testing.T, from *pod, to string, n, size int) {
	t.Helper()
	out, err := from.ns.Exec("ping", "-c", fmt.Sprint(n), "-i", "0.05", "-W", "2", "-s", fmt.Sprint(size-28), to)
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d received", n)) {
		t.Fatalf("ping %s → %s: %v\n%s", from.ip, to, err, out)
	}
}

// atLeast fails unless the counters moved by at least frames and bytes both ways.
func atLeast(t *testing.T, what string, d PeerCounters, txFrames, txBytes, rxFrames, rxBytes uint64) {
	t.Helper()
	if d.TxFrames < txFrames || d.TxBytes < txBytes || d.RxFrames < rxFrames || d.RxBytes < rxBytes {
		t.Errorf("%s: counters moved by %+v, want at least tx %d frames %d bytes, rx %d frames %d bytes", what, d, txFrames, txBytes, rxFrames, rxBytes)
	}
}

// nftTable lists e's nftables table (table: its name); "" when there is none.
func nftTable(t *testing.T, e *env, table string) string {
	t.Helper()
	out, err := e.host.Exec("nft", "list", "table", "inet", table)
	if err != nil {
		if strings.Contains(out, "No such file or directory") {
			return ""
		}
		t.Fatalf("nft list table inet %s: %v\n%s", table, err, out)
	}
	return out
}

// TestPeersRouted: two nodes on one L2 segment, each the other's peer: A's pod pings B's
// pod and B's pod sees A's pod's own address (not masqueraded); the routes are proto 77
// through the peer's address; a peer with an address behind a router is unreachable with
// the reason; a peer dropped by SetPeers loses its routes (also one added by hand with
// that protocol); an uninstalling Close removes them. Each peer's traffic is counted: 5
// pings of 1000 bytes move A's counters of B (and B's of A) by at least 5 frames and
// 5000 bytes each way and those of an idle peer not at all; a peer dropped loses its
// counters; an uninstalling Close removes the table with them.
func TestPeersRouted(t *testing.T) {
	pa := Peer{Name: "a", Addresses: []netip.Addr{netip.MustParseAddr("192.168.230.1")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.78.0.0/24")}}
	pb := Peer{Name: "b", Addresses: []netip.Addr{netip.MustParseAddr("192.168.230.2")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.88.0.0/24")}}
	// A peer on the segment that nothing is sent to.
	idle := Peer{Name: "idle", Addresses: []netip.Addr{netip.MustParseAddr("192.168.230.3")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.97.0.0/24")}}
	a, b := twoNodes(t, []Peer{pb, idle}, []Peer{pa}, sameSegment)
	podA := a.addPod()
	podB := b.makePodIn("10.88.0", "fd00:88", "10.88.0.1", false)
	b.attach(podB)
	if got := peerRoutes(t, a); len(got) != 2 || got["10.88.0.0/24"] != "192.168.230.2" {
		t.Fatalf("node A's peer routes %v, want 10.88.0.0/24 via 192.168.230.2", got)
	}
	if st := a.dp.Peers(); len(st) != 2 || st[0].Mode != ModeRouted || st[0].Routes != 1 || st[0].Reason != "" {
		t.Fatalf("node A's peers %+v", st)
	}
	a.ping(podA, podB.ip)
	// No NAT between pods: B's pod answers A's pod's own address (a UDP echo by hand).
	srv := exec.Command("ip", "netns", "exec", podB.ns.Name, "python3", "-c", `import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("0.0.0.0",7000))
d,a=s.recvfrom(100); s.sendto(a[0].encode(),a)`)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	out, err := podA.ns.Exec("python3", "-c", `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.5)
for i in range(10):
  s.sendto(b"x",(sys.argv[1],7000))
  try:
    print(s.recv(100).decode()); break
  except TimeoutError: pass`, podB.ip)
	if err != nil || strings.TrimSpace(out) != podA.ip {
		t.Fatalf("B's pod saw A's pod as %q (%v); want %s, not masqueraded", strings.TrimSpace(out), err, podA.ip)
	}

	// Per-peer counters: 5 pings of 1000 bytes each way.
	ab0, idle0, ba0 := countersOf(t, a, "b"), countersOf(t, a, "idle"), countersOf(t, b, "a")
	pingSized(t, podA, podB.ip, 5, 1000)
	atLeast(t, "node A's counters of peer b", countersOf(t, a, "b").sub(ab0), 5, 5000, 5, 5000)
	atLeast(t, "node B's counters of peer a", countersOf(t, b, "a").sub(ba0), 5, 5000, 5, 5000)
	if d := countersOf(t, a, "idle").sub(idle0); d != (PeerCounters{}) {
		t.Errorf("node A's counters of the idle peer moved by %+v", d)
	}
	t.Logf("node A's counters of peer b moved by %+v", countersOf(t, a, "b").sub(ab0))
	if tbl := nftTable(t, a, "epaira"); !strings.Contains(tbl, "counter peer-tx-idle") || !strings.Contains(tbl, `10.97.0.0/24 : "peer-rx-idle"`) {
		t.Fatalf("node A's table without the idle peer's counters:\n%s", tbl)
	}

	// A peer behind a router, a stray route of ours, then B dropped.
	far := Peer{Name: "c", Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.9")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.98.0.0/24")}}
	st, err := a.dp.SetPeers(context.Background(), []Peer{pb, far})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[1].Mode != ModeUnreachable || !strings.Contains(st[1].Reason, "no route to the peer's address 203.0.113.9") {
		t.Fatalf("peer behind no route: %+v", st)
	}
	if tbl := nftTable(t, a, "epaira"); strings.Contains(tbl, "idle") || !strings.Contains(tbl, "counter peer-tx-c") || !strings.Contains(tbl, "counter peer-rx-b") {
		t.Fatalf("node A's table after the idle peer left (its counters must go, c's come):\n%s", tbl)
	}
	if got := countersOf(t, a, "b"); got.TxFrames == 0 {
		t.Errorf("node A's counters of b reset by a change of the other peers: %+v", got)
	}
	stray := &netlink.Route{Dst: prefixIPNet(netip.MustParsePrefix("10.99.0.0/24")), Gw: net.ParseIP("192.168.230.2"), Protocol: RouteProtocol}
	if err := a.host.NL.RouteAdd(stray); err != nil {
		t.Fatal(err)
	}
	if _, err := a.dp.SetPeers(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := peerRoutes(t, a); len(got) != 0 {
		t.Fatalf("peer routes after every peer was dropped: %v", got)
	}
	if tbl := nftTable(t, a, "epaira"); strings.Contains(tbl, "counter peer-") || strings.Contains(tbl, "10.88.0.0/24") {
		t.Fatalf("node A's table keeps peer counters with no peers:\n%s", tbl)
	}
	if _, err := podA.ns.Exec("ping", "-c", "1", "-W", "1", podB.ip); err == nil {
		t.Fatal("A's pod still reaches B's pod with no peers")
	}
	// Bad peers are refused, naming what is wrong.
	for _, tc := range []struct {
		p    Peer
		want string
	}{
		{Peer{Name: "x", Addresses: []netip.Addr{netip.MustParseAddr("192.168.230.2")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.78.0.0/25")}}, "overlaps this node's 10.78.0.0/24"},
		{Peer{Name: "x", Addresses: []netip.Addr{netip.MustParseAddr("192.168.230.2")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.98.0.1/24")}}, "want a network address"},
		{Peer{Name: "", Addresses: []netip.Addr{netip.MustParseAddr("192.168.230.2")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.98.0.0/24")}}, "name: must not be empty"},
		{Peer{Name: "x", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.98.0.0/24")}}, "addresses: at least one"},
	} {
		if _, err := a.dp.SetPeers(context.Background(), []Peer{tc.p}); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("peer %+v: %v, want ErrInvalid with %q", tc.p, err, tc.want)
		}
	}
	if _, err := a.dp.SetPeers(context.Background(), []Peer{pb}); err != nil {
		t.Fatal(err)
	}
	a.ping(podA, podB.ip)
	if err := a.dp.Close(CloseOptions{Uninstall: true}); err != nil {
		t.Fatal(err)
	}
	if got := peerRoutes(t, a); len(got) != 0 {
		t.Fatalf("peer routes after an uninstalling Close: %v", got)
	}
	if tbl := nftTable(t, a, "epaira"); tbl != "" {
		t.Fatalf("node A's table after an uninstalling Close:\n%s", tbl)
	}
}

// TestPeersVXLAN: two nodes on different subnets behind a router (the pods' ports still
// ring-less at first, as right after their CNI ADD): in auto mode each
// reaches the other through the VXLAN device (a route into it, the peer endpoint's
// neighbour and forwarding entries, derived from the peer's pod CIDR alone); A's pod pings
// B's pod and a 1 MiB TCP transfer crosses, verified; the pod is seen with its own address;
// each side's counters of the other moved by the pings and the transfer (at least its
// bytes), those of an idle VXLAN peer not at all; dropping the peer removes the route, the
// entries, the device and the counters.
func TestPeersVXLAN(t *testing.T) {
	pa := Peer{Name: "a", Addresses: []netip.Addr{netip.MustParseAddr("192.168.232.1")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.78.0.0/24")}}
	pb := Peer{Name: "b", Addresses: []netip.Addr{netip.MustParseAddr("192.168.233.2")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.88.0.0/24")}}
	// A peer behind the router (VXLAN too) that nothing is sent to.
	idle := Peer{Name: "idle", Addresses: []netip.Addr{netip.MustParseAddr("192.168.233.3")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.97.0.0/24")}}
	a, b := twoNodes(t, []Peer{pb, idle}, []Peer{pa}, throughRouter)
	podA := a.addPod()
	podB := b.makePodIn("10.88.0", "fd00:88", "10.88.0.1", false)
	b.attach(podB)
	for _, e := range []*env{a, b} {
		if st := e.dp.Peers(); len(st) < 1 || st[0].Mode != ModeVXLAN || st[0].Routes != 1 {
			t.Fatalf("peers %+v, want a VXLAN peer", st)
		}
	}
	if st := a.dp.Peers(); len(st) != 2 || st[1].Mode != ModeVXLAN {
		t.Fatalf("node A's peers %+v, want two VXLAN peers", st)
	}
	ab0, idle0, ba0 := countersOf(t, a, "b"), countersOf(t, a, "idle"), countersOf(t, b, "a")
	out, err := a.host.Exec("ip", "-d", "link", "show", DefaultVXLANDevice)
	if err != nil || !strings.Contains(out, "vxlan id 1") || !strings.Contains(out, "dstport 4789") || !strings.Contains(out, vtepMAC(pa.PodCIDRs[0]).String()) {
		t.Fatalf("node A's VXLAN device: %v\n%s", err, out)
	}
	if out, err := a.host.Exec("bridge", "fdb", "show", "dev", DefaultVXLANDevice); err != nil || !strings.Contains(out, vtepMAC(pb.PodCIDRs[0]).String()+" dst 192.168.233.2") {
		t.Fatalf("node A's forwarding entries: %v\n%s", err, out)
	}
	a.ping(podA, podB.ip)
	b.ping(podB, podA.ip)
	pingSized(t, podA, podB.ip, 5, 1000)
	bps := netnsutil.TCPTransfer(t, podA.ns, podB.ns, podB.ip, 5301, 1<<20) // fails unless intact
	t.Logf("1 MiB over TCP through the tunnel, intact, at %.0f Mbit/s", bps/1e6)
	// 2+2+5 echo requests and as many replies, and the transfer's segments (super-packets
	// with offload, so at least one more frame) and its acknowledgements.
	t.Logf("node A's counters of peer b moved by %+v", countersOf(t, a, "b").sub(ab0))
	atLeast(t, "node A's counters of peer b", countersOf(t, a, "b").sub(ab0), 10, 5000+1<<20, 10, 5000)
	atLeast(t, "node B's counters of peer a", countersOf(t, b, "a").sub(ba0), 10, 5000, 10, 5000+1<<20)
	if d := countersOf(t, a, "idle").sub(idle0); d != (PeerCounters{}) {
		t.Errorf("node A's counters of the idle peer moved by %+v", d)
	}
	if _, err := a.dp.SetPeers(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if tbl := nftTable(t, a, "epaira"); strings.Contains(tbl, "counter peer-") {
		t.Fatalf("node A's table keeps peer counters with no peers:\n%s", tbl)
	}
	if got := peerRoutes(t, a); len(got) != 0 {
		t.Fatalf("routes after the peer left: %v", got)
	}
	if _, err := a.host.NL.LinkByName(DefaultVXLANDevice); err == nil {
		t.Fatal("the VXLAN device stays without a VXLAN peer")
	}
}
