package cni

import (
	"context"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestSecondaryNetwork gives two pods a second interface on a second switch, as Multus does
// with a NetworkAttachmentDefinition: a second CNI invocation with another network (its
// own conflist naming the switch) and ifname net1. The pods reach each other over both
// switches, the second interface has the secondary switch's range and MTU and no default
// route, a GC of the first network keeps the second network's attachments, and a DEL of
// net1 leaves eth0 working.
func TestSecondaryNetwork(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.70.0.0/24", secondary: "10.71.0.0/24"})
	ctx := context.Background()
	first := e.conflist("1.0.0")
	src := `{"cniVersion":"1.0.0","name":"podnet-vale1","plugins":[{"type":"epair","agentSocket":"` + e.agent.socket + `","switch":"vale1"}]}`
	second, err := libcni.ConfListFromBytes([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	pa, pb := netnsutil.New(t), netnsutil.New(t)
	net1 := func(r *libcni.RuntimeConf) *libcni.RuntimeConf { c := *r; c.IfName = "net1"; return &c }
	ra, rb := rt("a", pa), rt("b", pb)
	e.mustAdd(first, ra)
	resB := e.mustAdd(first, rb)
	e.mustAdd(second, net1(ra))
	resB1 := e.mustAdd(second, net1(rb))
	b1 := podIP(resB1)
	if !strings.HasPrefix(b1, "10.71.0.") {
		t.Fatalf("net1 of b has %s, want an address of the secondary switch 10.71.0.0/24", b1)
	}
	if len(resB1.Routes) != 0 {
		t.Fatalf("the secondary network's result has routes %v, want none", resB1.Routes)
	}
	for _, dst := range []string{podIP(resB), b1} {
		if err := ping(pa, dst); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := pa.Exec("ip", "route", "show", "default"); err != nil || strings.Contains(out, "net1") || !strings.Contains(out, "eth0") {
		t.Fatalf("default route of a: %q, %v; want it on eth0 only", out, err)
	}
	if out, _ := pa.Exec("cat", "/sys/class/net/net1/mtu"); strings.TrimSpace(out) != "1400" {
		t.Fatalf("net1 MTU %q, want the secondary switch's 1400", out)
	}
	// A GC of the first network (the runtime's, which knows nothing of net1) keeps net1.
	gc := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "a", IfName: "eth0"}, {ContainerID: "b", IfName: "eth0"}}}
	if err := e.inHost(func() error { return e.cni.GCNetworkList(ctx, first, gc) }); err != nil {
		t.Fatal(err)
	}
	if err := ping(pa, b1); err != nil {
		t.Fatalf("after a GC of the first network: %v", err)
	}
	// Multus's DEL of the second network removes net1 and nothing else.
	if err := e.del(second, net1(ra)); err != nil {
		t.Fatal(err)
	}
	if _, err := pa.Exec("ip", "link", "show", "net1"); err == nil {
		t.Fatal("net1 of a survived its DEL")
	}
	if err := ping(pa, podIP(resB)); err != nil {
		t.Fatalf("eth0 after the DEL of net1: %v", err)
	}
	for _, r := range []*libcni.RuntimeConf{net1(rb), rb, ra} {
		l := first
		if r.IfName == "net1" {
			l = second
		}
		if err := e.del(l, r); err != nil {
			t.Fatal(err)
		}
	}
	if left := e.hostEpairs(); len(left) != 0 {
		t.Fatalf("links left: %v", left)
	}
}
