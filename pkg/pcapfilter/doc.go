// Package pcapfilter compiles a subset of tcpdump's filter language, pcap-filter(7), into
// a tree of small nodes, and matches Ethernet frames against it without cgo, libpcap or
// BPF. The packet capture uses it to select frames on the switch's forwarding path, so
// Match never allocates, never panics on any bytes, and is safe for concurrent use.
//
// # Supported subset
//
// Primitives, with pcap-filter(7) meanings:
//
//	[ip|ip6|arp|rarp] [src|dst] host ADDR   IPv4 or IPv6 address
//	[src|dst] ADDR                          host implied
//	ADDR                                    bare address: "host ADDR"
//	[ip|ip6|arp|rarp] [src|dst] net CIDR    10.0.0.0/8, 2001:db8::/32, or an address (/32, /128)
//	[tcp|udp|sctp] [src|dst] port N         0-65535, decimal
//	[tcp|udp|sctp] [src|dst] portrange A-B  inclusive; A > B is swapped, as libpcap does
//	ether [src|dst] [host] MAC              six groups of 1-2 hex digits, ':' or '-'
//	[ether] broadcast, [ether] multicast    destination MAC all ones / group bit set
//	ip, ip6, arp, rarp                      EtherType
//	tcp, udp, sctp, icmp, icmp6             IP protocol (icmp only IPv4, icmp6 only IPv6)
//	[ip|ip6] proto N                        0-255, or tcp, udp, sctp, icmp, icmp6 (with or
//	                                        without tcpdump's backslash: "ip proto \tcp")
//	vlan [N]                                802.1Q/802.1ad tagged; tag id N (0-4095)
//
// The direction may also be "src or dst" (the default) or "src and dst". Operators are
// "and"/"&&", "or"/"||", "not"/"!" and parentheses. As in pcap, "not" binds tightest, and
// "and" and "or" have equal precedence and associate left to right: "a or b and c" is
// "(a or b) and c".
//
// Anything else is an error wrapping ErrSyntax that names the word and its offset: host
// names, service names ("port http"), abbreviated networks ("net 10"), "net ... mask",
// hex or octal numbers (a leading zero is refused, as libpcap would read it as octal),
// byte-offset expressions ("tcp[13] & 2 != 0"), less/greater, and every other
// pcap-filter keyword. So are bad addresses, "net 10.0.0.1/8" (non-network bits set, as
// tcpdump says), ports above 65535, unbalanced or empty parentheses and dangling
// operators.
//
// # Abbreviations
//
// As in tcpdump, a bare value after and/or (also inside "not" and parentheses) repeats
// the qualifiers of the id primitive before it: "host 1.1.1.1 or 2.2.2.2" is "host 1.1.1.1
// or host 2.2.2.2", "tcp dst port 80 or 443" is "tcp dst port 80 or tcp dst port 443", and
// "host a and (b or c) or d" is about hosts throughout. This holds for host, net, port,
// portrange, proto and ether host. After a primitive that takes no value (tcp, vlan,
// broadcast) a bare value is an error, as in tcpdump; at the start of the expression a
// bare address means "host" (libpcap refuses it). String returns the expression with
// abbreviations written out.
//
// # Semantics, and where they differ from libpcap
//
// host and net with an IPv4 address match the IPv4 source or destination and, as tcpdump
// does, the sender or target protocol address of ARP and RARP; with "ip", "arp" or "rarp"
// only that protocol. With an IPv6 address they match the IPv6 source or destination.
//
// port and portrange match TCP, UDP and SCTP ports over IPv4 and IPv6. Over IPv4 they
// honour the header length (IHL) and, like libpcap, match only the first fragment
// (fragment offset 0). Over IPv6 the transport is the Next Header of the fixed header,
// or that of one Fragment header when the fragment offset is 0 (libpcap's port does not
// follow the Fragment header; the first fragment carries the ports, so we do). No other
// extension header is walked: a TCP segment behind a Hop-by-Hop header is not "tcp" and
// has no ports, exactly as in libpcap. "ip6 proto N" (and tcp, udp, sctp, icmp6 over IPv6)
// is the Next Header, or the Next Header of a Fragment header, as in libpcap.
//
// VLAN is simplified. libpcap's "vlan" shifts the offsets of the primitives after it, so
// "ip" alone does not match a tagged IPv4 frame. Here every frame is decoded through at
// most one 802.1Q/802.1ad tag (EtherType 0x8100, 0x88a8 or 0x9100) before any primitive is
// tested, whatever the position of "vlan" in the expression: "ip", "host", "port" and the
// rest match tagged and untagged frames alike, "vlan" matches tagged frames and
// "vlan N" the frames whose (outer) tag id is N. A second tag is not decoded: in a
// double-tagged frame only ether and vlan primitives can match.
//
// A primitive is false unless every byte it reads is inside the frame: "ether dst" and
// "broadcast" need 6 bytes, "ether src" and "ether host" 12, "ip" 14, "host" the whole
// fixed IP header, "port" the ports. So "not tcp port 80" matches a TCP frame truncated
// before its ports, where a BPF program would reject the frame at the out-of-bounds load.
//
// Against libpcap 1.10.3 (pcap_compile without optimisation, then pcap_offline_filter)
// on this package's test frames and 20,000 random expressions of the subset, the results
// differ only where this section says. Two extensions are accepted that libpcap rejects:
// a bare address at the start of the expression, and a protocol name after proto
// without the backslash ("ip proto tcp"). With its optimiser on, as tcpdump runs it,
// libpcap 1.10.3 answered a few long expressions differently from its own unoptimised
// code (and matched nothing where some frames plainly match); this package follows the
// unoptimised semantics.
//
// # Model
//
// Compile lexes the expression, parses it by recursive descent (nesting of parentheses
// and "not" is limited to 64) and builds a tree: and/or nodes hold all operands of a run
// of the same operator, and each primitive node holds its operands pre-decoded (masked
// address, port range, protocol number). Match decodes the frame once into a small value
// on its stack (offsets of the network and transport headers, protocol, VLAN id), then
// walks the tree with short-circuit evaluation; primitives read the frame only at offsets
// that decoding checked.
package pcapfilter
