package dataplane

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/vale"
)

// attachWithID attaches a pod with its identity and policy pol.
func (e *env) attachWithID(p *pod, pol *PortPolicy) PortInfo {
	e.t.Helper()
	pi, err := e.dp.AttachPort(context.Background(), AttachRequest{Owner: p.owner, HostIfName: p.pair.HostName, HostIfIndex: p.pair.HostIndex,
		Policy: pol, PodMAC: p.pair.PodMAC, PodIPs: []netip.Addr{netip.MustParseAddr(p.ip), netip.MustParseAddr(p.ip6)}})
	if err != nil {
		e.t.Fatalf("AttachPort %s: %v", p.pair.HostName, err)
	}
	return pi
}

func (e *env) spoofDrops(p *pod) uint64 {
	e.t.Helper()
	pi, err := e.dp.Port(p.portName())
	if err != nil {
		e.t.Fatal(err)
	}
	return pi.SpoofDrops
}

// sendRaw sends one Ethernet frame from the pod's eth0.
func sendRaw(t *testing.T, p *pod, frame []byte) {
	t.Helper()
	err := p.ns.Do(func() error {
		l, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: l.Index, Halen: 6})
	})
	if err != nil {
		t.Fatalf("send raw frame: %v", err)
	}
}

// udpFrame is an Ethernet/IPv4/UDP frame (checksums left zero: the
// switch does not look at them).
func udpFrame(src, dst net.HardwareAddr, sip, dip string) []byte {
	b := make([]byte, 14+20+8+16)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:], etIPv4)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	copy(ip[12:16], net.ParseIP(sip).To4())
	copy(ip[16:20], net.ParseIP(dip).To4())
	binary.BigEndian.PutUint16(ip[20+2:], 9)
	binary.BigEndian.PutUint16(ip[20+4:], 8+16)
	return b
}

func TestAntiSpoofing(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t, 0, v.be, v.mod(nil))
			a, b := e.makePod(), e.makePod()
			e.attachWithID(a, &PortPolicy{AntiSpoofing: true})
			e.attachWithID(b, nil)
			pi, _ := e.dp.Port(a.portName())
			if !pi.Policy.AntiSpoofing || pi.PodMAC.String() != a.pair.PodMAC.String() || len(pi.PodIPs) != 2 {
				t.Fatalf("port info %+v", pi)
			}

			// Legitimate traffic: ARP, IPv4, IPv6 with ND, to the pod and
			// to the gateway (host port).
			e.ping(a, b.ip)
			e.ping(a, testGW)
			if out, err := a.ns.Exec("ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", b.ip6); err != nil {
				t.Fatalf("ping6 with anti-spoofing: %v\n%s", err, out)
			}
			if n := e.spoofDrops(a); n != 0 {
				t.Fatalf("legitimate traffic: %d spoof drops", n)
			}

			// A second address in the pod: its frames (ARP and IP) drop.
			l, err := a.ns.NL.LinkByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			extra, _ := netlink.ParseAddr("10.78.0.99/24")
			if err := a.ns.NL.AddrAdd(l, extra); err != nil {
				t.Fatal(err)
			}
			spoofPing := func() error {
				_, err := a.ns.Exec("ping", "-c", "3", "-i", "0.3", "-W", "2", "-I", "10.78.0.99", b.ip)
				return err
			}
			if err := spoofPing(); err == nil {
				t.Fatalf("ping from a spoofed source passed with anti-spoofing on")
			}
			n1 := e.spoofDrops(a)
			if n1 == 0 {
				t.Fatalf("spoofed source: no spoof drops counted")
			}
			// A spoofed source MAC with the pod's own IP.
			sendRaw(t, a, udpFrame(net.HardwareAddr{0x02, 0xba, 0xd0, 0, 0, 1}, b.pair.PodMAC, a.ip, b.ip))
			waitFor(t, "the spoofed MAC's drop", 2*time.Second, func() bool { return e.spoofDrops(a) > n1 })
			if pi, _ := e.dp.Port(a.portName()); pi.Counters.Drops[vale.DropNoDest] < pi.SpoofDrops {
				t.Fatalf("no_destination %d < spoof drops %d", pi.Counters.Drops[vale.DropNoDest], pi.SpoofDrops)
			}

			// Off, live: the spoofed source passes.
			if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{}); err != nil {
				t.Fatal(err)
			}
			n2 := e.spoofDrops(a)
			if err := spoofPing(); err != nil {
				t.Fatalf("ping from the second address with anti-spoofing off: %v", err)
			}
			if n := e.spoofDrops(a); n != n2 {
				t.Fatalf("spoof drops grew with anti-spoofing off: %d → %d", n2, n)
			}
			// On again, live.
			if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{AntiSpoofing: true}); err != nil {
				t.Fatal(err)
			}
			if err := spoofPing(); err == nil {
				t.Fatalf("ping from a spoofed source passed after anti-spoofing was turned on again")
			}
			if e.spoofDrops(a) == n2 {
				t.Fatalf("no spoof drops after turning anti-spoofing on again")
			}
			e.ping(a, b.ip)

			// A port attached without an identity cannot have it.
			if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{AntiSpoofing: false}); err != nil {
				t.Fatal(err)
			}
			c := e.makePod()
			e.attach(c)
			if err := e.dp.SetPortPolicy(c.portName(), PortPolicy{AntiSpoofing: true}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("anti-spoofing without identity: %v, want ErrInvalid", err)
			}
		})
	}
}

// nd builds an Ethernet/IPv6/ICMPv6 frame from mac/src with the ICMPv6
// message m.
func nd(mac net.HardwareAddr, src string, m []byte) []byte {
	b := make([]byte, 14+40+len(m))
	copy(b[0:6], []byte{0x33, 0x33, 0, 0, 0, 1})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:], etIPv6)
	ip := b[14:]
	ip[0], ip[6], ip[7] = 0x60, ipICMPv6, 255
	binary.BigEndian.PutUint16(ip[4:], uint16(len(m)))
	a := netip.MustParseAddr(src).As16()
	copy(ip[8:24], a[:])
	copy(ip[40:], m)
	return b
}

func ndMsg(typ byte, target string, optType byte, optMAC net.HardwareAddr) []byte {
	m := make([]byte, 24, 32)
	m[0] = typ
	if target != "" {
		a := netip.MustParseAddr(target).As16()
		copy(m[8:24], a[:])
	}
	if optType != 0 {
		m = append(m, optType, 1)
		m = append(m, optMAC...)
	}
	return m
}

func TestSpoofGuardRules(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	var drops atomic.Uint64
	g := newSpoofGuard(podIdentity{mac: mac, ips: []netip.Addr{netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("fd00::10")}}, &drops)
	arp := func(sha net.HardwareAddr, spa string) []byte {
		b := make([]byte, 14+28)
		copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(b[6:12], mac)
		binary.BigEndian.PutUint16(b[12:], etARP)
		p := b[14:]
		binary.BigEndian.PutUint16(p[0:], 1)
		binary.BigEndian.PutUint16(p[2:], etIPv4)
		p[4], p[5], p[7] = 6, 4, 1
		copy(p[8:14], sha)
		copy(p[14:18], net.ParseIP(spa).To4())
		return b
	}
	vlan := func(f []byte) []byte {
		out := append([]byte{}, f[:12]...)
		out = append(out, 0x81, 0, 0, 5)
		return append(out, f[12:]...)
	}
	for _, c := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"ipv4 own", udpFrame(mac, other, "10.0.0.10", "10.0.0.11"), true},
		{"ipv4 other source", udpFrame(mac, other, "10.0.0.99", "10.0.0.11"), false},
		{"ipv4 other mac", udpFrame(other, mac, "10.0.0.10", "10.0.0.11"), false},
		{"ipv4 vlan own", vlan(udpFrame(mac, other, "10.0.0.10", "10.0.0.11")), true},
		{"ipv4 vlan other", vlan(udpFrame(mac, other, "10.0.0.9", "10.0.0.11")), false},
		{"arp own", arp(mac, "10.0.0.10"), true},
		{"arp probe", arp(mac, "0.0.0.0"), true},
		{"arp other ip", arp(mac, "10.0.0.11"), false},
		{"arp other sha", arp(other, "10.0.0.10"), false},
		{"ipv6 own echo", nd(mac, "fd00::10", []byte{128, 0, 0, 0, 0, 0, 0, 0}), true},
		{"ipv6 other", nd(mac, "fd00::11", []byte{128, 0, 0, 0, 0, 0, 0, 0}), false},
		{"ns dad", nd(mac, "::", ndMsg(icmp6NS, "fd00::10", 0, nil)), true},
		{"ns from own link-local", nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6NS, "fd00::11", 1, mac)), true},
		{"ns from another link-local", nd(mac, "fe80::1", ndMsg(icmp6NS, "fd00::11", 1, mac)), false},
		{"ipv6 from another pod's link-local", nd(mac, "fe80::ff:fe00:99", []byte{128, 0, 0, 0, 0, 0, 0, 0}), false},
		{"na own link-local target", nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6NA, "fe80::ff:fe00:10", 2, mac)), true},
		{"na other link-local target", nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6NA, "fe80::ff:fe00:99", 2, mac)), false},
		{"ns other slla", nd(mac, "fd00::10", ndMsg(icmp6NS, "fd00::11", 1, other)), false},
		{"na own", nd(mac, "fd00::10", ndMsg(icmp6NA, "fd00::10", 2, mac)), true},
		{"na other target", nd(mac, "fd00::10", ndMsg(icmp6NA, "fd00::11", 2, mac)), false},
		{"na other tlla", nd(mac, "fd00::10", ndMsg(icmp6NA, "fd00::10", 2, other)), false},
		{"ra", nd(mac, "fe80::1", ndMsg(icmp6RA, "", 0, nil)), false},
		{"redirect", nd(mac, "fe80::1", ndMsg(icmp6Redirect, "fd00::11", 0, nil)), false},
		{"bad option length", nd(mac, "fd00::10", append(ndMsg(icmp6NS, "fd00::11", 0, nil), 1, 0)), false},
		{"other ethertype", func() []byte {
			f := udpFrame(mac, other, "10.0.0.10", "10.0.0.11")
			f[12], f[13] = 0x88, 0xcc
			return f
		}(), false},
		{"short", mac, false},
	} {
		if got := g.allow(c.frame); got != c.want {
			t.Errorf("%s: allow = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestLinkLocalOf(t *testing.T) {
	for mac, want := range map[string]string{
		"02:00:00:00:00:10": "fe80::ff:fe00:10",
		"00:1b:21:3c:4d:5e": "fe80::21b:21ff:fe3c:4d5e",
		"02:42:ac:11:00:02": "fe80::42:acff:fe11:2",
	} {
		hw, _ := net.ParseMAC(mac)
		if got := netip.AddrFrom16(linkLocalOf([6]byte(hw))); got.String() != want {
			t.Errorf("linkLocalOf(%s) = %s, want %s", mac, got, want)
		}
	}
}

func TestGuardLookup(t *testing.T) {
	fdb, err := vale.NewFDB(64, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	lrn, err := vale.NewLearning(fdb, 4)
	if err != nil {
		t.Fatal(err)
	}
	gl := newGuardLookup(lrn, 4, 0)
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	var drops atomic.Uint64
	good := udpFrame(mac, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}, "10.0.0.10", "10.0.0.11")
	bad := udpFrame(net.HardwareAddr{0x02, 0xba, 0xd, 0, 0, 1}, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}, "10.0.0.10", "10.0.0.11")
	frames := []vale.Frame{{Data: good, Len: int32(len(good))}, {Data: bad, Len: int32(len(bad))}, {Data: good, Len: int32(len(good))}}
	gl.Lookup(1, frames, 1)
	if frames[1].Dst == vale.DstDrop {
		t.Fatalf("guard off: frame dropped")
	}
	gl.set(1, newSpoofGuard(podIdentity{mac: mac, ips: []netip.Addr{netip.MustParseAddr("10.0.0.10")}}, &drops))
	gl.Lookup(1, frames, 2)
	if frames[0].Dst == vale.DstDrop || frames[1].Dst != vale.DstDrop || frames[2].Dst == vale.DstDrop || drops.Load() != 1 {
		t.Fatalf("guard on: dsts %d %d %d, drops %d", frames[0].Dst, frames[1].Dst, frames[2].Dst, drops.Load())
	}
	if n := testing.AllocsPerRun(100, func() { gl.Lookup(1, frames, 3) }); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
	gl.PortDetached(1)
	if gl.guards[1].Load() != nil {
		t.Fatal("guard kept after PortDetached")
	}
}

// monitor is a VALE port of the test switch opened through netmap.
type monitor struct {
	t      *testing.T
	h      *netmap.Handle
	hdrLen int // the switch's virtio-net header before each frame
}

func (e *env) openMonitor(t *testing.T, name string) *monitor {
	h := e.dp.reg.Netmap().Open()
	if err := h.Register(&netmap.Req{Name: name, Version: netmap.API, Flags: netmap.RegAllNIC}); err != nil {
		h.Close()
		t.Fatalf("register %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	m := &monitor{t: t, h: h}
	if e.cfg.Switches[0].Offload {
		m.hdrLen = linkport.OffloadHdrLen
	}
	return m
}

// count drains the monitor and counts the unicast frames from and to mac.
func (m *monitor) count(mac net.HardwareAddr) (from, to int) {
	m.t.Helper()
	if err := m.h.RxSync(); err != nil {
		m.t.Fatal(err)
	}
	r := m.h.RxRing(0)
	for r.Head != r.Tail {
		b := r.Buf(r.Head)[:r.Slot[r.Head].Len]
		b = b[min(m.hdrLen, len(b)):]
		if len(b) >= 14 && b[0]&1 == 0 {
			if bytes.Equal(b[6:12], mac) {
				from++
			}
			if bytes.Equal(b[0:6], mac) {
				to++
			}
		}
		r.Advance(r.Next(r.Head))
	}
	if err := m.h.RxSync(); err != nil {
		m.t.Fatal(err)
	}
	return from, to
}

func TestMirror(t *testing.T) {
	for _, v := range []variant{{"plain", linkport.Auto, false}, variants[2]} {
		t.Run(v.name, func(t *testing.T) { testMirror(t, v) })
	}
}

func testMirror(t *testing.T, v variant) {
	e := newEnv(t, 0, v.be, v.mod(nil))
	a, b := e.makePod(), e.makePod()
	mon := e.openMonitor(t, "vale0:mon0")
	e.attachWithID(a, &PortPolicy{Mirror: Mirror{Monitor: "mon0", RX: true}})
	e.attachWithID(b, nil)
	if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{Mirror: Mirror{Monitor: a.pair.HostName, RX: true}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mirror to itself: %v, want ErrInvalid", err)
	}
	if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{Mirror: Mirror{Monitor: "mon0"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mirror without direction: %v, want ErrInvalid", err)
	}
	step := func(what string, pol PortPolicy, wantFrom, wantTo bool) {
		t.Helper()
		if err := e.dp.SetPortPolicy(a.portName(), pol); err != nil {
			t.Fatal(err)
		}
		mon.count(a.pair.PodMAC) // drop what came before
		e.ping(a, b.ip)
		var from, to int
		// The last reply may still be on its way to the monitor.
		time.Sleep(100 * time.Millisecond)
		from, to = mon.count(a.pair.PodMAC)
		if (from >= 2) != wantFrom || (to >= 2) != wantTo {
			t.Fatalf("%s: the monitor got %d unicast frames from the pod and %d to it", what, from, to)
		}
		t.Logf("%s: %d from, %d to", what, from, to)
	}
	step("rx", PortPolicy{Mirror: Mirror{Monitor: "mon0", RX: true}}, true, false)
	step("tx", PortPolicy{Mirror: Mirror{Monitor: "mon0", TX: true}}, false, true)
	step("both", PortPolicy{Mirror: Mirror{Monitor: "mon0", RX: true, TX: true}}, true, true)
	step("off", PortPolicy{}, false, false)
	pi, _ := e.dp.Port(a.portName())
	if pi.Policy.Mirror.on() {
		t.Fatalf("policy %+v", pi.Policy)
	}
}

// FuzzSpoofGuard feeds arbitrary frames (a pod controls every byte of them) to the
// anti-spoofing checks and the output queue's flow hash: they must never panic, and a
// frame the guard allows must carry the pod's source MAC.
func FuzzSpoofGuard(f *testing.F) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	f.Add(udpFrame(mac, other, "10.0.0.10", "10.0.0.11"))
	f.Add(nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6NS, "fd00::11", 1, mac)))
	f.Add(nd(mac, "fd00::10", ndMsg(icmp6NA, "fd00::10", 2, mac)))
	f.Add(nd(mac, "fd00::10", append(ndMsg(icmp6NS, "fd00::11", 0, nil), 1, 0)))
	f.Add([]byte{})
	var drops atomic.Uint64
	g := newSpoofGuard(podIdentity{mac: mac, ips: []netip.Addr{netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("fd00::10")}}, &drops)
	f.Fuzz(func(t *testing.T, b []byte) {
		if g.allow(b) && (len(b) < 12 || !bytes.Equal(b[6:12], mac)) {
			t.Fatalf("allowed a frame without the pod's source MAC: %x", b)
		}
		_ = flowHash(b)
	})
}
