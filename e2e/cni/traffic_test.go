package cni

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestDualStack: pods get an IPv4 and an IPv6 address from the agent's two ranges and
// reach each other and the node over both families.
func TestDualStack(t *testing.T) {
	e := newEnv(t, envOpts{subnets: []string{"10.62.0.0/24", "fd00:62::/64"}})
	l := e.conflist("1.1.0")
	a, b := netnsutil.New(t), netnsutil.New(t)
	ra := rt("ds-a", a)
	e.mustAdd(l, ra)
	rb := e.mustAdd(l, rt("ds-b", b))
	if len(rb.IPs) != 2 || rb.IPs[1].Address.IP.To4() != nil || rb.IPs[1].Gateway.String() != "fd00:62::1" {
		t.Fatalf("dual-stack result: %+v", rb.IPs)
	}
	if err := ping(a, rb.IPs[0].Address.IP.String()); err != nil {
		t.Error(err)
	}
	if err := ping(a, rb.IPs[1].Address.IP.String()); err != nil {
		t.Error(err)
	}
	if err := ping(b, "fd00:62::1"); err != nil {
		t.Error(err)
	}
	if err := e.check(l, ra); err != nil {
		t.Errorf("CHECK: %v", err)
	}
}

// TestMasqueradeAndHairpin: with masquerade on, a pod reaches a host outside the pod
// network that has no route back to it (the node's address is the source it sees), and a
// pod reaches itself through a DNATed service address (hairpin).
func TestMasqueradeAndHairpin(t *testing.T) {
	netnsutil.RequireTool(t, "nft", "nftables")
	e := newEnv(t, envOpts{masquerade: true})
	l := e.conflist("1.1.0")
	pod := netnsutil.New(t)
	res := e.mustAdd(l, rt("masq", pod))
	ip := podIP(res)

	// "The world": a namespace behind the node on 192.0.2.0/24, with no route to the pods.
	world := netnsutil.New(t)
	netnsutil.Veth(t, e.host, "uplink", "192.0.2.1/24", world, "eth0", "192.0.2.2/24")
	var ln net.Listener
	if err := world.Do(func() (err error) { ln, err = net.Listen("tcp", "192.0.2.2:9000"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	if out, err := pod.Exec("bash", "-c", "exec 3<>/dev/tcp/192.0.2.2/9000"); err != nil {
		t.Fatalf("pod to the world: %v %s", err, out)
	}
	select {
	case src := <-seen:
		if src != "192.0.2.1" {
			t.Fatalf("the world saw %s, want the node's 192.0.2.1 (masqueraded)", src)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the world never saw the connection")
	}

	// Hairpin: 10.96.0.10:80 is DNATed to the pod itself.
	for _, args := range [][]string{
		{"add", "table", "ip", "e2esvc"},
		{"add", "chain", "ip", "e2esvc", "pre", "{ type nat hook prerouting priority -100 ; }"},
		{"add", "rule", "ip", "e2esvc", "pre", "ip", "daddr", "10.96.0.10", "tcp", "dport", "80", "dnat", "to", ip + ":8080"},
	} {
		if out, err := e.host.Exec("nft", args...); err != nil {
			t.Fatalf("nft %v: %v %s", args, err, out)
		}
	}
	var pl net.Listener
	if err := pod.Do(func() (err error) { pl, err = net.Listen("tcp", ":8080"); return }); err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	go func() {
		c, err := pl.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hairpin\n"))
		c.Close()
	}()
	out, err := pod.Exec("bash", "-c", "exec 3<>/dev/tcp/10.96.0.10/80 && timeout 5 head -n1 <&3")
	if err != nil || strings.TrimSpace(out) != "hairpin" {
		t.Fatalf("pod to itself through 10.96.0.10: %v %q", err, out)
	}
}

// TestBackends: every switch is an offload switch, so whatever the (deprecated) backend of
// the agent's configuration says, pods reach each other over AF_PACKET ports with
// virtio-net headers (valectl's view); the settings that no longer apply are accepted with
// a deprecation warning in the agent's log, auto and packet without one.
func TestBackends(t *testing.T) {
	for _, be := range []struct {
		cfg        string
		deprecated bool
	}{{"auto", false}, {"packet", false}, {"ringless", true}, {"xdp", true}} {
		t.Run(be.cfg, func(t *testing.T) {
			e := newEnv(t, envOpts{backend: be.cfg})
			l := e.conflist("1.1.0")
			a, b := netnsutil.New(t), netnsutil.New(t)
			ra := e.mustAdd(l, rt("be-a", a))
			rb := e.mustAdd(l, rt("be-b", b))
			if err := ping(a, podIP(rb)); err != nil {
				t.Fatal(err)
			}
			if err := ping(b, podIP(ra)); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(filepath.Join(e.bin, "valectl"), "-socket", e.agent.socket, "ports").CombinedOutput()
			if err != nil || strings.Count(string(out), "af_packet ") != 2 {
				t.Fatalf("valectl ports (want two af_packet ports): %v\n%s", err, out)
			}
			log, _ := os.ReadFile(filepath.Join(e.agent.dir, "agent.log"))
			if warned := strings.Contains(string(log), "deprecated"); warned != be.deprecated {
				t.Fatalf("backend %q: deprecation warning in the agent's log = %v, want %v\n%s", be.cfg, warned, be.deprecated, log)
			}
		})
	}
}

// TestOffloadSwitch: with an offload switch in the agent's configuration, pods added
// through libcni keep transmit checksum offload, reach each other and the node, and a
// TCP transfer between them (TSO super-frames) arrives intact; valectl shows the ports
// on AF_PACKET.
func TestOffloadSwitch(t *testing.T) {
	e := newEnv(t, envOpts{offload: true})
	l := e.conflist("1.1.0")
	a, b := netnsutil.New(t), netnsutil.New(t)
	ra := e.mustAdd(l, rt("off-a", a))
	rb := e.mustAdd(l, rt("off-b", b))
	if err := ping(a, podIP(rb)); err != nil {
		t.Fatal(err)
	}
	if err := ping(b, podIP(ra)); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*netnsutil.NS{a, b} {
		if !netnsutil.TxChecksumOn(t, ns, "eth0") {
			t.Fatalf("pod %s: transmit checksum offload off; want on for an offload switch", ns.Name)
		}
	}
	rate := netnsutil.TCPTransfer(t, a, b, podIP(rb), 5202, 32<<20)
	t.Logf("TCP through the offload switch: %.2f Gbit/s", rate/1e9)
	out, err := exec.Command(filepath.Join(e.bin, "valectl"), "-socket", e.agent.socket, "ports").CombinedOutput()
	if err != nil || strings.Count(string(out), "af_packet ") != 2 {
		t.Fatalf("valectl ports (want two af_packet ports): %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(e.bin, "valectl"), "-socket", e.agent.socket, "switches").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "offload") {
		t.Fatalf("valectl switches (want vale0 shown as an offload switch): %v\n%s", err, out)
	}
	for _, r := range []struct {
		name string
		ns   *netnsutil.NS
	}{{"off-a", a}, {"off-b", b}} {
		if err := e.del(l, rt(r.name, r.ns)); err != nil {
			t.Fatal(err)
		}
	}
}
