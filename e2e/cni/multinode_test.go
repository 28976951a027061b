package cni

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/vishvananda/netlink"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// startAPIServer runs a kube-apiserver and etcd (the envtest binaries the suite builds,
// KUBEBUILDER_ASSETS) with epair's CRDs, and returns its configuration and a kubeconfig
// file for the agents. The test skips when the binaries are missing.
func startAPIServer(t *testing.T) (*rest.Config, string) {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: the multi-node test needs kube-apiserver and etcd (hack/test.sh builds them)")
	}
	logf.SetLogger(logr.Discard()) // envtest's own logs; the agents log to their files
	env := &envtest.Environment{BinaryAssetsDirectory: assets, ErrorIfCRDPathMissing: true,
		CRDDirectoryPaths: []string{filepath.Join("..", "..", "charts", "epair", "crds")}}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		t.Fatalf("start the API server: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the API server: %v", err)
		}
	})
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return cfg, path
}

// forwardAPI makes the API server (on the test's loopback) reachable at the same address
// from inside ns: a listener there whose connections are carried to it (apiProxy, which
// can also cut the API server off for the agents in ns and restore it).
func forwardAPI(t *testing.T, ns *netnsutil.NS, host string) *apiProxy {
	t.Helper()
	return newAPIProxy(t, ns, host)
}

// clusterNode is one node of the multi-node test: a host namespace with an agent in
// cluster mode for its Node object.
type clusterNode struct {
	name  string
	host  *netnsutil.NS
	agent *agentProc
	cidrs []string
	addrs []string
}

// testCluster is the multi-node tests' world: a kube-apiserver, a VirtualSwitch vale0 with
// spec, and three node namespaces with their agents in cluster mode. Nodes A and B share an
// L2 segment (a bridge in a router namespace, underlay MTU 1400); node C is on another
// subnet behind that router; every node is dual-stack.
type testCluster struct {
	bin   string
	cfg   *rest.Config
	cs    *kubernetes.Clientset
	cl    client.Client
	nodes []*clusterNode
}

// clusterAPI starts a kube-apiserver with a VirtualSwitch vale0 of spec and points the agents
// the test starts at it (KUBECONFIG); it returns the built binaries' directory, the API
// server's configuration and clients.
func clusterAPI(t *testing.T, spec epairv1.VirtualSwitchSpec) (string, *rest.Config, *kubernetes.Clientset, client.Client) {
	t.Helper()
	bin := bins(t)
	cfg, kubeconfig := startAPIServer(t)
	t.Setenv("KUBECONFIG", kubeconfig)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: clientScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Create(context.Background(), &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: "vale0"}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	return bin, cfg, cs, cl
}

// clusterAgent is a cluster-mode agent for node name in namespace host, with its own socket,
// state directory and configuration, stopped (SIGTERM) when the test ends; not started.
func clusterAgent(t *testing.T, bin string, host *netnsutil.NS) *agentProc {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	ag := &agentProc{t: t, host: host, bin: bin, dir: dir, socket: filepath.Join(dir, "run", "agent.sock"), cfg: filepath.Join(dir, "agent.json")}
	if err := os.WriteFile(ag.cfg, []byte(fmt.Sprintf(`{"socket":%q,"stateDir":%q,"masquerade":true,"switches":[{"name":"vale0","ranges":[{"subnet":"10.89.0.0/16"}]}]}`,
		ag.socket, filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}
	ag.client = agentapi.NewClient(ag.socket, 5*time.Second)
	t.Cleanup(func() {
		ag.client.Close()
		if ag.cmd != nil {
			ag.signal(syscall.SIGTERM)
		}
	})
	return ag
}

func newTestCluster(t *testing.T, spec epairv1.VirtualSwitchSpec) *testCluster {
	t.Helper()
	bin, cfg, cs, cl := clusterAPI(t, spec)
	ctx := context.Background()
	var err error

	// The underlay: a router namespace with a bridge for A and B, and a second subnet to C.
	router := netnsutil.New(t)
	mustExec(t, router, "ip", "link", "add", "br0", "type", "bridge")
	mustExec(t, router, "ip", "addr", "add", "192.168.240.254/24", "dev", "br0")
	mustExec(t, router, "ip", "link", "set", "br0", "up")
	mustExec(t, router, "ip", "addr", "add", "fd00:240::fe/64", "dev", "br0", "nodad")
	mustExec(t, router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	mustExec(t, router, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	nodes := []*clusterNode{
		{name: "node-a", cidrs: []string{"10.80.1.0/24", "fd00:80:1::/64"}, addrs: []string{"192.168.240.1", "fd00:240::1"}},
		{name: "node-b", cidrs: []string{"10.80.2.0/24", "fd00:80:2::/64"}, addrs: []string{"192.168.240.2", "fd00:240::2"}},
		{name: "node-c", cidrs: []string{"10.80.3.0/24", "fd00:80:3::/64"}, addrs: []string{"192.168.241.3", "fd00:241::3"}},
	}
	for i, n := range nodes {
		n.host = netnsutil.New(t)
		under, rside := "under0", fmt.Sprintf("r%d", i)
		v := vethPair(under, rside)
		v.MTU = 1400
		if err := n.host.NL.LinkAdd(v); err != nil {
			t.Fatal(err)
		}
		moveLink(t, n.host, rside, router)
		mustExec(t, n.host, "ip", "link", "set", under, "up")
		mustExec(t, router, "ip", "link", "set", rside, "up")
		mustExec(t, n.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		mustExec(t, n.host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
		mustExec(t, n.host, "ip", "addr", "add", n.addrs[0]+"/24", "dev", under)
		mustExec(t, n.host, "ip", "addr", "add", n.addrs[1]+"/64", "dev", under, "nodad")
		if i < 2 {
			mustExec(t, router, "ip", "link", "set", rside, "master", "br0")
			mustExec(t, n.host, "ip", "route", "add", "192.168.241.0/24", "via", "192.168.240.254")
			mustExec(t, n.host, "ip", "route", "add", "fd00:241::/64", "via", "fd00:240::fe")
		} else {
			mustExec(t, router, "ip", "addr", "add", "192.168.241.254/24", "dev", rside)
			mustExec(t, router, "ip", "addr", "add", "fd00:241::fe/64", "dev", rside, "nodad")
			mustExec(t, n.host, "ip", "route", "add", "192.168.240.0/24", "via", "192.168.241.254")
			mustExec(t, n.host, "ip", "route", "add", "fd00:240::/64", "via", "fd00:241::fe")
		}
		// The Node object, as the kubelet and the node IPAM controller would make it.
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}, Spec: corev1.NodeSpec{PodCIDRs: n.cidrs, PodCIDR: n.cidrs[0]}}
		if node, err = cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, a := range n.addrs {
			node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		forwardAPI(t, n.host, cfg.Host)
	}
	for _, n := range nodes {
		n.agent = clusterAgent(t, bin, n.host)
		n.agent.start("-mode=cluster", "-node-name="+n.name, "-cni-switch=vale0", "-health-addr=0", "-status-interval=1s")
	}
	return &testCluster{bin: bin, cfg: cfg, cs: cs, cl: cl, nodes: nodes}
}

// clusterPod is a pod made through libcni on one of the cluster's nodes.
type clusterPod struct {
	ns      *netnsutil.NS
	ip, ip6 string
	node    *clusterNode
}

// pod makes a pod on node n through libcni with the node's agent.
func (tc *testCluster) pod(t *testing.T, n *clusterNode) clusterPod {
	t.Helper()
	e := &env{t: t, bin: tc.bin, host: n.host, agent: n.agent, cache: t.TempDir()}
	e.cni = newCNIConfig(tc.bin, e.cache)
	p := netnsutil.New(t)
	res := e.mustAdd(e.conflist("1.0.0"), rt(n.name+"-p", p))
	pd := clusterPod{ns: p, ip: podIP(res), node: n}
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() == nil {
			pd.ip6 = ip.Address.IP.String()
		}
	}
	if pd.ip6 == "" {
		t.Fatalf("%s's pod has no IPv6 address: %v", n.name, res.IPs)
	}
	t.Cleanup(func() { _ = e.del(e.conflist("1.0.0"), rt(n.name+"-p", p)) })
	return pd
}

// TestMultiNodeCluster is the pod network across three nodes, each a namespace with its own
// node-agent in cluster mode against one real kube-apiserver, its own socket and state, and
// its own Node object (pod CIDRs, InternalIP) made by the test. Nodes A and B share an L2
// segment (a kernel bridge in a router namespace); node C is on another subnet behind that
// router. Pods are made through libcni on each node. It checks that
//   - each agent chose routed for the peer on its segment and VXLAN for the other subnet;
//   - every pod reaches every pod on every node (ping, IPv4 and IPv6: the nodes are
//     dual-stack), and TCP content crosses A→B (routed) and A→C (VXLAN) intact;
//   - an agent killed with SIGKILL, a Node deleted while it is down, and the agent
//     restarted: cross-node traffic resumes and the deleted node's routes and tunnel state
//     are gone from it, and from the running agent within 2 s of the deletion.
func TestMultiNodeCluster(t *testing.T) {
	// No MTU: each node detects it (its underlay's 1400 less 50 for VXLAN).
	tc := newTestCluster(t, epairv1.VirtualSwitchSpec{})
	ctx, cs, cl, nodes := context.Background(), tc.cs, tc.cl, tc.nodes
	a, b, c := nodes[0], nodes[1], nodes[2]

	// Modes: within a resync each agent has its peers.
	wantModes := map[*clusterNode]map[string]string{
		a: {"node-b": "routed", "node-c": "vxlan"},
		b: {"node-a": "routed", "node-c": "vxlan"},
		c: {"node-a": "vxlan", "node-b": "vxlan"},
	}
	for n, want := range wantModes {
		waitPeers(t, n, want, 10*time.Second)
	}

	// Pods through libcni on each node; every pod pings every other.
	var pods []clusterPod
	for _, n := range nodes {
		pods = append(pods, tc.pod(t, n))
	}
	for _, x := range pods {
		for _, y := range pods {
			if x.ns != y.ns {
				for _, ip := range []string{y.ip, y.ip6} {
					if err := ping(x.ns, ip); err != nil {
						t.Fatalf("%s's pod → %s's pod: %v", x.node.name, y.node.name, err)
					}
				}
			}
		}
	}
	// The MTU each node chose, in its NodeState and on its pod; a datagram of that size
	// with DF set crosses to the VXLAN node, a larger one is refused at the pod (no
	// blackhole).
	for i, n := range nodes {
		waitNodeState(t, cl, n.name, 10*time.Second, func(ns *epairv1.NodeState) bool {
			return len(ns.Status.Switches) == 1 && ns.Status.Switches[0].MTU == 1350
		})
		if out := mustExec(t, pods[i].ns, "ip", "-o", "link", "show", "dev", "eth0"); !strings.Contains(out, " mtu 1350 ") {
			t.Fatalf("%s's pod: %s, want mtu 1350", n.name, out)
		}
	}
	mustExec(t, pods[0].ns, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1322", pods[2].ip)
	if out, err := pods[0].ns.Exec("ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1323", pods[2].ip); err == nil || !strings.Contains(out, "message too long") {
		t.Fatalf("a datagram over the MTU with DF: %v\n%s", err, out)
	}
	for _, y := range pods[1:] {
		bps := netnsutil.TCPTransfer(t, pods[0].ns, y.ns, y.ip, 5400, 8<<20)
		t.Logf("8 MiB TCP %s → %s (%s), intact: %.0f Mbit/s", a.name, y.node.name, wantModes[a][y.node.name], bps/1e6)
	}

	// NodeState lists the peers as the agent reaches them.
	waitNodeState(t, cl, a.name, 10*time.Second, func(ns *epairv1.NodeState) bool {
		got := map[string]string{}
		for _, p := range ns.Status.Peers {
			got[p.Node] = p.Mode
		}
		return fmt.Sprint(got) == fmt.Sprint(wantModes[a])
	})

	// Node C moves to another address: its peers follow (A's forwarding entry, B's too),
	// and traffic to it resumes.
	mustExec(t, c.host, "sysctl", "-qw", "net.ipv4.conf.under0.promote_secondaries=1") // keep .4 when .3 goes
	mustExec(t, c.host, "ip", "addr", "add", "192.168.241.4/24", "dev", "under0")
	mustExec(t, c.host, "ip", "addr", "del", "192.168.241.3/24", "dev", "under0")
	nc, err := cs.CoreV1().Nodes().Get(ctx, c.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nc.Status.Addresses[0].Address = "192.168.241.4"
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, nc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	for !strings.Contains(mustExec(t, a.host, "bridge", "fdb", "show", "dev", "epair.vxlan"), "dst 192.168.241.4") {
		if time.Since(moved) > 2*time.Second {
			t.Fatalf("node A's tunnel to node C does not follow its new address within 2 s:\n%s", mustExec(t, a.host, "bridge", "fdb", "show", "dev", "epair.vxlan"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("node A follows node C's new address within %v", time.Since(moved).Round(time.Millisecond))
	if err := ping(pods[0].ns, pods[2].ip); err != nil {
		t.Fatalf("A → C after C moved: %v", err)
	}

	// Node B's agent killed; node C deleted while it is down: A drops C within 2 s; B,
	// restarted, comes up without C and reaches A again.
	b.agent.kill9()
	if err := cs.CoreV1().Nodes().Delete(ctx, c.name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitPeers(t, a, map[string]string{"node-b": "routed"}, 2*time.Second)
	t.Logf("node A dropped the deleted node C within %v", time.Since(start).Round(time.Millisecond))
	for _, n := range []*clusterNode{a} {
		if out := mustExec(t, n.host, "ip", "route", "show", "proto", "77"); strings.Contains(out, "10.80.3.0/24") {
			t.Fatalf("%s still routes node C's pods:\n%s", n.name, out)
		}
		if _, err := n.host.NL.LinkByName("epair.vxlan"); err == nil {
			t.Fatalf("%s keeps its VXLAN device without a VXLAN peer", n.name)
		}
	}
	b.agent.start("-mode=cluster", "-node-name="+b.name, "-cni-switch=vale0", "-health-addr=0", "-status-interval=1s")
	waitPeers(t, b, map[string]string{"node-a": "routed"}, 10*time.Second)
	if out := mustExec(t, b.host, "ip", "route", "show", "proto", "77"); strings.Contains(out, "10.80.3.0/24") {
		t.Fatalf("restarted node B still routes the node deleted while it was down:\n%s", out)
	}
	if err := ping(pods[0].ns, pods[1].ip); err != nil {
		t.Fatalf("A → B after B's restart: %v", err)
	}
}

// waitNodeState waits until node's NodeState satisfies ok.
func waitNodeState(t *testing.T, cl client.Client, node string, within time.Duration, ok func(*epairv1.NodeState) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var ns epairv1.NodeState
		err := cl.Get(context.Background(), client.ObjectKey{Name: node}, &ns)
		if err == nil && ok(&ns) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("NodeState %s after %v: %+v (%v)", node, within, ns.Status, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPeers waits until n's agent lists exactly the peers of want, in their modes.
func waitPeers(t *testing.T, n *clusterNode, want map[string]string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := map[string]string{}
		pl, err := n.agent.client.Peers(context.Background())
		if err == nil {
			for _, p := range pl.Items {
				got[p.Name] = p.Mode
			}
		}
		if err == nil && fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's peers after %v: %v (%v), want %v\n%s", n.name, within, got, err, want, tail(n.agent.logText(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func mustExec(t *testing.T, ns *netnsutil.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Exec(name, args...)
	if err != nil {
		t.Fatalf("%s %v in %s: %v\n%s", name, args, ns.Name, err, out)
	}
	return out
}

func vethPair(a, b string) *netlink.Veth {
	return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}
}

// moveLink moves link name from namespace from into namespace to.
func moveLink(t *testing.T, from *netnsutil.NS, name string, to *netnsutil.NS) {
	t.Helper()
	l, err := from.NL.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := from.NL.LinkSetNsFd(l, int(to.Handle)); err != nil {
		t.Fatal(err)
	}
}

func clientScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := epairv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMultiNodeOffload runs the three nodes with an offload VirtualSwitch: the pods keep TSO
// and checksum offload, and their TCP super-frames and UDP datagrams cross to the other
// nodes both routed (A→B) and through VXLAN (A→C). The receiving pod's kernel verifies every
// TCP and UDP checksum (it drops what fails): 16 MiB of TCP arrive intact, and 200 UDP
// datagrams of 1 to 1300 bytes arrive, every one, with its content — so no checksum was left
// unfilled or wrong on the way (the VXLAN checksum-offload failure users meet elsewhere).
func TestMultiNodeOffload(t *testing.T) {
	on := true // deprecated and ignored (every switch is an offload switch), still accepted
	tc := newTestCluster(t, epairv1.VirtualSwitchSpec{Offload: &on})
	a, b, c := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	waitPeers(t, a, map[string]string{"node-b": "routed", "node-c": "vxlan"}, 10*time.Second)
	pa := tc.pod(t, a)
	for _, n := range []*clusterNode{b, c} {
		py := tc.pod(t, n)
		// A capture of A's port meanwhile shows the super-frames: TSO is on end to end.
		var capBuf bytes.Buffer
		capDone := make(chan error, 1)
		go func() {
			capDone <- a.agent.client.Capture(context.Background(), &agentapi.CaptureRequest{Port: portOf(t, a, "default/node-a-p"),
				Direction: "rx", Duration: 3 * time.Second, SnapLen: 64, Format: "pcap", Filter: "tcp"}, &capBuf)
		}()
		port := portOf(t, a, "default/node-a-p")
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // the tap is on
			if capturesOn(t, a, port) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the capture of %s did not start", port)
			}
		}
		bps := netnsutil.TCPTransfer(t, pa.ns, py.ns, py.ip, 5500, 16<<20)
		if err := <-capDone; err != nil {
			t.Fatal(err)
		}
		if big := longFrames(t, &capBuf, 1364); big == 0 {
			t.Fatalf("no TCP frame from A's pod longer than its 1350-byte MTU: the pods' TSO is off")
		}
		t.Logf("16 MiB TCP with TSO, A → %s (%s), intact: %.0f Mbit/s", n.name, map[string]string{"node-b": "routed", "node-c": "vxlan"}[n.name], bps/1e6)
		got := udpExchange(t, pa.ns, py.ns, py.ip, 5600, 200)
		if got != 200 {
			t.Fatalf("UDP A → %s: %d of 200 datagrams arrived intact", n.name, got)
		}
	}
}

// udpExchange sends n datagrams of growing sizes (1 to 1300 bytes, each filled with its
// index) from namespace from to ip:port in namespace to, and returns how many arrived
// with the right content.
func udpExchange(t *testing.T, from, to *netnsutil.NS, ip string, port, n int) int {
	t.Helper()
	var pc net.PacketConn
	if err := to.Do(func() (err error) { pc, err = net.ListenPacket("udp", net.JoinHostPort(ip, fmt.Sprint(port))); return }); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan int, 1)
	go func() {
		ok := 0
		buf := make([]byte, 2048)
		for {
			pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				got <- ok
				return
			}
			i := int(buf[0])
			good := k == 1+(i*13)%1300
			for _, x := range buf[1:k] {
				good = good && x == byte(i)
			}
			if good {
				ok++
			}
		}
	}()
	var c net.Conn
	if err := from.Do(func() (err error) { c, err = net.Dial("udp", net.JoinHostPort(ip, fmt.Sprint(port))); return }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range n {
		b := make([]byte, 1+(i*13)%1300)
		for j := range b {
			b[j] = byte(i)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return <-got
}

// portOf is the switch port of pod on node n.
// capturesOn is the number of captures node n's agent counts on its port name.
func capturesOn(t *testing.T, n *clusterNode, name string) int {
	t.Helper()
	p, _ := findPort(t, n, func(p agentapi.PortInfo) bool { return p.Name == name })
	return p.Captures
}

// portOf is the name of pod's port on node n.
func portOf(t *testing.T, n *clusterNode, pod string) string {
	t.Helper()
	p, ok := findPort(t, n, func(p agentapi.PortInfo) bool { return p.Pod == pod })
	if !ok {
		t.Fatalf("no port of %s on %s", pod, n.name)
	}
	return p.Name
}

// findPort is the first port of node n's agent that match accepts.
func findPort(t *testing.T, n *clusterNode, match func(agentapi.PortInfo) bool) (agentapi.PortInfo, bool) {
	t.Helper()
	sl, err := n.agent.client.Switches(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sl.Items {
		for _, p := range s.Ports {
			if match(p) {
				return p, true
			}
		}
	}
	return agentapi.PortInfo{}, false
}

// longFrames counts the frames of a pcap stream longer than n bytes (their original length).
func longFrames(t *testing.T, r io.Reader, n int) int {
	t.Helper()
	pr, err := pcapgo.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	big := 0
	for {
		_, ci, err := pr.ReadPacketData()
		if err != nil {
			return big
		}
		if ci.Length > n {
			big++
		}
	}
}
