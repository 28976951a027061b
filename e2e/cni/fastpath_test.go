package cni

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestFastPathAgent: an agent with fastPath on, pods made through the plugin. TCP between
// two pods (their offloads on) is moved by the kernel fast path, intact, and valectl ports
// shows it (FAST-IN, FAST-OUT) while the switch's own counters stay small; the node still
// reaches the pods through the switch. After a SIGKILL and a restart the adopted ports are
// on the fast path again.
func TestFastPathAgent(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.75.0.0/24", fastPath: true})
	l := e.conflist("1.1.0")
	a, b := netnsutil.New(t), netnsutil.New(t)
	e.mustAdd(l, rt("fast-a", a))
	ipB := podIP(e.mustAdd(l, rt("fast-b", b)))
	valectl := filepath.Join(e.bin, "valectl")
	fast := func(col string) map[string]string {
		t.Helper()
		table, err := exec.Command(valectl, "-socket", e.agent.socket, "ports", "vale0").CombinedOutput()
		if err != nil {
			t.Fatalf("valectl ports: %v\n%s", err, table)
		}
		return column(t, string(table), col)
	}
	atLeast := func(what string, got map[string]string, pod string, n uint64) {
		t.Helper()
		v, err := strconv.ParseUint(got[pod], 10, 64)
		if err != nil || v < n {
			t.Fatalf("%s of %s: %q, want at least %d (%v)", what, pod, got[pod], n, got)
		}
	}
	transfer := func(port int) {
		t.Helper()
		if err := ping(a, ipB); err != nil {
			t.Fatal(err)
		}
		netnsutil.TCPTransfer(t, a, b, ipB, port, 16<<20)
	}

	transfer(5401)
	atLeast("FAST-IN", fast("FAST-IN"), "default/fast-a", 100)
	atLeast("FAST-OUT", fast("FAST-OUT"), "default/fast-b", 100)
	// The switch saw the ARP exchange and little else from pod A.
	if in, _ := strconv.ParseUint(fast("IN-BYTES")["default/fast-a"], 10, 64); in > 1<<20 {
		t.Fatalf("the switch saw %d bytes from pod A", in)
	}
	// The metrics have it too.
	re := regexp.MustCompile(`epair_port_fastpath_frames_total\{direction="in",port="vale0:[^"]+",switch="vale0"\} ([0-9]+)`)
	best := 0
	for _, m := range re.FindAllStringSubmatch(e.agent.metrics(), -1) {
		best = max(best, atoiOr0(m[1]))
	}
	if best < 100 {
		t.Fatalf("epair_port_fastpath_frames_total{direction=\"in\"}: at most %d, want a port with at least 100\n%s", best, e.agent.metrics())
	}
	// The node (through the host port, the switch) reaches the pods.
	if err := ping(e.host, ipB); err != nil {
		t.Fatal(err)
	}

	e.agent.kill9()
	e.agent.start()
	transfer(5402)
	atLeast("FAST-IN after a restart", fast("FAST-IN"), "default/fast-a", 100)
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
