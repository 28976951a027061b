package pcapfilter

import (
	"bytes"
	"encoding/binary"
)

const (
	etherTypeIPv4   = 0x0800
	etherTypeARP    = 0x0806
	etherTypeRARP   = 0x8035
	etherTypeIPv6   = 0x86dd
	etherTypeVLAN   = 0x8100 // 802.1Q
	etherTypeQinQ   = 0x88a8 // 802.1ad
	etherTypeQinQv1 = 0x9100 // pre-standard 802.1ad, which libpcap's "vlan" also accepts

	ipProtoFragment = 44 // IPv6 Fragment extension header
)

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// headers is what Match learns about a frame before evaluating the tree: where each
// header starts and whether its fixed part lies inside the frame. decode fills it once per
// frame; primitives only read it, so their bounds were checked here.
type headers struct {
	tagged bool   // the outer EtherType is a VLAN tag
	vidOK  bool   // the tag's TCI is present
	vid    uint16 // VLAN id, if vidOK
	etype  uint16 // EtherType after at most one tag; 0 if unknown
	l3     int    // offset of the network header

	ip4, ip6, arp bool // fixed IPv4 (20 bytes), IPv6 (40) or IPv4-over-Ethernet ARP/RARP (28) header present

	proto int // IPv4 protocol, or IPv6 next header after at most one Fragment header; -1 if none
	nh6   int // the IPv6 header's own next header; -1 if none
	l4    int // offset of the transport ports (4 bytes present, first fragment); 0 if none
}

func (h *headers) decode(f []byte) {
	h.proto, h.nh6 = -1, -1
	if len(f) < 14 {
		return
	}
	h.etype = binary.BigEndian.Uint16(f[12:14])
	h.l3 = 14
	if h.etype == etherTypeVLAN || h.etype == etherTypeQinQ || h.etype == etherTypeQinQv1 {
		h.tagged = true
		h.etype = 0
		if len(f) < 18 {
			return
		}
		h.vidOK = true
		h.vid = binary.BigEndian.Uint16(f[14:16]) & 0x0fff
		h.etype = binary.BigEndian.Uint16(f[16:18])
		h.l3 = 18
	}
	l3 := f[h.l3:]
	switch h.etype {
	case etherTypeIPv4:
		if len(l3) < 20 {
			return
		}
		h.ip4 = true
		h.proto = int(l3[9])
		ihl := int(l3[0]&0x0f) * 4
		// Ports only in the first fragment, and after the options (IHL), as libpcap.
		if fragOff := binary.BigEndian.Uint16(l3[6:8]) & 0x1fff; fragOff == 0 && ihl >= 20 && len(l3) >= ihl+4 {
			h.l4 = h.l3 + ihl
		}
	case etherTypeIPv6:
		if len(l3) < 40 {
			return
		}
		h.ip6 = true
		h.nh6 = int(l3[6])
		h.proto = h.nh6
		off := 40
		if h.nh6 == ipProtoFragment {
			if len(l3) < 48 {
				return
			}
			h.proto = int(l3[40])
			if binary.BigEndian.Uint16(l3[42:44])>>3 != 0 {
				return // not the first fragment: no ports
			}
			off = 48
		}
		if len(l3) >= off+4 {
			h.l4 = h.l3 + off
		}
	case etherTypeARP, etherTypeRARP:
		// Protocol type IPv4, 6-byte hardware and 4-byte protocol addresses: the layout
		// whose sender and target addresses "host" reads.
		h.arp = len(l3) >= 28 && binary.BigEndian.Uint16(l3[2:4]) == etherTypeIPv4 && l3[4] == 6 && l3[5] == 4
	}
}

func transport(proto int) uint8 {
	switch proto {
	case 6:
		return tpTCP
	case 17:
		return tpUDP
	case 132:
		return tpSCTP
	}
	return 0
}

func (n *node) match(f []byte, h *headers) bool {
	switch n.op {
	case opAnd:
		for _, k := range n.kids {
			if !k.match(f, h) {
				return false
			}
		}
		return true
	case opOr:
		for _, k := range n.kids {
			if k.match(f, h) {
				return true
			}
		}
		return false
	case opNot:
		return !n.kids[0].match(f, h)
	// The ether primitives need only the bytes they read, as in BPF: "ether dst" and
	// "broadcast" match a frame cut after the destination MAC.
	case opEtherAddr:
		if n.dir == dirDst {
			return len(f) >= 6 && bytes.Equal(f[0:6], n.addr[:6])
		}
		return len(f) >= 12 && n.dir.test(bytes.Equal(f[6:12], n.addr[:6]), bytes.Equal(f[0:6], n.addr[:6]))
	case opBroadcast:
		return len(f) >= 6 && bytes.Equal(f[0:6], broadcastMAC[:])
	case opMulticast:
		return len(f) >= 1 && f[0]&1 != 0
	case opVLAN:
		return h.tagged && (!n.hasID || h.vidOK && h.vid == n.lo)
	case opEtherType:
		return h.etype == n.lo
	case opProto:
		p := int(n.lo)
		return n.fam&famIP4 != 0 && h.ip4 && h.proto == p ||
			n.fam&famIP6 != 0 && h.ip6 && (h.nh6 == p || h.proto == p)
	case opAddr:
		return n.matchAddr(f, h)
	case opPort:
		if h.l4 == 0 || n.tp&transport(h.proto) == 0 {
			return false
		}
		sp := binary.BigEndian.Uint16(f[h.l4 : h.l4+2])
		dp := binary.BigEndian.Uint16(f[h.l4+2 : h.l4+4])
		return n.dir.test(n.lo <= sp && sp <= n.hi, n.lo <= dp && dp <= n.hi)
	}
	return false
}

// matchAddr tests host and net: the IPv4 or IPv6 source and destination, or ARP's
// sender and target protocol addresses.
func (n *node) matchAddr(f []byte, h *headers) bool {
	var src, dst int
	switch {
	case h.ip4 && n.fam&famIP4 != 0:
		src, dst = h.l3+12, h.l3+16
	case h.ip6 && n.fam&famIP6 != 0:
		src, dst = h.l3+8, h.l3+24
	case h.arp && (h.etype == etherTypeARP && n.fam&famARP != 0 || h.etype == etherTypeRARP && n.fam&famRARP != 0):
		src, dst = h.l3+14, h.l3+24
	default:
		return false
	}
	return n.dir.test(n.inNet(f[src:src+int(n.alen)]), n.inNet(f[dst:dst+int(n.alen)]))
}

func (n *node) inNet(a []byte) bool {
	for i := range a {
		if a[i]&n.mask[i] != n.addr[i] {
			return false
		}
	}
	return true
}
