package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// TestVerbsEveryVersion runs ADD, CHECK, STATUS, GC and DEL for every cniVersion the plugin
// supports, with two pods that must reach each other and the gateway through the switch.
func TestVerbsEveryVersion(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			l := e.conflist(v)
			a, b := netnsutil.New(t), netnsutil.New(t)
			ra, rb := rt("ver-a-"+v, a), rt("ver-b-"+v, b)
			resA, resB := e.mustAdd(l, ra), e.mustAdd(l, rb)
			if resA.CNIVersion != v && !(v == "0.3.1" && resA.CNIVersion == "1.0.0") {
				// libcni converts to 1.0.0 for the caller; the plugin printed v.
			}
			if len(resA.IPs) != 1 || resA.IPs[0].Gateway.String() != "10.60.0.1" {
				t.Fatalf("ADD result: %+v", resA)
			}
			if podIP(resA) == podIP(resB) {
				t.Fatalf("two pods got %s", podIP(resA))
			}
			if err := ping(a, podIP(resB)); err != nil {
				t.Fatal(err)
			}
			if err := ping(b, "10.60.0.1"); err != nil {
				t.Fatal(err)
			}
			if v != "0.3.1" {
				if err := e.check(l, ra); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			if v == "1.1.0" {
				if err := e.inHost(func() error { return e.cni.GetStatusNetworkList(ctx, l) }); err != nil {
					t.Fatalf("STATUS: %v", err)
				}
				gc := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: ra.ContainerID, IfName: "eth0"}}}
				if err := e.inHost(func() error { return e.cni.GCNetworkList(ctx, l, gc) }); err != nil {
					t.Fatalf("GC: %v", err)
				}
				if _, err := e.agent.client.Check(ctx, &agentapi.CheckRequest{Key: agentapi.Key{ContainerID: rb.ContainerID, IfName: "eth0"}}); err == nil {
					t.Fatal("GC kept the attachment not in the valid set")
				}
				if err := ping(a, "10.60.0.1"); err != nil {
					t.Fatalf("GC broke the valid pod: %v", err)
				}
			}
			for _, r := range []*libcni.RuntimeConf{ra, rb} {
				if err := e.del(l, r); err != nil {
					t.Fatalf("DEL %s: %v", r.ContainerID, err)
				}
			}
			if left := e.hostEpairs(); len(left) != 0 {
				t.Fatalf("links left after DEL: %v", left)
			}
		})
	}
	if l, _ := e.agent.client.List(ctx); len(l.Items) != 0 {
		t.Fatalf("attachments left: %+v", l.Items)
	}
}

// TestDelIsIdempotent: DEL three times, DEL after the netns is gone, DEL with the agent
// stopped: all succeed, and nothing stays behind once the agent is back.
func TestDelIsIdempotent(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	l := e.conflist("1.1.0")

	p1 := netnsutil.New(t)
	r1 := rt("del-thrice", p1)
	e.mustAdd(l, r1)
	for i := range 3 {
		if err := e.del(l, r1); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}

	p2 := netnsutil.New(t)
	r2 := rt("del-nonetns", p2)
	e.mustAdd(l, r2)
	if err := p2.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := e.del(l, r2); err != nil {
		t.Fatalf("DEL after the netns is deleted: %v", err)
	}

	p3 := netnsutil.New(t)
	r3 := rt("del-noagent", p3)
	e.mustAdd(l, r3)
	e.agent.signal(15)
	start := time.Now()
	if err := e.del(l, r3); err != nil {
		t.Fatalf("DEL with the agent stopped: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("DEL with the agent stopped took %v", d)
	}
	if left := e.hostEpairs(); len(left) != 0 {
		t.Fatalf("links left: %v", left)
	}
	// The agent comes back and finds r3's link gone: it releases the attachment.
	e.agent.start()
	if l, _ := e.agent.client.List(ctx); len(l.Items) != 0 {
		t.Fatalf("attachments left after restart: %+v", l.Items)
	}
}

// TestGCMix: GC with valid attachments, stale ones whose pods still exist, and stale ones
// whose netns is gone.
func TestGCMix(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	l := e.conflist("1.1.0")
	var valid []types.GCAttachment
	var validNS []*netnsutil.NS
	for i := range 3 {
		ns := netnsutil.New(t)
		r := rt(fmt.Sprintf("gc-valid-%d", i), ns)
		e.mustAdd(l, r)
		valid = append(valid, types.GCAttachment{ContainerID: r.ContainerID, IfName: "eth0"})
		validNS = append(validNS, ns)
	}
	for i := range 2 {
		ns := netnsutil.New(t)
		e.mustAdd(l, rt(fmt.Sprintf("gc-stale-%d", i), ns))
	}
	gone := netnsutil.New(t)
	e.mustAdd(l, rt("gc-stale-gone", gone))
	gone.Remove()
	if err := e.inHost(func() error { return e.cni.GCNetworkList(ctx, l, &libcni.GCArgs{ValidAttachments: valid}) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	list, err := e.agent.client.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 3 {
		t.Fatalf("after GC: %d attachments, want the 3 valid ones: %+v", len(list.Items), list.Items)
	}
	for _, it := range list.Items {
		if !strings.HasPrefix(it.ContainerID, "gc-valid-") {
			t.Errorf("GC kept %s", it.ContainerID)
		}
	}
	if n := len(e.hostEpairs()); n != 3 {
		t.Errorf("after GC: %d host links, want 3", n)
	}
	if err := ping(validNS[0], list.Items[1].IPs[0].Address.Addr().String()); err != nil {
		t.Errorf("valid pods after GC: %v", err)
	}
}

// TestPortmapHostPort chains the reference portmap plugin: a hostPort on the node reaches
// a TCP server in the pod.
func TestPortmapHostPort(t *testing.T) {
	netnsutil.RequireTool(t, "nft", "nftables")
	e := newEnv(t, envOpts{})
	l := e.conflist("1.1.0", `{"type":"portmap","capabilities":{"portMappings":true},"backend":"nftables"}`)
	pod := netnsutil.New(t)
	r := rt("portmap", pod)
	r.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}}}
	e.mustAdd(l, r)
	defer func() {
		if err := e.del(l, r); err != nil {
			t.Errorf("DEL: %v", err)
		}
		if out, _ := e.host.Exec("nft", "list", "ruleset"); strings.Contains(out, "18080") {
			t.Errorf("portmap rules left after DEL:\n%s", out)
		}
	}()
	var ln net.Listener
	if err := pod.Do(func() (err error) { ln, err = net.Listen("tcp", ":8080"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from the pod\n"))
			c.Close()
		}
	}()
	// From the node: its own address on the switch's host port (the gateway) and the
	// hostPort, DNATed by portmap in the output path.
	var got string
	err := e.inHost(func() error {
		c, err := net.DialTimeout("tcp", "10.60.0.1:18080", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 64)
		n, err := c.Read(b)
		got = string(b[:n])
		return err
	})
	if err != nil || got != "hello from the pod\n" {
		out, _ := e.host.Exec("nft", "list", "ruleset")
		t.Fatalf("hostPort 18080: %q %v\n%s", got, err, out)
	}
}

// TestConcurrentAdds: 100 ADDs at once get 100 distinct addresses; after DEL nothing is
// left: links, addresses, the agent's sockets and XDP programs.
func TestConcurrentAdds(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	l := e.conflist("1.1.0")
	// The agent fills its pool of prepared sockets in the background after it starts:
	// the baseline is what it holds once that has settled.
	baseSock, baseBPF := e.agent.settledFDs(t)
	const n = 100
	nss := make([]*netnsutil.NS, n)
	for i := range nss {
		nss[i] = netnsutil.New(t)
	}
	res := make([]*current.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = e.add(l, rt(fmt.Sprintf("burst-%03d", i), nss[i]))
		}()
	}
	wg.Wait()
	t.Logf("%d concurrent ADDs in %v", n, time.Since(start))
	seen := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("ADD #%d: %v", i, errs[i])
		}
		ip := podIP(res[i])
		if j, dup := seen[ip]; dup {
			t.Fatalf("pods %d and %d both got %s", j, i, ip)
		}
		seen[ip] = i
	}
	if got := len(e.hostEpairs()); got != n {
		t.Fatalf("%d host links, want %d", got, n)
	}
	sl, err := e.agent.client.Switches(ctx)
	if err != nil || len(sl.Items[0].Ports) != n+1 {
		t.Fatalf("switch ports: %v %v", err, sl)
	}
	// A sample of pairs reach each other.
	for _, p := range [][2]int{{0, 99}, {17, 42}, {63, 5}} {
		if err := ping(nss[p[0]], podIP(res[p[1]])); err != nil {
			t.Error(err)
		}
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.del(l, rt(fmt.Sprintf("burst-%03d", i), nss[i]))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("DEL #%d: %v", i, err)
		}
	}
	if left := e.hostEpairs(); len(left) != 0 {
		t.Fatalf("links left: %v", left)
	}
	if list, _ := e.agent.client.List(ctx); len(list.Items) != 0 {
		t.Fatalf("attachments (addresses) left: %d", len(list.Items))
	}
	sl, _ = e.agent.client.Switches(ctx)
	if len(sl.Items[0].Ports) != 1 {
		t.Fatalf("ports left: %+v", sl.Items[0].Ports)
	}
	// A DEL returns once the port is out of the switch; its socket closes in the
	// background within tens of milliseconds, and the pool refills.
	var sock, bpf int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if sock, bpf = e.agent.agentFDs(); sock <= baseSock && bpf <= baseBPF {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent descriptors 5 s after the DELs: %d sockets / %d bpf, %d / %d before the burst", sock, bpf, baseSock, baseBPF)
		}
	}
	for _, ns := range nss {
		if names := ns.LinkNames(t); len(names) != 1 {
			t.Fatalf("pod %s has links %v after DEL", ns.Name, names)
		}
	}
	if out, err := e.host.Exec("ip", "-d", "link", "show"); err != nil || strings.Contains(out, "xdp") {
		t.Fatalf("XDP programs left in the host namespace: %v\n%s", err, out)
	}
}

// TestKill9DuringAddBurst kills the agent with SIGKILL in the middle of a burst of ADDs,
// restarts it, and checks that no address was lost or given twice, that the pods made
// before keep working without being touched, and that the runtime's cleanup (DEL of the
// failed ADDs) and retries converge.
func TestKill9DuringAddBurst(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	l := e.conflist("1.1.0")
	// Two pods before the crash: traffic must resume after it.
	pa, pb := netnsutil.New(t), netnsutil.New(t)
	ra := e.mustAdd(l, rt("k9-a", pa))
	rb := e.mustAdd(l, rt("k9-b", pb))
	if err := ping(pa, podIP(rb)); err != nil {
		t.Fatal(err)
	}
	linkA, err := pa.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}

	const n = 40
	nss := make([]*netnsutil.NS, n)
	for i := range nss {
		nss[i] = netnsutil.New(t)
	}
	res := make([]*current.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	// Kill once a third of the burst has succeeded: the rest are in flight or queued.
	succeeded := make(chan struct{}, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = e.add(l, rt(fmt.Sprintf("k9-%02d", i), nss[i]))
			if errs[i] == nil {
				succeeded <- struct{}{}
			}
		}()
	}
	for range n / 3 {
		select {
		case <-succeeded:
		case <-time.After(30 * time.Second):
			t.Fatal("burst stalled before the kill")
		}
	}
	e.agent.kill9()
	wg.Wait()
	okN := 0
	for _, err := range errs {
		if err == nil {
			okN++
		}
	}
	t.Logf("before/around the kill: %d of %d ADDs succeeded", okN, n)

	e.agent.start()
	// Traffic between the pods made before the crash resumes; their links were not touched.
	if err := ping(pa, podIP(rb)); err != nil {
		t.Fatalf("after restart: %v\n%s", err, e.agent.logText())
	}
	linkA2, err := pa.NL.LinkByName("eth0")
	if err != nil || linkA2.Attrs().Index != linkA.Attrs().Index {
		t.Fatalf("pod link changed across the restart: %v", err)
	}
	// The runtime cleans up the failed ADDs (DEL) and retries them.
	for i := range n {
		if errs[i] != nil {
			if err := e.del(l, rt(fmt.Sprintf("k9-%02d", i), nss[i])); err != nil {
				t.Fatalf("DEL of failed ADD %d: %v", i, err)
			}
			if res[i], err = e.add(l, rt(fmt.Sprintf("k9-%02d", i), nss[i])); err != nil {
				t.Fatalf("retried ADD %d: %v", i, err)
			}
		}
	}
	list, err := e.agent.client.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != n+2 {
		t.Fatalf("%d attachments, want %d", len(list.Items), n+2)
	}
	byKey := map[string]string{}
	seen := map[string]string{}
	for _, it := range list.Items {
		ip := it.IPs[0].Address.Addr().String()
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s owned by %s and %s", ip, other, it.ContainerID)
		}
		seen[ip] = it.ContainerID
		byKey[it.ContainerID] = ip
	}
	// Nothing lost: every pod's address is the one its result reported.
	for i := range n {
		if got := byKey[fmt.Sprintf("k9-%02d", i)]; got != podIP(res[i]) {
			t.Errorf("pod %d: agent has %q, the pod was given %s", i, got, podIP(res[i]))
		}
	}
	if byKey["k9-a"] != podIP(ra) {
		t.Errorf("pre-crash pod lost its address: %q vs %s", byKey["k9-a"], podIP(ra))
	}
	if got := len(e.hostEpairs()); got != n+2 {
		t.Errorf("%d host links, want %d", got, n+2)
	}
	if err := ping(nss[0], podIP(res[n-1])); err != nil {
		t.Error(err)
	}
}

// TestInvalidConfigsAndRequests: bad configs and requests fail with the CNI code the spec
// assigns and a message naming the problem.
func TestInvalidConfigsAndRequests(t *testing.T) {
	e := newEnv(t, envOpts{})
	pod := netnsutil.New(t)
	sock := e.agent.socket
	for _, tc := range []struct {
		name, conf string
		mod        func(*libcni.RuntimeConf)
		code       uint
		mention    string
	}{
		{"unknown cniVersion", fmt.Sprintf(`{"cniVersion":"9.9.9","name":"podnet","plugins":[{"type":"epair","agentSocket":%q}]}`, sock), nil, 1, "9.9.9"},
		{"relative agentSocket", `{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":"run/agent.sock"}]}`, nil, 7, "agentSocket"},
		{"bad mtu", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":%q,"mtu":70000}]}`, sock), nil, 7, "mtu"},
		{"unknown switch", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":%q,"switch":"vale9"}]}`, sock), nil, 7, "vale9"},
		{"bad timeout", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":%q,"timeouts":{"add":"soon"}}]}`, sock), nil, 6, "soon"},
		{"ip out of range", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":%q,"capabilities":{"ips":true}}]}`, sock),
			func(r *libcni.RuntimeConf) { r.CapabilityArgs = map[string]any{"ips": []string{"192.168.7.7/24"}} }, 7, "192.168.7.7"},
		{"ifname too long", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":%q}]}`, sock),
			func(r *libcni.RuntimeConf) { r.IfName = "averyveryverylongifname" }, 4, "interface name is too long"},
		{"unknown CNI_ARGS", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":%q}]}`, sock),
			func(r *libcni.RuntimeConf) { r.Args = [][2]string{{"BOGUS", "1"}} }, 4, "BOGUS"},
		{"missing netns", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":%q}]}`, sock),
			func(r *libcni.RuntimeConf) { r.NetNS = "/var/run/netns/does-not-exist" }, 8, "does-not-exist"},
		{"agent not running", `{"cniVersion":"1.1.0","name":"podnet","plugins":[{"type":"epair","agentSocket":"/run/epair-e2e-nothing/agent.sock"}]}`, nil, 11, "agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := libcni.ConfListFromBytes([]byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			r := rt("invalid", pod)
			if tc.mod != nil {
				tc.mod(r)
			}
			_, err = e.add(l, r)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			code, msg := cniCode(err)
			if code != tc.code || !strings.Contains(msg, tc.mention) {
				t.Fatalf("ADD: code %d %q, want code %d naming %q", code, msg, tc.code, tc.mention)
			}
			t.Logf("code %d: %s", code, strings.TrimSpace(msg))
		})
	}
	// A request straight to the agent that names one of the node's own links: refused,
	// the link never becomes a switch port.
	ctx := context.Background()
	k := agentapi.Key{ContainerID: "rogue", IfName: "eth0"}
	if _, err := e.agent.client.Allocate(ctx, &agentapi.AllocateRequest{Key: k, Network: "podnet"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.agent.client.Attach(ctx, &agentapi.AttachRequest{Key: k, HostIfName: "lo", HostIfIndex: 1, PodMAC: "02:00:00:00:00:99"})
	var ae *agentapi.Error
	if !errors.As(err, &ae) || ae.Code != agentapi.CodeInvalidRequest || ae.Field != "hostIfName" || !strings.Contains(ae.Message, "lo") {
		t.Fatalf("attach of the node's lo: %v, want InvalidRequest naming hostIfName", err)
	}
	if _, err := e.agent.client.Release(ctx, &agentapi.ReleaseRequest{Key: k}); err != nil {
		t.Fatal(err)
	}
	if left := e.hostEpairs(); len(left) != 0 {
		t.Fatalf("failed ADDs left links: %v", left)
	}
	if l, _ := e.agent.client.List(context.Background()); len(l.Items) != 0 {
		t.Fatalf("failed ADDs left attachments: %+v", l.Items)
	}
}

// TestUninstall: a graceful stop keeps the pods (and the next agent re-attaches them); an
// uninstall leaves the node clean.
func TestUninstall(t *testing.T) {
	e := newEnv(t, envOpts{masquerade: true})
	l := e.conflist("1.1.0")
	a, b := netnsutil.New(t), netnsutil.New(t)
	e.mustAdd(l, rt("un-a", a))
	rb := e.mustAdd(l, rt("un-b", b))
	e.agent.signal(15)
	if n := len(e.hostEpairs()); n != 2 {
		t.Fatalf("graceful stop removed pod links: %d left", n)
	}
	e.agent.start()
	if err := ping(a, podIP(rb)); err != nil {
		t.Fatalf("after graceful restart: %v", err)
	}
	e.agent.signal(15)
	e.agent.start("-uninstall")
	e.agent.signal(15)
	if left := e.host.LinkNames(t); len(left) != 1 {
		t.Fatalf("links left after uninstall: %v", left)
	}
	if out, _ := e.host.Exec("nft", "list", "ruleset"); strings.Contains(out, "epair") {
		t.Fatalf("nft rules left after uninstall:\n%s", out)
	}
	if names := a.LinkNames(t); len(names) != 1 {
		t.Fatalf("pod links left after uninstall: %v", names)
	}
	if ents, _ := os.ReadDir(e.agent.dir + "/state"); len(ents) != 0 {
		t.Fatalf("state left after uninstall: %v", ents)
	}
}
