package dataplane

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
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
	r := p.req()
	r.Policy = pol
	pi, err := e.dp.AttachPort(context.Background(), r)
	if err != nil {
		e.t.Fatalf("AttachPort %s: %v", p.pair.HostName, err)
	}
	return pi
}

// spoofDrops is what anti-spoofing refused from the pod (every reason but storm).
func (e *env) spoofDrops(p *pod) uint64 { return e.refused(p).Spoofed() }

func (e *env) refused(p *pod) RefusedCounts {
	e.t.Helper()
	pi, err := e.dp.Port(p.portName())
	if err != nil {
		e.t.Fatal(err)
	}
	return pi.Refused
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
			e.attachWithID(a, nil) // the default: anti-spoofing on
			e.attachWithID(b, &PortPolicy{AllowSpoofing: true})
			pi, _ := e.dp.Port(a.portName())
			if pi.Policy.AllowSpoofing || pi.PodMAC.String() != a.pair.PodMAC.String() || len(pi.PodIPs) != 2 {
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
			if r := e.refused(a); r[RefusedIP] == 0 {
				t.Fatalf("spoofed source: refused %v, want spoofed-ip counted", r)
			}
			// A spoofed source MAC with the pod's own IP.
			sendRaw(t, a, udpFrame(net.HardwareAddr{0x02, 0xba, 0xd0, 0, 0, 1}, b.pair.PodMAC, a.ip, b.ip))
			waitFor(t, "the spoofed MAC's drop", 2*time.Second, func() bool { return e.spoofDrops(a) > n1 && e.refused(a)[RefusedMAC] > 0 })
			// The guard counts a batch's refusals in its lookup, the switch its drops at the
			// end of the batch: the two agree once the batch is done (a frame counted by
			// one only would keep them apart).
			for dl := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				pi, _ := e.dp.Port(a.portName())
				if pi.Counters.Drops[vale.DropRefused] == pi.Refused.Total() {
					break
				}
				if time.Now().After(dl) {
					t.Fatalf("the switch's refused drops %d, port security's %d (%v)", pi.Counters.Drops[vale.DropRefused], pi.Refused.Total(), pi.Refused)
				}
			}

			// Off, live: the spoofed source passes.
			if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{AllowSpoofing: true}); err != nil {
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
			if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{}); err != nil {
				t.Fatal(err)
			}
			if err := spoofPing(); err == nil {
				t.Fatalf("ping from a spoofed source passed after anti-spoofing was turned on again")
			}
			if e.spoofDrops(a) == n2 {
				t.Fatalf("no spoof drops after turning anti-spoofing on again")
			}
			e.ping(a, b.ip)

			// A port attached without addresses (allowed only with spoofing
			// allowed) cannot lose that.
			c := e.makePod()
			r := c.req()
			r.PodIPs, r.Policy = nil, &PortPolicy{AllowSpoofing: true}
			if _, err := e.dp.AttachPort(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			if err := e.dp.SetPortPolicy(c.portName(), PortPolicy{}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("anti-spoofing without addresses: %v, want ErrInvalid", err)
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
	g := newSpoofGuard(podIdentity{mac: mac, ips: []netip.Addr{netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("fd00::10")}})
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
		want  Refusal
	}{
		{"ipv4 own", udpFrame(mac, other, "10.0.0.10", "10.0.0.11"), allowed},
		{"ipv4 other source", udpFrame(mac, other, "10.0.0.99", "10.0.0.11"), RefusedIP},
		{"ipv4 other mac", udpFrame(other, mac, "10.0.0.10", "10.0.0.11"), RefusedMAC},
		{"ipv4 vlan own", vlan(udpFrame(mac, other, "10.0.0.10", "10.0.0.11")), allowed},
		{"ipv4 vlan other", vlan(udpFrame(mac, other, "10.0.0.9", "10.0.0.11")), RefusedIP},
		{"arp own", arp(mac, "10.0.0.10"), allowed},
		{"arp probe", arp(mac, "0.0.0.0"), allowed},
		{"arp other ip", arp(mac, "10.0.0.11"), RefusedClaim},
		{"arp other sha", arp(other, "10.0.0.10"), RefusedClaim},
		{"ipv6 own echo", nd(mac, "fd00::10", []byte{128, 0, 0, 0, 0, 0, 0, 0}), allowed},
		{"ipv6 other", nd(mac, "fd00::11", []byte{128, 0, 0, 0, 0, 0, 0, 0}), RefusedIP},
		{"ns dad", nd(mac, "::", ndMsg(icmp6NS, "fd00::10", 0, nil)), allowed},
		{"ns from own link-local", nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6NS, "fd00::11", 1, mac)), allowed},
		{"ns from another link-local", nd(mac, "fe80::1", ndMsg(icmp6NS, "fd00::11", 1, mac)), RefusedIP},
		{"ipv6 from another pod's link-local", nd(mac, "fe80::ff:fe00:99", []byte{128, 0, 0, 0, 0, 0, 0, 0}), RefusedIP},
		{"na own link-local target", nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6NA, "fe80::ff:fe00:10", 2, mac)), allowed},
		{"na other link-local target", nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6NA, "fe80::ff:fe00:99", 2, mac)), RefusedClaim},
		{"ns other slla", nd(mac, "fd00::10", ndMsg(icmp6NS, "fd00::11", 1, other)), RefusedClaim},
		{"na own", nd(mac, "fd00::10", ndMsg(icmp6NA, "fd00::10", 2, mac)), allowed},
		{"na other target", nd(mac, "fd00::10", ndMsg(icmp6NA, "fd00::11", 2, mac)), RefusedClaim},
		{"na other tlla", nd(mac, "fd00::10", ndMsg(icmp6NA, "fd00::10", 2, other)), RefusedClaim},
		{"ra", nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6RA, "", 0, nil)), RefusedClaim},
		{"redirect", nd(mac, "fe80::ff:fe00:10", ndMsg(icmp6Redirect, "fd00::11", 0, nil)), RefusedClaim},
		{"ra from another address", nd(mac, "fe80::1", ndMsg(icmp6RA, "", 0, nil)), RefusedIP},
		{"bad option length", nd(mac, "fd00::10", append(ndMsg(icmp6NS, "fd00::11", 0, nil), 1, 0)), RefusedClaim},
		{"other ethertype", func() []byte {
			f := udpFrame(mac, other, "10.0.0.10", "10.0.0.11")
			f[12], f[13] = 0x88, 0xcc
			return f
		}(), RefusedEtherType},
		{"short", mac, RefusedMAC},
	} {
		if got := g.check(c.frame); got != c.want {
			t.Errorf("%s: check = %v, want %v", c.name, got, c.want)
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

// newTestGuard is a guard lookup of 4 ports over a learning lookup and its FDB.
func newTestGuard(t *testing.T) (*guardLookup, *vale.FDB) {
	t.Helper()
	fdb, err := vale.NewFDB(64, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	lrn, err := vale.NewLearning(fdb, 4)
	if err != nil {
		t.Fatal(err)
	}
	return newGuardLookup(lrn, 4, 0), fdb
}

func TestGuardLookup(t *testing.T) {
	gl, fdb := newTestGuard(t)
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	peer := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	bad := net.HardwareAddr{0x02, 0xba, 0xd, 0, 0, 1}
	good := udpFrame(mac, peer, "10.0.0.10", "10.0.0.11")
	spoofed := udpFrame(bad, peer, "10.0.0.10", "10.0.0.11")
	frames := func() []vale.Frame {
		return []vale.Frame{{Data: good, Len: int32(len(good))}, {Data: spoofed, Len: int32(len(spoofed))}, {Data: good, Len: int32(len(good))}}
	}
	fs := frames()
	gl.Lookup(1, fs, 1)
	for i := range fs {
		if fs[i].Dst != vale.DstDrop {
			t.Fatalf("port not admitted: frame %d has dst %#x, want DstDrop", i, fs[i].Dst)
		}
	}
	var refused refusedCounters
	id := podIdentity{mac: mac, ips: []netip.Addr{netip.MustParseAddr("10.0.0.10")}}
	gl.set(1, newPodSec(id, PortPolicy{}, &refused))
	fs = frames()
	gl.Lookup(1, fs, 2)
	if fs[0].Dst != vale.DstUnknown || fs[1].Dst != vale.DstRefused || fs[2].Dst != vale.DstUnknown || refused[RefusedMAC].Load() != 1 {
		t.Fatalf("anti-spoofing: dsts %#x %#x %#x, refused %v", fs[0].Dst, fs[1].Dst, fs[2].Dst, refused.snapshot())
	}
	if ents := fdb.Entries(2); len(ents) != 0 {
		t.Fatalf("a pod port was learned from: %v", ents)
	}
	if n := testing.AllocsPerRun(100, func() { gl.Lookup(1, fs, 3) }); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
	// Spoofing allowed: the frame passes, and is still not learned from.
	gl.set(1, newPodSec(id, PortPolicy{AllowSpoofing: true}, &refused))
	fs = frames()
	gl.Lookup(1, fs, 4)
	if fs[1].Dst != vale.DstUnknown {
		t.Fatalf("spoofing allowed: dst %#x, want DstUnknown", fs[1].Dst)
	}
	if ents := fdb.Entries(4); len(ents) != 0 {
		t.Fatalf("a pod port that may spoof was learned from: %v", ents)
	}
	// A learning port (the host port) is learned from.
	gl.set(2, &portSec{learn: true})
	gl.Lookup(2, frames()[:1], 5)
	if p, ok := fdb.Lookup(mac, 5); !ok || p != 2 {
		t.Fatalf("learning port: %v on %d, want learned on 2", ok, p)
	}
	gl.PortDetached(1)
	if gl.ports[1].Load() != nil {
		t.Fatal("port still admitted after PortDetached")
	}
}

func TestStormControl(t *testing.T) {
	fdb, _ := vale.NewFDB(64, time.Minute)
	lrn, _ := vale.NewLearning(fdb, 4)
	gl := newGuardLookup(lrn, 4, 0)
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	bcast := udpFrame(mac, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "10.0.0.10", "10.0.0.255")
	mcast := udpFrame(mac, net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 0xfb}, "10.0.0.10", "224.0.0.251")
	ucast := udpFrame(mac, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}, "10.0.0.10", "10.0.0.11")
	var refused refusedCounters
	id := podIdentity{mac: mac, ips: []netip.Addr{netip.MustParseAddr("10.0.0.10")}}
	// 100 broadcast frames/s (a burst of 16), 1000 multicast (a burst of 100).
	gl.set(1, newPodSec(id, PortPolicy{BroadcastRate: 100, MulticastRate: 1000}, &refused))
	batch := func(f []byte, n int, now int64) (passed int) {
		fs := make([]vale.Frame, n)
		for i := range fs {
			fs[i] = vale.Frame{Data: f, Len: int32(len(f))}
		}
		gl.Lookup(1, fs, now)
		for i := range fs {
			if fs[i].Dst != vale.DstRefused {
				passed++
			}
		}
		return passed
	}
	now := int64(time.Hour)
	if n := batch(bcast, 64, now); n != 16 {
		t.Fatalf("broadcast burst: %d of 64 passed, want 16", n)
	}
	if n := batch(mcast, 200, now); n != 100 {
		t.Fatalf("multicast burst: %d of 200 passed, want 100 (its own bucket)", n)
	}
	if n := batch(ucast, 500, now); n != 500 {
		t.Fatalf("unicast: %d of 500 passed, want all (not limited)", n)
	}
	// A second later the broadcast bucket has refilled its burst, not more.
	if n := batch(bcast, 64, now+int64(time.Second)); n != 16 {
		t.Fatalf("broadcast a second later: %d passed, want 16", n)
	}
	// 10 ms later one more frame (100/s).
	if n := batch(bcast, 8, now+int64(time.Second)+int64(10*time.Millisecond)); n != 1 {
		t.Fatalf("broadcast 10 ms later: %d passed, want 1", n)
	}
	if got := refused[RefusedStorm].Load(); got != 48+100+48+7 {
		t.Fatalf("storm refusals %d, want %d", got, 48+100+48+7)
	}
	if refused[RefusedMAC].Load()+refused[RefusedIP].Load() != 0 {
		t.Fatalf("storm frames counted as spoofed: %v", refused.snapshot())
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
	g := newSpoofGuard(podIdentity{mac: mac, ips: []netip.Addr{netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("fd00::10")}})
	f.Fuzz(func(t *testing.T, b []byte) {
		if g.check(b) == allowed && (len(b) < 12 || !bytes.Equal(b[6:12], mac)) {
			t.Fatalf("allowed a frame without the pod's source MAC: %x", b)
		}
		_ = flowHash(b)
	})
}
