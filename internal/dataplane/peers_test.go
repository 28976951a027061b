package dataplane

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/epair-cni/epair/pkg/linkport"
)

// twoNodes is two dataplanes ("nodes" A and B, each in a host namespace of its own) joined
// by a veth underlay 192.168.230.1/24 – .2/24; A's pods are in 10.78.0.0/24, B's in
// 10.88.0.0/24.
func twoNodes(t *testing.T, peersA, peersB []Peer) (a, b *env) {
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
	// The underlay, before the dataplanes start (they also pick it up later, at a resync).
	la := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "under0"}, PeerName: "under1"}
	if err := a.host.NL.LinkAdd(la); err != nil {
		t.Fatal(err)
	}
	peer, err := a.host.NL.LinkByName("under1")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.host.NL.LinkSetNsFd(peer, int(b.host.Handle)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct {
		e    *env
		name string
		addr string
	}{{a, "under0", "192.168.230.1/24"}, {b, "under1", "192.168.230.2/24"}} {
		l, err := n.e.host.NL.LinkByName(n.name)
		if err != nil {
			t.Fatal(err)
		}
		ad, _ := netlink.ParseAddr(n.addr)
		if err := n.e.host.NL.AddrAdd(l, ad); err != nil {
			t.Fatal(err)
		}
		if err := n.e.host.NL.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if out, err := n.e.host.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	a.start()
	b.start()
	return a, b
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

// TestPeersRouted: two nodes on one L2 segment, each the other's peer: A's pod pings B's
// pod and B's pod sees A's pod's own address (not masqueraded); the routes are proto 77
// through the peer's address; a peer with an address behind a router is unreachable with
// the reason; a peer dropped by SetPeers loses its routes (also one added by hand with
// that protocol); an uninstalling Close removes them.
func TestPeersRouted(t *testing.T) {
	pa := Peer{Name: "a", Addresses: []netip.Addr{netip.MustParseAddr("192.168.230.1")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.78.0.0/24")}}
	pb := Peer{Name: "b", Addresses: []netip.Addr{netip.MustParseAddr("192.168.230.2")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.88.0.0/24")}}
	a, b := twoNodes(t, []Peer{pb}, []Peer{pa})
	podA := a.addPod()
	podB := b.makePodIn("10.88.0", "fd00:88", "10.88.0.1", false)
	b.attach(podB)
	if got := peerRoutes(t, a); len(got) != 1 || got["10.88.0.0/24"] != "192.168.230.2" {
		t.Fatalf("node A's peer routes %v, want 10.88.0.0/24 via 192.168.230.2", got)
	}
	if st := a.dp.Peers(); len(st) != 1 || st[0].Mode != ModeRouted || st[0].Routes != 1 || st[0].Reason != "" {
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

	// A peer behind a router, a stray route of ours, then B dropped.
	far := Peer{Name: "c", Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.9")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.98.0.0/24")}}
	st, err := a.dp.SetPeers(context.Background(), []Peer{pb, far})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[1].Mode != ModeUnreachable || !strings.Contains(st[1].Reason, "no route to the peer's address 203.0.113.9") {
		t.Fatalf("peer behind no route: %+v", st)
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
}
