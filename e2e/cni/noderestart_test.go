package cni

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestNodeRestart (issue 16): the node reboots under the agent. Its pods, their links, the
// switch's TAP, the nftables rules and /run are gone; the agent's state directory is not.
// The agent started again with that state keeps no attachment of the old boot (nothing is
// left attached, listed or holding an address), and every address the old pods had, their
// application ports' included, can be handed out again.
func TestNodeRestart(t *testing.T) {
	e := newEnv(t, envOpts{masquerade: true})
	l := e.conflist("1.1.0")
	var old []string
	var pods []*netnsutil.NS
	for i, id := range []string{"boot-a", "boot-b", "boot-c"} {
		ns := netnsutil.New(t)
		r := rt(id, ns)
		if i == 0 {
			withPorts(r, "app")
		}
		res := e.mustAdd(l, r)
		old = append(old, res.IPs[0].Address.IP.String())
		pods = append(pods, ns)
	}
	if err := ping(pods[0], old[1]); err != nil {
		t.Fatalf("before the reboot: %v", err)
	}
	c := e.agent.client
	al, err := c.List(context.Background())
	if err != nil || len(al.Items) != 3 {
		t.Fatalf("attachments before the reboot: %+v %v", al, err)
	}
	appIP := ""
	p, err := openIn(pods[0], "vale0:app")
	if err != nil {
		t.Fatal(err)
	}
	appIP = p.Addrs()[0].Prefix.Addr().String()
	p.Close()

	// The reboot: the agent dies, and everything but its state directory goes.
	e.agent.kill9()
	for _, ns := range pods {
		if err := ns.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	links, err := e.host.NL.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, lk := range links {
		if lk.Attrs().Name != "lo" {
			if err := e.host.NL.LinkDel(lk); err != nil && !errors.Is(err, syscall.ENODEV) {
				t.Fatalf("delete %s: %v", lk.Attrs().Name, err)
			}
		}
	}
	mustExec(t, e.host, "nft", "flush", "ruleset")
	if err := os.RemoveAll(filepath.Join(e.agent.dir, "run")); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	e.agent.start()
	ready := time.Since(t0)
	al, err = c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(al.Items) != 0 {
		t.Fatalf("attachments of the old boot after the restart: %+v", al.Items)
	}
	if h := e.hostEpairs(); len(h) != 0 {
		t.Fatalf("host links after the restart: %v", h)
	}
	if !strings.Contains(e.agent.logText(), "recovered state") {
		t.Fatalf("the agent did not say what it recovered:\n%s", tail(e.agent.logText(), 20))
	}
	t.Logf("agent ready %v after the reboot; no attachment of the old boot left", ready.Round(time.Millisecond))

	// Every old address, the application port's too, is free: new pods get them on request.
	for i, ip := range append(slices.Clone(old), appIP) {
		ns := netnsutil.New(t)
		r := rt("new-"+ip, ns)
		r.CapabilityArgs = map[string]any{"ips": []string{ip}}
		res, err := e.add(l, r)
		if err != nil {
			t.Fatalf("new pod %d asking for %s (an address of the old boot): %v", i, ip, err)
		}
		if got := res.IPs[0].Address.IP.String(); got != ip {
			t.Fatalf("new pod %d got %s, asked for %s", i, got, ip)
		}
		if err := e.del(l, r); err != nil {
			t.Fatal(err)
		}
	}
}
