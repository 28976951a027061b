package dataplane

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/epair-cni/epair/pkg/vale"
)

// Anti-spoofing (PortPolicy.AntiSpoofing) checks every frame a pod sends
// against the pod's identity (AttachRequest.PodMAC and PodIPs) before the
// switch's lookup sees it; a frame that fails is marked vale.DstDrop (so
// the switch counts it as "no_destination" too) and counted in the port's
// PortInfo.SpoofDrops. Its source MAC is never learned. A frame passes
// when:
//
//   - its Ethernet source is the pod's MAC (at most one 802.1Q/802.1ad tag
//     is looked through), and its EtherType is IPv4, ARP or IPv6 (anything
//     else is dropped);
//   - IPv4: the source address is one of the pod's IPv4 addresses;
//   - ARP (Ethernet/IPv4): the sender hardware address is the pod's MAC and
//     the sender IP one of the pod's IPv4 addresses or 0.0.0.0 (a probe);
//   - IPv6: the source address is one of the pod's IPv6 addresses, the
//     pod's link-local address or :: (DAD). Neighbor Discovery (ICMPv6
//     directly after the IPv6 header): router advertisements and redirects
//     are dropped; a neighbor advertisement's target must be one of the
//     pod's addresses or its link-local address; the source/target
//     link-layer address options of RS, NS and NA must carry the pod's MAC.
//
// The pod's link-local address is fe80::/64 with the modified EUI-64 of its
// MAC (RFC 4291 appendix A): pkg/epair sets the pod end's address
// generation mode to EUI-64, so that is the one the pod's kernel makes. A
// pod that switches its interface to stable-privacy link-local addresses
// (it needs CAP_NET_ADMIN in its namespace) loses IPv6 on the switch.
//
// The check runs in a Lookup wrapper (guardLookup) installed on every
// switch: for a port without anti-spoofing it costs one atomic pointer load
// per batch; with it, a few byte compares per frame, without allocation.

// spoofGuard is one port's identity as the packet path checks it.
type spoofGuard struct {
	mac   [6]byte
	ll    [16]byte // the pod's link-local address: fe80::/64 + EUI-64(mac)
	v4    [][4]byte
	v6    [][16]byte
	drops *atomic.Uint64
}

// podIdentity is what a pod port may send as.
type podIdentity struct {
	mac net.HardwareAddr
	ips []netip.Addr
}

func (id podIdentity) valid() bool { return len(id.mac) == 6 && len(id.ips) > 0 }

func newSpoofGuard(id podIdentity, drops *atomic.Uint64) *spoofGuard {
	g := &spoofGuard{drops: drops}
	copy(g.mac[:], id.mac)
	g.ll = linkLocalOf(g.mac)
	for _, a := range id.ips {
		a = a.Unmap()
		if a.Is4() {
			g.v4 = append(g.v4, a.As4())
		} else {
			g.v6 = append(g.v6, a.As16())
		}
	}
	return g
}

func (g *spoofGuard) has4(b []byte) bool {
	for i := range g.v4 {
		if bytes.Equal(g.v4[i][:], b) {
			return true
		}
	}
	return false
}

func (g *spoofGuard) has6(b []byte) bool {
	for i := range g.v6 {
		if bytes.Equal(g.v6[i][:], b) {
			return true
		}
	}
	return false
}

// linkLocalOf is the EUI-64 link-local address of mac: fe80::, then the MAC
// with the universal/local bit flipped and ff:fe in the middle.
func linkLocalOf(mac [6]byte) [16]byte {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return a
}

// ownLinkLocal reports whether b is the pod's link-local address.
func (g *spoofGuard) ownLinkLocal(b []byte) bool { return bytes.Equal(g.ll[:], b) }

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// EtherTypes and protocol numbers the guard reads.
const (
	etIPv4   = 0x0800
	etARP    = 0x0806
	etIPv6   = 0x86DD
	etVLAN   = 0x8100
	etQinQ   = 0x88A8
	ipICMPv6 = 58

	icmp6RS       = 133
	icmp6RA       = 134
	icmp6NS       = 135
	icmp6NA       = 136
	icmp6Redirect = 137
)

// allow reports whether a frame from the pod passes (b is the frame from its
// Ethernet header on).
func (g *spoofGuard) allow(b []byte) bool {
	if len(b) < 14 || !bytes.Equal(b[6:12], g.mac[:]) {
		return false
	}
	et, off := binary.BigEndian.Uint16(b[12:]), 14
	if et == etVLAN || et == etQinQ {
		if len(b) < 18 {
			return false
		}
		et, off = binary.BigEndian.Uint16(b[16:]), 18
	}
	p := b[off:]
	switch et {
	case etIPv4:
		return len(p) >= 20 && p[0]>>4 == 4 && g.has4(p[12:16])
	case etARP:
		// htype 1, ptype IPv4, hlen 6, plen 4.
		if len(p) < 28 || binary.BigEndian.Uint16(p[0:]) != 1 || binary.BigEndian.Uint16(p[2:]) != etIPv4 || p[4] != 6 || p[5] != 4 {
			return false
		}
		return bytes.Equal(p[8:14], g.mac[:]) && (g.has4(p[14:18]) || zero(p[14:18]))
	case etIPv6:
		if len(p) < 40 || p[0]>>4 != 6 {
			return false
		}
		src := p[8:24]
		if !g.has6(src) && !g.ownLinkLocal(src) && !zero(src) {
			return false
		}
		if p[6] != ipICMPv6 {
			return true
		}
		return g.allowND(p[40:])
	}
	return false
}

// allowND checks an ICMPv6 message (the IPv6 payload) for Neighbor
// Discovery spoofing.
func (g *spoofGuard) allowND(m []byte) bool {
	if len(m) < 4 {
		return false
	}
	var opts []byte
	switch m[0] {
	case icmp6RA, icmp6Redirect:
		return false
	case icmp6RS:
		if len(m) < 8 {
			return false
		}
		opts = m[8:]
	case icmp6NS:
		if len(m) < 24 {
			return false
		}
		opts = m[24:]
	case icmp6NA:
		if len(m) < 24 {
			return false
		}
		if t := m[8:24]; !g.has6(t) && !g.ownLinkLocal(t) {
			return false
		}
		opts = m[24:]
	default:
		return true
	}
	for len(opts) >= 2 {
		n := int(opts[1]) * 8
		if n == 0 || n > len(opts) {
			return false
		}
		// Source (1) and target (2) link-layer address options.
		if (opts[0] == 1 || opts[0] == 2) && (n < 8 || !bytes.Equal(opts[2:8], g.mac[:])) {
			return false
		}
		opts = opts[n:]
	}
	return true
}

// guardLookup is the dataplane's lookup on every switch: the switch's own
// learning lookup behind the per-port anti-spoofing guards.
type guardLookup struct {
	inner  *vale.Learning
	hdrLen int                          // the switch's virtio-net header, before the Ethernet header
	guards []atomic.Pointer[spoofGuard] // by source port index
}

var _ vale.LearningWrapper = (*guardLookup)(nil)

func newGuardLookup(inner *vale.Learning, maxPorts, hdrLen int) *guardLookup {
	return &guardLookup{inner: inner, hdrLen: hdrLen, guards: make([]atomic.Pointer[spoofGuard], maxPorts)}
}

// set installs (nil: removes) the guard of a port index.
func (l *guardLookup) set(idx uint16, g *spoofGuard) {
	if int(idx) < len(l.guards) {
		l.guards[idx].Store(g)
	}
}

// Lookup implements vale.Lookup: frames that fail the source port's guard
// are dropped, the runs in between go to the learning lookup (so a spoofed
// source MAC is never learned).
func (l *guardLookup) Lookup(src uint16, frames []vale.Frame, now int64) {
	var g *spoofGuard
	if int(src) < len(l.guards) {
		g = l.guards[src].Load()
	}
	if g == nil {
		l.inner.Lookup(src, frames, now)
		return
	}
	var bad uint64
	start := 0
	for i := range frames {
		// The headers are in the first fragment (the engine checked it holds the
		// virtio-net and Ethernet headers; allow checks the rest's lengths).
		if g.allow(frames[i].Data[l.hdrLen:]) {
			continue
		}
		if start < i {
			l.inner.Lookup(src, frames[start:i], now)
		}
		frames[i].Dst = vale.DstDrop
		bad++
		start = i + 1
	}
	if start < len(frames) {
		l.inner.Lookup(src, frames[start:], now)
	}
	if bad != 0 {
		g.drops.Add(bad)
	}
}

// PortDetached implements vale.Lookup; the switch tells the learning lookup
// itself (vale.LearningWrapper), and the port's guard was cleared before it
// detached.
func (l *guardLookup) PortDetached(port uint16) { l.set(port, nil) }

// WrappedLearning implements vale.LearningWrapper.
func (l *guardLookup) WrappedLearning() *vale.Learning { return l.inner }
