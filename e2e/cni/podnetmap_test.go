package cni

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/nmport"
)

// podSocket is the agent's netmap socket in a pod's network namespace.
const podSocket = "@epair-netmap"

// openIn opens a netmap port from inside ns, as an application in that pod does.
func openIn(ns *netnsutil.NS, name string) (p *nmport.Port, err error) {
	err = ns.Do(func() error {
		p, err = nmport.Open(podSocket, name, 0)
		return err
	})
	return p, err
}

func withPorts(r *libcni.RuntimeConf, names ...string) *libcni.RuntimeConf {
	r.CapabilityArgs = map[string]any{"netmapPorts": names}
	return r
}

// appPorts lists the agent's application ports (kind "app") on vale0, by pod.
func appPorts(t *testing.T, e *env) map[string][]agentapi.PortInfo {
	t.Helper()
	c := agentapi.NewClient(e.agent.socket, 10*time.Second)
	defer c.Close()
	sl, err := c.Switches(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]agentapi.PortInfo{}
	for _, s := range sl.Items {
		for _, p := range s.Ports {
			if p.Kind == "app" {
				out[p.Pod] = append(out[p.Pod], p)
			}
		}
	}
	return out
}

// TestPodNetmapPorts: pods ask for application ports (runtimeConfig netmapPorts), reach
// them on the abstract socket in their own network namespace, get an identity from the
// agent (MAC, IPAM addresses) that anti-spoofing holds them to, exchange frames with each
// other and with a normal pod, may monitor their own interface, and can open nothing of
// another pod's. DEL takes the ports, the socket and the addresses away.
func TestPodNetmapPorts(t *testing.T) {
	netnsutil.RequireRoot(t)
	e := newEnv(t, envOpts{netmap: true})
	l := e.conflist("1.0.0")
	nsA, nsB, nsC := netnsutil.New(t), netnsutil.New(t), netnsutil.New(t)
	rtA := withPorts(rt("nm-a", nsA), "app", "pg")
	rtB := withPorts(rt("nm-b", nsB), "app", "pg")
	e.mustAdd(l, rtA)
	e.mustAdd(l, rtB)
	resC := e.mustAdd(l, rt("nm-c", nsC))
	podC := resC.IPs[0].Address.IP.To4()

	pa, err := openIn(nsA, "vale0:app")
	if err != nil {
		t.Fatalf("pod a opens its application port: %v", err)
	}
	defer pa.Close()
	pb, err := openIn(nsB, "vale0:app")
	if err != nil {
		t.Fatalf("pod b opens its own port of the same name: %v", err)
	}
	defer pb.Close()
	for _, p := range []*nmport.Port{pa, pb} {
		if len(p.MAC()) != 6 || len(p.Addrs()) != 1 || !p.Addrs()[0].Prefix.Addr().Is4() || !p.Addrs()[0].Gateway.IsValid() {
			t.Fatalf("application port identity: MAC %v, addresses %v; want a MAC and an IPv4 address with its gateway\n%+v\n%s", p.MAC(), p.Addrs(), appPorts(t, e), e.agent.logText())
		}
	}
	ipA, ipB := p4(pa), p4(pb)
	if slices.Equal(pa.MAC(), pb.MAC()) || ipA.Equal(ipB) || ipA.Equal(podC) {
		t.Fatalf("application ports share an identity: a %v %v, b %v %v (pod c %v)", pa.MAC(), ipA, pb.MAC(), ipB, podC)
	}
	t.Logf("pod a's application port: %v %v; pod b's: %v %v", pa.MAC(), ipA, pb.MAC(), ipB)

	// An application port pings a normal pod and the node (its gateway).
	for _, dst := range []net.IP{podC, pa.Addrs()[0].Gateway.AsSlice()} {
		mac := appARP(t, pa, pa.MAC(), ipA, dst)
		appPing(t, pa, pa.MAC(), mac, ipA, dst, 1)
	}

	// The two pods' application ports exchange frames, unicast by the MACs the agent
	// pinned to them.
	appUDP := func(src *nmport.Port, srcMAC net.HardwareAddr, sip net.IP, dstMAC net.HardwareAddr, dip net.IP, payload string) {
		appSend(t, src, append(make([]byte, vnetHdr), udpFrame(dstMAC, srcMAC, sip, dip, 9000, 9000, []byte(payload))...))
	}
	isPayload := func(p string) func([]byte) bool {
		return func(f []byte) bool { return bytes.Contains(f, []byte(p)) }
	}
	appUDP(pa, pa.MAC(), ipA, pb.MAC(), ipB, "a to b")
	appRecv(t, pb, "a's frame at b", isPayload("a to b"))
	appUDP(pb, pb.MAC(), ipB, pa.MAC(), ipA, "b to a")
	appRecv(t, pa, "b's frame at a", isPayload("b to a"))

	// Anti-spoofing holds an application port to its identity: another source MAC or
	// address never reaches b.
	appUDP(pa, net.HardwareAddr{0x02, 0, 0, 0, 0x66, 0x66}, ipA, pb.MAC(), ipB, "spoofed mac")
	appUDP(pa, pa.MAC(), podC, pb.MAC(), ipB, "spoofed ip")
	appUDP(pa, pa.MAC(), ipA, pb.MAC(), ipB, "after spoofing")
	if f := appRecv(t, pb, "the frame after the spoofed ones", func(f []byte) bool {
		return bytes.Contains(f, []byte("after spoofing")) || bytes.Contains(f, []byte("spoofed"))
	}); bytes.Contains(f, []byte("spoofed")) {
		t.Fatalf("a spoofed frame reached b: %q", f[vnetHdr+42:])
	}
	spoofed := map[string]uint64{}
	for _, p := range appPorts(t, e)["default/nm-a"] {
		if p.Active {
			spoofed["mac"], spoofed["ip"] = p.Stats.Drops["spoofed-mac"], p.Stats.Drops["spoofed-ip"]
		}
	}
	if spoofed["mac"] != 1 || spoofed["ip"] != 1 {
		t.Fatalf("pod a's open application port counted spoofed drops %v; want a spoofed-mac and a spoofed-ip drop\n%+v", spoofed, appPorts(t, e)["default/nm-a"])
	}

	// A pod opens nothing of another pod's: not its ports (by the pod's name, which is
	// its own, or by the switch's), not its interface, not a monitor of either.
	bPort := ""
	for _, p := range appPorts(t, e)["default/nm-b"] {
		if p.Active {
			bPort = p.Name
		}
	}
	bLink := ""
	c := agentapi.NewClient(e.agent.socket, 10*time.Second)
	al, err := c.List(context.Background())
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range al.Items {
		if at.ContainerID == "nm-b" && at.Port != nil {
			bLink = at.Port.HostIfName
		}
	}
	if bPort == "" || bLink == "" {
		t.Fatalf("pod b's application port %q, link %q: not found", bPort, bLink)
	}
	for _, name := range []string{"vale0:other", bPort, bPort + "/r", bPort + "{1", "vale0:" + bLink, "vale0:" + bLink + "/rt",
		"vale0:eth0", "vale0:eth0/r", "vale0:eth0{2", "vale0:nobody", "vale1:app"} {
		if p, err := openIn(nsA, name); !errors.Is(err, syscall.EACCES) {
			if p != nil {
				p.Close()
			}
			t.Errorf("pod a opens %s: %v, want EACCES", name, err)
		}
	}
	// Nor does an application on the node, through the node's netmap socket.
	nodeSock := filepath.Join(e.agent.dir, "run", "netmap.sock")
	for _, name := range []string{bPort, bPort + "/r", bPort + "{1", "vale0:nm0123abc"} {
		if p, err := nmport.Open(nodeSock, name, 0); !errors.Is(err, syscall.EACCES) {
			if p != nil {
				p.Close()
			}
			t.Errorf("the node's socket opens %s: %v, want EACCES", name, err)
		}
	}
	if p, err := openIn(nsA, "vale0:app"); !errors.Is(err, syscall.EBUSY) {
		if p != nil {
			p.Close()
		}
		t.Errorf("pod a opens its port a second time: %v, want EBUSY", err)
	}
	if _, err := openIn(nsC, "vale0:app"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("pod c, without application ports, reaches a netmap socket: %v, want ECONNREFUSED", err)
	}

	// A copy monitor of the pod's own application port sees what it receives.
	mon, err := openIn(nsB, "vale0:app/r")
	if err != nil {
		t.Fatalf("pod b monitors its application port: %v", err)
	}
	appUDP(pa, pa.MAC(), ipA, pb.MAC(), ipB, "watched")
	appRecv(t, mon, "a's frame to b on b's monitor", isPayload("watched"))
	appRecv(t, pb, "a's frame at b, monitored", isPayload("watched"))
	mon.Close()

	// valectl shows the application ports.
	table, err := exec.Command(filepath.Join(e.bin, "valectl"), "-socket", e.agent.socket, "ports", "vale0").CombinedOutput()
	if err != nil {
		t.Fatalf("valectl ports: %v\n%s", err, table)
	}
	if n := strings.Count(string(table), " app "); n != 4 {
		t.Errorf("valectl ports lists %d application ports, want 4:\n%s", n, table)
	}

	// ... and the metrics, by their switch port name.
	if m := e.agent.metrics(); !strings.Contains(m, `epair_port_in_frames_total{port="`+bPort+`",switch="vale0"}`) ||
		!strings.Contains(m, `epair_port_info{backend="netmap",port="`+bPort+`",switch="vale0"} 1`) {
		t.Errorf("metrics lack pod b's application port %s", bPort)
	}

	// nm-pktgen ping-pong between the pods' other ports, each sending as itself.
	pg := filepath.Join(e.bin, "nm-pktgen")
	pong := exec.Command("ip", "netns", "exec", nsB.Name, pg, "-socket", podSocket, "-i", "vale0:pg", "-f", "pong", "-d", "20s")
	pongErr, err := pong.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pong.Start(); err != nil {
		t.Fatal(err)
	}
	defer pong.Process.Kill()
	// "nm-pktgen: port vale0:pg: MAC 06:... addresses [{10.60.0.9/16 10.60.0.1}]"
	line, err := bufio.NewReader(pongErr).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) < 7 || f[3] != "MAC" {
		t.Fatalf("nm-pktgen pong did not print its identity: %q (%v)", line, err)
	}
	bMAC := f[4]
	bIP, _, _ := strings.Cut(strings.TrimPrefix(f[6], "[{"), "/")
	out, err := exec.Command("ip", "netns", "exec", nsA.Name, pg, "-socket", podSocket, "-i", "vale0:pg", "-f", "ping",
		"-n", "200", "-dst", bMAC, "-dstip", bIP).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "200 of 200 replies") {
		t.Fatalf("nm-pktgen ping from pod a to pod b (%s %s): %v\n%s", bMAC, bIP, err, out)
	}
	t.Logf("nm-pktgen: %s", strings.TrimSpace(string(out)))
	pong.Process.Kill()
	pong.Wait()

	// An agent restart: the registrations end with the old agent; the pods' sockets and
	// ports come back with the new one, with the same identity.
	macA, addrA := pa.MAC().String(), pa.Addrs()[0]
	pa.Close()
	pb.Close()
	e.agent.signal(syscall.SIGTERM)
	e.agent.start()
	pa, err = openIn(nsA, "vale0:app")
	if err != nil {
		t.Fatalf("pod a opens its port after an agent restart: %v", err)
	}
	if pa.MAC().String() != macA || pa.Addrs()[0] != addrA {
		t.Fatalf("after an agent restart pod a's port is %v %v, was %s %v", pa.MAC(), pa.Addrs(), macA, addrA)
	}
	mac := appARP(t, pa, pa.MAC(), ipA, podC)
	appPing(t, pa, pa.MAC(), mac, ipA, podC, 9)

	// DEL: the port is gone (the application's port is in error), so is the socket, and
	// the address is free again.
	if err := e.del(l, rtA); err != nil {
		t.Fatal(err)
	}
	dead := false
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && !dead; {
		if _, err := pa.Poll(nmport.PollIn, time.Until(end)); err != nil {
			dead = true
			t.Logf("pod a's application port after DEL: %v", err)
		}
		r := pa.RxRing(0)
		r.Advance(r.Tail()) // frames that arrived before the DEL
	}
	if !dead {
		t.Errorf("pod a's application port still works 2s after DEL")
	}
	if _, err := openIn(nsA, "vale0:app"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("pod a's netmap socket after DEL: %v, want ECONNREFUSED", err)
	}
	if ports := appPorts(t, e); len(ports["default/nm-a"]) != 0 {
		t.Errorf("pod a's application ports after DEL: %+v", ports["default/nm-a"])
	}
	nsD := netnsutil.New(t)
	rtD := rt("nm-d", nsD)
	rtD.CapabilityArgs = map[string]any{"ips": []string{ipA.String()}}
	e.mustAdd(l, rtD)
	if err := e.del(l, rtD); err != nil {
		t.Fatal(err)
	}
	if err := e.del(l, rtB); err != nil {
		t.Fatal(err)
	}
	if err := e.del(l, rt("nm-c", nsC)); err != nil {
		t.Fatal(err)
	}
}

func p4(p *nmport.Port) net.IP { return p.Addrs()[0].Prefix.Addr().AsSlice() }
