package dataplane

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

// rs is a router solicitation from mac's link-local address to ff02::2.
func rs(mac net.HardwareAddr) []byte {
	var m [6]byte
	copy(m[:], mac)
	ll := linkLocalOf(m)
	b := nd(mac, netip.AddrFrom16(ll).String(), []byte{icmp6RouterSolicit, 0, 0, 0, 0, 0, 0, 0})
	b[5] = 2 // 33:33:00:00:00:02
	return b
}

// mldv2Report is an MLDv2 report to ff02::16 behind a hop-by-hop header (router alert),
// as Linux sends it.
func mldv2Report(mac net.HardwareAddr) []byte {
	hbh := []byte{ipICMPv6, 0, 5, 2, 0, 0, 1, 0} // next header, length 0, router alert, padN
	msg := []byte{icmp6MLDv2Report, 0, 0, 0, 0, 0, 0, 0}
	b := nd(mac, "fe80::1", append(hbh, msg...))
	b[14+6] = 0 // hop-by-hop options first
	b[5] = 0x16
	return b
}

func TestRouterOnly(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	ns := nd(mac, "fe80::1", ndMsg(135, "fe80::2", 1, mac)) // a neighbour solicitation: pods need it
	ns[2], ns[3], ns[4], ns[5] = 0xff, 0, 0, 2
	cut := mldv2Report(mac)[:14+40+8+2]
	tagged := append(append([]byte{}, rs(mac)[:12]...), append([]byte{0x81, 0, 0, 1}, rs(mac)[12:]...)...)
	unicastRS := rs(mac)
	copy(unicastRS[:6], []byte{0x02, 0, 0, 0, 0, 0x20})
	for _, c := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"router solicitation", rs(mac), true},
		{"MLDv2 report behind hop-by-hop", mldv2Report(mac), true},
		{"neighbour solicitation", ns, false},
		{"MLD report cut short", cut, false},
		{"VLAN-tagged router solicitation", tagged, false},
		{"unicast router solicitation", unicastRS, false},
		{"IPv4", udpFrame(mac, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 2}, "10.0.0.1", "10.0.0.2"), false},
		{"empty", nil, false},
	} {
		if got := routerOnly(c.frame); got != c.want {
			t.Errorf("routerOnly(%s) = %v, want %v", c.name, got, c.want)
		}
	}

	// Through the lookup: a pod's router-only frames go to the host port alone, the
	// rest floods; the host port's own still flood.
	gl, _ := newTestGuard(t)
	var refused refusedCounters
	var m6 [6]byte
	copy(m6[:], mac)
	id := podIdentity{mac: mac, ips: []netip.Addr{netip.AddrFrom16(linkLocalOf(m6))}}
	gl.set(1, newPodSec(id, PortPolicy{AllowSpoofing: true}, &refused))
	frames := func() []vale.Frame {
		return []vale.Frame{{Data: rs(mac)}, {Data: ns}, {Data: mldv2Report(mac)}}
	}
	fs := frames()
	gl.Lookup(1, fs, 1)
	if fs[0].Dst != vale.DstBroadcast || fs[2].Dst != vale.DstBroadcast {
		t.Fatalf("without a host port: dsts %#x %#x, want the flood", fs[0].Dst, fs[2].Dst)
	}
	gl.setHost(2)
	fs = frames()
	gl.Lookup(1, fs, 2)
	if fs[0].Dst != 2 || fs[1].Dst != vale.DstBroadcast || fs[2].Dst != 2 {
		t.Fatalf("pod port: dsts %#x %#x %#x, want 2, flood, 2", fs[0].Dst, fs[1].Dst, fs[2].Dst)
	}
	fs = frames()
	gl.Probe(1, fs, 3)
	if fs[0].Dst != 2 || fs[1].Dst != vale.DstBroadcast || fs[2].Dst != 2 {
		t.Fatalf("trace probe: dsts %#x %#x %#x, want 2, flood, 2", fs[0].Dst, fs[1].Dst, fs[2].Dst)
	}
	// With anti-spoofing on, the same (the pod's link-local is its own).
	gl.set(1, newPodSec(id, PortPolicy{}, &refused))
	fs = frames()
	gl.Lookup(1, fs[:1], 4)
	if fs[0].Dst != 2 {
		t.Fatalf("pod port with anti-spoofing: dst %#x, want 2 (refused: %v)", fs[0].Dst, refused.snapshot())
	}
	if n := testing.AllocsPerRun(100, func() { gl.Lookup(1, fs, 5) }); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
	fs = frames()
	gl.Lookup(2, fs, 6)
	if fs[0].Dst != vale.DstBroadcast {
		t.Fatalf("host port's router solicitation: dst %#x, want the flood", fs[0].Dst)
	}
}

// TestRouterOnlyToHost: on a live switch, a pod's router solicitations and MLD reports
// reach the host port and no other pod, while its neighbour solicitations still do.
func TestRouterOnlyToHost(t *testing.T) {
	e := newEnv(t, 0, linkport.Auto, nil)
	a, b := e.makePod(), e.makePod()
	e.attach(a)
	e.attach(b)
	e.ping(a, b.ip)
	tapBefore := e.switchPort(t, "vale0:"+testTap).Counters.OutFrames
	seen := countFramesTo(t, b, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 2}, func() {
		for range 10 {
			sendRaw(t, a, rs(a.pair.PodMAC))
		}
		waitFor(t, "the host port's copies", 2*time.Second, func() bool {
			return e.switchPort(t, "vale0:"+testTap).Counters.OutFrames >= tapBefore+10
		})
	})
	if seen != 0 {
		t.Fatalf("another pod received %d of the 10 router solicitations", seen)
	}
	var m6 [6]byte
	copy(m6[:], a.pair.PodMAC)
	ll := netip.AddrFrom16(linkLocalOf(m6)).String()
	solicited := net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x42}
	seen = countFramesTo(t, b, solicited, func() {
		for range 10 {
			f := nd(a.pair.PodMAC, ll, ndMsg(135, "fe80::42", 1, a.pair.PodMAC))
			copy(f[:6], solicited)
			sendRaw(t, a, f)
		}
	})
	if seen != 10 {
		t.Fatalf("another pod received %d of 10 neighbour solicitations, want all", seen)
	}
}

func FuzzRouterOnly(f *testing.F) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	f.Add(rs(mac))
	f.Add(mldv2Report(mac))
	f.Add(nd(mac, "fe80::1", ndMsg(135, "fe80::2", 1, mac)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if routerOnly(b) && (len(b) < 58 || b[0] != 0x33) {
			t.Fatalf("routerOnly accepted %x", b)
		}
	})
}
