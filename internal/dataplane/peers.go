package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks the routes the dataplane installs toward its peers ("proto 77" in
// `ip route`), so that a resync finds and removes the ones no peer wants any more, also
// after a restart.
const RouteProtocol netlink.RouteProtocol = 77

// PeerResync is how often the peer routes are checked against the peers (a route deleted
// by hand, or an underlay that came up later, is repaired within it).
const PeerResync = 2 * time.Second

// Peer is another node of the pod network: its addresses on the underlay (at most one
// per family) and its pods' CIDRs.
type Peer struct {
	Name      string
	Addresses []netip.Addr
	PodCIDRs  []netip.Prefix
}

// Peer modes (PeerState.Mode, and Config.PeerMode for the choice).
const (
	// ModeRouted: the peer's address is on a subnet of this node (one L2 segment): its
	// pod CIDRs are routed to it directly, as Flannel's host-gw does.
	ModeRouted = "routed"
	// ModeVXLAN: the peer's pod CIDRs are routed into the node's kernel VXLAN device
	// (VXLANDevice), which encapsulates toward the peer's address over UDP, as Flannel's
	// vxlan backend does.
	ModeVXLAN = "vxlan"
	// ModeAuto (Config.PeerMode only): routed to peers on a subnet of the node, VXLAN to
	// the others (Calico's CrossSubnet, Flannel's DirectRouting).
	ModeAuto = "auto"
	// ModeUnreachable: no route could be installed (PeerState.Reason says why).
	ModeUnreachable = "unreachable"
)

// VXLAN defaults (Config.VXLANPort, VXLANDevice, VXLANID).
const (
	DefaultVXLANPort   = 4789
	DefaultVXLANDevice = "epair.vxlan"
	DefaultVXLANID     = 1
	// VXLANOverhead is what VXLAN adds to a frame over IPv4 (outer IP, UDP, VXLAN and
	// inner Ethernet headers); VXLANOverhead6 over IPv6.
	VXLANOverhead  = 50
	VXLANOverhead6 = 70
)

// PeerState is a peer as the dataplane programs it.
type PeerState struct {
	Peer
	Mode   string
	Reason string
	// Routes is the number of its pod CIDRs routed now.
	Routes int
	// Counted says that PeerCounters hold the peer's traffic as its nftables counters
	// have it (Peers reads them; with Config.Masquerade only, the counters being in the
	// dataplane's table). Without it they are zero.
	Counted bool
	PeerCounters
}

// ValidatePeers checks peers against each other and the node's own pod network (own:
// its pod CIDRs), and names the first problem.
func ValidatePeers(peers []Peer, own []netip.Prefix) error {
	c := NewPeerChecker(own)
	for _, p := range peers {
		if err := c.Add(p); err != nil {
			return err
		}
	}
	return nil
}

// PeerChecker checks peers one at a time against the node's pod network and the peers it
// accepted before (to leave a bad one out of a set rather than refuse the set).
type PeerChecker struct {
	own, taken []netip.Prefix
	names      map[string]bool
}

// NewPeerChecker checks against own, the node's pod CIDRs.
func NewPeerChecker(own []netip.Prefix) *PeerChecker {
	return &PeerChecker{own: own, names: map[string]bool{}}
}

// Add accepts p, or says what is wrong with it (and then does not accept it).
func (pc *PeerChecker) Add(p Peer) error {
	if p.Name == "" {
		return fmt.Errorf("peer: name: must not be empty: %w", ErrInvalid)
	}
	if pc.names[p.Name] {
		return fmt.Errorf("peer %s: named twice: %w", p.Name, ErrInvalid)
	}
	fams := map[bool]bool{}
	if len(p.Addresses) == 0 {
		return fmt.Errorf("peer %s: addresses: at least one is required: %w", p.Name, ErrInvalid)
	}
	for _, a := range p.Addresses {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
			return fmt.Errorf("peer %s: address %v: want a unicast address: %w", p.Name, a, ErrInvalid)
		}
		if fams[a.Is4()] {
			return fmt.Errorf("peer %s: addresses %v: at most one per family: %w", p.Name, p.Addresses, ErrInvalid)
		}
		fams[a.Is4()] = true
	}
	if len(p.PodCIDRs) == 0 {
		return fmt.Errorf("peer %s: podCIDRs: at least one is required: %w", p.Name, ErrInvalid)
	}
	for i, c := range p.PodCIDRs {
		if !c.IsValid() || c.Masked() != c {
			return fmt.Errorf("peer %s: pod CIDR %v: want a network address (%v): %w", p.Name, c, c.Masked(), ErrInvalid)
		}
		for _, o := range pc.own {
			if o.Overlaps(c) {
				return fmt.Errorf("peer %s: pod CIDR %v overlaps this node's %v: %w", p.Name, c, o, ErrInvalid)
			}
		}
		for _, o := range append(slices.Clone(p.PodCIDRs[:i]), pc.taken...) {
			if o.Overlaps(c) {
				return fmt.Errorf("peer %s: pod CIDR %v overlaps another peer's %v: %w", p.Name, c, o, ErrInvalid)
			}
		}
	}
	pc.names[p.Name] = true
	pc.taken = append(pc.taken, p.PodCIDRs...)
	return nil
}

// SetPeers makes peers the node's peers: their pod CIDRs are routed to them (and not
// masqueraded), the routes of peers no longer listed are removed, now and at every resync.
// It returns the peers' state after the first resync (without their counters: Peers
// reads those).
func (d *Dataplane) SetPeers(ctx context.Context, peers []Peer) ([]PeerState, error) {
	d.mu.Lock()
	own := d.podNetwork().cidrs
	d.mu.Unlock()
	if err := ValidatePeers(peers, own); err != nil {
		return nil, fmt.Errorf("set peers: %w", err)
	}
	d.peerMu.Lock()
	defer d.peerMu.Unlock()
	d.peers = slices.Clone(peers)
	if d.nft != nil {
		var cidrs []netip.Prefix
		for _, p := range peers {
			cidrs = append(cidrs, p.PodCIDRs...)
		}
		d.mu.Lock()
		pn := d.podNetwork()
		d.mu.Unlock()
		if err := d.nft.setPeers(ctx, pn, cidrs); err != nil {
			return nil, fmt.Errorf("set peers: %w", err)
		}
	}
	return d.resyncPeersLocked(), nil
}

// Peers returns the peers' state as of the last resync, with their traffic counters as
// they are now (one nft command; PeerState.Counted false when they cannot be read).
func (d *Dataplane) Peers() []PeerState {
	d.peerMu.Lock()
	st := slices.Clone(d.peerStates)
	d.peerMu.Unlock()
	if d.nft == nil || len(st) == 0 {
		return st
	}
	names := make([]string, len(st))
	for i, p := range st {
		names[i] = p.Name
	}
	cs, err := d.nft.count.counters(context.Background(), names)
	if err != nil {
		return st // not counted: the resync reports the table's problems
	}
	for i := range st {
		if c, ok := cs[st[i].Name]; ok {
			st[i].Counted, st[i].PeerCounters = true, c
		}
	}
	return st
}

// peerResyncer resyncs the peer routes every PeerResync until peerStop closes.
func (d *Dataplane) peerResyncer() {
	every(PeerResync, d.peerStop, d.peerDone, func() {
		d.peerMu.Lock()
		d.resyncPeersLocked()
		d.peerMu.Unlock()
	})
}

// resyncPeersLocked brings the kernel in line with the peers: for each, its mode (routed
// when its address is on a subnet of this node, VXLAN otherwise, as Config.PeerMode
// allows), the route of each pod CIDR (through the peer's address, or into the VXLAN
// device with the neighbour and forwarding entries of the peer's tunnel endpoint), and
// every route of RouteProtocol, tunnel entry or VXLAN device no peer wants removed; with
// the nftables table, each peer's traffic counters (peercount.go), the counters of peers
// no longer listed removed. peerMu held.
func (d *Dataplane) resyncPeersLocked() []PeerState {
	d.view = d.kernelPeers() // what is programmed: only differences are written
	defer func() { d.view = nil }()
	want := map[netip.Prefix]bool{}
	var tunnels []vtep // the VXLAN peers' endpoints
	states := make([]PeerState, 0, len(d.peers))
	for _, p := range d.peers {
		st := PeerState{Peer: p}
		var reasons []string
		for _, c := range p.PodCIDRs {
			// The peer's address of c's family; a tunnel may carry c over the other.
			i := slices.IndexFunc(p.Addresses, func(a netip.Addr) bool { return a.Is4() == c.Addr().Is4() })
			addr := p.Addresses[max(i, 0)]
			mode, r, err := d.peerPath(addr)
			switch {
			case err != nil:
			case mode == ModeRouted && i < 0:
				err = errors.New("the peer has no address of its family to route it to")
			case mode == ModeRouted:
				err = d.routeVia(c, addr, r)
			default:
				// One tunnel per peer (its endpoint MAC has one forwarding entry): over
				// its IPv4 address when it has one, whatever c's family.
				under := p.Addresses[max(slices.IndexFunc(p.Addresses, netip.Addr.Is4), 0)]
				var t vtep
				if t, err = d.tunnelTo(c, under, p.PodCIDRs); err == nil {
					tunnels = append(tunnels, t)
				}
			}
			if err != nil {
				reasons = append(reasons, fmt.Sprintf("%v: %v", c, err))
				continue
			}
			if st.Mode == "" || st.Mode == mode {
				st.Mode = mode
			} else {
				st.Mode = mode + "," + st.Mode
			}
			want[c] = true
			st.Routes++
		}
		if len(reasons) > 0 {
			st.Reason = joinReasons(reasons)
		}
		if st.Routes == 0 {
			st.Mode = ModeUnreachable
		}
		states = append(states, st)
	}
	errs := []error{d.removeStalePeerRoutes(want), d.pruneTunnels(tunnels)}
	if d.nft != nil {
		errs = append(errs, d.nft.count.sync(context.Background(), d.peers))
	}
	if err := errors.Join(errs...); err != nil && len(states) > 0 {
		states[0].Reason = joinReasons(append([]string{states[0].Reason}, err.Error()))
	}
	d.peerStates = states
	return slices.Clone(states)
}

func joinReasons(rs []string) string {
	out := ""
	for _, r := range rs {
		if r == "" {
			continue
		}
		if out != "" {
			out += "; "
		}
		out += r
	}
	return out
}

// peerPath is how the peer at addr is reached: routed (through the returned route's
// link) when addr is on a subnet of this node, else VXLAN, as Config.PeerMode allows.
func (d *Dataplane) peerPath(addr netip.Addr) (mode string, r netlink.Route, err error) {
	if v := d.view; v != nil && d.cfg.PeerMode != ModeVXLAN {
		// On a subnet of this node: routed, with no lookup per peer.
		for _, sn := range v.subnets {
			if sn.local == addr {
				return "", r, fmt.Errorf("%v is this node's own address", addr)
			}
			if sn.p.Contains(addr) {
				return ModeRouted, netlink.Route{LinkIndex: sn.link}, nil
			}
		}
	}
	var rs []netlink.Route
	if v := d.view; v != nil && v.paths[addr] != nil {
		rs = v.paths[addr]
	} else if rs, err = d.nl.RouteGet(addr.AsSlice()); err == nil && v != nil {
		v.paths[addr] = rs
	}
	if err != nil {
		return "", r, fmt.Errorf("no route to the peer's address %v: %w", addr, err)
	}
	if len(rs) == 0 {
		return "", r, fmt.Errorf("no route to the peer's address %v", addr)
	}
	r = rs[0]
	if r.Type == unix.RTN_LOCAL {
		return "", r, fmt.Errorf("%v is this node's own address", addr)
	}
	onLink := r.Gw == nil
	switch d.cfg.PeerMode {
	case ModeRouted:
		if !onLink {
			return "", r, fmt.Errorf("%v is not on a subnet of this node (reached through %v): routed mode needs one L2 segment (use vxlan or auto)", addr, r.Gw)
		}
		return ModeRouted, r, nil
	case ModeVXLAN:
		return ModeVXLAN, r, nil
	}
	if onLink {
		return ModeRouted, r, nil
	}
	return ModeVXLAN, r, nil
}

// routeVia routes c to addr, on the link of r.
func (d *Dataplane) routeVia(c netip.Prefix, addr netip.Addr, r netlink.Route) error {
	if d.view.has(c, addr, r.LinkIndex) {
		return nil
	}
	rt := &netlink.Route{Dst: prefixIPNet(c), Gw: addr.AsSlice(), LinkIndex: r.LinkIndex, Protocol: RouteProtocol}
	if err := d.nl.RouteReplace(rt); err != nil {
		return fmt.Errorf("route via %v: %w", addr, err)
	}
	return nil
}

// removeStalePeerRoutes deletes the routes of RouteProtocol whose destination is not in want.
func (d *Dataplane) removeStalePeerRoutes(want map[netip.Prefix]bool) error {
	rs, err := d.peerRoutes()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if ok && want[p] {
			continue
		}
		if err := d.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove stale peer route %v: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// peerRoutes lists the routes of RouteProtocol.
func (d *Dataplane) peerRoutes() ([]netlink.Route, error) {
	rs, err := d.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list peer routes: %w", err)
	}
	return rs, nil
}

// peerView is what a resync found programmed (routes of RouteProtocol, the VXLAN device's
// permanent neighbours and forwarding entries) and the paths it looked up, so that a
// resync of a thousand unchanged peers writes nothing.
type peerView struct {
	routes map[netip.Prefix]netlink.Route
	neigh  map[netip.Addr]string // tunnel endpoint address → MAC
	fdb    map[string]netip.Addr // tunnel endpoint MAC → underlay address
	paths  map[netip.Addr][]netlink.Route
	// subnets are the node's own addresses' subnets, with their links.
	subnets []struct {
		p     netip.Prefix
		local netip.Addr
		link  int
	}
}

// kernelPeers reads the peer state the kernel holds (nil parts on errors: then everything
// is written).
func (d *Dataplane) kernelPeers() *peerView {
	v := &peerView{routes: map[netip.Prefix]netlink.Route{}, neigh: map[netip.Addr]string{}, fdb: map[string]netip.Addr{},
		paths: map[netip.Addr][]netlink.Route{}}
	if rs, err := d.peerRoutes(); err == nil {
		for _, r := range rs {
			if p, ok := prefixOf(r.Dst); ok && r.Dst != nil {
				v.routes[p] = r
			}
		}
	}
	if as, err := d.nl.AddrList(nil, netlink.FAMILY_ALL); err == nil {
		for _, a := range as {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || a.Scope == int(netlink.SCOPE_HOST) || a.IPNet == nil || a.Flags&unix.IFA_F_NOPREFIXROUTE != 0 {
				continue
			}
			ones, _ := a.Mask.Size()
			v.subnets = append(v.subnets, struct {
				p     netip.Prefix
				local netip.Addr
				link  int
			}{netip.PrefixFrom(ip.Unmap(), ones).Masked(), ip.Unmap(), a.LinkIndex})
		}
	}
	if l, err := d.nl.LinkByName(d.vxlanName()); err == nil {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			ns, _ := d.nl.NeighList(l.Attrs().Index, fam)
			for _, n := range ns {
				if a, ok := netip.AddrFromSlice(n.IP); ok && n.State&netlink.NUD_PERMANENT != 0 {
					v.neigh[a.Unmap()] = n.HardwareAddr.String()
				}
			}
		}
		fdb, _ := d.nl.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		for _, n := range fdb {
			if a, ok := netip.AddrFromSlice(n.IP); ok && n.State&netlink.NUD_PERMANENT != 0 {
				v.fdb[n.HardwareAddr.String()] = a.Unmap()
			}
		}
	}
	return v
}

// has reports whether the view holds the route of c via gw on link.
func (v *peerView) has(c netip.Prefix, gw netip.Addr, link int) bool {
	if v == nil {
		return false
	}
	r, ok := v.routes[c]
	g, _ := netip.AddrFromSlice(r.Gw)
	return ok && r.LinkIndex == link && g.Unmap() == gw
}
