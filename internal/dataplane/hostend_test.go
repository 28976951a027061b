package dataplane

import (
	"strings"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

// TestHostEndSilent: while a pod's port is still ring-less (FastStart, before its AF_XDP
// upgrade) the pod's frames also reach the node's stack on the host end of its veth. That
// end must stay silent: the pod that asks for its gateway gets the gateway's MAC (the host
// port's), never the host end's own (the kernel answers ARP for any of its addresses on any
// interface by default), and the node does not forward the pod's packets itself
// (arp_ignore 8 and forwarding 0 on the host end, set over netlink: a container's /proc/sys
// is read-only).
func TestHostEndSilent(t *testing.T) {
	e := newEnv(t, 0, linkport.Auto, func(c *Config) {
		c.UpgradeQuiet, c.UpgradeMaxDelay = time.Minute, time.Hour // the port stays ring-less
	})
	p := e.addPod()
	for i := range 3 {
		p.ns.Exec("ip", "neigh", "flush", "dev", "eth0")
		e.ping(p, testGW)
		out, err := p.ns.Exec("ip", "neigh", "show", testGW, "dev", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, e.cfg.Switches[0].HostPort.MAC.String()) {
			t.Fatalf("round %d: the pod resolved its gateway %s to %q, want the host port's MAC %s (the host end %s answered)",
				i, testGW, strings.TrimSpace(out), e.cfg.Switches[0].HostPort.MAC, p.pair.HostName)
		}
	}
	for k, want := range map[string]string{"arp_ignore": "8", "forwarding": "0"} {
		k = "ipv4/conf/" + p.pair.HostName + "/" + k
		out, err := e.host.Exec("cat", "/proc/sys/net/"+k)
		if err != nil || strings.TrimSpace(out) != want {
			t.Errorf("%s = %q (%v), want %s", k, strings.TrimSpace(out), err, want)
		}
	}
}
