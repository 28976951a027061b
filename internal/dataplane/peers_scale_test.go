package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

// TestPeersScaleProfile times SetPeers with 1000 peers (EPAIR_PEER_PROFILE=1 only).
func TestPeersScaleProfile(t *testing.T) {
	if testing.Short() || os.Getenv("EPAIR_PEER_PROFILE") != "1" {
		t.Skip("profiling only")
	}
	e := newEnv(t, 0, linkport.Auto, func(c *Config) { c.Masquerade = true })
	mustRun := func(args ...string) {
		if out, err := e.host.Exec(args[0], args[1:]...); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	mustRun("ip", "link", "add", "u0", "type", "veth", "peer", "name", "u1")
	mustRun("ip", "addr", "add", "192.168.0.1/16", "dev", "u0")
	mustRun("ip", "link", "set", "u0", "up")
	mustRun("ip", "route", "add", "172.16.0.0/16", "via", "192.168.255.254")
	var peers []Peer
	for i := range 1000 {
		addr := fmt.Sprintf("192.168.%d.%d", 1+i/250, 1+i%250)
		if i >= 500 {
			addr = fmt.Sprintf("172.16.%d.%d", 1+(i-500)/250, 1+(i-500)%250)
		}
		peers = append(peers, Peer{Name: fmt.Sprint(i), Addresses: []netip.Addr{netip.MustParseAddr(addr)}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 128+i/256, i%256))}})
	}
	for round := range 3 {
		t0 := time.Now()
		if _, err := e.dp.SetPeers(context.Background(), peers); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		e.dp.peerMu.Lock()
		e.dp.resyncPeersLocked()
		e.dp.peerMu.Unlock()
		t.Logf("round %d: SetPeers %v, a resync %v", round, t1.Sub(t0), time.Since(t1))
	}
}
