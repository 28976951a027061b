package cni

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestPeerScale1000 (a benchmark: EPAIR_BENCH=1, hack/bench.sh) starts a cluster-mode agent
// on a node whose cluster has 1000 other Node objects (no agents behind them): 500 on the
// node's underlay subnet (routed) and 500 behind a router (VXLAN). It measures how long the
// agent takes from its start to program them all (goal: 5 s), how long one node's address
// change takes to reach the dataplane (goal: 1 s), and what they cost in the agent's RSS
// (goal: 50 MiB over the same agent with no peers), and checks the route, neighbour and
// forwarding-entry counts against the nodes.
func TestPeerScale1000(t *testing.T) {
	requireBench(t)
	bin, cfg, cs, _ := clusterAPI(t, epairv1.VirtualSwitchSpec{})
	ctx := context.Background()
	host := netnsutil.New(t)
	mustExec(t, host, "ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1")
	mustExec(t, host, "ip", "addr", "add", "192.168.0.1/16", "dev", "under0")
	mustExec(t, host, "ip", "link", "set", "under0", "up")
	mustExec(t, host, "ip", "link", "set", "under1", "up")
	mustExec(t, host, "ip", "route", "add", "172.16.0.0/16", "via", "192.168.255.254")
	mustExec(t, host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	forwardAPI(t, host, cfg.Host)
	mkNode := func(name, cidr, addr string) {
		t.Helper()
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: []string{cidr}, PodCIDR: cidr}}
		n, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkNode("self", "10.127.0.0/24", "192.168.0.1")

	ag := clusterAgent(t, bin, host)
	args := []string{"-mode=cluster", "-node-name=self", "-cni-switch=vale0", "-health-addr=0", "-status-interval=10s"}
	settle := func() int {
		time.Sleep(3 * time.Second) // past start-up allocations and a resync
		rss, _ := procStat(ag.pid())
		return rss
	}
	ag.start(args...)
	rss0 := settle()
	ag.signal(syscall.SIGTERM)

	// 1000 Node objects: 500 on the underlay subnet, 500 behind the router.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			cidr := fmt.Sprintf("10.%d.%d.0/24", 128+i/256, i%256)
			addr := fmt.Sprintf("192.168.%d.%d", 1+i/250, 1+i%250)
			if i >= 500 {
				addr = fmt.Sprintf("172.16.%d.%d", 1+(i-500)/250, 1+(i-500)%250)
			}
			mkNode(fmt.Sprintf("peer-%04d", i), cidr, addr)
		}()
	}
	wg.Wait()

	start := time.Now()
	ag.start(args...)
	var took time.Duration
	for {
		pl, err := ag.client.Peers(ctx)
		n := 0
		if err == nil {
			for _, p := range pl.Items {
				n += p.Routes
			}
		}
		if n == 1000 {
			took = time.Since(start)
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("%d of 1000 peers programmed after a minute", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	count := func(args ...string) int {
		out := mustExec(t, host, args[0], args[1:]...)
		return len(strings.Split(strings.TrimSpace(out), "\n"))
	}
	routes := count("ip", "route", "show", "proto", "77")
	neigh := count("ip", "neigh", "show", "dev", "epair.vxlan", "nud", "permanent")
	fdb := count("bridge", "fdb", "show", "dev", "epair.vxlan", "permanent")
	if routes != 1000 || neigh != 500 || fdb < 500 {
		t.Fatalf("with 1000 peers: %d routes, %d tunnel neighbours, %d forwarding entries; want 1000, 500, 500", routes, neigh, fdb)
	}
	rss1 := settle()

	// One node's address changes: applied within a second?
	n, err := cs.CoreV1().Nodes().Get(ctx, "peer-0999", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses[0].Address = "172.16.9.9"
	changed := time.Now()
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(mustExec(t, host, "bridge", "fdb", "show", "dev", "epair.vxlan"), "dst 172.16.9.9") {
		if time.Since(changed) > 30*time.Second {
			t.Fatal("an address change of one of 1000 peers not applied within 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	change := time.Since(changed)
	_, cpu0 := procStat(ag.pid())
	time.Sleep(10 * time.Second)
	_, cpu1 := procStat(ag.pid())
	idle := float64(cpu1-cpu0) / 100 / 10 * 100 // clock ticks (100/s) over 10 s, in % of a core

	t.Logf("1000 peers (500 routed, 500 VXLAN): programmed %v after the agent's start (goal 5 s); one address change applied in %v (goal 1 s); "+
		"RSS %.1f MiB with them, %.1f MiB without (+%.1f MiB, goal 50); idle CPU with them %.1f%% of a core (a resync every %v)",
		took.Round(time.Millisecond), change.Round(time.Millisecond), float64(rss1)/1024, float64(rss0)/1024, float64(rss1-rss0)/1024, idle, "2s")
	if took > 5*time.Second || change > time.Second || rss1-rss0 > 50*1024 {
		t.Errorf("goal missed: programmed in %v, change in %v, RSS +%.1f MiB", took, change, float64(rss1-rss0)/1024)
	}
}
