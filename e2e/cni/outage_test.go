package cni

import (
	"context"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// apiProxy carries the connections made inside a node namespace to the API server's
// address on to the API server (forwardAPI). Cut takes the API server away from the node
// as if it had stopped: every carried connection is closed and new ones are refused (the
// listener is closed, so a connect gets a reset); Restore brings it back.
type apiProxy struct {
	t      testing.TB
	ns     *netnsutil.NS
	addr   string
	wg     sync.WaitGroup
	dialed atomic.Int64 // connections carried to the API server, ever

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	gen   int          // the listener's generation: a connection accepted before a cut is not carried
	conns map[net.Conn]bool
}

func newAPIProxy(t testing.TB, ns *netnsutil.NS, host string) *apiProxy {
	t.Helper()
	pu, err := url.Parse(host)
	if err != nil {
		t.Fatalf("API server address %q: %v", host, err)
	}
	p := &apiProxy{t: t, ns: ns, addr: pu.Host, conns: map[net.Conn]bool{}}
	p.Restore()
	t.Cleanup(func() {
		p.Cut() // a client still connected (a watch) does not hold the test up
		p.wg.Wait()
	})
	return p
}

// Restore listens again in the namespace (a no-op if it does).
func (p *apiProxy) Restore() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return
	}
	var ln net.Listener
	if err := p.ns.Do(func() (err error) { ln, err = net.Listen("tcp", p.addr); return }); err != nil {
		p.t.Fatalf("listen for the API server in %s: %v", p.ns.Name, err)
	}
	p.ln = ln
	p.gen++
	p.wg.Add(1)
	go p.serve(ln, p.gen)
}

// Cut closes the listener and every carried connection.
func (p *apiProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return
	}
	p.ln.Close()
	p.ln = nil
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// track records c as carried by the listener of generation gen, unless that one was cut.
func (p *apiProxy) track(c net.Conn, gen int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil || p.gen != gen {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *apiProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *apiProxy) serve(ln net.Listener, gen int) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			if !p.track(c, gen) {
				return
			}
			defer p.untrack(c)
			s, err := net.Dial("tcp", p.addr)
			if err != nil {
				return
			}
			defer s.Close()
			if !p.track(s, gen) {
				return
			}
			defer p.untrack(s)
			p.dialed.Add(1)
			done := make(chan struct{}, 2)
			go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, s); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

// outageSeconds is how long TestAPIServerOutage keeps the API server away:
// EPAIR_OUTAGE_SECONDS, 60 by default (the minute).
func outageSeconds(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("EPAIR_OUTAGE_SECONDS")
	if v == "" {
		return 60 * time.Second
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 5 {
		t.Fatalf("EPAIR_OUTAGE_SECONDS=%q: want a number of seconds, at least 5", v)
	}
	return time.Duration(n) * time.Second
}

// TestAPIServerOutage (issue 16, "API server gone", cluster mode): one node with its
// cluster-mode agent, whose API server connections go through apiProxy. With two pods
// exchanging traffic (an ICMP echo every 10 ms and a TCP stream, A → B), the API server is
// cut off from the node for a minute (EPAIR_OUTAGE_SECONDS), as if it had stopped. Meanwhile
//   - the running pods keep exchanging traffic: at most 1% of the echoes lost, no gap of
//     a second, the TCP stream intact;
//   - a new pod's ADD through libcni succeeds, with an address, and it reaches a running pod;
//   - the test's own client (straight to the API server) creates a PortPolicy selecting pod A
//     (a queue length) and changes the VirtualSwitch's default queue length; the agent does
//     not see them while cut off (and does not write its NodeState).
//
// Then the API server comes back: within 70 s (the times are printed) the agent, the same
// process, has applied the PortPolicy to A's port and the new default queue to the other
// ports, and its NodeState shows the switch's new generation as observed, the three pods'
// ports and A's policy. Its log has no panic. The bound is client-go's: each informer of the
// agent's cache retries its list and watch with an exponential backoff (0.8 s doubling,
// capped at 30 s, jitter up to twice that) that a minute of refusals has grown to its cap,
// so the last informer may come back up to 60 s after the API server did (typically 10 to
// 30 s after a minute's outage; a few seconds after a short one).
func TestAPIServerOutage(t *testing.T) {
	outage := outageSeconds(t)
	const (
		node        = "outage-node"
		catchUp     = 70 * time.Second // the reflectors' longest retry interval, 60 s, and 10 s
		policyQueue = 333
		switchQueue = 777
	)
	bin, cfg, cs, cl := clusterAPI(t, epairv1.VirtualSwitchSpec{})
	ctx := context.Background()

	host := netnsutil.New(t)
	mustExec(t, host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node},
		Spec: corev1.NodeSpec{PodCIDRs: []string{"10.81.0.0/24"}, PodCIDR: "10.81.0.0/24"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy := forwardAPI(t, host, cfg.Host)
	ag := clusterAgent(t, bin, host)
	ag.start("-mode=cluster", "-node-name="+node, "-cni-switch=vale0", "-health-addr=0", "-status-interval=1s")
	n := &clusterNode{name: node, host: host, agent: ag}
	e := &env{t: t, bin: bin, host: host, agent: ag, cache: t.TempDir()}
	e.cni = newCNIConfig(bin, e.cache)
	l := e.conflist("1.0.0")

	var pods []*libcni.RuntimeConf
	// pod is a Pod object on the node (as the scheduler and kubelet make it) and its
	// network through libcni; the ADD's error is returned.
	pod := func(name string) (*netnsutil.NS, string, error) {
		t.Helper()
		po := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
		po, err := cs.CoreV1().Pods("default").Create(ctx, po, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns := netnsutil.New(t)
		r := rt(name, ns)
		r.Args = append(r.Args, [2]string{"K8S_POD_UID", string(po.UID)})
		t.Cleanup(func() { _ = e.del(l, r) })
		pods = append(pods, r)
		res, err := e.add(l, r)
		if err != nil {
			return ns, "", err
		}
		return ns, podIP(res), nil
	}
	pa, ipA, err := pod("outage-a")
	if err != nil {
		t.Fatal(err)
	}
	pb, ipB, err := pod("outage-b")
	if err != nil {
		t.Fatal(err)
	}
	var vs epairv1.VirtualSwitch
	if err := cl.Get(ctx, client.ObjectKey{Name: "vale0"}, &vs); err != nil {
		t.Fatal(err)
	}
	gen0 := vs.Generation
	waitNodeState(t, cl, node, 10*time.Second, func(ns *epairv1.NodeState) bool {
		return len(ns.Status.Switches) == 1 && ns.Status.Switches[0].ObservedGeneration == gen0 &&
			nodeStatePort(ns, "default/outage-a") != nil && nodeStatePort(ns, "default/outage-b") != nil
	})
	// A queue's reported length has the workers' staging headroom on top of the configured one.
	defQueue := outagePort(t, n, "default/outage-b").Queue.MaxLen
	headroom := defQueue - dataplane.DefaultQueueLen
	if headroom < 0 || dataplane.DefaultQueueLen == switchQueue || dataplane.DefaultQueueLen == policyQueue {
		t.Fatalf("the default queue's length is %d (%d configured)", defQueue, dataplane.DefaultQueueLen)
	}

	// Traffic A → B: ICMP echoes every 10 ms, and a TCP stream of 200 KB/s checked byte by byte.
	prober := startGapProber(t, pa, []gapTarget{{name: "b", dst: net.ParseIP(ipB).To4()}})
	stream := startSoakStream(t, pa, pb, ipB)
	defer stream.stop()
	time.Sleep(time.Second)
	if s := prober.window("b", time.Now().Add(-500*time.Millisecond), time.Now(), time.Now()); s.replied == 0 {
		t.Fatalf("no echo reply from B before the outage: %+v", s)
	}
	pid := ag.pid()
	dialed := proxy.dialed.Load()

	proxy.Cut()
	cutAt := time.Now()
	t.Logf("API server cut off from the node for %v", outage)

	// A new pod, while the API server is gone.
	time.Sleep(2 * time.Second) // the agent's connections are gone; its retries are refused
	addStart := time.Now()
	pc, ipC, err := pod("outage-c")
	if err != nil {
		t.Fatalf("ADD of a new pod while the API server is gone: %v\nagent log:\n%s", err, tail(ag.logText(), 4000))
	}
	t.Logf("new pod's ADD while the API server is gone: %s in %v", ipC, time.Since(addStart).Round(time.Millisecond))
	if err := ping(pc, ipA); err != nil {
		t.Fatalf("the new pod → pod A during the outage: %v", err)
	}

	// Changes made meanwhile.
	qlen := int32(policyQueue)
	if err := cl.Create(ctx, &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "outage-limit"},
		Spec: epairv1.PortPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "outage-a"}}, QueueLength: &qlen}}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Get(ctx, client.ObjectKey{Name: "vale0"}, &vs); err != nil {
		t.Fatal(err)
	}
	vs.Spec.DefaultQueue.Length = switchQueue
	if err := cl.Update(ctx, &vs); err != nil {
		t.Fatal(err)
	}
	gen1 := vs.Generation
	if gen1 == gen0 {
		t.Fatalf("the VirtualSwitch's generation did not change (%d)", gen1)
	}

	time.Sleep(time.Until(cutAt.Add(outage)))
	// The agent did not see the changes, nor write its NodeState: the cut is real.
	if p := outagePort(t, n, "default/outage-a"); p.Policy != "" || p.Queue.MaxLen != defQueue {
		t.Fatalf("pod A's port got policy %q, queue %d while the API server was gone: the cut leaks", p.Policy, p.Queue.MaxLen)
	}
	if p := outagePort(t, n, "default/outage-b"); p.Queue.MaxLen != defQueue {
		t.Fatalf("pod B's port got queue %d while the API server was gone: the cut leaks", p.Queue.MaxLen)
	}
	var st epairv1.NodeState
	if err := cl.Get(ctx, client.ObjectKey{Name: node}, &st); err != nil {
		t.Fatal(err)
	}
	if up := st.Status.UpdateTime; up == nil || up.After(cutAt.Add(2*time.Second)) {
		t.Fatalf("NodeState written at %v during the outage (cut at %v): the cut leaks", up, cutAt)
	}
	restoreAt := time.Now()
	w := prober.window("b", cutAt, cutAt, restoreAt)
	lost := max(w.sent-w.replied, 0) // replies to echoes sent just before the cut count too
	t.Logf("pod A → pod B during the %v outage: %d echoes, %d replies (%d lost), longest gap %v; TCP stream %s so far",
		restoreAt.Sub(cutAt).Round(time.Millisecond), w.sent, w.replied, lost, w.gap.Round(time.Millisecond), mib(stream.received.Load()))
	if lost > w.sent/100 || w.gap > time.Second {
		t.Errorf("the running pods' traffic suffered during the outage: %d of %d echoes lost, gap %v (%v → %v)", lost, w.sent, w.gap, w.gapFrom, w.gapTo)
	}

	// The API server is back: the agent catches up.
	proxy.Restore()
	restoreAt = time.Now()
	var policyAt, switchAt, stateAt time.Duration
	for deadline := restoreAt.Add(catchUp); policyAt == 0 || switchAt == 0 || stateAt == 0; time.Sleep(50 * time.Millisecond) {
		since := time.Since(restoreAt)
		if a := outagePort(t, n, "default/outage-a"); policyAt == 0 && a.Policy == "default/outage-limit" && a.Queue.MaxLen == policyQueue+headroom {
			policyAt = since
		}
		b, c := outagePort(t, n, "default/outage-b"), outagePort(t, n, "default/outage-c")
		if switchAt == 0 && b.Queue.MaxLen == switchQueue+headroom && c.Queue.MaxLen == switchQueue+headroom {
			switchAt = since
		}
		var ns epairv1.NodeState
		if stateAt == 0 && cl.Get(ctx, client.ObjectKey{Name: node}, &ns) == nil && ns.Status.UpdateTime != nil &&
			!ns.Status.UpdateTime.Time.Before(restoreAt.Truncate(time.Second)) &&
			len(ns.Status.Switches) == 1 && ns.Status.Switches[0].ObservedGeneration == gen1 && ns.Status.Switches[0].Ports == 3 {
			if p := nodeStatePort(&ns, "default/outage-a"); p != nil && p.Policy == "default/outage-limit" && p.QueueLength == policyQueue+int32(headroom) &&
				nodeStatePort(&ns, "default/outage-c") != nil {
				stateAt = since
			}
		}
		if time.Now().After(deadline) {
			var ns epairv1.NodeState
			_ = cl.Get(ctx, client.ObjectKey{Name: node}, &ns)
			t.Fatalf("%v after the API server came back: policy applied after %v, switch change after %v, NodeState after %v (0: not yet); %d connections to the API server since before the cut\nport A %+v queue %+v\nport B %+v queue %+v\nNodeState %+v\nagent log:\n%s",
				catchUp, policyAt, switchAt, stateAt, proxy.dialed.Load()-dialed, outagePort(t, n, "default/outage-a"), *outagePort(t, n, "default/outage-a").Queue, b, *b.Queue, ns.Status, tail(ag.logText(), 6000))
		}
	}
	t.Logf("after the API server came back: PortPolicy on pod A's port in %v, VirtualSwitch generation %d (default queue %d → %d) on the ports in %v, NodeState caught up in %v",
		policyAt.Round(time.Millisecond), gen1, dataplane.DefaultQueueLen, switchQueue, switchAt.Round(time.Millisecond), stateAt.Round(time.Millisecond))

	// The same agent process throughout, no panic, and the pods still talk.
	if ag.cmd == nil || ag.pid() != pid {
		t.Fatalf("the agent restarted during the outage")
	}
	select {
	case err := <-ag.done:
		t.Fatalf("the agent exited: %v\n%s", err, tail(ag.logText(), 4000))
	default:
	}
	if log := ag.logText(); strings.Contains(log, "panic") {
		t.Fatalf("the agent's log has a panic:\n%s", log)
	}
	tr := stream.stop()
	if tr.err != nil {
		t.Fatalf("TCP stream A → B across the outage: %v", tr.err)
	}
	var worst time.Duration
	for _, g := range tr.gaps {
		worst = max(worst, g[1].Sub(g[0]))
	}
	t.Logf("TCP stream A → B: %s intact, longest stall %v", mib(tr.bytes), worst.Round(time.Millisecond))
	if worst > time.Second {
		t.Errorf("the TCP stream stalled for %v", worst)
	}
	for _, x := range []struct {
		from *netnsutil.NS
		to   string
	}{{pa, ipB}, {pb, ipC}, {pc, ipA}} {
		if err := ping(x.from, x.to); err != nil {
			t.Fatalf("after the outage: %v", err)
		}
	}

	// Nothing left once the pods are deleted.
	for _, r := range pods {
		if err := e.del(l, r); err != nil {
			t.Fatalf("DEL %s: %v", r.ContainerID, err)
		}
	}
	if al, err := ag.client.List(ctx); err != nil || len(al.Items) != 0 {
		t.Fatalf("the agent's attachments after the DELs: %+v (%v)", al, err)
	}
	if left := e.hostEpairs(); len(left) != 0 {
		t.Fatalf("links left on the node after the DELs: %v", left)
	}
}

// outagePort is pod's port on node n (the agent API's view).
func outagePort(t *testing.T, n *clusterNode, pod string) agentapi.PortInfo {
	t.Helper()
	p, ok := findPort(t, n, func(p agentapi.PortInfo) bool { return p.Pod == pod })
	if !ok {
		t.Fatalf("no port of %s on %s", pod, n.name)
	}
	if p.Queue == nil {
		t.Fatalf("port %s of %s has no queue: %+v", p.Name, pod, p)
	}
	return p
}

// nodeStatePort is pod's port in ns, or nil.
func nodeStatePort(ns *epairv1.NodeState, pod string) *epairv1.PortState {
	for i := range ns.Status.Ports {
		if ns.Status.Ports[i].Pod == pod {
			return &ns.Status.Ports[i]
		}
	}
	return nil
}
