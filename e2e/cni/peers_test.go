package cni

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// TestStandalonePeers: two "nodes" (host namespaces, each with its own agent, socket and
// state) whose configurations name each other as peers, joined by a veth underlay made
// after both agents started (the agents' resync picks it up). Pods made through libcni on
// each node ping each other, and a UDP echo shows the source pod's own address on the
// other node (no NAT between pods, with masquerading on); valectl peers shows the peer
// routed; and a node's agent with a peer behind no route says why.
func TestStandalonePeers(t *testing.T) {
	peer := func(name, addr, cidr string) map[string]any {
		return map[string]any{"name": name, "addresses": []string{addr}, "podCIDRs": []string{cidr}}
	}
	a := newEnv(t, envOpts{subnet: "10.75.0.0/24", masquerade: true, hostPort: "epnodea",
		peers: []map[string]any{peer("node-b", "192.168.231.2", "10.76.0.0/24")}})
	b := newEnv(t, envOpts{subnet: "10.76.0.0/24", masquerade: true, hostPort: "epnodeb",
		peers: []map[string]any{peer("node-a", "192.168.231.1", "10.75.0.0/24"), peer("node-c", "203.0.113.7", "10.77.0.0/24")}})
	// The underlay, after both agents started.
	if err := a.host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "undera"}, PeerName: "underb"}); err != nil {
		t.Fatal(err)
	}
	ub, err := a.host.NL.LinkByName("underb")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.host.NL.LinkSetNsFd(ub, int(b.host.Handle)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct {
		ns         *netnsutil.NS
		link, addr string
	}{{a.host, "undera", "192.168.231.1/24"}, {b.host, "underb", "192.168.231.2/24"}} {
		for _, cmd := range [][]string{{"ip", "addr", "add", n.addr, "dev", n.link}, {"ip", "link", "set", n.link, "up"}, {"sysctl", "-qw", "net.ipv4.ip_forward=1"}} {
			if out, err := n.ns.Exec(cmd[0], cmd[1:]...); err != nil {
				t.Fatalf("%v: %v\n%s", cmd, err, out)
			}
		}
	}
	pa, pb := netnsutil.New(t), netnsutil.New(t)
	ipA := podIP(a.mustAdd(a.conflist("1.0.0"), rt("a", pa)))
	ipB := podIP(b.mustAdd(b.conflist("1.0.0"), rt("b", pb)))

	// Within a resync (2 s) both agents route the other's pods.
	peersOf := func(e *env) []agentapi.PeerInfo {
		t.Helper()
		pl, err := e.agent.client.Peers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return pl.Items
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pa, pb := peersOf(a), peersOf(b)
		if len(pa) == 1 && pa[0].Mode == "routed" && pa[0].Routes == 1 && len(pb) == 2 && pb[0].Mode == "routed" {
			if pb[1].Name != "node-c" || pb[1].Mode != "unreachable" || !strings.Contains(pb[1].Reason, "203.0.113.7") {
				t.Fatalf("node B's unreachable peer: %+v", pb[1])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peers not routed within 5 s of the underlay: A %+v, B %+v", pa, pb)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := ping(pa, ipB); err != nil {
		t.Fatal(err)
	}
	if err := ping(pb, ipA); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("ip", "netns", "exec", pb.Name, "python3", "-c", `import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("0.0.0.0",7001))
d,a=s.recvfrom(100); s.sendto(a[0].encode(),a)`)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	out, err := pa.Exec("python3", "-c", `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.5)
for i in range(10):
  s.sendto(b"x",(sys.argv[1],7001))
  try:
    print(s.recv(100).decode()); break
  except TimeoutError: pass`, ipB)
	if err != nil || strings.TrimSpace(out) != ipA {
		t.Fatalf("node B's pod saw node A's pod as %q (%v), want %s (no NAT between pods)", strings.TrimSpace(out), err, ipA)
	}
	vout, err := exec.Command(a.bin+"/valectl", "-socket", b.agent.socket, "peers").CombinedOutput()
	if err != nil || !strings.Contains(string(vout), "node-a") || !strings.Contains(string(vout), "routed") || !strings.Contains(string(vout), "unreachable") {
		t.Fatalf("valectl peers: %v\n%s", err, vout)
	}
	t.Logf("valectl peers (node B):\n%s", vout)
}
