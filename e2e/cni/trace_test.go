package cni

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// TestValectlTrace traces frames with valectl from a pod named as operators name it, through
// the real agent, then sends them for real: a ping to another pod (named as a pod too) is
// delivered to that pod's port alone, and 20 real pings reach it and not the third pod; a
// spoofed source is refused as spoofed-ip, and the real spoofed ping moves that counter;
// a broadcast floods to both other pods and the host port; the table output ends with the
// result; an unknown pod is a clear error.
func TestValectlTrace(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.73.0.0/24"})
	l := e.conflist("1.0.0")
	pa, pb, pc := netnsutil.New(t), netnsutil.New(t), netnsutil.New(t)
	e.mustAdd(l, rt("a", pa))
	ipB := podIP(e.mustAdd(l, rt("b", pb)))
	e.mustAdd(l, rt("c", pc))
	for _, ns := range []*netnsutil.NS{pa, pc} { // neighbours resolved
		if err := ping(ns, ipB); err != nil {
			t.Fatal(err)
		}
	}
	valectl := filepath.Join(e.bin, "valectl")
	trace := func(args ...string) agentapi.TraceResult {
		t.Helper()
		out, err := exec.Command(valectl, append([]string{"-socket", e.agent.socket, "-o", "json", "trace", "default/a"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("valectl trace %v: %v\n%s", args, err, out)
		}
		var r agentapi.TraceResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("valectl trace %v: %v\n%s", args, err, out)
		}
		return r
	}
	cl := agentapi.NewClient(e.agent.socket, 0)
	defer cl.Close()
	ports := func() map[string]agentapi.PortInfo {
		t.Helper()
		sl, err := cl.Switches(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]agentapi.PortInfo{}
		for _, s := range sl.Items {
			for _, p := range s.Ports {
				if p.Pod != "" {
					m[p.Pod] = p
				} else {
					m[p.Kind] = p
				}
			}
		}
		return m
	}
	p0 := ports()
	portB, portC, host := p0["default/b"].Name, p0["default/c"].Name, p0["host"].Name

	r := trace("-to", "default/b")
	if !slices.Equal(r.DeliveredTo, []string{portB}) {
		t.Fatalf("trace to b: delivered to %v (%s), want %s; %+v", r.DeliveredTo, r.Reason, portB, r.Steps)
	}
	// The agent runs with its default fast path (on where the kernel can, as here): the
	// trace says the kernel moves this frame, and the frames are counted by the fast path.
	if !slices.ContainsFunc(r.Steps, func(s agentapi.TraceStep) bool {
		return s.Stage == "fastpath" && s.Verdict == "delivered" && s.Port == portB
	}) {
		t.Fatalf("trace to b: no fast path step to %s: %+v", portB, r.Steps)
	}
	delivered := func(p agentapi.PortInfo) uint64 { // through the switch or the fast path
		n := p.Stats.OutFrames
		if p.FastPath != nil {
			n += p.FastPath.OutFrames
		}
		return n
	}
	if o, err := pa.Exec("ping", "-c", "20", "-i", "0.01", "-W", "2", ipB); err != nil {
		t.Fatalf("ping: %v\n%s", err, o)
	}
	var p1 map[string]agentapi.PortInfo
	var db, dc uint64
	for try := 0; try < 20; try++ { // counters are added once a batch is handed on
		p1 = ports()
		db, dc = delivered(p1["default/b"])-delivered(p0["default/b"]), delivered(p1["default/c"])-delivered(p0["default/c"])
		if db >= 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if db < 20 || dc >= 10 {
		t.Fatalf("after 20 pings traced to b: b got %d frames, c %d", db, dc)
	}

	r = trace("-to", ipB, "-src-ip", "10.73.0.250")
	if r.Reason != "spoofed-ip" || len(r.DeliveredTo) != 0 {
		t.Fatalf("spoofed trace: %+v", r)
	}
	if out, err := pa.Exec("ip", "addr", "add", "10.73.0.250/24", "dev", "eth0"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pa.Exec("ping", "-c", "1", "-W", "1", "-I", "10.73.0.250", ipB)
	p2 := ports()
	if d := p2["default/a"].Stats.Drops["spoofed-ip"] - p1["default/a"].Stats.Drops["spoofed-ip"]; d != 1 {
		t.Fatalf("spoofed-ip drops after the traced frame: %d, want 1 (%v)", d, p2["default/a"].Stats.Drops)
	}

	r = trace("-to", "ff:ff:ff:ff:ff:ff")
	want := []string{portB, portC, host}
	slices.Sort(want)
	if got := slices.Sorted(slices.Values(r.DeliveredTo)); !slices.Equal(got, want) {
		t.Fatalf("broadcast trace: delivered to %v, want %v", got, want)
	}

	out, err := exec.Command(valectl, "-socket", e.agent.socket, "trace", "default/a", "-to", ipB, "-p", "tcp", "-dport", "80").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "result: delivered to "+portB) || !strings.Contains(string(out), "TCP SYN 40000 > 80") {
		t.Fatalf("valectl trace (table): %v\n%s", err, out)
	}
	t.Logf("valectl trace default/a -to %s -p tcp -dport 80:\n%s", ipB, out)
	out, err = exec.Command(valectl, "-socket", e.agent.socket, "trace", "default/zz", "-to", ipB).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no port of pod default/zz") {
		t.Fatalf("trace from an unknown pod: %v\n%s", err, out)
	}
}
