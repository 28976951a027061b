package pcapfilter_test

import (
	"fmt"
	"net"

	"github.com/epair-cni/epair/pkg/pcapfilter"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func Example() {
	f, err := pcapfilter.Compile("tcp port 80 or 443 and not src net 192.168.0.0/16")
	if err != nil {
		panic(err)
	}
	fmt.Println(f)

	// 10.0.0.1:40000 -> 10.0.0.2:443, TCP SYN.
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2)}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	_ = gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
			EthernetType: layers.EthernetTypeIPv4}, ip, tcp)

	fmt.Println(f.Match(buf.Bytes()))
	fmt.Println(f.Match(buf.Bytes()[:20])) // truncated: no IPv4 header
	// Output:
	// (tcp port 80 or tcp port 443) and not src net 192.168.0.0/16
	// true
	// false
}

func ExampleCompile_error() {
	_, err := pcapfilter.Compile("tcp port http")
	fmt.Println(err)
	// Output:
	// pcapfilter: "tcp port http": expected a port number after "port", got "http" at offset 9 (service names are not supported; write the number)
}
