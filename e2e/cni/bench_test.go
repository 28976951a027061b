package cni

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// requireBench skips unless EPAIR_BENCH=1: the latency comparison and the scale run take
// minutes and are run by hack/bench-cni.sh, not by the default suite.
func requireBench(t *testing.T) {
	if os.Getenv("EPAIR_BENCH") != "1" {
		t.Skip("skipping: set EPAIR_BENCH=1 (hack/bench-cni.sh) for the CNI latency and scale runs")
	}
}

type latencies struct{ add, del []time.Duration }

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64)
}

// measure runs n sequential pods and then a burst of `burst` concurrent ones through l.
func measure(t *testing.T, e *env, l *libcni.NetworkConfigList, prefix string, n, burst int) (seq, con latencies) {
	t.Helper()
	nss := make([]*netnsutil.NS, n+burst)
	for i := range nss {
		nss[i] = netnsutil.New(t)
	}
	// One warm-up pod (page cache, first exec of the binaries).
	warm := netnsutil.New(t)
	e.mustAdd(l, rt(prefix+"-warm", warm))
	if err := e.del(l, rt(prefix+"-warm", warm)); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		s := time.Now()
		e.mustAdd(l, rt(fmt.Sprintf("%s-s%02d", prefix, i), nss[i]))
		seq.add = append(seq.add, time.Since(s))
	}
	for i := range n {
		s := time.Now()
		if err := e.del(l, rt(fmt.Sprintf("%s-s%02d", prefix, i), nss[i])); err != nil {
			t.Fatal(err)
		}
		seq.del = append(seq.del, time.Since(s))
	}
	var mu sync.Mutex
	run := func(f func(i int) time.Duration, out *[]time.Duration) {
		var wg sync.WaitGroup
		for i := range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := f(i)
				mu.Lock()
				*out = append(*out, d)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	run(func(i int) time.Duration {
		s := time.Now()
		if _, err := e.add(l, rt(fmt.Sprintf("%s-c%02d", prefix, i), nss[n+i])); err != nil {
			t.Error(err)
		}
		return time.Since(s)
	}, &con.add)
	run(func(i int) time.Duration {
		s := time.Now()
		if err := e.del(l, rt(fmt.Sprintf("%s-c%02d", prefix, i), nss[n+i])); err != nil {
			t.Error(err)
		}
		return time.Since(s)
	}, &con.del)
	return seq, con
}

// TestLatencyVsBridge measures ADD and DEL latency (p50/p99) of epair and of the reference
// bridge plugin with host-local IPAM, each for 50 sequential pods and a burst of 20
// concurrent ones, through libcni in the same host namespace.
func TestLatencyVsBridge(t *testing.T) {
	requireBench(t)
	e := newEnv(t, envOpts{})
	epairSeq, epairCon := measure(t, e, e.conflist("1.1.0"), "ep", 50, 20)
	br, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"brnet","plugins":[
		{"type":"bridge","bridge":"cnibr0","isGateway":true,"ipMasq":false,
		 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.61.0.0/16"}]],"dataDir":%q}}]}`, filepath.Join(t.TempDir(), "hl"))))
	if err != nil {
		t.Fatal(err)
	}
	var hist []string
	for _, line := range strings.Split(e.agent.metrics(), "\n") {
		if strings.HasPrefix(line, "epair_agent_api_duration_seconds") {
			hist = append(hist, line)
		}
	}
	t.Logf("agent-side latency of the epair runs:\n%s", strings.Join(hist, "\n"))
	t.Logf("agent-side latency per call (from its debug log):\n%s", agentSpans(e.agent.logText(), "ep"))
	if out := os.Getenv("EPAIR_AGENT_LOG"); out != "" {
		os.WriteFile(out, []byte(e.agent.logText()), 0o644)
	}
	brSeq, brCon := measure(t, e, br, "br", 50, 20)
	var b strings.Builder
	fmt.Fprintf(&b, "| plugin | run | ADD p50 (ms) | ADD p99 (ms) | DEL p50 (ms) | DEL p99 (ms) |\n|---|---|---|---|---|---|\n")
	row := func(name, run string, l latencies) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", name, run, ms(pct(l.add, .5)), ms(pct(l.add, .99)), ms(pct(l.del, .5)), ms(pct(l.del, .99)))
	}
	row("epair", "50 sequential", epairSeq)
	row("bridge+host-local", "50 sequential", brSeq)
	row("epair", "20 concurrent", epairCon)
	row("bridge+host-local", "20 concurrent", brCon)
	t.Logf("\n%s", b.String())
	if out := os.Getenv("EPAIR_BENCH_OUT"); out != "" {
		os.WriteFile(out, []byte(b.String()), 0o644)
	}
	// The bound kept since issue 13: ADD p50 at most 0.8× the bridge plugin's (sequential).
	p50, ref := pct(epairSeq.add, .5), pct(brSeq.add, .5)
	verdict := "within"
	if p50 > ref*8/10 {
		verdict = "over"
	}
	t.Logf("ADD p50 %v against the bridge plugin's %v: %.2f×, %s the 0.8× bound", p50, ref, float64(p50)/float64(ref), verdict)
}

func procStat(pid int) (rssKiB int, cpuTicks int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			rssKiB, _ = strconv.Atoi(f[1])
		}
	}
	s, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return rssKiB, ut + st
}

// TestScale250 puts 250 pods on the node, checks that a sample of pairs reach each other,
// and records the agent's memory and idle CPU.
func TestScale250(t *testing.T) {
	requireBench(t)
	slots, _ := strconv.Atoi(os.Getenv("EPAIR_RING_SLOTS"))
	frames, _ := strconv.Atoi(os.Getenv("EPAIR_XDP_FRAMES"))
	e := newEnv(t, envOpts{ringSlots: slots, xdpFrames: frames, directOpen: os.Getenv("EPAIR_DIRECT_OPEN") == "1"})
	l := e.conflist("1.1.0")
	const n = 250
	nss := make([]*netnsutil.NS, n)
	noV6 := os.Getenv("EPAIR_SCALE_NOV6") == "1"
	for i := range nss {
		nss[i] = netnsutil.New(t)
		if noV6 {
			// Without IPv6 the pods are silent once pinged (no router solicitations with
			// backoff, no MLD reports), so the idle figure is the agent's own.
			for _, k := range []string{"all", "default"} {
				if out, err := nss[i].Exec("sysctl", "-qw", "net.ipv6.conf."+k+".disable_ipv6=1"); err != nil {
					t.Fatalf("disable IPv6: %v %s", err, out)
				}
			}
		}
	}
	ips := make([]string, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := e.add(l, rt(fmt.Sprintf("scale-%03d", i), nss[i]))
			if err != nil {
				t.Errorf("ADD %d: %v", i, err)
				return
			}
			ips[i] = podIP(r)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d ADDs (8 at a time) in %v", n, time.Since(start))
	rng := rand.New(rand.NewPCG(1, 2))
	fails := 0
	for range 30 {
		a, b := rng.IntN(n), rng.IntN(n)
		if a == b {
			continue
		}
		if err := ping(nss[a], ips[b]); err != nil {
			fails++
			t.Error(err)
		}
	}
	// The pods' own start-up traffic (IPv6 router solicitations, MLD reports) goes on for
	// about 10 s after their creation; idle means after it.
	time.Sleep(15 * time.Second)
	rss, c0 := procStat(e.agent.pid())
	const idle = 10 * time.Second
	time.Sleep(idle)
	_, c1 := procStat(e.agent.pid())
	cpu := float64(c1-c0) / 100 / idle.Seconds() * 100 // USER_HZ = 100
	res := fmt.Sprintf("| pods | pod IPv6 | pairs pinged (failed) | agent RSS (MiB) | agent idle CPU (%% of a core) |\n|---|---|---|---|---|\n| %d | %v | 30 (%d) | %.1f | %.2f |\n",
		n, !noV6, fails, float64(rss)/1024, cpu)
	t.Logf("\n%s", res)
	t.Logf("agent RSS by mapping kind: %s", rssBreakdown(e.agent.pid()))
	if out := os.Getenv("EPAIR_SCALE_CPU"); out != "" {
		os.WriteFile(out, []byte(e.agent.get("/debug/pprof/profile?seconds=5")), 0o644)
	}
	if out := os.Getenv("EPAIR_SCALE_HEAP"); out != "" {
		os.WriteFile(out, []byte(e.agent.get("/debug/pprof/heap")), 0o644)
	}
	if out := os.Getenv("EPAIR_SCALE_OUT"); out != "" {
		os.WriteFile(out, []byte(res), 0o644)
	}
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := e.del(l, rt(fmt.Sprintf("scale-%03d", i), nss[i])); err != nil {
				t.Errorf("DEL %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

// rssBreakdown sums the agent's resident memory by mapping name from /proc/<pid>/smaps
// (Go heap, AF_XDP UMEM/rings, AF_PACKET rings, ...), for the record of where memory goes.
func rssBreakdown(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	sums := map[string]int{}
	name := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			name = "[anon]"
			if len(f) >= 6 {
				name = f[5]
			}
			continue
		}
		if len(f) >= 2 && f[0] == "Rss:" {
			kb, _ := strconv.Atoi(f[1])
			sums[name] += kb
		}
	}
	var parts []string
	for k, v := range sums {
		if v >= 1024 {
			parts = append(parts, fmt.Sprintf("%s=%dMiB", k, v/1024))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// TestThroughput runs iperf3 (TCP, 5 s) between two pods on the switch, with the ring and
// UMEM sizes of EPAIR_RING_SLOTS / EPAIR_XDP_FRAMES (0: the agent's defaults): with the
// agent's default (the kernel fast path where the kernel can) and with every frame
// through the switch (fastPath: false).
func TestThroughput(t *testing.T) {
	requireBench(t)
	netnsutil.RequireTool(t, "iperf3", "iperf3")
	slots, _ := strconv.Atoi(os.Getenv("EPAIR_RING_SLOTS"))
	frames, _ := strconv.Atoi(os.Getenv("EPAIR_XDP_FRAMES"))
	for _, switchOnly := range []bool{false, true} {
		name := "default"
		if switchOnly {
			name = "switch-only"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOpts{ringSlots: slots, xdpFrames: frames, noFastPath: switchOnly})
			l := e.conflist("1.1.0")
			a, b := netnsutil.New(t), netnsutil.New(t)
			ra := e.mustAdd(l, rt("tp-a", a))
			e.mustAdd(l, rt("tp-b", b))
			if out, err := a.Exec("iperf3", "-s", "-1", "-D", "-B", podIP(ra)); err != nil {
				t.Fatalf("iperf3 server: %v %s", err, out)
			}
			time.Sleep(300 * time.Millisecond)
			out, err := b.Exec("iperf3", "-c", podIP(ra), "-t", "5", "-J")
			if err != nil {
				t.Fatalf("iperf3: %v\n%s", err, out)
			}
			var r struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("iperf3 output: %v", err)
			}
			t.Logf("TCP pod-to-pod, %s (ringSlots=%d xdpFrames=%d): %.0f Mbit/s", name, slots, frames, r.End.SumReceived.BitsPerSecond/1e6)
		})
	}
}

// agentSpans tabulates the agent's own duration of each API call (its debug log's
// "api call" lines) for the pods of measure's sequential ("<prefix>-sNN") and concurrent
// ("<prefix>-cNN") runs: where an ADD or DEL spends its time inside the agent.
func agentSpans(log, prefix string) string {
	spans := map[string][]time.Duration{} // "<run> <op>"
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="api call"`) {
			continue
		}
		var op, key string
		var d time.Duration
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			switch k {
			case "op":
				op = v
			case "key":
				key = v
			case "duration":
				d, _ = time.ParseDuration(v)
			}
		}
		var run string
		switch {
		case strings.HasPrefix(key, prefix+"-s"):
			run = "sequential"
		case strings.HasPrefix(key, prefix+"-c"):
			run = "concurrent"
		default:
			continue
		}
		spans[run+" "+op] = append(spans[run+" "+op], d)
	}
	var b strings.Builder
	b.WriteString("| run | call | n | p50 (ms) | p99 (ms) |\n|---|---|---|---|---|\n")
	for _, run := range []string{"sequential", "concurrent"} {
		for _, op := range []string{"allocate", "attach", "release"} {
			if d := spans[run+" "+op]; len(d) > 0 {
				fmt.Fprintf(&b, "| %s | %s | %d | %s | %s |\n", run, op, len(d), ms(pct(d, .5)), ms(pct(d, .99)))
			}
		}
	}
	return b.String()
}
