package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// AnnounceGateways has every switch's host port announce its gateway
// addresses to the pods: a gratuitous ARP request for each IPv4 gateway and
// an unsolicited neighbor advertisement (router, override) to all nodes for
// each IPv6 one, sent by the node's stack on the TAP so that they cross the
// switch like any frame from the host. The agent calls it after a restart
// once the running pods are attached again: a pod whose neighbor entry for
// the gateway holds another MAC (an agent that did not keep the host port's
// MAC) then updates it at once instead of after its entry goes stale.
// Switches are not added or removed meanwhile (it holds off AddSwitch and
// RemoveSwitch), so it never sends on a host port that is going away.
func (d *Dataplane) AnnounceGateways() error {
	d.swMu.Lock()
	defer d.swMu.Unlock()
	d.mu.Lock()
	type target struct {
		tap   int
		name  string
		mac   net.HardwareAddr
		addrs []netip.Prefix
	}
	var ts []target
	for _, name := range d.order {
		s := d.switches[name]
		ts = append(ts, target{s.tapIndex, s.tapName, s.tapMAC, s.cfg.HostPort.Gateways})
	}
	d.mu.Unlock()
	return d.inNS(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("announce gateways: packet socket: %w", err)
		}
		defer unix.Close(fd)
		var errs []error
		for _, t := range ts {
			for _, g := range t.addrs {
				var f []byte
				if a := g.Addr().Unmap(); a.Is4() {
					f = gratuitousARP(t.mac, a)
				} else {
					f = unsolicitedNA(t.mac, a)
				}
				sa := &unix.SockaddrLinklayer{Ifindex: t.tap, Halen: 6}
				copy(sa.Addr[:], f[0:6])
				if err := unix.Sendto(fd, f, 0, sa); err != nil {
					errs = append(errs, fmt.Errorf("announce gateway %v on %s: %w", g.Addr(), t.name, err))
				}
			}
		}
		return errors.Join(errs...)
	})
}

// gratuitousARP is a broadcast ARP request for ip from mac with ip as both
// sender and target address (RFC 5227's announcement).
func gratuitousARP(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 14+28)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:], etARP)
	p := b[14:]
	binary.BigEndian.PutUint16(p[0:], 1) // Ethernet
	binary.BigEndian.PutUint16(p[2:], etIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 1) // request
	a := ip.As4()
	copy(p[8:14], mac)
	copy(p[14:18], a[:])
	copy(p[24:28], a[:])
	return b
}

// unsolicitedNA is a neighbor advertisement of ip at mac to all nodes
// (ff02::1), with the router and override flags and a target link-layer
// address option (RFC 4861 section 7.2.6).
func unsolicitedNA(mac net.HardwareAddr, ip netip.Addr) []byte {
	const icmpLen = 24 + 8
	b := make([]byte, 14+40+icmpLen)
	copy(b[0:6], []byte{0x33, 0x33, 0, 0, 0, 1})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:], etIPv6)
	h := b[14:]
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], icmpLen)
	h[6], h[7] = ipICMPv6, 255
	src := ip.As16()
	dst := netip.MustParseAddr("ff02::1").As16()
	copy(h[8:24], src[:])
	copy(h[24:40], dst[:])
	m := h[40:]
	m[0] = icmp6NA
	m[4] = 0xa0 // router, override
	copy(m[8:24], src[:])
	m[24], m[25] = 2, 1 // target link-layer address, 8 bytes
	copy(m[26:32], mac)
	binary.BigEndian.PutUint16(m[2:], icmp6Checksum(src, dst, m))
	return b
}

// icmp6Checksum is the ICMPv6 checksum of m (its checksum field zero) with
// the IPv6 pseudo-header.
func icmp6Checksum(src, dst [16]byte, m []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	sum += uint32(len(m)) + ipICMPv6
	add(m)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
