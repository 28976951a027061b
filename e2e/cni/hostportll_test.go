package cni

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestHostPortLinkLocalStable: the switch's host port, the pods' gateway, keeps its MAC
// and its IPv6 link-local address (EUI-64 of that MAC) across agent restarts, graceful or
// not, so that a pod's neighbour entry and any route via the gateway's link-local address
// stay right.
func TestHostPortLinkLocalStable(t *testing.T) {
	e := newEnv(t, envOpts{})
	look := func(when string) (net.HardwareAddr, netip.Addr) {
		t.Helper()
		var mac net.HardwareAddr
		var ll netip.Addr
		for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			err := e.inHost(func() error {
				l, err := netlink.LinkByName("epvale0")
				if err != nil {
					return err
				}
				mac = l.Attrs().HardwareAddr
				addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
				if err != nil {
					return err
				}
				for _, a := range addrs {
					if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
						ll = ip
					}
				}
				return nil
			})
			if err == nil && ll.IsValid() {
				return mac, ll
			}
			if time.Now().After(end) {
				t.Fatalf("%s: the host port epvale0 has no IPv6 link-local address (MAC %v, err %v)", when, mac, err)
			}
		}
	}
	mac0, ll0 := look("at start")
	if want := eui64LinkLocal(mac0); ll0 != want {
		t.Errorf("at start: host port link-local %v, want %v (EUI-64 of its MAC %v)", ll0, want, mac0)
	}
	for _, kill := range []bool{false, true} {
		if kill {
			e.agent.kill9()
		} else {
			e.agent.stop(false)
		}
		e.agent.start()
		mac, ll := look("after a restart")
		if mac.String() != mac0.String() || ll != ll0 {
			t.Errorf("after a restart (SIGKILL %v): host port MAC %v and link-local %v, were %v and %v", kill, mac, ll, mac0, ll0)
		}
	}
}

// eui64LinkLocal is fe80::/64 with the modified EUI-64 interface identifier of mac.
func eui64LinkLocal(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10] = mac[0]^0x02, mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}
