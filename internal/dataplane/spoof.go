package dataplane

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/epair-cni/epair/pkg/vale"
)

// Port security. Every switch's lookup is a guardLookup (below) in front of
// the switch's learning lookup, and every port is admitted to it by the
// dataplane: frames from a port it has not admitted (a port still being
// attached, or a VALE port someone else opened) are dropped. The host port
// learns source MACs; pod ports never do: the dataplane installs each pod's
// MAC (AttachRequest.PodMAC) and the host port's MAC as static FDB entries,
// and marks pod ports known-only (vale.Switch.SetKnownOnly), so a frame for an
// unknown unicast MAC goes to the host port and never to another pod. No pod
// can steal, blackhole or sniff another's traffic through the FDB.
//
// On top of that, a pod port has anti-spoofing unless its policy sets
// AllowSpoofing: every frame the pod sends is checked against the pod's
// identity (AttachRequest.PodMAC and PodIPs), and storm control limits the
// broadcast and multicast frames it sends (PortPolicy.BroadcastRate,
// MulticastRate). A frame refused either way is marked vale.DstRefused (the
// switch counts it as its refused drop) and counted in the port's
// PortInfo.Refused by reason. Anti-spoofing passes a frame when:
//
//   - its Ethernet source is the pod's MAC (at most one 802.1Q/802.1ad tag
//     is looked through), and its EtherType is IPv4, ARP or IPv6 (anything
//     else is refused as RefusedEtherType);
//   - IPv4: the source address is one of the pod's IPv4 addresses;
//   - ARP (Ethernet/IPv4): the sender hardware address is the pod's MAC and
//     the sender IP one of the pod's IPv4 addresses or 0.0.0.0 (a probe);
//   - IPv6: the source address is one of the pod's IPv6 addresses, the
//     pod's link-local address or :: (DAD). Neighbor Discovery (ICMPv6
//     directly after the IPv6 header): router advertisements and redirects
//     are refused; a neighbor advertisement's target must be one of the
//     pod's addresses or its link-local address; the source/target
//     link-layer address options of RS, NS and NA must carry the pod's MAC.
//
// The pod's link-local address is fe80::/64 with the modified EUI-64 of its
// MAC (RFC 4291 appendix A): pkg/epair sets the pod end's address
// generation mode to EUI-64, so that is the one the pod's kernel makes. A
// pod that switches its interface to stable-privacy link-local addresses
// (it needs CAP_NET_ADMIN in its namespace) loses IPv6 on the switch.
//
// The checks cost a few byte compares per frame and one token-bucket step
// per broadcast or multicast frame, without allocation; a port with neither
// (the host port) costs one atomic pointer load per batch.

// Refusal is why port security refused a frame from a pod.
type Refusal int

// The refusal reasons, in PortInfo.Refused.
const (
	// RefusedMAC: the Ethernet source is not the pod's MAC.
	RefusedMAC Refusal = iota
	// RefusedIP: the IPv4 or IPv6 source is not one of the pod's addresses
	// (or the IP header is malformed).
	RefusedIP
	// RefusedClaim: an ARP or Neighbor Discovery message claims an address
	// or MAC that is not the pod's, or is a router advertisement or redirect.
	RefusedClaim
	// RefusedEtherType: neither IPv4, ARP nor IPv6.
	RefusedEtherType
	// RefusedStorm: over the port's broadcast or multicast rate.
	RefusedStorm
	numRefusals

	allowed Refusal = -1
)

// NumRefusals is the length of RefusedCounts.
const NumRefusals = int(numRefusals)

var refusalNames = [numRefusals]string{"spoofed-mac", "spoofed-ip", "spoofed-arp-nd", "spoofed-ethertype", "storm"}

// String is the reason's name everywhere it is shown: agent API, valectl, NodeState and
// metrics ("spoofed-mac").
func (r Refusal) String() string {
	if r >= 0 && r < numRefusals {
		return refusalNames[r]
	}
	return "unknown"
}

// RefusedCounts are a port's refused frames by reason.
type RefusedCounts [numRefusals]uint64

// Total is the sum over all reasons.
func (c RefusedCounts) Total() uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// Spoofed is the sum of the anti-spoofing reasons (all but storm control).
func (c RefusedCounts) Spoofed() uint64 { return c.Total() - c[RefusedStorm] }

// refusedCounters are a port's refusal counters, added once per batch.
type refusedCounters [numRefusals]atomic.Uint64

func (c *refusedCounters) snapshot() RefusedCounts {
	var s RefusedCounts
	for i := range c {
		s[i] = c[i].Load()
	}
	return s
}

// spoofGuard is one port's identity as the packet path checks it.
type spoofGuard struct {
	mac   [6]byte
	mac32 uint32 // mac as the packet path compares it: bytes 0-3 and 4-5, little-endian
	mac16 uint16
	ll    [16]byte // the pod's link-local address: fe80::/64 + EUI-64(mac)
	v4    []uint32 // little-endian, as read from a header
	v6    [][16]byte
}

// podIdentity is what a pod port may send as.
type podIdentity struct {
	mac net.HardwareAddr
	ips []netip.Addr
	pod string // "namespace/name", not checked: for PortInfo
}

func (id podIdentity) valid() bool { return len(id.mac) == 6 && len(id.ips) > 0 }

func newSpoofGuard(id podIdentity) *spoofGuard {
	g := &spoofGuard{}
	copy(g.mac[:], id.mac)
	g.mac32, g.mac16 = binary.LittleEndian.Uint32(g.mac[0:4]), binary.LittleEndian.Uint16(g.mac[4:6])
	g.ll = linkLocalOf(g.mac)
	for _, a := range id.ips {
		a = a.Unmap()
		if a.Is4() {
			v := a.As4()
			g.v4 = append(g.v4, binary.LittleEndian.Uint32(v[:]))
		} else {
			g.v6 = append(g.v6, a.As16())
		}
	}
	return g
}

// has4 reports whether the 4 bytes at b are one of the pod's IPv4 addresses.
func (g *spoofGuard) has4(b []byte) bool {
	a := binary.LittleEndian.Uint32(b)
	for _, v := range g.v4 {
		if v == a {
			return true
		}
	}
	return false
}

// isMAC reports whether the 6 bytes at b are the pod's MAC.
func (g *spoofGuard) isMAC(b []byte) bool {
	return binary.LittleEndian.Uint32(b) == g.mac32 && binary.LittleEndian.Uint16(b[4:]) == g.mac16
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

// check returns allowed for a frame the pod may send, else why not (b is the
// frame from its Ethernet header on).
func (g *spoofGuard) check(b []byte) Refusal {
	if len(b) < 14 || !g.isMAC(b[6:12]) {
		return RefusedMAC
	}
	et, off := binary.BigEndian.Uint16(b[12:]), 14
	if et == etVLAN || et == etQinQ {
		if len(b) < 18 {
			return RefusedEtherType
		}
		et, off = binary.BigEndian.Uint16(b[16:]), 18
	}
	p := b[off:]
	switch et {
	case etIPv4:
		if len(p) >= 20 && p[0]>>4 == 4 && g.has4(p[12:16]) {
			return allowed
		}
		return RefusedIP
	case etARP:
		// htype 1, ptype IPv4, hlen 6, plen 4.
		if len(p) < 28 || binary.BigEndian.Uint16(p[0:]) != 1 || binary.BigEndian.Uint16(p[2:]) != etIPv4 || p[4] != 6 || p[5] != 4 {
			return RefusedClaim
		}
		if g.isMAC(p[8:14]) && (g.has4(p[14:18]) || zero(p[14:18])) {
			return allowed
		}
		return RefusedClaim
	case etIPv6:
		if len(p) < 40 || p[0]>>4 != 6 {
			return RefusedIP
		}
		src := p[8:24]
		if !g.has6(src) && !g.ownLinkLocal(src) && !zero(src) {
			return RefusedIP
		}
		if p[6] != ipICMPv6 || g.allowND(p[40:]) {
			return allowed
		}
		return RefusedClaim
	}
	return RefusedEtherType
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
		if (opts[0] == 1 || opts[0] == 2) && (n < 8 || !g.isMAC(opts[2:8])) {
			return false
		}
		opts = opts[n:]
	}
	return true
}

// stormBucket limits a rate of frames: a generic cell rate algorithm (a token
// bucket kept as one theoretical arrival time), so a step is two compares
// and an add, in the switch clock's nanoseconds.
type stormBucket struct {
	interval int64 // nanoseconds per frame; 0: no limit
	tol      int64 // how far ahead of now tat may run: (burst−1)·interval
	// tat is the theoretical arrival time of the next frame: written only by the port's
	// forwarding pass, read by a trace (probe) at any time, hence atomic.
	tat atomic.Int64
}

// stormBurst is how many frames a storm limit lets through at once: 100 ms
// worth of the rate, at least 16 (a pod's start-up ARP and ND exchange).
func stormBurst(rate uint32) int64 { return max(int64(rate)/10, 16) }

func (b *stormBucket) init(rate uint32) {
	if rate == 0 {
		return
	}
	b.interval = max(int64(time.Second)/int64(rate), 1)
	b.tol = (stormBurst(rate) - 1) * b.interval
}

// take reports whether a frame at time now is within the limit, and counts it when it is;
// with probe it only reports (a trace).
func (b *stormBucket) take(now int64, probe bool) bool {
	if b.interval == 0 {
		return true
	}
	t := max(b.tat.Load(), now)
	if t-now > b.tol {
		return false
	}
	if !probe {
		b.tat.Store(t + b.interval)
	}
	return true
}

// portSec is one admitted port's security as the packet path applies it.
// The storm buckets' state is written only by the port's forwarding pass
// (vale serialises Lookup calls of one source port); a policy change
// installs a new portSec.
type portSec struct {
	learn   bool        // learn source MACs (the host port); pod ports never do
	spoof   *spoofGuard // nil: spoofing allowed
	bcast   stormBucket // broadcast frames
	mcast   stormBucket // other group-addressed frames
	storm   bool        // either bucket limits
	refused *refusedCounters
}

// newPodSec is the security of a pod port under pol.
func newPodSec(id podIdentity, pol PortPolicy, refused *refusedCounters) *portSec {
	ps := &portSec{refused: refused}
	ps.bcast.init(pol.BroadcastRate)
	ps.mcast.init(pol.MulticastRate)
	ps.storm = pol.BroadcastRate != 0 || pol.MulticastRate != 0
	if !pol.AllowSpoofing {
		ps.spoof = newSpoofGuard(id)
	}
	return ps
}

// check returns allowed or why the frame (from its Ethernet header on) is
// refused; with probe (a trace) it changes nothing.
func (ps *portSec) check(b []byte, now int64, probe bool) Refusal {
	if ps.spoof != nil {
		if r := ps.spoof.check(b); r != allowed {
			return r
		}
	}
	if ps.storm && b[0]&1 != 0 {
		bk := &ps.mcast
		if binary.LittleEndian.Uint32(b[0:4]) == 0xFFFFFFFF && binary.LittleEndian.Uint16(b[4:6]) == 0xFFFF {
			bk = &ps.bcast
		}
		if !bk.take(now, probe) {
			return RefusedStorm
		}
	}
	return allowed
}

// guardLookup is the dataplane's lookup on every switch: the switch's own
// learning lookup behind each port's security.
type guardLookup struct {
	inner  *vale.Learning
	hdrLen int                       // the switch's virtio-net header, before the Ethernet header
	ports  []atomic.Pointer[portSec] // by source port index; nil: not admitted
	host   atomic.Int32              // the host port's index (setHost); -1: none
}

var (
	_ vale.LearningWrapper = (*guardLookup)(nil)
	_ vale.Prober          = (*guardLookup)(nil)
)

func newGuardLookup(inner *vale.Learning, maxPorts, hdrLen int) *guardLookup {
	l := &guardLookup{inner: inner, hdrLen: hdrLen, ports: make([]atomic.Pointer[portSec], maxPorts)}
	l.host.Store(-1)
	return l
}

// setHost admits the host port at idx (a learning port) and makes it the one
// destination of the pods' router-only multicast (routerOnly).
func (l *guardLookup) setHost(idx uint16) {
	l.set(idx, &portSec{learn: true})
	l.host.Store(int32(idx))
}

// toRouter sends the group-addressed frames of a pod port that only a router
// listens to (routerOnly) to the host port alone instead of flooding them to
// every pod: on a node with many pods whose IPv6 is on, their router
// solicitations (retransmitted for minutes) and MLD reports were most of an
// idle switch's work.
func (l *guardLookup) toRouter(frames []vale.Frame) {
	host := l.host.Load()
	if host < 0 {
		return
	}
	for i := range frames {
		if f := &frames[i]; f.Dst == vale.DstBroadcast && routerOnly(f.Data[l.hdrLen:]) {
			f.Dst = uint16(host)
		}
	}
}

// ICMPv6 messages only routers act on (RFC 4861, 2710, 3810).
const (
	icmp6RouterSolicit = 133
	icmp6MLDReport     = 131
	icmp6MLDDone       = 132
	icmp6MLDv2Report   = 143
)

// routerOnly reports whether the Ethernet frame b is an IPv6 router
// solicitation, MLD report or MLD done message to a group address: what only
// the node's router (the host port) needs from a pod. MLD messages carry a
// hop-by-hop header (router alert) before the ICMPv6 header. A VLAN-tagged
// frame or any other extension header is left to the flood.
func routerOnly(b []byte) bool {
	const ip6 = 14
	if len(b) < ip6+40+4 || b[0] != 0x33 || b[1] != 0x33 || b[12] != 0x86 || b[13] != 0xdd || b[ip6]>>4 != 6 {
		return false
	}
	next, off := b[ip6+6], ip6+40
	if next == 0 { // hop-by-hop options
		if len(b) < off+2 {
			return false
		}
		next, off = b[off], off+(int(b[off+1])+1)*8
	}
	if next != 58 || len(b) < off+4 {
		return false
	}
	switch b[off] {
	case icmp6RouterSolicit, icmp6MLDReport, icmp6MLDDone, icmp6MLDv2Report:
		return true
	}
	return false
}

// set admits a port index with its security (nil: no longer admitted).
func (l *guardLookup) set(idx uint16, ps *portSec) {
	if int(idx) < len(l.ports) {
		l.ports[idx].Store(ps)
	}
}

// Lookup implements vale.Lookup: frames of a port that is not admitted are
// dropped, frames its security refuses are marked vale.DstRefused and
// counted, and the runs in between go to the learning lookup (which learns
// their source only on a learning port).
func (l *guardLookup) Lookup(src uint16, frames []vale.Frame, now int64) {
	var ps *portSec
	if int(src) < len(l.ports) {
		ps = l.ports[src].Load()
	}
	if ps == nil {
		for i := range frames {
			frames[i].Dst = vale.DstDrop
		}
		return
	}
	if !ps.learn {
		defer l.toRouter(frames)
	}
	if ps.spoof == nil && !ps.storm {
		ps.resolve(l.inner, src, frames, now)
		return
	}
	var bad [numRefusals]uint32
	refused := false
	start := 0
	for i := range frames {
		// The headers are in the first fragment (the engine checked it holds the
		// virtio-net and Ethernet headers; check looks at the rest's lengths).
		r := ps.check(frames[i].Data[l.hdrLen:], now, false)
		if r == allowed {
			continue
		}
		if start < i {
			ps.resolve(l.inner, src, frames[start:i], now)
		}
		frames[i].Dst = vale.DstRefused
		frames[i].Reason = uint8(r) + 1 // Refusal r, for captures
		bad[r]++
		refused = true
		start = i + 1
	}
	if start < len(frames) {
		ps.resolve(l.inner, src, frames[start:], now)
	}
	if refused {
		for r, n := range bad {
			if n != 0 {
				ps.refused[r].Add(uint64(n))
			}
		}
	}
}

func (ps *portSec) resolve(inner *vale.Learning, src uint16, frames []vale.Frame, now int64) {
	if ps.learn {
		inner.Lookup(src, frames, now)
	} else {
		inner.Resolve(frames, now)
	}
}

// Probe implements vale.Prober: Lookup's decisions (not admitted, refused with the reason,
// or the learning lookup's Resolve) without learning, taking storm tokens or counting.
func (l *guardLookup) Probe(src uint16, frames []vale.Frame, now int64) {
	var ps *portSec
	if int(src) < len(l.ports) {
		ps = l.ports[src].Load()
	}
	for i := range frames {
		f := &frames[i]
		switch {
		case ps == nil:
			f.Dst = vale.DstDrop
		default:
			if r := ps.check(f.Data[l.hdrLen:], now, true); r != allowed {
				f.Dst, f.Reason = vale.DstRefused, uint8(r)+1
				continue
			}
			l.inner.Probe(src, frames[i:i+1], now)
			if !ps.learn {
				l.toRouter(frames[i : i+1])
			}
		}
	}
}

// admitted reports whether port idx is admitted, and its security.
func (l *guardLookup) admitted(idx uint16) *portSec {
	if int(idx) < len(l.ports) {
		return l.ports[idx].Load()
	}
	return nil
}

// PortDetached implements vale.Lookup; the switch tells the learning lookup
// itself (vale.LearningWrapper).
func (l *guardLookup) PortDetached(port uint16) { l.set(port, nil) }

// WrappedLearning implements vale.LearningWrapper.
func (l *guardLookup) WrappedLearning() *vale.Learning { return l.inner }
