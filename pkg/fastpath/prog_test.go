package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

const (
	runFast   = tcActRedirect
	runSlow   = 0xffffffff // TCX_NEXT from tc, "keep the whole frame" from the filter
	loIfindex = 1          // BPF_PROG_RUN's skb comes in on the loopback device
	fakeDest  = 1000       // a destination's ifindex; BPF_PROG_RUN does not redirect
)

var (
	macP    = net.HardwareAddr{0x02, 0, 0, 0x55, 0, 0x01}
	macD    = net.HardwareAddr{0x02, 0, 0, 0x55, 0, 0x02}
	macE    = net.HardwareAddr{0x02, 0, 0, 0x55, 0, 0x03} // on switch 2
	macU    = net.HardwareAddr{0x02, 0, 0, 0x55, 0, 0x09} // unknown
	ip4P    = netip.MustParseAddr("10.55.0.1")
	ip6P    = netip.MustParseAddr("fd00:55::1")
	ip4D    = netip.MustParseAddr("10.55.0.2")
	ip6D    = netip.MustParseAddr("fd00:55::2")
	bcast   = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcast6  = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	portP   = Port{Ifindex: loIfindex, Switch: 1, MAC: macP, IPv4: ip4P, IPv6: ip6P, Source: true, Dest: true}
	portD   = Port{Ifindex: fakeDest, Switch: 1, MAC: macD, IPv4: ip4D, IPv6: ip6D, Source: true, Dest: true}
	portE   = Port{Ifindex: fakeDest + 1, Switch: 2, MAC: macE, Source: true, Dest: true}
	payload = []byte("fast path")
)

// publishNoLink enters a port in the maps as Set does, without attaching to its
// interface, so that BPF_PROG_RUN (which sends frames in on the loopback) can run the
// programs against it.
func publishNoLink(t testing.TB, f *FastPath, p Port) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.ports[p.Ifindex]
	if e == nil {
		e = &entry{slot: f.free[len(f.free)-1]}
		f.free = f.free[:len(f.free)-1]
		f.ports[p.Ifindex] = e
		if err := f.clearStats(e.slot); err != nil {
			t.Fatal(err)
		}
	} else if err := f.withdraw(e); err != nil {
		t.Fatal(err)
	}
	e.port = p
	if err := f.publish(e); err != nil {
		t.Fatal(err)
	}
}

func newTestPath(t testing.TB) *FastPath {
	t.Helper()
	netnsutil.RequireRoot(t)
	f, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

func eth(dst, src net.HardwareAddr, typ uint16) []byte {
	b := append(append([]byte{}, dst...), src...)
	return binary.BigEndian.AppendUint16(b, typ)
}

func ipv4(dst, src net.HardwareAddr, from, to netip.Addr, proto byte) []byte {
	b := eth(dst, src, 0x0800)
	h := make([]byte, 20)
	h[0], h[8], h[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(h[2:], uint16(20+8+len(payload)))
	a, z := from.As4(), to.As4()
	copy(h[12:], a[:])
	copy(h[16:], z[:])
	b = append(b, h...)
	b = append(b, 0x30, 0x39, 0x30, 0x39, 0, byte(8+len(payload)), 0, 0)
	return append(b, payload...)
}

func ipv6(dst, src net.HardwareAddr, from, to netip.Addr, next byte) []byte {
	b := eth(dst, src, 0x86dd)
	h := make([]byte, 40)
	h[0], h[6], h[7] = 0x60, next, 64
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	a, z := from.As16(), to.As16()
	copy(h[8:], a[:])
	copy(h[24:], z[:])
	b = append(b, h...)
	b = append(b, 0x30, 0x39, 0x30, 0x39, 0, byte(8+len(payload)), 0, 0)
	return append(b, payload...)
}

// icmp6 is an ICMPv6 message of type typ (its first payload byte).
func icmp6(dst, src net.HardwareAddr, from, to netip.Addr, typ byte) []byte {
	b := ipv6(dst, src, from, to, protoICMPv6)
	b[14+40] = typ
	return b
}

// run sends frame in on the loopback through both programs and returns their results.
func run(t testing.TB, f *FastPath, frame []byte) (tc, sk uint32) {
	t.Helper()
	tc, sk, err := tryRun(f, frame)
	if err != nil {
		t.Fatal(err)
	}
	return tc, sk
}

// tryRun is run returning BPF_PROG_RUN's refusals (it refuses, with EINVAL, an IPv4
// frame whose header is cut short: the kernel's test harness parses it first).
func tryRun(f *FastPath, frame []byte) (tc, sk uint32, err error) {
	ctx := skbContext{Ifindex: loIfindex}
	if tc, err = f.tcProg.Run(&ebpf.RunOptions{Data: frame, Context: ctx}); err != nil {
		return 0, 0, fmt.Errorf("run the tc program: %w", err)
	}
	if sk, err = f.skProg.Run(&ebpf.RunOptions{Data: frame, Context: ctx}); err != nil {
		return 0, 0, fmt.Errorf("run the socket filter: %w", err)
	}
	return tc, sk, nil
}

// wantFast is the fast path's rule written out in Go (see decide), for frames from
// portP with portD and portE as the other known ports.
func wantFast(fr []byte, p Port) bool {
	if len(fr) < 14 || fr[0]&1 != 0 || string(fr[6:12]) != string(p.MAC) {
		return false
	}
	switch binary.BigEndian.Uint16(fr[12:]) {
	case 0x0800:
		if !p.IPv4.IsValid() || len(fr) < 14+16 {
			return false
		}
		a := p.IPv4.As4()
		if string(fr[26:30]) != string(a[:]) {
			return false
		}
	case 0x86dd:
		if !p.IPv6.IsValid() || len(fr) < 14+24 {
			return false
		}
		switch fr[20] {
		case 6, 17:
		case 58: // echo request and reply only
			if len(fr) < 14+41 || (fr[54] != 128 && fr[54] != 129) {
				return false
			}
		default:
			return false
		}
		a := p.IPv6.As16()
		if string(fr[22:38]) != string(a[:]) {
			return false
		}
	default:
		return false
	}
	// Known destinations on p's switch, other than p itself.
	return p.Switch == 1 && string(fr[0:6]) == string(macD)
}

func TestDecide(t *testing.T) {
	f := newTestPath(t)
	publishNoLink(t, f, portP)
	publishNoLink(t, f, portD)
	publishNoLink(t, f, portE)
	ll := netip.MustParseAddr("fe80::1")
	other4 := netip.MustParseAddr("10.55.0.9")
	cases := []struct {
		name  string
		frame []byte
		fast  bool
	}{
		{"IPv4 UDP to a known port", ipv4(macD, macP, ip4P, ip4D, protoUDP), true},
		{"IPv4 ICMP to a known port", ipv4(macD, macP, ip4P, ip4D, 1), true},
		{"IPv6 TCP to a known port", ipv6(macD, macP, ip6P, ip6D, protoTCP), true},
		{"IPv6 UDP to a known port", ipv6(macD, macP, ip6P, ip6D, protoUDP), true},
		{"IPv4 from another address", ipv4(macD, macP, other4, ip4D, protoUDP), false},
		{"from another MAC", ipv4(macD, macU, ip4P, ip4D, protoUDP), false},
		{"broadcast", ipv4(bcast, macP, ip4P, ip4D, protoUDP), false},
		{"IPv6 multicast", ipv6(mcast6, macP, ip6P, ip6D, protoUDP), false},
		{"ARP", append(eth(macD, macP, 0x0806), make([]byte, 28)...), false},
		{"VLAN tag", append(eth(macD, macP, 0x8100), ipv4(macD, macP, ip4P, ip4D, protoUDP)[12:]...), false},
		{"unknown destination", ipv4(macU, macP, ip4P, ip4D, protoUDP), false},
		{"destination on another switch", ipv4(macE, macP, ip4P, ip4D, protoUDP), false},
		{"to itself (hairpin)", ipv4(macP, macP, ip4P, ip4P, protoUDP), false},
		{"ICMPv6 neighbour solicitation", icmp6(macD, macP, ip6P, ip6D, 135), false},
		{"ICMPv6 neighbour advertisement", icmp6(macD, macP, ip6P, ip6D, 136), false},
		{"ICMPv6 router advertisement", icmp6(macD, macP, ip6P, ip6D, 134), false},
		{"ICMPv6 echo request", icmp6(macD, macP, ip6P, ip6D, 128), true},
		{"ICMPv6 echo reply", icmp6(macD, macP, ip6P, ip6D, 129), true},
		{"ICMPv6 echo request from a link-local source", icmp6(macD, macP, netip.MustParseAddr("fe80::1"), ip6D, 128), false},
		{"IPv6 hop-by-hop header", ipv6(macD, macP, ip6P, ip6D, 0), false},
		{"IPv6 link-local source", ipv6(macD, macP, ll, ip6D, protoUDP), false},
	}
	fast := 0
	for _, c := range cases {
		if got := wantFast(c.frame, portP); got != c.fast {
			t.Fatalf("%s: the Go rule says fast=%v, the case %v", c.name, got, c.fast)
		}
		tc, sk := run(t, f, c.frame)
		want, wantSk := uint32(runSlow), uint32(runSlow)
		if c.fast {
			want, wantSk = runFast, 0
			fast++
		}
		if tc != want || sk != wantSk {
			t.Errorf("%s: tc program %#x (want %#x), socket filter %#x (want %#x)", c.name, tc, want, sk, wantSk)
		}
	}
	// The moved frames are counted: in at the source, out at the destination.
	sp, err := f.Stats(loIfindex)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := f.Stats(fakeDest)
	if err != nil {
		t.Fatal(err)
	}
	if sp.InFrames != uint64(fast) || sd.OutFrames != uint64(fast) || sp.OutFrames != 0 || sd.InFrames != 0 {
		t.Errorf("counters: source %+v, destination %+v; want %d frames in and out", sp, sd, fast)
	}
	if sp.InBytes == 0 || sp.InBytes != sd.OutBytes {
		t.Errorf("byte counters: source in %d, destination out %d", sp.InBytes, sd.OutBytes)
	}

	// A port without an IPv4 address sends no IPv4 frame down the fast path; one whose
	// Source is off sends none at all; a destination whose Dest is off receives none.
	noV4 := portP
	noV4.IPv4 = netip.Addr{}
	publishNoLink(t, f, noV4)
	if tc, sk := run(t, f, ipv4(macD, macP, ip4P, ip4D, protoUDP)); tc != runSlow || sk != runSlow {
		t.Errorf("port without IPv4: tc %#x, filter %#x; want both slow", tc, sk)
	}
	if tc, _ := run(t, f, ipv6(macD, macP, ip6P, ip6D, protoUDP)); tc != runFast {
		t.Errorf("port without IPv4, IPv6 frame: tc %#x; want fast", tc)
	}
	noSrc := portP
	noSrc.Source = false
	publishNoLink(t, f, noSrc)
	if tc, sk := run(t, f, ipv6(macD, macP, ip6P, ip6D, protoUDP)); tc != runSlow || sk != runSlow {
		t.Errorf("Source off: tc %#x, filter %#x; want both slow", tc, sk)
	}
	publishNoLink(t, f, portP)
	noDest := portD
	noDest.Dest = false
	publishNoLink(t, f, noDest)
	if tc, sk := run(t, f, ipv6(macD, macP, ip6P, ip6D, protoUDP)); tc != runSlow || sk != runSlow {
		t.Errorf("Dest off: tc %#x, filter %#x; want both slow", tc, sk)
	}
}

// FuzzDecide: for any frame, the tc program moves it exactly when the socket filter
// leaves it, and both follow the rule (wantFast).
func FuzzDecide(f *testing.F) {
	f.Add(ipv4(macD, macP, ip4P, ip4D, protoUDP))
	f.Add(ipv6(macD, macP, ip6P, ip6D, protoTCP))
	f.Add(ipv6(macD, macP, ip6P, ip6D, 58))
	f.Add(icmp6(macD, macP, ip6P, ip6D, 128))
	f.Add(icmp6(macD, macP, ip6P, ip6D, 135))
	f.Add(ipv4(bcast, macP, ip4P, ip4D, protoUDP))
	f.Add(append(eth(macD, macP, 0x0806), make([]byte, 28)...))
	f.Add(ipv4(macE, macP, ip4P, ip4D, protoUDP))
	fp := newTestPath(f)
	publishNoLink(f, fp, portP)
	publishNoLink(f, fp, portD)
	publishNoLink(f, fp, portE)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 4096 {
			return // BPF_PROG_RUN wants an Ethernet header, and a frame fits a page
		}
		tc, sk, err := tryRun(fp, frame)
		if errors.Is(err, unix.EINVAL) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		want := wantFast(frame, portP)
		if (tc == runFast) != want || (sk == 0) != want || (tc != runFast && tc != runSlow) {
			t.Fatalf("frame % x: tc %#x, filter %#x; rule says fast=%v", frame, tc, sk, want)
		}
	})
}
