package pcapfilter

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// maxDepth bounds nesting of parentheses and "not", so that Compile and Match recurse a
// bounded amount whatever the input.
const maxDepth = 64

// quals are the qualifiers of an id primitive: [proto] [dir] type. They are also what a
// bare value repeats (tcpdump's abbreviation: "tcp port 80 or 443").
type quals struct {
	proto  string // "", "ether", "ip", "ip6", "arp", "rarp", "tcp", "udp", "sctp"
	dir    dir
	hasDir bool
	typ    string // "host", "net", "port", "portrange", "proto"
}

// text is the normalised qualifier prefix: "tcp dst port", "ip src host", "net".
func (q quals) text() string {
	var parts []string
	if q.proto != "" {
		parts = append(parts, q.proto)
	}
	switch q.dir {
	case dirSrc:
		parts = append(parts, "src")
	case dirDst:
		parts = append(parts, "dst")
	case dirBoth:
		parts = append(parts, "src and dst")
	}
	return strings.Join(append(parts, q.typ), " ")
}

var (
	// protoQuals are the protocol qualifiers, each with the types it may qualify.
	// An empty list means the word is only a primitive of its own ("icmp").
	protoQuals = map[string][]string{
		"ether": {"host", "broadcast", "multicast"},
		"ip":    {"host", "net", "proto"},
		"ip6":   {"host", "net", "proto"},
		"arp":   {"host", "net"},
		"rarp":  {"host", "net"},
		"tcp":   {"port", "portrange"},
		"udp":   {"port", "portrange"},
		"sctp":  {"port", "portrange"},
		"icmp":  nil,
		"icmp6": nil,
	}
	typeQuals = map[string]bool{"host": true, "net": true, "port": true, "portrange": true}

	// etherTypes and protoNumbers give the primitives that stand alone.
	etherTypes = map[string]uint16{
		"ip": etherTypeIPv4, "ip6": etherTypeIPv6, "arp": etherTypeARP, "rarp": etherTypeRARP,
	}
	protoNumbers = map[string]struct {
		num uint8
		fam family
	}{
		"tcp":   {6, famIP4 | famIP6},
		"udp":   {17, famIP4 | famIP6},
		"sctp":  {132, famIP4 | famIP6},
		"icmp":  {1, famIP4},
		"icmp6": {58, famIP6},
	}
	transports = map[string]uint8{"": tpTCP | tpUDP | tpSCTP, "tcp": tpTCP, "udp": tpUDP, "sctp": tpSCTP}
)

// isKeyword reports whether w starts a primitive of the supported subset.
func isKeyword(w string) bool {
	_, isProto := protoQuals[w]
	return isProto || typeQuals[w] || w == "src" || w == "dst" || w == "proto" ||
		w == "vlan" || w == "broadcast" || w == "multicast"
}

// unsupportedWords are pcap-filter(7) keywords outside the subset, so that the error can
// say "unsupported" rather than "unknown".
var unsupportedWords = map[string]bool{
	"gateway": true, "mask": true, "less": true, "greater": true, "len": true, "byte": true,
	"protochain": true, "inbound": true, "outbound": true, "ifindex": true, "ifname": true,
	"on": true, "mpls": true, "pppoed": true, "pppoes": true, "geneve": true, "vxlan": true,
	"llc": true, "link": true, "fddi": true, "tr": true, "wlan": true, "ppp": true, "slip": true,
	"igmp": true, "igrp": true, "pim": true, "vrrp": true, "carp": true, "ah": true, "esp": true,
	"atalk": true, "aarp": true, "decnet": true, "lat": true, "sca": true, "moprc": true,
	"mopdl": true, "iso": true, "esis": true, "es-is": true, "isis": true, "is-is": true,
	"clnp": true, "stp": true, "ipx": true, "netbeui": true, "radio": true, "type": true,
	"subtype": true, "dir": true, "addr1": true, "addr2": true, "addr3": true, "addr4": true,
	"ta": true, "ra": true, "rnr": true, "rulenum": true, "reason": true, "rset": true,
	"srnr": true, "subrulenum": true, "action": true, "lane": true, "netmask": true,
}

// unsupportedHint reports whether w is pcap-filter syntax outside the subset, and why.
func unsupportedHint(w string) (string, bool) {
	switch {
	case strings.ContainsAny(w, "[]"):
		return "byte-offset expressions such as tcp[13] are not supported", true
	case strings.ContainsAny(w, "=<>+*%^"):
		return "comparisons and arithmetic are not supported", true
	case unsupportedWords[w]:
		return "not in the subset of pcap-filter(7) this package supports", true
	}
	return "", false
}

// looksLikeValue tells an address, number or range from a misspelt keyword.
func looksLikeValue(w string) bool {
	if _, isMAC := parseMAC(w); isMAC {
		return true
	}
	return w != "" && (w[0] >= '0' && w[0] <= '9' || w[0] == '\\' || strings.ContainsAny(w, ":./"))
}

// octalHint explains why a number with a leading zero is refused.
const octalHint = "leading zeros are not supported: libpcap reads them as octal"

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

type parser struct {
	expr  string
	toks  []token
	i     int
	depth int
	// ctx is what a bare value stands for (tcpdump's abbreviation): bareRepeat, the
	// qualifiers of the last id primitive; bareHost, at the start, "host"; bareNone, after
	// a primitive that takes no value (named by noValue), nothing, as in tcpdump.
	bare    bareRule
	ctx     quals
	noValue string
}

type bareRule uint8

const (
	bareHost bareRule = iota
	bareRepeat
	bareNone
)

func (p *parser) peek() token        { return p.toks[p.i] }
func (p *parser) peekAt(n int) token { return p.toks[min(p.i+n, len(p.toks)-1)] }
func (p *parser) next() token        { t := p.toks[p.i]; p.i = min(p.i+1, len(p.toks)-1); return t }
func (p *parser) setCtx(q quals)     { p.bare, p.ctx = bareRepeat, q }
func (p *parser) noCtx(prim string)  { p.bare, p.noValue = bareNone, prim }
func (p *parser) errAt(t token, msg, hint string) error {
	if t.kind == tBad {
		msg, hint = "unexpected "+t.describe(), `write "&&" or "||"; bitwise operators are not supported`
	}
	return &SyntaxError{Expr: p.expr, Offset: t.off, Msg: msg, Hint: hint}
}

// parseExpr parses term { (and|or) term }. pcap gives "and" and "or" the same precedence
// and associates them left to right, so "a or b and c" is "(a or b) and c".
func (p *parser) parseExpr() (*node, error) {
	left, err := p.parseTerm()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t.kind != tAnd && t.kind != tOr {
			return left, nil
		}
		p.next()
		right, err := p.parseTerm()
		if err != nil {
			return nil, err
		}
		o := opAnd
		if t.kind == tOr {
			o = opOr
		}
		left = combine(o, left, right)
	}
}

// parseTerm parses not term | ( expr ) | primitive.
func (p *parser) parseTerm() (*node, error) {
	t := p.peek()
	switch t.kind {
	case tNot, tLParen:
		if p.depth >= maxDepth {
			return nil, p.errAt(t, fmt.Sprintf("nesting deeper than %d", maxDepth), "")
		}
		p.depth++
		defer func() { p.depth-- }()
		p.next()
		if t.kind == tNot {
			n, err := p.parseTerm()
			if err != nil {
				return nil, err
			}
			return &node{op: opNot, kids: []*node{n}}, nil
		}
		// The qualifiers a bare value repeats flow into the parentheses and are restored
		// after them: "host a and (b or c) or d" is about hosts throughout.
		bare, ctx, noValue := p.bare, p.ctx, p.noValue
		n, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		if c := p.peek(); c.kind != tRParen {
			if c.kind == tEOF {
				return nil, p.errAt(t, `unclosed "("`, "")
			}
			return nil, p.unexpected(c, `"and", "or" or ")"`)
		}
		p.next()
		p.bare, p.ctx, p.noValue = bare, ctx, noValue
		return n, nil
	case tWord:
		return p.parsePrimitive()
	}
	msg := "expected a primitive, got " + t.describe()
	if p.i > 0 {
		prev := p.toks[p.i-1]
		msg = "expected a primitive after " + prev.describe() + ", got " + t.describe()
		if prev.kind == tLParen && t.kind == tRParen {
			return nil, p.errAt(t, msg, "empty parentheses")
		}
	}
	return nil, p.errAt(t, msg, "")
}

// unexpected is the error for token t where an operator (want) should be.
func (p *parser) unexpected(t token, want string) error {
	if t.kind == tRParen {
		return p.errAt(t, `unbalanced ")"`, "")
	}
	if t.kind == tWord {
		if hint, ok := unsupportedHint(t.text); ok {
			return p.errAt(t, fmt.Sprintf("unsupported word %q", t.text), hint)
		}
		if !isKeyword(t.text) && !looksLikeValue(t.text) {
			return p.errAt(t, fmt.Sprintf("unknown word %q", t.text), "")
		}
	}
	return p.errAt(t, "expected "+want+", got "+t.describe(), "")
}

// parsePrimitive parses [proto] [dir] [type] value, the stand-alone primitives, and a
// bare value, which takes the qualifiers in p.ctx.
func (p *parser) parsePrimitive() (*node, error) {
	t := p.peek()
	if !isKeyword(t.text) {
		if hint, ok := unsupportedHint(t.text); ok {
			return nil, p.errAt(t, fmt.Sprintf("unsupported word %q", t.text), hint)
		}
		if !looksLikeValue(t.text) {
			return nil, p.errAt(t, fmt.Sprintf("unknown word %q", t.text), "")
		}
		if p.bare == bareNone {
			return nil, p.errAt(t, "expected a primitive, got "+t.describe(), fmt.Sprintf(
				"a bare value repeats the qualifiers of the primitive before it, and %q takes no value; add host, net or port", p.noValue))
		}
		p.next()
		return p.parseValue(p.ctx, t, token{})
	}

	switch t.text {
	case "vlan":
		p.next()
		p.noCtx("vlan")
		n := &node{op: opVLAN, text: "vlan"}
		if v := p.peek(); v.kind == tWord && isDigits(v.text) {
			p.next()
			if len(v.text) > 1 && v.text[0] == '0' {
				return nil, p.errAt(v, fmt.Sprintf("expected a vlan id after \"vlan\", got %q", v.text), octalHint)
			}
			id, err := strconv.ParseUint(v.text, 10, 32)
			if err != nil || id > 4095 {
				return nil, p.errAt(v, fmt.Sprintf("vlan id %s out of range 0-4095", v.text), "")
			}
			n.lo, n.hasID, n.text = uint16(id), true, "vlan "+strconv.FormatUint(id, 10)
		}
		return n, nil
	case "broadcast", "multicast":
		p.next()
		return p.etherGroup(t.text), nil
	}

	var q quals
	last := t // the last qualifier read, for "after ..." in messages
	if _, ok := protoQuals[t.text]; ok {
		q.proto = t.text
		p.next()
	}
	if d := p.peek(); d.kind == tWord && (d.text == "src" || d.text == "dst") {
		p.next()
		last = d
		q.hasDir = true
		q.dir = dirSrc
		if d.text == "dst" {
			q.dir = dirDst
		}
		// "src or dst" and "src and dst" are single qualifiers in pcap.
		other := map[string]string{"src": "dst", "dst": "src"}[d.text]
		if o := p.peek(); (o.kind == tOr || o.kind == tAnd) && p.peekAt(1).kind == tWord && p.peekAt(1).text == other {
			p.next()
			last = p.next()
			q.dir = dirEither
			if o.kind == tAnd {
				q.dir = dirBoth
			}
		}
	}
	if ty := p.peek(); ty.kind == tWord && (typeQuals[ty.text] || ty.text == "proto" ||
		ty.text == "broadcast" || ty.text == "multicast") {
		p.next()
		last = ty
		q.typ = ty.text
	}

	switch {
	case q.typ == "" && !q.hasDir:
		// A protocol on its own: "tcp", "ip6".
		if q.proto == "ether" {
			return nil, p.errAt(p.peek(), `expected host, src, dst, broadcast or multicast after "ether", got `+p.peek().describe(), "")
		}
		p.noCtx(q.proto)
		if et, ok := etherTypes[q.proto]; ok {
			return &node{op: opEtherType, lo: et, text: q.proto}, nil
		}
		pn := protoNumbers[q.proto]
		return &node{op: opProto, fam: pn.fam, lo: uint16(pn.num), text: q.proto}, nil
	case q.typ == "":
		q.typ = "host" // "src 10.0.0.1", "ether dst 00:11:22:33:44:55"
	}

	if q.proto != "" && !slices.Contains(protoQuals[q.proto], q.typ) {
		hint := fmt.Sprintf("%q stands alone", q.proto)
		if allowed := protoQuals[q.proto]; len(allowed) > 0 {
			hint = fmt.Sprintf("%q qualifies only %s", q.proto, strings.Join(allowed, ", "))
		}
		return nil, p.errAt(last, fmt.Sprintf("%q does not apply to %q", q.proto, q.typ), hint)
	}
	if q.hasDir && (q.typ == "proto" || q.typ == "broadcast" || q.typ == "multicast") {
		return nil, p.errAt(last, fmt.Sprintf("a direction does not apply to %q", q.typ), "")
	}
	if q.typ == "broadcast" || q.typ == "multicast" {
		return p.etherGroup(q.typ), nil
	}
	return p.parseValue(q, p.next(), last)
}

func (p *parser) etherGroup(which string) *node {
	p.noCtx(which)
	if which == "broadcast" {
		return &node{op: opBroadcast, text: "broadcast"}
	}
	return &node{op: opMulticast, text: "multicast"}
}

// parseValue turns the value token v of an id primitive with qualifiers q into a node.
// after is the qualifier keyword before v, or the zero token for a bare value.
func (p *parser) parseValue(q quals, v token, after token) (*node, error) {
	bad := func(what, hint string) error {
		msg := "expected " + what
		if after.kind == tWord {
			msg += " after " + after.describe()
		} else if hint == "" {
			if p.bare == bareRepeat {
				hint = fmt.Sprintf("a bare value repeats the qualifiers before it, %q", q.text())
			} else {
				hint = `a bare value means "host"`
			}
		}
		return p.errAt(v, msg+", got "+v.describe(), hint)
	}
	if v.kind != tWord {
		return nil, bad(valueName(q), "")
	}

	n := &node{dir: q.dir}
	switch q.typ {
	case "host":
		if q.proto == "ether" {
			mac, ok := parseMAC(v.text)
			if !ok {
				return nil, bad("a MAC address", "")
			}
			n.op = opEtherAddr
			copy(n.addr[:], mac[:])
			n.text = q.text() + " " + formatMAC(mac)
			break
		}
		a, err := netip.ParseAddr(v.text)
		if err != nil || a.Zone() != "" {
			return nil, bad(valueName(q), addrHint(v.text))
		}
		if err := p.setAddr(n, q, v, netip.PrefixFrom(a, a.BitLen())); err != nil {
			return nil, err
		}
		n.text = q.text() + " " + a.String()
	case "net":
		pf, err := netip.ParsePrefix(v.text)
		if !strings.Contains(v.text, "/") {
			var a netip.Addr
			a, err = netip.ParseAddr(v.text)
			if a.Zone() != "" {
				err = fmt.Errorf("zone")
			}
			pf = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			hint := ""
			if isDigits(strings.ReplaceAll(v.text, ".", "")) && strings.Count(v.text, ".") < 3 {
				hint = "abbreviated networks are not supported; write a CIDR such as 10.0.0.0/8"
			}
			return nil, bad("an address or CIDR", hint)
		}
		if pf.Masked() != pf {
			return nil, p.errAt(v, fmt.Sprintf("non-network bits set in %q", v.text),
				fmt.Sprintf("the network is %s", pf.Masked()))
		}
		if err := p.setAddr(n, q, v, pf); err != nil {
			return nil, err
		}
		n.text = q.text() + " " + pf.String()
	case "port":
		port, err := p.parsePort(v, bad)
		if err != nil {
			return nil, err
		}
		n.op, n.tp, n.lo, n.hi = opPort, transports[q.proto], port, port
		n.text = q.text() + " " + strconv.Itoa(int(port))
	case "portrange":
		lo, hi, ok := strings.Cut(v.text, "-")
		if !ok {
			return nil, bad("a port range A-B", "")
		}
		a, err := p.parsePort(token{tWord, lo, v.off}, bad)
		if err != nil {
			return nil, err
		}
		b, err := p.parsePort(token{tWord, hi, v.off + len(lo) + 1}, bad)
		if err != nil {
			return nil, err
		}
		if a > b { // as libpcap does
			a, b = b, a
		}
		n.op, n.tp, n.lo, n.hi = opPort, transports[q.proto], a, b
		n.text = fmt.Sprintf("%s %d-%d", q.text(), a, b)
	case "proto":
		num, ok := parseProtoNumber(v.text)
		if !ok {
			hint := ""
			if len(v.text) > 1 && v.text[0] == '0' && isDigits(v.text) {
				hint = octalHint
			}
			return nil, bad("a protocol number 0-255 or tcp, udp, sctp, icmp, icmp6", hint)
		}
		n.op, n.lo = opProto, uint16(num)
		n.fam = map[string]family{"": famIP4 | famIP6, "ip": famIP4, "ip6": famIP6}[q.proto]
		n.text = q.text() + " " + strconv.Itoa(int(num))
	}
	p.setCtx(q)
	return n, nil
}

// setAddr fills an opAddr node for prefix pf, checking the address family against the
// protocol qualifier.
func (p *parser) setAddr(n *node, q quals, v token, pf netip.Prefix) error {
	a := pf.Addr()
	n.op = opAddr
	if a.Is4() {
		switch q.proto {
		case "":
			n.fam = famIP4 | famARP | famRARP
		case "ip":
			n.fam = famIP4
		case "arp":
			n.fam = famARP
		case "rarp":
			n.fam = famRARP
		default:
			return p.errAt(v, fmt.Sprintf("%q needs an IPv6 address, got %q", q.proto+" "+q.typ, v.text), "")
		}
		n.alen = 4
		b := a.As4()
		copy(n.addr[:], b[:])
	} else {
		if q.proto != "" && q.proto != "ip6" {
			return p.errAt(v, fmt.Sprintf("%q needs an IPv4 address, got %q", q.proto+" "+q.typ, v.text), "")
		}
		n.fam = famIP6
		n.alen = 16
		n.addr = a.As16()
	}
	for i := 0; i < pf.Bits(); i++ {
		n.mask[i/8] |= 0x80 >> (i % 8)
	}
	return nil
}

// parsePort parses a decimal port number; service names are not supported.
func (p *parser) parsePort(v token, bad func(what, hint string) error) (uint16, error) {
	if !isDigits(v.text) {
		hint := ""
		if v.text != "" && !looksLikeValue(v.text) {
			hint = "service names are not supported; write the number"
		}
		return 0, bad("a port number", hint)
	}
	if len(v.text) > 1 && v.text[0] == '0' {
		return 0, bad("a port number", octalHint)
	}
	port, err := strconv.ParseUint(v.text, 10, 32)
	if err != nil || port > 65535 {
		return 0, p.errAt(v, fmt.Sprintf("port %s out of range 0-65535", v.text), "")
	}
	return uint16(port), nil
}

// valueName says what value q expects, for messages.
func valueName(q quals) string {
	switch {
	case q.typ == "host" && q.proto == "ether":
		return "a MAC address"
	case q.typ == "host" && q.proto == "ip6":
		return "an IPv6 address"
	case q.typ == "host" && q.proto != "":
		return "an IPv4 address"
	case q.typ == "host":
		return "an IP address"
	case q.typ == "net":
		return "an address or CIDR"
	case q.typ == "portrange":
		return "a port range A-B"
	case q.typ == "proto":
		return "a protocol number"
	}
	return "a port number"
}

// addrHint explains why a word after "host" is not an IP address.
func addrHint(w string) string {
	switch _, isMAC := parseMAC(w); {
	case isMAC:
		return `use "ether host" for a MAC address`
	case strings.Contains(w, "/"):
		return `use "net" for a CIDR`
	case strings.Contains(w, "%"):
		return "zoned IPv6 addresses are not supported"
	case isDigits(w):
		return `write "port ` + w + `" for a port`
	case w != "" && !isDigits(strings.ReplaceAll(w, ".", "")) && !strings.Contains(w, ":"):
		return "host names are not supported; write the address"
	}
	return ""
}

// parseProtoNumber accepts 0-255 and, with or without tcpdump's backslash, the names of
// the protocols this package knows.
func parseProtoNumber(w string) (uint8, bool) {
	name := strings.TrimPrefix(w, `\`)
	if pn, ok := protoNumbers[name]; ok {
		return pn.num, true
	}
	if !isDigits(w) || len(w) > 1 && w[0] == '0' {
		return 0, false
	}
	n, err := strconv.ParseUint(w, 10, 8)
	return uint8(n), err == nil
}

// parseMAC accepts six groups of one or two hex digits separated by ':' or '-'.
func parseMAC(w string) ([6]byte, bool) {
	var mac [6]byte
	sep := byte(':')
	if strings.Contains(w, "-") {
		sep = '-'
	}
	for i := range mac {
		end := strings.IndexByte(w, sep)
		if i == len(mac)-1 {
			end = len(w)
		}
		if end < 1 || end > 2 {
			return mac, false
		}
		v, err := strconv.ParseUint(w[:end], 16, 8)
		if err != nil {
			return mac, false
		}
		mac[i] = byte(v)
		w = w[end:]
		if i < len(mac)-1 {
			w = w[1:]
		}
	}
	return mac, true
}

func formatMAC(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}
