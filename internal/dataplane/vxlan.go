package dataplane

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A node's VXLAN tunnel endpoint is named after its pod CIDRs, which every node knows of
// every other: its address is the network address of its pod CIDR (of each family, as
// Flannel does), and its MAC is derived from its IPv4 (else IPv6) pod CIDR. So no node has to
// publish anything for the others to reach it, and a reboot changes nothing.

// vtep is a peer's tunnel endpoint for one of its pod CIDRs.
type vtep struct {
	cidr  netip.Prefix     // the peer's pod CIDR routed into the tunnel
	addr  netip.Addr       // the endpoint's address (cidr's network address)
	mac   net.HardwareAddr // the endpoint's MAC (vtepMAC of the peer's first pod CIDR)
	under netip.Addr       // the peer's underlay address (the VXLAN packets' destination)
}

// vtepMAC is the tunnel MAC of the node whose (first) pod CIDR is c: locally administered,
// unicast, the rest a hash of c.
func vtepMAC(c netip.Prefix) net.HardwareAddr {
	h := sha256.Sum256([]byte(c.Masked().String()))
	return net.HardwareAddr{0x0e, h[0], h[1], h[2], h[3], h[4]}
}

// identityCIDR is the pod CIDR a node's tunnel MAC is derived from: its first IPv4 one, else
// its first.
func identityCIDR(cidrs []netip.Prefix) (netip.Prefix, bool) {
	for _, c := range cidrs {
		if c.Addr().Is4() {
			return c, true
		}
	}
	if len(cidrs) > 0 {
		return cidrs[0], true
	}
	return netip.Prefix{}, false
}

// ownPodCIDRs are this node's tunnel identity: the first switch's pod CIDRs (the primary
// network; secondary switches are node-local).
func (d *Dataplane) ownPodCIDRs() []netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.order) == 0 {
		return nil
	}
	return podNetOf([]*SwitchConfig{&d.switches[d.order[0]].cfg}).cidrs
}

// tunnelTo routes the peer's pod CIDR c into the VXLAN device toward the peer at under
// (creating the device if needed) and returns the tunnel endpoint it programmed.
func (d *Dataplane) tunnelTo(c netip.Prefix, under netip.Addr, peerCIDRs []netip.Prefix) (vtep, error) {
	id, ok := identityCIDR(peerCIDRs)
	if !ok {
		return vtep{}, errors.New("the peer has no pod CIDR")
	}
	t := vtep{cidr: c, addr: c.Masked().Addr(), mac: vtepMAC(id), under: under}
	link, err := d.vxlanDevice()
	if err != nil {
		return vtep{}, err
	}
	idx := link.Attrs().Index
	fam := netlink.FAMILY_V4
	if t.addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	// The endpoint's address resolves to its MAC, and that MAC is behind the peer's
	// underlay address (written only when the kernel has something else).
	v := d.view
	if v == nil || v.neigh[t.addr] != t.mac.String() {
		if err := d.nl.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: fam, State: netlink.NUD_PERMANENT, IP: t.addr.AsSlice(), HardwareAddr: t.mac}); err != nil {
			return vtep{}, fmt.Errorf("neighbour %v on %s: %w", t.addr, d.vxlanName(), err)
		}
	}
	if v == nil || v.fdb[t.mac.String()] != under {
		if err := d.nl.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
			IP: under.AsSlice(), HardwareAddr: t.mac}); err != nil {
			return vtep{}, fmt.Errorf("forwarding entry %v → %v on %s: %w", t.mac, under, d.vxlanName(), err)
		}
	}
	if v.has(c, t.addr, idx) {
		return t, nil
	}
	rt := &netlink.Route{Dst: prefixIPNet(c), Gw: t.addr.AsSlice(), LinkIndex: idx, Flags: int(netlink.FLAG_ONLINK), Protocol: RouteProtocol}
	if err := d.nl.RouteReplace(rt); err != nil {
		return vtep{}, fmt.Errorf("route into %s via %v: %w", d.vxlanName(), t.addr, err)
	}
	return t, nil
}

func (d *Dataplane) vxlanName() string {
	if d.cfg.VXLANDevice != "" {
		return d.cfg.VXLANDevice
	}
	return DefaultVXLANDevice
}

// vxlanDevice returns the node's VXLAN device, made (with this node's tunnel MAC and
// endpoint addresses, no learning: every entry is programmed) if it does not exist.
func (d *Dataplane) vxlanDevice() (netlink.Link, error) {
	name := d.vxlanName()
	if l, err := d.nl.LinkByName(name); err == nil {
		if _, ok := l.(*netlink.Vxlan); ok {
			return l, nil
		}
		return nil, fmt.Errorf("%s exists and is not a VXLAN device (%s)", name, l.Type())
	}
	own := d.ownPodCIDRs()
	id, ok := identityCIDR(own)
	if !ok {
		return nil, errors.New("this node has no pod CIDR to name its tunnel endpoint")
	}
	port := d.cfg.VXLANPort
	if port == 0 {
		port = DefaultVXLANPort
	}
	vni := d.cfg.VXLANID
	if vni == 0 {
		vni = DefaultVXLANID
	}
	mtu := 0
	if d.cfg.VXLANMTU > 0 {
		mtu = d.cfg.VXLANMTU
	}
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: vtepMAC(id), MTU: mtu}, VxlanId: vni, Port: port, Learning: false}
	if err := d.nl.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create VXLAN device %s (VNI %d, UDP port %d): %w", name, vni, port, err)
	}
	l, err := d.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("VXLAN device %s: %w", name, err)
	}
	for _, c := range own {
		bits := 32
		if c.Addr().Is6() {
			bits = 128
		}
		a := &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(c.Masked().Addr(), bits))}
		if err := d.nl.AddrReplace(l, a); err != nil {
			return nil, errors.Join(fmt.Errorf("address %v on %s: %w", a, name, err), d.nl.LinkDel(l))
		}
	}
	if err := d.nl.LinkSetUp(l); err != nil {
		return nil, errors.Join(fmt.Errorf("set %s up: %w", name, err), d.nl.LinkDel(l))
	}
	return l, nil
}

// pruneTunnels removes the VXLAN device's neighbour and forwarding entries no tunnel in
// keep wants, and the device itself when keep is empty.
func (d *Dataplane) pruneTunnels(keep []vtep) error {
	l, err := d.nl.LinkByName(d.vxlanName())
	if err != nil {
		return nil // no device, nothing to prune
	}
	if len(keep) == 0 {
		if err := d.nl.LinkDel(l); err != nil {
			return fmt.Errorf("remove %s: %w", d.vxlanName(), err)
		}
		return nil
	}
	idx := l.Attrs().Index
	addrs, macs := map[netip.Addr]bool{}, map[string]netip.Addr{}
	for _, t := range keep {
		addrs[t.addr] = true
		macs[t.mac.String()] = t.under
	}
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := d.nl.NeighList(idx, fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range ns {
			a, _ := netip.AddrFromSlice(n.IP)
			if n.State&netlink.NUD_PERMANENT != 0 && !addrs[a.Unmap()] {
				errs = append(errs, ignoreGone(d.nl.NeighDel(&n)))
			}
		}
	}
	fdb, err := d.nl.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range fdb {
		if n.State&netlink.NUD_PERMANENT == 0 || n.HardwareAddr.String() == "00:00:00:00:00:00" {
			continue
		}
		a, _ := netip.AddrFromSlice(n.IP)
		if under, ok := macs[n.HardwareAddr.String()]; !ok || under != a.Unmap() {
			errs = append(errs, ignoreGone(d.nl.NeighDel(&n)))
		}
	}
	return errors.Join(errs...)
}

func ignoreGone(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// TunnelStats are the VXLAN device's counters: what crossed to and from VXLAN peers, and what
// could not be encapsulated or was refused (errors and drops).
type TunnelStats struct {
	RxPackets, RxBytes, RxErrors uint64
	TxPackets, TxBytes, TxErrors uint64
}

// TunnelStats returns the VXLAN device's counters; false when there is no device (no VXLAN
// peer).
func (d *Dataplane) TunnelStats() (TunnelStats, bool) {
	l, err := d.nl.LinkByName(d.vxlanName())
	if err != nil || l.Attrs().Statistics == nil {
		return TunnelStats{}, false
	}
	st := l.Attrs().Statistics
	return TunnelStats{RxPackets: st.RxPackets, RxBytes: st.RxBytes, RxErrors: st.RxErrors + st.RxDropped,
		TxPackets: st.TxPackets, TxBytes: st.TxBytes, TxErrors: st.TxErrors + st.TxDropped + st.TxCarrierErrors}, true
}
