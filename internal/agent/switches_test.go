package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
)

// addOn does the plugin's ADD for interface ifname of container id on switch sw.
func (f *fixture) addOn(id, ifname, sw string) (*agentapi.Attachment, epair.Pair) {
	f.t.Helper()
	ctx := context.Background()
	k := agentapi.Key{ContainerID: id, IfName: ifname}
	at, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: k, Network: "net", Switch: sw})
	if err != nil {
		f.t.Fatalf("allocate %s: %v", k, err)
	}
	p := f.links.add(epair.OwnerKey("net", id, ifname))
	if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: k, HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: testPodMAC}); err != nil {
		f.t.Fatalf("attach %s: %v", k, err)
	}
	return at, p
}

func secondaryConfig(name, subnet string) SwitchConfig {
	return SwitchConfig{Name: name, Secondary: true, Ranges: []ipam.RangeConfig{{Subnet: subnet}}}
}

// TestAddRemoveSwitch: a switch added at run time serves allocations (a secondary one gives
// no default route), a bad or duplicate one is refused without leaving a store behind,
// and removing it releases its attachments and destroys their links, not the others'.
func TestAddRemoveSwitch(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.AddSwitch(ctx, secondaryConfig("vale0", "10.60.0.0/24"), nil); err == nil {
		t.Fatal("AddSwitch of a running switch's name succeeded")
	}
	if _, err := f.a.AddSwitch(ctx, SwitchConfig{Name: "vale2", MTU: 9999}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("AddSwitch with a bad MTU = %v, want ErrInvalidConfig", err)
	}
	f.dp.addErr = errors.New("no TAP")
	if _, err := f.a.AddSwitch(ctx, secondaryConfig("vale2", "10.60.0.0/24"), nil); err == nil {
		t.Fatal("AddSwitch with a failing dataplane succeeded")
	}
	f.dp.addErr = nil
	store := filepath.Join(f.cfg.StateDir, "ipam-vale2.db")
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("a failed AddSwitch left its IPAM store: %v", err)
	}
	if _, err := f.a.AddSwitch(ctx, secondaryConfig("vale2", "10.60.0.0/24"), nil); err != nil {
		t.Fatal(err)
	}
	if got := f.a.SwitchNames(); !slices.Equal(got, []string{"vale0", "vale1", "vale2"}) {
		t.Fatalf("switches %v", got)
	}
	_, keep := f.addOn("p", "eth0", "")
	at, gone := f.addOn("p", "net1", "vale2")
	if len(at.IPs) != 1 || at.IPs[0].Address.String() != "10.60.0.2/24" || len(at.Routes) != 0 {
		t.Fatalf("attachment on the secondary switch %+v, want 10.60.0.2/24 and no default route", at)
	}
	if pol, ok := f.dp.portPolicy("vale2", gone.HostName); !ok || pol.AllowSpoofing || pol.BroadcastRate != DefaultBroadcastRate {
		t.Fatalf("port on the added switch: %+v %v, want its default port security", pol, ok)
	}

	if err := f.a.RemoveSwitch(ctx, "vale0"); err == nil {
		t.Fatal("RemoveSwitch of the default switch succeeded")
	}
	if err := f.a.RemoveSwitch(ctx, "vale9"); !errors.Is(err, ErrNoSwitch) {
		t.Fatalf("RemoveSwitch(unknown) = %v, want ErrNoSwitch", err)
	}
	if err := f.a.RemoveSwitch(ctx, "vale2"); err != nil {
		t.Fatal(err)
	}
	if f.links.has(gone.HostName, gone.HostIndex) || !f.links.has(keep.HostName, keep.HostIndex) {
		t.Fatal("RemoveSwitch must destroy the links of its attachments and only those")
	}
	if _, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: agentapi.Key{ContainerID: "p", IfName: "net1"}}); !errors.Is(err, agentapi.ErrNotFound) {
		t.Fatalf("attachment on the removed switch: %v, want not found", err)
	}
	if _, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: agentapi.Key{ContainerID: "p", IfName: "eth0"}}); err != nil {
		t.Fatalf("attachment on the default switch after the removal: %v", err)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("IPAM store of the removed switch: %v", err)
	}
	if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("x"), Switch: "vale2"}); err == nil {
		t.Fatal("allocation on the removed switch succeeded")
	}
}

// TestSwitchAddedAfterRestart: attachments of a run-time switch survive an agent restart
// that does not configure it: Recover keeps them, AddSwitch re-attaches them; and when the
// switch does not come back, Reconcile releases them after RecoverGrace, with their links
// and the switch's store.
func TestSwitchAddedAfterRestart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.AddSwitch(ctx, secondaryConfig("vale2", "10.60.0.0/24"), nil); err != nil {
		t.Fatal(err)
	}
	_, first := f.addOn("p", "eth0", "")
	at, p := f.addOn("p", "net1", "vale2")

	restart := func() RecoverStats {
		t.Helper()
		f.stop()
		f.cfg.Switches = f.cfg.Switches[:2] // the configuration knows only the start-up switches
		f.start()
		st, err := f.a.Recover(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := restart(); st.Waiting != 1 || st.Reattached != 1 || st.Dropped != 0 || st.Stale != 0 {
		t.Fatalf("recover without the run-time switch: %+v, want 1 waiting and 1 re-attached", st)
	}
	st, err := f.a.AddSwitch(ctx, secondaryConfig("vale2", "10.60.0.0/24"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reattached != 1 {
		t.Fatalf("AddSwitch after the restart: %+v, want the attachment re-attached", st)
	}
	if _, ok := f.dp.Port("vale2", p.HostName); !ok {
		t.Fatal("the secondary port is not attached after AddSwitch")
	}
	got, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: agentapi.Key{ContainerID: "p", IfName: "net1"}})
	if err != nil || got.IPs[0] != at.IPs[0] {
		t.Fatalf("attachment after the restart: %+v, %v; want the same address %v", got, err, at.IPs)
	}

	// The switch does not come back: nothing is released within RecoverGrace, all of it after.
	if st := restart(); st.Waiting != 1 {
		t.Fatalf("second restart: %+v", st)
	}
	if keys, err := f.a.Reconcile(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("reconcile within RecoverGrace released %v, %v", keys, err)
	}
	f.cfg.RecoverGrace = 0
	keys, err := f.a.Reconcile(ctx)
	if err != nil || !slices.Equal(keys, []agentapi.Key{{ContainerID: "p", IfName: "net1"}}) {
		t.Fatalf("reconcile after RecoverGrace released %v, %v; want p/net1", keys, err)
	}
	if f.links.has(p.HostName, p.HostIndex) || !f.links.has(first.HostName, first.HostIndex) {
		t.Fatal("the removed switch's link must be destroyed, the default switch's kept")
	}
	if _, err := os.Stat(filepath.Join(f.cfg.StateDir, "ipam-vale2.db")); !os.IsNotExist(err) {
		t.Fatalf("IPAM store of the switch that did not come back: %v", err)
	}
}

// TestSwitchDefaultLive: a new default policy reaches the switch's ports and the ports
// attached afterwards; an invalid one or an unknown switch is refused.
func TestSwitchDefaultLive(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	_, p := f.add("a", "net")
	pol := dataplane.PortPolicy{QueueLen: 77, BroadcastRate: 5}
	if err := f.a.SetSwitchDefault("vale0", pol); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.dp.portPolicy("vale0", p.HostName); got != pol {
		t.Fatalf("port after the change %+v, want %+v", got, pol)
	}
	_, q := f.add("b", "net")
	if got, _ := f.dp.portPolicy("vale0", q.HostName); got != pol {
		t.Fatalf("port attached after the change %+v, want %+v", got, pol)
	}
	if err := f.a.SetSwitchDefault("vale9", pol); !errors.Is(err, ErrNoSwitch) {
		t.Fatalf("unknown switch: %v", err)
	}
	if err := f.a.SetSwitchDefault("vale0", dataplane.PortPolicy{QueueLen: -1}); err == nil {
		t.Fatal("an invalid default was accepted")
	}
}
