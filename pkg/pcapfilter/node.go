package pcapfilter

import "strings"

// op is what a node tests. Operators have kids; primitives test the frame.
type op uint8

const (
	opAnd       op = iota // all kids match; two or more kids
	opOr                  // some kid matches; two or more kids
	opNot                 // the one kid does not match
	opEtherAddr           // ether host/src/dst: MAC in addr[:6]
	opBroadcast           // destination MAC ff:ff:ff:ff:ff:ff
	opMulticast           // group bit of the destination MAC (broadcast included)
	opVLAN                // 802.1Q/802.1ad tag present; tag id lo if hasID
	opEtherType           // ip, ip6, arp, rarp: EtherType lo (after one tag)
	opProto               // tcp, udp, sctp, icmp, icmp6, [ip|ip6] proto: protocol lo in fam
	opAddr                // host, net: addr/mask in the address fields of fam
	opPort                // port, portrange: lo..hi in the ports of the transports tp
)

// dir is a pcap direction qualifier.
type dir uint8

const (
	dirEither dir = iota // "src or dst", the default
	dirSrc
	dirDst
	dirBoth // "src and dst"
)

func (d dir) test(src, dst bool) bool {
	switch d {
	case dirSrc:
		return src
	case dirDst:
		return dst
	case dirBoth:
		return src && dst
	default:
		return src || dst
	}
}

// family selects the network headers an opAddr or opProto node looks in.
type family uint8

const (
	famIP4 family = 1 << iota
	famIP6
	famARP
	famRARP
)

// Transport bits of opPort nodes.
const (
	tpTCP uint8 = 1 << iota
	tpUDP
	tpSCTP
)

// node is one operator or primitive of a compiled filter. Nodes are built once by Compile
// and only read afterwards, which is what makes Filter safe for concurrent use.
type node struct {
	op   op
	kids []*node

	dir   dir
	fam   family
	tp    uint8    // opPort
	alen  uint8    // opAddr: 4 or 16
	hasID bool     // opVLAN
	addr  [16]byte // opAddr: network, already masked; opEtherAddr: MAC in addr[:6]
	mask  [16]byte // opAddr
	lo    uint16   // opPort low port; opVLAN id; opProto protocol; opEtherType type
	hi    uint16   // opPort high port

	text string // primitives: the normalised primitive, fully qualified
}

// combine joins left and right with and/or, flattening runs of the same operator so that
// long chains cost a loop in Match, not a deep recursion.
func combine(o op, left, right *node) *node {
	var kids []*node
	if left.op == o {
		kids = append(kids, left.kids...)
	} else {
		kids = append(kids, left)
	}
	if right.op == o {
		kids = append(kids, right.kids...)
	} else {
		kids = append(kids, right)
	}
	return &node{op: o, kids: kids}
}

// format writes n in the normalised syntax: keywords spelled out, every primitive fully
// qualified (no abbreviations), and parentheses around every operand that is itself an
// and/or, so the text reads the same under any precedence convention.
func (n *node) format(b *strings.Builder) {
	switch n.op {
	case opAnd, opOr:
		sep := " and "
		if n.op == opOr {
			sep = " or "
		}
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			k.formatOperand(b)
		}
	case opNot:
		b.WriteString("not ")
		n.kids[0].formatOperand(b)
	default:
		b.WriteString(n.text)
	}
}

func (n *node) formatOperand(b *strings.Builder) {
	if n.op == opAnd || n.op == opOr {
		b.WriteByte('(')
		n.format(b)
		b.WriteByte(')')
		return
	}
	n.format(b)
}
