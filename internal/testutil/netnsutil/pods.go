package netnsutil

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// Pods is the two-pod topology the backend tests use: namespaces A and B each hold eth0
// (IPA/24, IPB/24) whose veth peers HostA and HostB sit in namespace Host, where the code
// under test bridges them. Host, A and B are removed when the test ends.
type Pods struct {
	Host, A, B   *NS
	HostA, HostB string // host-side link names
	IPA, IPB     string
	MACA, MACB   net.HardwareAddr
}

// TwoPods builds the topology. Links are up; nothing connects HostA and HostB yet.
func TwoPods(tb testing.TB) *Pods {
	tb.Helper()
	p := &Pods{
		Host: New(tb), A: New(tb), B: New(tb),
		HostA: "ha", HostB: "hb", IPA: "10.77.0.1", IPB: "10.77.0.2",
		MACA: net.HardwareAddr{0x02, 0, 0, 0x77, 0, 0x01},
		MACB: net.HardwareAddr{0x02, 0, 0, 0x77, 0, 0x02},
	}
	Veth(tb, p.Host, p.HostA, "", p.A, "eth0", p.IPA+"/24")
	Veth(tb, p.Host, p.HostB, "", p.B, "eth0", p.IPB+"/24")
	SetMAC(tb, p.A, "eth0", p.MACA)
	SetMAC(tb, p.B, "eth0", p.MACB)
	DisableTxChecksum(tb, p.A, "eth0")
	DisableTxChecksum(tb, p.B, "eth0")
	return p
}

// StaticNeighbors installs permanent ARP entries so that a burst does not wait on (or lose
// frames to) address resolution.
func (p *Pods) StaticNeighbors(tb testing.TB) {
	tb.Helper()
	add := func(n *NS, ip string, mac net.HardwareAddr) {
		l, err := n.NL.LinkByName("eth0")
		if err != nil {
			tb.Fatal(err)
		}
		err = n.NL.NeighSet(&netlink.Neigh{
			LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4,
			IP: net.ParseIP(ip), HardwareAddr: mac,
		})
		if err != nil {
			tb.Fatalf("add neighbor %s in %s: %v", ip, n.Name, err)
		}
	}
	add(p.A, p.IPB, p.MACB)
	add(p.B, p.IPA, p.MACA)
}
