package pcapfilter

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// namedFrame is a test frame; the table tests name the frames each expression must match.
type namedFrame struct {
	name  string
	bytes []byte
}

var (
	macA     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	macBcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	macMc6   = net.HardwareAddr{0x33, 0x33, 0x00, 0x01, 0x00, 0x02}
)

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(src, dst net.HardwareAddr, t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: t}
}

func ip4(src, dst string, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
}

func ip6(src, dst string, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
}

func tcp(ip gopacket.NetworkLayer, sp, dp layers.TCPPort) *layers.TCP {
	t := &layers.TCP{SrcPort: sp, DstPort: dp, Seq: 1, SYN: true, Window: 1024}
	if err := t.SetNetworkLayerForChecksum(ip); err != nil {
		panic(err)
	}
	return t
}

func udp(ip gopacket.NetworkLayer, sp, dp layers.UDPPort) *layers.UDP {
	u := &layers.UDP{SrcPort: sp, DstPort: dp}
	if err := u.SetNetworkLayerForChecksum(ip); err != nil {
		panic(err)
	}
	return u
}

func arp(op uint16, sha net.HardwareAddr, spa string, tha net.HardwareAddr, tpa string) *layers.ARP {
	return &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
		SourceHwAddress: sha, SourceProtAddress: net.ParseIP(spa).To4(),
		DstHwAddress: tha, DstProtAddress: net.ParseIP(tpa).To4(),
	}
}

// testFrames builds the frames the tests and the fuzz seeds share. Comments give what
// each frame carries; the match table depends on these values.
func testFrames(tb testing.TB) []namedFrame {
	tb.Helper()
	payload := gopacket.Payload("0123456789abcdef")
	// A non-first fragment whose data starts with bytes that read as ports 53 -> 53, so
	// that a matcher ignoring the fragment offset would match "port 53".
	fragData := gopacket.Payload{0x00, 0x35, 0x00, 0x35, 0, 8, 0, 0}
	var fs []namedFrame
	add := func(name string, ls ...gopacket.SerializableLayer) {
		fs = append(fs, namedFrame{name, serialize(tb, ls...)})
	}

	// A→B 10.0.0.1:12345 → 10.0.0.2:80 TCP.
	i := ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolTCP)
	add("tcp4", eth(macA, macB, layers.EthernetTypeIPv4), i, tcp(i, 12345, 80), payload)
	tcp4 := fs[len(fs)-1].bytes
	// A→B 10.0.0.3:5353 → 10.0.0.4:53 UDP.
	i = ip4("10.0.0.3", "10.0.0.4", layers.IPProtocolUDP)
	add("udp4", eth(macA, macB, layers.EthernetTypeIPv4), i, udp(i, 5353, 53), payload)
	// A→B 10.0.0.1 → 10.0.0.2 ICMP echo.
	add("icmp4", eth(macA, macB, layers.EthernetTypeIPv4), ip4("10.0.0.1", "10.0.0.2", layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}, payload)
	// A→B 10.0.0.5:22 → 10.0.0.6:2222 TCP, IHL 6: a Router Alert option (94 04 00 00),
	// which a matcher assuming IHL 5 would read as ports 37892 → 0.
	i = ip4("10.0.0.5", "10.0.0.6", layers.IPProtocolTCP)
	i.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	add("opts4", eth(macA, macB, layers.EthernetTypeIPv4), i, tcp(i, 22, 2222), payload)
	// A→B 10.0.0.3 → 10.0.0.4 UDP, fragment offset 185 (non-first).
	i = ip4("10.0.0.3", "10.0.0.4", layers.IPProtocolUDP)
	i.FragOffset = 185
	add("frag4", eth(macA, macB, layers.EthernetTypeIPv4), i, fragData, payload)
	// A→ff:ff:ff:ff:ff:ff 10.0.0.9:68 → 255.255.255.255:67 UDP.
	i = ip4("10.0.0.9", "255.255.255.255", layers.IPProtocolUDP)
	add("bcast4", eth(macA, macBcast, layers.EthernetTypeIPv4), i, udp(i, 68, 67), payload)
	// A→B 802.1Q id 100, 192.168.1.1:1000 → 192.168.1.2:2000 UDP.
	i = ip4("192.168.1.1", "192.168.1.2", layers.IPProtocolUDP)
	add("vlan4", eth(macA, macB, layers.EthernetTypeDot1Q),
		&layers.Dot1Q{VLANIdentifier: 100, Priority: 3, Type: layers.EthernetTypeIPv4}, i, udp(i, 1000, 2000), payload)
	// A→B 802.1ad id 200, 10.1.0.1:1234 → 10.1.0.2:80 TCP.
	i = ip4("10.1.0.1", "10.1.0.2", layers.IPProtocolTCP)
	add("ad4", eth(macA, macB, layers.EthernetTypeQinQ),
		&layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeIPv4}, i, tcp(i, 1234, 80), payload)
	// A→B 10.0.0.7:2905 → 10.0.0.8:3868 SCTP.
	add("sctp4", eth(macA, macB, layers.EthernetTypeIPv4), ip4("10.0.0.7", "10.0.0.8", layers.IPProtocolSCTP),
		&layers.SCTP{SrcPort: 2905, DstPort: 3868, VerificationTag: 7}, payload)
	// A→broadcast: who has 10.0.0.2? tell 10.0.0.1.
	add("arpreq", eth(macA, macBcast, layers.EthernetTypeARP),
		arp(layers.ARPRequest, macA, "10.0.0.1", net.HardwareAddr{0, 0, 0, 0, 0, 0}, "10.0.0.2"))
	// B→A: 10.0.0.2 is at B, to 10.0.0.1.
	add("arprep", eth(macB, macA, layers.EthernetTypeARP), arp(layers.ARPReply, macB, "10.0.0.2", macA, "10.0.0.1"))
	// A→B [2001:db8::1]:40000 → [2001:db8::2]:443 TCP.
	i6 := ip6("2001:db8::1", "2001:db8::2", layers.IPProtocolTCP)
	add("tcp6", eth(macA, macB, layers.EthernetTypeIPv6), i6, tcp(i6, 40000, 443), payload)
	// A→33:33:00:01:00:02 [fe80::1]:546 → [ff02::1:2]:547 UDP.
	i6 = ip6("fe80::1", "ff02::1:2", layers.IPProtocolUDP)
	add("udp6mc", eth(macA, macMc6, layers.EthernetTypeIPv6), i6, udp(i6, 546, 547), payload)
	// A→B 2001:db8::1 → 2001:db8::2 ICMPv6 echo.
	i6 = ip6("2001:db8::1", "2001:db8::2", layers.IPProtocolICMPv6)
	icmp6 := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	if err := icmp6.SetNetworkLayerForChecksum(i6); err != nil {
		tb.Fatal(err)
	}
	add("icmp6", eth(macA, macB, layers.EthernetTypeIPv6), i6, icmp6, &layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1}, payload)
	// A→B [2001:db8::1]:5000 → [2001:db8::3]:53 UDP behind a Fragment header, offset 0.
	i6 = ip6("2001:db8::1", "2001:db8::3", layers.IPProtocolIPv6Fragment)
	add("frag6", eth(macA, macB, layers.EthernetTypeIPv6), i6,
		&layers.IPv6Fragment{NextHeader: layers.IPProtocolUDP, MoreFragments: true, Identification: 9}, udp(i6, 5000, 53), payload)
	// A→B 2001:db8::1 → 2001:db8::3 UDP, Fragment header offset 100 (non-first); data
	// reading as ports 53 → 53.
	add("frag6b", eth(macA, macB, layers.EthernetTypeIPv6), ip6("2001:db8::1", "2001:db8::3", layers.IPProtocolIPv6Fragment),
		&layers.IPv6Fragment{NextHeader: layers.IPProtocolUDP, FragmentOffset: 100, Identification: 9}, fragData, payload)
	// A→B 2001:db8::1 → 2001:db8::2, Hop-by-Hop header (next: TCP, PadN) then a TCP
	// header 40000 → 443: extension headers other than Fragment are not walked.
	hbh := gopacket.Payload{6, 0, 1, 4, 0, 0, 0, 0, 0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x04, 0, 0, 0, 0, 0}
	add("hbh6", eth(macA, macB, layers.EthernetTypeIPv6), ip6("2001:db8::1", "2001:db8::2", layers.IPProtocolIPv6HopByHop), hbh)

	// tcp4 cut inside the TCP ports, and inside the Ethernet header; and nothing.
	fs = append(fs, namedFrame{"trunc4", tcp4[:14+20+2]}, namedFrame{"short", tcp4[:10]}, namedFrame{"empty", nil})
	return fs
}

// TestFramesAreWhatTheySay keeps the hand-described frames honest: gopacket decodes
// each to the layers the comments in testFrames claim.
func TestFramesAreWhatTheySay(t *testing.T) {
	want := map[string][]gopacket.LayerType{
		"tcp4":   {layers.LayerTypeIPv4, layers.LayerTypeTCP},
		"udp4":   {layers.LayerTypeIPv4, layers.LayerTypeUDP},
		"icmp4":  {layers.LayerTypeICMPv4},
		"opts4":  {layers.LayerTypeIPv4, layers.LayerTypeTCP},
		"frag4":  {layers.LayerTypeIPv4},
		"bcast4": {layers.LayerTypeUDP},
		"vlan4":  {layers.LayerTypeDot1Q, layers.LayerTypeUDP},
		"ad4":    {layers.LayerTypeDot1Q, layers.LayerTypeTCP},
		"sctp4":  {layers.LayerTypeSCTP},
		"arpreq": {layers.LayerTypeARP},
		"arprep": {layers.LayerTypeARP},
		"tcp6":   {layers.LayerTypeIPv6, layers.LayerTypeTCP},
		"udp6mc": {layers.LayerTypeUDP},
		"icmp6":  {layers.LayerTypeICMPv6},
		"frag6":  {layers.LayerTypeIPv6Fragment},
		"frag6b": {layers.LayerTypeIPv6Fragment},
		"hbh6":   {layers.LayerTypeIPv6HopByHop, layers.LayerTypeTCP},
	}
	for _, f := range testFrames(t) {
		lts, ok := want[f.name]
		if !ok {
			continue
		}
		p := gopacket.NewPacket(f.bytes, layers.LayerTypeEthernet, gopacket.Default)
		for _, lt := range lts {
			if p.Layer(lt) == nil {
				t.Errorf("%s: no %v layer in %v", f.name, lt, p)
			}
		}
		switch f.name {
		case "opts4":
			if ihl := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4).IHL; ihl != 6 {
				t.Errorf("opts4: IHL %d, want 6", ihl)
			}
		case "frag4":
			if p.Layer(layers.LayerTypeUDP) != nil {
				t.Errorf("frag4: decodes as a first fragment")
			}
		case "frag6b":
			if off := p.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment).FragmentOffset; off != 100 {
				t.Errorf("frag6b: fragment offset %d, want 100", off)
			}
		}
	}
}
