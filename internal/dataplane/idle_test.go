package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/linkport"
)

func cpuTime(t *testing.T) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestIdleCPU250Ports attaches 250 ports and checks that the idle
// dataplane costs (far) under 1% of a core: every goroutine parks in the
// netpoller or on a channel.
func TestIdleCPU250Ports(t *testing.T) {
	if testing.Short() {
		t.Skip("250 links: skipped with -short")
	}
	netnsutil.RequireRoot(t)
	const n = 250
	host := netnsutil.New(t)
	// No IPv6 on the links: their link-local start-up traffic (DAD, router
	// solicitations, MLD), flooded to 250 ports, is traffic, not idle cost.
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"} {
		if out, err := host.Exec("sysctl", "-qw", k); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	for i := 0; i < n; i++ {
		v := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("ia%d", i), NumTxQueues: 1, NumRxQueues: 1},
			PeerName:  fmt.Sprintf("ib%d", i), PeerNumTxQueues: 1, PeerNumRxQueues: 1,
		}
		if err := host.NL.LinkAdd(v); err != nil {
			t.Fatalf("add veth %d: %v", i, err)
		}
		for _, name := range []string{v.Name, v.PeerName} {
			l, err := host.NL.LinkByName(name)
			if err == nil {
				err = host.NL.LinkSetUp(l)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := testConfig(host, linkport.Auto)
	cfg.Switches[0].HostPort.Gateways = cfg.Switches[0].HostPort.Gateways[:1] // IPv4 only, as the links
	cfg.Link.XDP.FrameCount = 256                                             // idle cost does not depend on it; be light on memory
	dp, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close(CloseOptions{Uninstall: true})
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := dp.AttachPort(context.Background(), AttachRequest{Owner: fmt.Sprintf("c%d/eth0", i), HostIfName: fmt.Sprintf("ia%d", i),
			PodMAC: net.HardwareAddr{0x02, 0x1d, 0, 0, byte(i >> 8), byte(i)}, PodIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 78, byte(i >> 8), byte(i)})}}); err != nil {
			t.Fatalf("attach %d: %v", i, err)
		}
	}
	t.Logf("attached %d ports in %v", n, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	settle(t, dp)
	t.Logf("upgraded them to AF_XDP in %v more", time.Since(start).Round(time.Millisecond))
	if got := len(dp.Switches()[0].Ports); got != n+1 {
		t.Fatalf("switch has %d ports, want %d", got, n+1)
	}
	time.Sleep(500 * time.Millisecond) // let the links' own start-up traffic pass
	const window = 3 * time.Second
	s0 := dp.Switches()[0].Counters
	c0, t0 := cpuTime(t), time.Now()
	time.Sleep(window)
	used, el := cpuTime(t)-c0, time.Since(t0)
	s1 := dp.Switches()[0].Counters
	if d := s1.InFrames - s0.InFrames; d != 0 {
		t.Logf("%d frames crossed the switch during the window", d)
	}
	share := float64(used) / float64(el)
	t.Logf("idle with %d ports: %v CPU in %v (%.3f%% of a core)", n, used, el.Round(time.Millisecond), 100*share)
	if share >= 0.01 {
		t.Errorf("idle dataplane with %d ports uses %.2f%% of a core, want < 1%%", n, 100*share)
	}
}
