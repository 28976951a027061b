package ifcore

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
)

// Address families (sa_family).
const (
	AF_UNSPEC uint8 = 0
	AF_INET   uint8 = 2
	AF_LINK   uint8 = 18
	AF_INET6  uint8 = 28
	AF_MAX    uint8 = 43
)

// Sockaddr is a comparable socket address: AF_LINK carries a link-level
// address (and the interface index), AF_INET/AF_INET6 an IP address.
type Sockaddr struct {
	Family uint8
	Len    uint8 // address bytes used in Data
	Data   [16]byte
	Index  uint32 // AF_LINK: sdl_index
}

// LinkSockaddr returns an AF_LINK sockaddr for lladdr (at most 16 bytes).
func LinkSockaddr(lladdr []byte) Sockaddr {
	sa := Sockaddr{Family: AF_LINK, Len: uint8(min(len(lladdr), 16))}
	copy(sa.Data[:], lladdr)
	return sa
}

// IPSockaddr returns an AF_INET or AF_INET6 sockaddr.
func IPSockaddr(a netip.Addr) Sockaddr {
	if a.Is4() {
		b := a.As4()
		sa := Sockaddr{Family: AF_INET, Len: 4}
		copy(sa.Data[:], b[:])
		return sa
	}
	b := a.As16()
	return Sockaddr{Family: AF_INET6, Len: 16, Data: b}
}

// Bytes returns the address bytes.
func (sa Sockaddr) Bytes() []byte { return sa.Data[:sa.Len] }

// IP returns the IP address of an AF_INET/AF_INET6 sockaddr.
func (sa Sockaddr) IP() netip.Addr {
	switch sa.Family {
	case AF_INET:
		return netip.AddrFrom4([4]byte(sa.Data[:4]))
	case AF_INET6:
		return netip.AddrFrom16(sa.Data)
	}
	return netip.Addr{}
}

func (sa Sockaddr) equal(o Sockaddr) bool {
	return sa.Family == o.Family && sa.Len == o.Len && sa.Data == o.Data
}

// ---- up / down / link state (§2.11, §2.12) ----

// ifDown is if_down: if_unroute(IFF_UP) plus a service sync.
func (n *Net) ifDown(ifp *Ifnet) error {
	ifp.flags.And(^IFF_UP)
	n.mu.Lock()
	ifp.lastchange = n.clock.Now()
	n.mu.Unlock()
	ifp.snd.PurgeAll()
	n.emitIf(EvIfMsg, ifp)
	return n.ServiceSync()
}

// ifUp is if_up: if_route(IFF_UP): purge first, then set the flag.
func (n *Net) ifUp(ifp *Ifnet) {
	ifp.snd.PurgeAll()
	ifp.flags.Or(IFF_UP)
	n.mu.Lock()
	ifp.lastchange = n.clock.Now()
	n.mu.Unlock()
	n.emitIf(EvIfMsg, ifp)
}

// SetLinkState stores if_link_state and announces it
// (if_link_state_change): UP reports LINK_UP, anything else LINK_DOWN.
func (ifp *Ifnet) SetLinkState(s LinkState) {
	ifp.linkState.Store(int32(s))
	ifp.net.emitIf(EvIfMsg, ifp)
	if s == LinkStateUp {
		ifp.net.emitIf(EvLinkUp, ifp)
	} else {
		ifp.net.emitIf(EvLinkDown, ifp)
	}
}

// ---- promiscuous / allmulti (§2.17) ----

func (ifp *Ifnet) driverFlags() error {
	ifp.net.emitIf(EvDriverFlags, ifp)
	if d, ok := ifp.driver.(Ioctler); ok {
		return d.Ioctl(ifp, SIOCSIFFLAGS, &Ifreq{Name: ifp.Name(), Flags: ifp.Flags()})
	}
	return nil
}

// Promisc is ifpromisc: a counted promiscuous mode. With PPROMISC only the
// count moves (clamped at 0, D-I3); turning on a down interface fails with
// ENETDOWN; a driver failure rolls back both flag and count (D-I3).
func (ifp *Ifnet) Promisc(on bool) error {
	n := ifp.net
	if err := n.lock("set promiscuous mode"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	return ifp.promiscLocked(on)
}

func (ifp *Ifnet) promiscLocked(on bool) error {
	if ifp.Flags()&IFF_PPROMISC != 0 {
		if on {
			ifp.pcount++
		} else if ifp.pcount > 0 {
			ifp.pcount--
		}
		return nil
	}
	oldFlags, oldCount := ifp.Flags(), ifp.pcount
	if on {
		if ifp.Flags()&IFF_UP == 0 {
			return fmt.Errorf("set promiscuous mode on %s: interface down: %w", ifp.Name(), syscall.ENETDOWN)
		}
		ifp.pcount++
		if ifp.pcount != 1 {
			return nil
		}
		ifp.flags.Or(IFF_PROMISC)
	} else {
		if ifp.pcount > 0 {
			ifp.pcount--
		}
		if ifp.pcount > 0 {
			return nil
		}
		ifp.flags.And(^IFF_PROMISC)
	}
	if err := ifp.driverFlags(); err != nil {
		ifp.flags.Store(oldFlags)
		ifp.pcount = oldCount
		return fmt.Errorf("set promiscuous mode on %s: %w", ifp.Name(), err)
	}
	ifp.net.emitIf(EvIfMsg, ifp)
	return nil
}

// Allmulti is if_allmulti: the first on and the last off reach the driver.
func (ifp *Ifnet) Allmulti(on bool) error {
	n := ifp.net
	if err := n.lock("set all-multicast mode"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	var err error
	if on {
		ifp.amcount++
		if ifp.amcount == 1 {
			ifp.flags.Or(IFF_ALLMULTI)
			err = ifp.driverFlags()
		}
	} else {
		if ifp.amcount > 1 {
			ifp.amcount--
		} else {
			ifp.amcount = 0
			ifp.flags.And(^IFF_ALLMULTI)
			err = ifp.driverFlags()
		}
	}
	if err != nil {
		return fmt.Errorf("set all-multicast mode on %s: %w", ifp.Name(), err)
	}
	n.emitIf(EvIfMsg, ifp)
	return nil
}

// ---- multicast membership (§2.19) ----

// Multiaddr is an ifmultiaddr: a joined group with its reference count
// and, for a network-layer group, the link-layer group it maps to.
type Multiaddr struct {
	Addr     Sockaddr
	LL       Sockaddr // zero unless HasLL
	HasLL    bool
	Refcount int
}

// etherResolver is ether_resolvemulti [ext]: AF_LINK must be an Ethernet
// multicast address; IPv4/IPv6 multicast map to 01:00:5e / 33:33.
type etherResolver struct{}

func (etherResolver) ResolveMulti(ifp *Ifnet, sa Sockaddr) (Sockaddr, bool, error) {
	switch sa.Family {
	case AF_LINK:
		if sa.Len != 6 || sa.Data[0]&1 == 0 {
			return Sockaddr{}, false, fmt.Errorf("resolve multicast: %x is not an Ethernet multicast address: %w", sa.Bytes(), syscall.EADDRNOTAVAIL)
		}
		return Sockaddr{}, false, nil
	case AF_INET:
		ip := sa.IP()
		if !ip.IsMulticast() {
			return Sockaddr{}, false, fmt.Errorf("resolve multicast: %s is not multicast: %w", ip, syscall.EADDRNOTAVAIL)
		}
		b := ip.As4()
		return LinkSockaddr([]byte{0x01, 0x00, 0x5e, b[1] & 0x7f, b[2], b[3]}), true, nil
	case AF_INET6:
		ip := sa.IP()
		if !ip.IsMulticast() {
			return Sockaddr{}, false, fmt.Errorf("resolve multicast: %s is not multicast: %w", ip, syscall.EADDRNOTAVAIL)
		}
		b := ip.As16()
		return LinkSockaddr([]byte{0x33, 0x33, b[12], b[13], b[14], b[15]}), true, nil
	}
	return Sockaddr{}, false, fmt.Errorf("resolve multicast: family %d: %w", sa.Family, syscall.EAFNOSUPPORT)
}

func (ifp *Ifnet) resolver() MultiResolver {
	if r, ok := ifp.driver.(MultiResolver); ok {
		return r
	}
	switch ifp.typ {
	case IFT_ETHER, IFT_XETHER, IFT_L2VLAN, IFT_IEEE8023ADLAG:
		return etherResolver{}
	}
	return nil
}

func (ifp *Ifnet) findMulti(sa Sockaddr) int {
	for i, m := range ifp.multi {
		if m.Addr.equal(sa) {
			return i
		}
	}
	return -1
}

func (ifp *Ifnet) driverMulti(cmd IoctlCmd, sa Sockaddr) error {
	if d, ok := ifp.driver.(Ioctler); ok {
		return d.Ioctl(ifp, cmd, &Ifreq{Name: ifp.Name(), Addr: sa})
	}
	return nil
}

// AddMulti is if_addmulti: join sa (refcounted; only the first join
// reaches the driver).
func (ifp *Ifnet) AddMulti(sa Sockaddr) (*Multiaddr, error) {
	n := ifp.net
	if err := n.lock("add multicast address"); err != nil {
		return nil, err
	}
	defer n.mu.Unlock()
	return ifp.addMultiLocked(sa)
}

func (ifp *Ifnet) addMultiLocked(sa Sockaddr) (*Multiaddr, error) {
	if i := ifp.findMulti(sa); i >= 0 {
		ifp.multi[i].Refcount++
		return ifp.multi[i], nil
	}
	var ll Sockaddr
	hasLL := false
	if r := ifp.resolver(); r != nil {
		var err error
		ll, hasLL, err = r.ResolveMulti(ifp, sa)
		if err != nil {
			return nil, fmt.Errorf("add multicast address to %s: %w", ifp.Name(), err)
		}
	}
	ma := &Multiaddr{Addr: sa, LL: ll, HasLL: hasLL, Refcount: 1}
	ifp.net.emit(Event{Kind: EvNewMaddr, Name: ifp.Name(), Index: ifp.index, Addr: sa})
	ifp.multi = slices.Insert(ifp.multi, 0, ma)
	if hasLL {
		if i := ifp.findMulti(ll); i >= 0 {
			ifp.multi[i].Refcount++
		} else {
			// D-I2: the link-layer entry is fully initialized.
			llma := &Multiaddr{Addr: ll, Refcount: 1}
			ifp.net.emit(Event{Kind: EvNewMaddr, Name: ifp.Name(), Index: ifp.index, Addr: ll})
			ifp.multi = slices.Insert(ifp.multi, 0, llma)
		}
	}
	if err := ifp.driverMulti(SIOCADDMULTI, sa); err != nil {
		return ma, fmt.Errorf("add multicast address to %s: driver: %w", ifp.Name(), err)
	}
	return ma, nil
}

// DelMulti is if_delmulti: drop one reference; the last one leaves the
// group (and its link-layer group when that was its last user).
func (ifp *Ifnet) DelMulti(sa Sockaddr) error {
	n := ifp.net
	if err := n.lock("delete multicast address"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	return ifp.delMultiLocked(sa)
}

func (ifp *Ifnet) delMultiLocked(sa Sockaddr) error {
	i := ifp.findMulti(sa)
	if i < 0 {
		return fmt.Errorf("delete multicast address from %s: not a member: %w", ifp.Name(), syscall.ENOENT)
	}
	ma := ifp.multi[i]
	if ma.Refcount > 1 {
		ma.Refcount--
		return nil
	}
	ifp.net.emit(Event{Kind: EvDelMaddr, Name: ifp.Name(), Index: ifp.index, Addr: sa})
	ifp.multi = slices.Delete(ifp.multi, i, i+1)
	ma.Refcount = 0
	var err error
	if sa.Family == AF_LINK && !ma.HasLL {
		err = ifp.driverMulti(SIOCDELMULTI, sa)
	}
	if ma.HasLL {
		j := ifp.findMulti(ma.LL)
		if j < 0 {
			return nil // "some nasty deleted it"
		}
		llma := ifp.multi[j]
		if llma.Refcount > 1 {
			llma.Refcount--
			return nil
		}
		ifp.net.emit(Event{Kind: EvDelMaddr, Name: ifp.Name(), Index: ifp.index, Addr: ma.LL})
		ifp.multi = slices.Delete(ifp.multi, j, j+1)
		llma.Refcount = 0
		err = ifp.driverMulti(SIOCDELMULTI, ma.LL)
	}
	if err != nil {
		return fmt.Errorf("delete multicast address from %s: driver: %w", ifp.Name(), err)
	}
	return nil
}

// DelAllMulti removes every membership regardless of its reference count
// (D-I9: the seed drops only one reference per entry).
func (ifp *Ifnet) DelAllMulti() error {
	n := ifp.net
	if err := n.lock("delete all multicast addresses"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	for len(ifp.multi) > 0 {
		ma := ifp.multi[0]
		ma.Refcount = 1
		if err := ifp.delMultiLocked(ma.Addr); err != nil {
			return err
		}
	}
	return nil
}

// Multiaddrs returns a snapshot of the memberships.
func (ifp *Ifnet) Multiaddrs() []Multiaddr {
	ifp.net.mu.Lock()
	defer ifp.net.mu.Unlock()
	out := make([]Multiaddr, len(ifp.multi))
	for i, m := range ifp.multi {
		out[i] = *m
	}
	return out
}

// ---- link-layer address (§2.20) ----

// SetLladdr is if_setlladdr: same length only, Ethernet-like types only;
// an UP interface is bounced down/up through the driver (errors propagate
// and the address is rolled back, D-I12) and a gratuitous ARP hook fires
// per IPv4 address. The lladdr event fires only on success (D-I11).
func (ifp *Ifnet) SetLladdr(addr []byte) error {
	n := ifp.net
	if err := n.lock("set link-level address"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	return ifp.setLladdrLocked(addr)
}

func (ifp *Ifnet) setLladdrLocked(addr []byte) error {
	if len(ifp.lladdr) == 0 || len(addr) != len(ifp.lladdr) {
		return fmt.Errorf("set link-level address of %s: length %d, want %d: %w", ifp.Name(), len(addr), len(ifp.lladdr), syscall.EINVAL)
	}
	switch ifp.typ {
	case IFT_ETHER, IFT_XETHER, IFT_L2VLAN, IFT_IEEE8023ADLAG:
	default:
		return fmt.Errorf("set link-level address of %s: type %#x has none: %w", ifp.Name(), ifp.typ, syscall.ENODEV)
	}
	old := ifp.lladdr
	ifp.lladdr = append([]byte(nil), addr...)
	for _, a := range ifp.addrs {
		if a.link {
			a.Addr = LinkSockaddr(addr)
			a.Addr.Index = ifp.index
		}
	}
	if ifp.Flags()&IFF_UP != 0 {
		ifp.flags.And(^IFF_UP)
		err := ifp.driverFlags()
		ifp.flags.Or(IFF_UP)
		if err == nil {
			err = ifp.driverFlags()
		}
		if err != nil {
			ifp.lladdr = old
			for _, a := range ifp.addrs {
				if a.link {
					a.Addr = LinkSockaddr(old)
					a.Addr.Index = ifp.index
				}
			}
			return fmt.Errorf("set link-level address of %s: driver: %w", ifp.Name(), err)
		}
		for _, a := range ifp.addrs {
			if a.Addr.Family == AF_INET {
				ifp.net.emit(Event{Kind: EvGARP, Name: ifp.Name(), Index: ifp.index, Addr: a.Addr})
			}
		}
	}
	ifp.net.emit(Event{Kind: EvLladdr, Name: ifp.Name(), Index: ifp.index, Addr: LinkSockaddr(addr)})
	return nil
}

// ---- groups (§2.15) ----

type ifgroup struct {
	name    string
	members []*Ifnet
}

func validGroupName(name string) error {
	if name == "" {
		return fmt.Errorf("check group name: empty: %w", syscall.EINVAL) // D-I7
	}
	if len(name) >= IFNAMSIZ {
		return fmt.Errorf("check group name %q: longer than %d bytes: %w", name, IFNAMSIZ-1, syscall.EINVAL) // D-I7
	}
	if c := name[len(name)-1]; c >= '0' && c <= '9' {
		return fmt.Errorf("check group name %q: ends with a digit: %w", name, syscall.EINVAL)
	}
	return nil
}

// AddGroup is if_addgroup.
func (n *Net) AddGroup(ifp *Ifnet, name string) error {
	if err := validGroupName(name); err != nil {
		return fmt.Errorf("add %s to group: %w", ifp.Name(), err)
	}
	if err := n.lock("add to group"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	if slices.Contains(ifp.groups, name) {
		return fmt.Errorf("add %s to group %s: already a member: %w", ifp.Name(), name, syscall.EEXIST)
	}
	g := n.groups[name]
	if g == nil {
		g = &ifgroup{name: name}
		n.groups[name] = g
		n.gorder = append(n.gorder, g)
	}
	g.members = append(g.members, ifp)
	ifp.groups = append(ifp.groups, name)
	return nil
}

// DelGroup is if_delgroup; the last member leaving destroys the group.
func (n *Net) DelGroup(ifp *Ifnet, name string) error {
	if err := n.lock("delete from group"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	i := slices.Index(ifp.groups, name)
	if i < 0 {
		return fmt.Errorf("delete %s from group %s: not a member: %w", ifp.Name(), name, syscall.ENOENT)
	}
	ifp.groups = slices.Delete(ifp.groups, i, i+1)
	g := n.groups[name]
	g.members = slices.DeleteFunc(g.members, func(o *Ifnet) bool { return o == ifp })
	if len(g.members) == 0 {
		delete(n.groups, name)
		n.gorder = slices.DeleteFunc(n.gorder, func(o *ifgroup) bool { return o == g })
	}
	return nil
}

// Groups is if_getgroup with the length protocol: max == 0 returns only the
// required count; a max smaller than the count returns the first max
// entries, the required count and EINVAL (D-I10: partial result plus size).
func (n *Net) Groups(ifp *Ifnet, max int) ([]string, int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return lenProtocol(ifp.groups, max, "get groups of "+ifp.Name())
}

// GroupMembers is if_getgroupmembers: ENOENT for an unknown group, then the
// same length protocol as Groups.
func (n *Net) GroupMembers(name string, max int) ([]string, int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	g := n.groups[name]
	if g == nil {
		return nil, 0, fmt.Errorf("get members of group %s: %w", name, syscall.ENOENT)
	}
	names := make([]string, len(g.members))
	for i, m := range g.members {
		names[i] = m.Name()
	}
	return lenProtocol(names, max, "get members of group "+name)
}

func lenProtocol(all []string, max int, op string) ([]string, int, error) {
	if max == 0 {
		return nil, len(all), nil
	}
	if max < len(all) {
		return slices.Clone(all[:max]), len(all), fmt.Errorf("%s: room for %d of %d entries: %w", op, max, len(all), syscall.EINVAL)
	}
	return slices.Clone(all), len(all), nil
}

// ---- addresses and lookups (§2.9, §2.10) ----

// Ifaddr is an interface address. The AF_LINK address is always first.
type Ifaddr struct {
	Addr      Sockaddr
	Prefix    netip.Prefix // netmask for AF_INET/AF_INET6 (invalid: none)
	Broadaddr netip.Addr
	Dstaddr   netip.Addr
	link      bool
}

// AddAddr appends a network address to ifp (the protocol's SIOCAIFADDR).
func (ifp *Ifnet) AddAddr(a Ifaddr) error {
	if a.Addr.Family != AF_INET && a.Addr.Family != AF_INET6 {
		return fmt.Errorf("add address to %s: family %d: %w", ifp.Name(), a.Addr.Family, syscall.EAFNOSUPPORT)
	}
	n := ifp.net
	if err := n.lock("add address"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	a.link = false
	ifp.addrs = append(ifp.addrs, &a)
	return nil
}

// Addrs returns a snapshot of ifp's addresses, AF_LINK first.
func (ifp *Ifnet) Addrs() []Ifaddr {
	ifp.net.mu.Lock()
	defer ifp.net.mu.Unlock()
	out := make([]Ifaddr, len(ifp.addrs))
	for i, a := range ifp.addrs {
		out[i] = *a
	}
	return out
}

// IfaWithAddr is ifa_ifwithaddr: the first address equal to sa, or, on
// IFF_BROADCAST interfaces, whose broadcast address equals it.
func (n *Net) IfaWithAddr(sa Sockaddr) (*Ifnet, *Ifaddr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ifp := range n.list {
		for _, a := range ifp.addrs {
			if a.Addr.Family != sa.Family {
				continue
			}
			if a.Addr.equal(sa) {
				return ifp, a
			}
			if ifp.Flags()&IFF_BROADCAST != 0 && a.Broadaddr.IsValid() && sa.Family == AF_INET && a.Broadaddr == sa.IP() {
				return ifp, a
			}
		}
	}
	return nil, nil
}

// IfaWithNet is ifa_ifwithnet: AF_LINK by index (nil for a hole, D-I1),
// else the address whose network contains sa with the longest prefix
// (point-to-point INET: exact destination match).
func (n *Net) IfaWithNet(sa Sockaddr) (*Ifnet, *Ifaddr) {
	if sa.Family == AF_LINK {
		ifp := n.ByIndex(sa.Index)
		if ifp == nil {
			return nil, nil
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, a := range ifp.addrs {
			if a.link {
				return ifp, a
			}
		}
		return nil, nil
	}
	ip := sa.IP()
	n.mu.Lock()
	defer n.mu.Unlock()
	var best *Ifaddr
	var bestIf *Ifnet
	for _, ifp := range n.list {
		for _, a := range ifp.addrs {
			if a.Addr.Family != sa.Family {
				continue
			}
			if sa.Family == AF_INET && ifp.Flags()&IFF_POINTOPOINT != 0 {
				if a.Dstaddr.IsValid() && a.Dstaddr == ip {
					return ifp, a
				}
				continue
			}
			if !a.Prefix.IsValid() || !a.Prefix.Contains(ip) {
				continue
			}
			if best == nil || a.Prefix.Bits() > best.Prefix.Bits() {
				best, bestIf = a, ifp
			}
		}
	}
	return bestIf, best
}

// IfaOfIfpForAddr is ifaof_ifpforaddr: the best address of ifp for sa, or
// nil when the family is out of range.
func (ifp *Ifnet) IfaOfIfpForAddr(sa Sockaddr) *Ifaddr {
	if sa.Family >= AF_MAX {
		return nil
	}
	ifp.net.mu.Lock()
	defer ifp.net.mu.Unlock()
	var first *Ifaddr
	ip := sa.IP()
	for _, a := range ifp.addrs {
		if a.Addr.Family != sa.Family {
			continue
		}
		if first == nil {
			first = a
		}
		if !a.Prefix.IsValid() {
			if a.Addr.equal(sa) || (a.Dstaddr.IsValid() && a.Dstaddr == ip) {
				return a
			}
			continue
		}
		if ifp.Flags()&IFF_POINTOPOINT != 0 {
			if a.Dstaddr.IsValid() && a.Dstaddr == ip {
				return a
			}
		} else if a.Prefix.Contains(ip) {
			return a
		}
	}
	return first
}

// GetAnyEtherMAC is if_getanyethermac: the first minlen bytes of the first
// Ethernet interface's address that long, or ENOENT.
func (n *Net) GetAnyEtherMAC(minlen int) ([]byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ifp := range n.list {
		if ifp.typ == IFT_ETHER && len(ifp.lladdr) >= minlen {
			return bytes.Clone(ifp.lladdr[:minlen]), nil
		}
	}
	return nil, fmt.Errorf("get any Ethernet address: %w", syscall.ENOENT)
}

// RingCount2 is if_ring_count2: cnt <= 0 means cntMax; clamp to the
// largest power of two <= ncpus and to cntMax; round down to a power of
// two. cntMax must be a power of two.
func RingCount2(cnt, cntMax, ncpus int) (int, error) {
	if cntMax < 1 || cntMax&(cntMax-1) != 0 {
		return 0, fmt.Errorf("count rings: cnt_max %d is not a power of two: %w", cntMax, syscall.EINVAL)
	}
	ncpus2 := 1
	for ncpus2*2 <= ncpus {
		ncpus2 *= 2
	}
	if cnt <= 0 {
		cnt = cntMax
	}
	cnt = min(cnt, ncpus2, cntMax)
	p := 1
	for p*2 <= cnt {
		p *= 2
	}
	return p, nil
}

var _ = strings.HasPrefix
