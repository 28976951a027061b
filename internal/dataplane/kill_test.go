package dataplane

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/linkport"
)

// childEnv makes the test binary act as an agent process: it reads a
// childSpec from the variable, starts a Dataplane, attaches the links,
// prints "ready" and waits to be killed.
const childEnv = "EPAIR_DATAPLANE_CHILD"

type childSpec struct {
	Config Config
	Ports  []AttachRequest
}

func childMain() int {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "child: parse spec:", err)
		return 2
	}
	dp, err := New(spec.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	for _, r := range spec.Ports {
		if _, err := dp.AttachPort(context.Background(), r); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 1
		}
	}
	fmt.Println("ready")
	select {} // until SIGKILL
}

// TestKill9Adopt runs the dataplane in a child process, kills it with
// SIGKILL while pods are attached, and checks that a new dataplane adopts
// the running pods' links (untouched) and traffic flows again.
func TestKill9Adopt(t *testing.T) {
	requireTool(t, "nft")
	e := newEnv(t, -1, linkport.XDP, func(c *Config) { c.Masquerade = true }) // the child is the agent
	a, b := e.makePod(), e.makePod()
	e.staticNeighbors()

	spec, _ := json.Marshal(childSpec{Config: e.cfg, Ports: []AttachRequest{
		a.req(), b.req(),
	}})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("child agent did not start")
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("child agent start timed out")
	}
	e.ping(a, b.ip)
	if len(e.xdpProgs()) != 2 || !e.hasLink(testTap) {
		t.Fatalf("child agent: XDP %v, TAP %v", e.xdpProgs(), e.hasLink(testTap))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// What the kernel keeps after kill -9: the pods' links and the nft
	// table; the TAP and the XDP programs (bpf_links) die with the process.
	waitFor(t, "the killed agent's TAP and XDP programs to go", 5*time.Second, func() bool {
		return len(e.xdpProgs()) == 0 && !e.hasLink(testTap)
	})
	for _, p := range []*pod{a, b} {
		l, err := e.host.NL.LinkByName(p.pair.HostName)
		if err != nil || l.Attrs().Index != p.pair.HostIndex {
			t.Fatalf("pod link %s after kill -9: %v", p.pair.HostName, err)
		}
	}
	if !strings.Contains(e.nftTables(), "epair") {
		t.Error("nft table gone after kill -9 (it should stay until uninstall)")
	}

	// The restarted agent.
	e.start()
	for _, p := range []*pod{a, b} {
		if _, err := e.dp.Adopt(context.Background(), p.req()); err != nil {
			t.Fatalf("adopt %s: %v", p.pair.HostName, err)
		}
	}
	e.ping(a, b.ip)
	e.ping(b, testGW)
	n := porttest.Frames(t) / 10
	if got := porttest.UDPStream(t, pairOf(a, b), n, 256); got != n {
		t.Fatalf("after kill -9 and adopt: %d of %d datagrams", got, n)
	}
}
