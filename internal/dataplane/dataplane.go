package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/appport"
	"github.com/epair-cni/epair/internal/cleanup"
	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/fastpath"
	"github.com/epair-cni/epair/pkg/hostport"
	"github.com/epair-cni/epair/pkg/ifcore"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/vale"
)

// Dataplane is the single owner of a node's switches and ports. Its
// methods are safe for concurrent use; configuration changes are
// serialised on one mutex (switch changes on a second one too), the packet
// path never takes either.
type Dataplane struct {
	cfg Config

	ns    netns.NsHandle // the dataplane's namespace, or -1 for the caller's
	nl    *netlink.Handle
	nm    *netmap.Netmap
	reg   *vale.Registry
	ifn   *ifcore.Net
	nft   *masq
	start time.Time
	rings atomic.Pointer[linkport.RingPool] // offload sockets kept ready (nil: none yet)
	// fast is the kernel fast path (Config.FastPath; nil: off); fastIDs numbers the
	// switches for it.
	fast    *fastpath.FastPath
	fastIDs atomic.Uint32

	// swMu serialises the switch changes (AddSwitch, RemoveSwitch) with
	// each other and with AnnounceGateways; it is taken before mu and held
	// across the slow work (TAP, nftables, waiting for ports), which mu is
	// not.
	swMu sync.Mutex

	// maxSwitches bounds len(switches): MaxSwitches, or the configured
	// count when that is more.
	maxSwitches int

	mu     sync.Mutex
	closed bool
	// appServers serve the switches' ports to applications (ServeNetmap).
	appServers []*appport.Server
	// podNetmaps serve pods' application ports, by pod port host link
	// (ServePodNetmap).
	podNetmaps map[string]*podNetmap
	switches   map[string]*swState
	order      []string         // switch names in configuration order, then AddSwitch's
	ports      map[string]*Port // by port name "<switch>:<hostIfName>"
	byLink     map[string]*Port // by host link name
	byOwner    map[string]*Port
	// Links and owners being attached or detached (outside mu): a
	// second operation on either waits for the channel to close.
	busyLink  map[string]chan struct{}
	busyOwner map[string]chan struct{}
	ops       sync.WaitGroup // claims in flight; Close waits for them

	agingStop chan struct{}
	agingDone chan struct{}
	watchStop chan struct{}
	watchDone chan struct{}
	linksGone atomic.Uint64 // ports detached because their link was deleted

	// peerMu serialises SetPeers with the peer resync; taken before mu.
	peerMu     sync.Mutex
	peers      []Peer
	peerStates []PeerState
	peerStop   chan struct{}
	peerDone   chan struct{}
	view       *peerView // during a resync (peerMu held): what the kernel has
	up         *upgrader // moves FastStart ports to AF_XDP
}

// swState is one switch with its host port.
type swState struct {
	cfg      SwitchConfig
	sw       *vale.Switch
	classes  *classTable
	guard    *guardLookup // the switch's lookup: anti-spoofing before learning
	bufSize  int
	hdrLen   int // virtio-net header of every frame (Offload)
	tap      *hostport.Port
	tapAd    *netmap.GenericAdapter
	tapName  string           // port name in the switch (the TAP's name)
	tapMAC   net.HardwareAddr // the gateway's MAC (a static FDB entry)
	tapIndex int
	// fastID tells the switch apart in the fast path (its ports' frames take it only
	// between ports of the same switch).
	fastID uint16
	// hostCaptures counts the open captures of the host port; fastHost is what the fast
	// path was last told of the host port.
	hostCaptures atomic.Int32
	fastHost     fastState
	// ops counts the claims (attaches, detaches, socket closes) on the
	// switch's ports; RemoveSwitch waits for them once the switch is
	// unpublished (no new claim can start then).
	ops sync.WaitGroup
}

// New creates the configured switches and their host ports and, with
// Config.Masquerade, the nftables table. On error nothing is left behind.
func New(cfg Config) (_ *Dataplane, err error) {
	if cfg.RingSlots == 0 {
		cfg.RingSlots = DefaultRingSlots
	}
	if cfg.NFTTable == "" {
		cfg.NFTTable = "epair"
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("create dataplane: %w", err)
	}
	cl := cleanup.Make(nil)
	defer func() {
		if err != nil {
			_ = cl.Clean()
		}
	}()
	d := &Dataplane{
		cfg: cfg, ns: -1, start: time.Now(),
		switches: map[string]*swState{}, ports: map[string]*Port{},
		byLink: map[string]*Port{}, podNetmaps: map[string]*podNetmap{}, byOwner: map[string]*Port{},
		busyLink: map[string]chan struct{}{}, busyOwner: map[string]chan struct{}{},
	}
	if cfg.NetNS != "" {
		h, err := netns.GetFromPath(cfg.NetNS)
		if err != nil {
			return nil, fmt.Errorf("create dataplane: open netns %s: %w", cfg.NetNS, err)
		}
		d.ns = h
		cl.Add(func() error { return h.Close() })
		d.nl, err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("create dataplane: netlink handle in %s: %w", cfg.NetNS, err)
		}
	} else {
		d.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("create dataplane: netlink handle: %w", err)
		}
	}
	cl.Add(func() error { d.nl.Close(); return nil })

	d.ifn, err = ifcore.New(ifcore.Config{Workers: cfg.Workers})
	if err != nil {
		return nil, fmt.Errorf("create dataplane: %w", err)
	}
	cl.Add(d.ifn.Close)
	d.nm = netmap.New(netmap.Config{})
	opts := vale.DefaultOptions()
	d.maxSwitches = max(MaxSwitches, len(cfg.Switches))
	opts.MaxSwitches = d.maxSwitches
	opts.Clock = func() int64 { return int64(time.Since(d.start)) }
	d.reg, err = vale.New(d.nm, opts)
	if err != nil {
		return nil, fmt.Errorf("create dataplane: %w", err)
	}
	cl.Add(d.reg.Close)
	if cfg.FastPath {
		switch err := d.startFastPath(); {
		case err == nil:
			cl.Add(d.fast.Close)
		case cfg.FastPathError != nil:
			cfg.FastPathError(err)
		default:
			return nil, fmt.Errorf("create dataplane: %w", err)
		}
	}

	for _, sc := range cfg.Switches {
		s, err := d.createSwitch(sc, &cl)
		if err != nil {
			return nil, fmt.Errorf("create dataplane: %w", err)
		}
		d.switches[sc.Name] = s
		d.order = append(d.order, sc.Name)
	}
	if err := ValidatePeers(cfg.Peers, d.podNetwork().cidrs); err != nil {
		return nil, fmt.Errorf("create dataplane: %w", err)
	}
	d.peers = slices.Clone(cfg.Peers)
	if cfg.Masquerade {
		d.nft, err = newMasq(d, cfg.NFTTable)
		if err != nil {
			return nil, fmt.Errorf("create dataplane: %w", err)
		}
		for _, p := range cfg.Peers {
			d.nft.peers = append(d.nft.peers, p.PodCIDRs...)
		}
		if err := d.nft.install(context.Background(), d.podNetwork()); err != nil {
			return nil, fmt.Errorf("create dataplane: %w", err)
		}
		cl.Add(func() error { return d.nft.remove(context.Background()) })
	}
	if err := d.watchLinks(); err != nil {
		return nil, fmt.Errorf("create dataplane: %w", err)
	}
	cl.Add(func() error { d.stopWatch(); return nil })
	d.agingStop, d.agingDone = make(chan struct{}), make(chan struct{})
	go d.ager()
	d.resyncPeersLocked() // not shared yet
	d.peerStop, d.peerDone = make(chan struct{}), make(chan struct{})
	go d.peerResyncer()
	if slices.ContainsFunc(cfg.Switches, func(sc SwitchConfig) bool { return sc.Offload }) {
		if err := d.startRings(); err != nil {
			return nil, fmt.Errorf("create dataplane: %w", err)
		}
		cl.Add(func() error { return d.rings.Load().Close() })
	}
	d.up = newUpgrader(d)
	cl.Release()
	return d, nil
}

// bufSizeFor is the buffer size that holds a frame of an MTU.
func bufSizeFor(mtu int) int {
	if mtu+etherVLANHeader <= netmap.DefaultBufSize {
		return netmap.DefaultBufSize
	}
	return 4096
}

func (d *Dataplane) createSwitch(sc SwitchConfig, cl *cleanup.Cleanup) (*swState, error) {
	vc, err := sc.valeConfig()
	if err != nil {
		return nil, fmt.Errorf("switch %s: %w", sc.Name, err)
	}
	sw, err := d.reg.CreateSwitch(sc.Name, vc)
	if err != nil {
		return nil, err
	}
	cl.Add(func() error { return d.reg.DestroySwitch(sc.Name) })
	s := &swState{cfg: sc, sw: sw, classes: newClassTable(vc.MaxPorts), bufSize: bufSizeFor(sc.mtu()), hdrLen: vc.VnetHdrLen, tapName: sc.HostPort.tapName(sc.Name),
		fastID: uint16(d.fastIDs.Add(1))}
	s.guard = newGuardLookup(sw.Learning(), vc.MaxPorts, vc.VnetHdrLen)
	sw.SetLookup(s.guard)

	// The host port: a TAP with the gateway addresses, as a bwrap'd port.
	err = d.inNS(func() error {
		var err error
		s.tap, err = hostport.Open(hostport.Config{
			Name: s.tapName, MTU: sc.mtu(), MAC: sc.HostPort.MAC,
			Addrs: sc.HostPort.Gateways, TXQueueLen: 4096, VnetHdr: sc.Offload,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("switch %s: open host port: %w", sc.Name, err)
	}
	s.tapIndex = s.tap.Ifindex()
	spin, yield := d.cfg.rxSpin()
	s.tapAd, err = netmap.NewGenericAdapter(s.tapName, s.tap, netmap.GenericConfig{Slots: uint32(d.cfg.RingSlots), BufSize: s.bufSize,
		RxSpin: spin, Yield: yield})
	if err != nil {
		_ = s.tap.Close()
		return nil, fmt.Errorf("switch %s: host port adapter: %w", sc.Name, err)
	}
	s.tapAd.Get() // ours: Detach must not destroy it before we are done
	cl.Add(func() error { s.tapAd.Put(); return nil })
	if err := d.reg.AttachAdapter(vale.JoinName(sc.Name, s.tapName), s.tapAd, false); err != nil {
		return nil, fmt.Errorf("switch %s: attach host port: %w", sc.Name, err)
	}
	cl.Add(func() error { return d.reg.Detach(vale.JoinName(sc.Name, s.tapName)) })
	// The gateway's MAC is pinned like every pod's, and the host port is the
	// one port that learns (whatever is behind it is the node's) and gets
	// unknown unicast (pod ports are known-only, vale.Config.KnownOnly).
	l, err := d.nl.LinkByIndex(s.tapIndex)
	if err != nil {
		return nil, fmt.Errorf("switch %s: read host port %s: %w", sc.Name, s.tapName, err)
	}
	s.tapMAC = l.Attrs().HardwareAddr
	if err := sw.AddStatic(s.tapMAC, s.tapName); err != nil {
		return nil, fmt.Errorf("switch %s: pin host port MAC %s: %w", sc.Name, s.tapMAC, err)
	}
	if err := sw.SetKnownOnly(s.tapName, false); err != nil {
		return nil, fmt.Errorf("switch %s: host port: %w", sc.Name, err)
	}
	if vp, ok := sw.Port(s.tapName); ok {
		s.guard.setHost(vp.Index())
	}
	if err := d.routePodCIDRs(s); err != nil {
		return nil, fmt.Errorf("switch %s: %w", sc.Name, err)
	}
	cl.Add(func() error { return d.fastHostRemove(s) })
	if err := d.fastHostSync(s); err != nil {
		return nil, fmt.Errorf("switch %s: host port: %w", sc.Name, err)
	}
	return s, nil
}

// routePodCIDRs routes the pod CIDRs that no gateway prefix covers to the
// TAP (the kernel already routes a gateway's own prefix there).
func (d *Dataplane) routePodCIDRs(s *swState) error {
	for _, c := range s.cfg.HostPort.PodCIDRs {
		covered := false
		for _, g := range s.cfg.HostPort.Gateways {
			if g.Masked() == c {
				covered = true
			}
		}
		if covered {
			continue
		}
		r := &netlink.Route{LinkIndex: s.tapIndex, Dst: prefixIPNet(c), Scope: netlink.SCOPE_LINK}
		if err := d.nl.RouteReplace(r); err != nil {
			return fmt.Errorf("route %v to %s: %w", c, s.tapName, err)
		}
	}
	return nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// podNetwork lists every switch's pod CIDRs (gateway prefixes included)
// and host port names, for masquerading. d.mu held.
func (d *Dataplane) podNetwork() podNet { return podNetOf(d.switchConfigsLocked()) }

// podNetOf lists the pod CIDRs (gateway prefixes included) and host port
// names of the switches scs, in order and without duplicates.
func podNetOf(scs []*SwitchConfig) podNet {
	var pn podNet
	seen := map[netip.Prefix]bool{}
	for _, sc := range scs {
		pn.taps = append(pn.taps, sc.HostPort.tapName(sc.Name))
		add := func(p netip.Prefix) {
			if !seen[p] {
				seen[p] = true
				pn.cidrs = append(pn.cidrs, p)
			}
		}
		for _, g := range sc.HostPort.Gateways {
			add(g.Masked())
		}
		for _, c := range sc.HostPort.PodCIDRs {
			add(c)
		}
	}
	return pn
}

// startRings starts the pool of offload sockets (Config.RingPool) unless it runs or is
// turned off; the first offload switch calls it (Close closes the pool). Under swMu, or
// before the dataplane is shared.
func (d *Dataplane) startRings() error {
	n := d.cfg.RingPool
	if n < 0 || d.rings.Load() != nil {
		return nil
	}
	if n == 0 {
		n = DefaultRingPool
	}
	r, err := linkport.NewRingPool(d.cfg.Link.Packet, n, d.inNS, d.cfg.RingPoolError)
	if err != nil {
		return err
	}
	d.rings.Store(r)
	return nil
}

// inNS runs f on a thread in the dataplane's namespace (sockets, TAPs and
// child processes made there belong to it), switching back afterwards.
func (d *Dataplane) inNS(f func() error) error {
	if d.ns < 0 {
		return f()
	}
	return sys.InNetNS(d.ns, d.cfg.NetNS, f)
}

// ager removes expired FDB entries periodically (forwarding already
// ignores them; this frees their slots).
func (d *Dataplane) ager() {
	every(30*time.Second, d.agingStop, d.agingDone, func() {
		d.mu.Lock()
		for _, s := range d.switches {
			s.sw.Age()
		}
		d.mu.Unlock()
	})
}

// every runs f every interval until stop closes, then closes done.
func every(interval time.Duration, stop <-chan struct{}, done chan<- struct{}, f func()) {
	defer close(done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}

// CloseOptions says what Close leaves behind.
type CloseOptions struct {
	// Uninstall also removes the nftables table. Without it (an agent
	// restart) the table stays so that established masqueraded
	// connections keep their translations.
	Uninstall bool
}

// Close detaches every port, removes the host ports (TAP devices, their
// addresses and routes), closes every socket (which releases the XDP
// programs) and stops every goroutine. Pod links are never removed: they
// belong to the CNI plugin. It is idempotent.
func (d *Dataplane) Close(opts CloseOptions) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true // no new claims from here on
	d.mu.Unlock()
	appErr := d.closeAppServers()

	d.stopWatch()
	close(d.agingStop)
	<-d.agingDone
	close(d.peerStop)
	<-d.peerDone
	d.up.close()
	// Attaches and detaches in flight finish first (an attach sees closed
	// when it publishes and undoes itself).
	d.ops.Wait()
	d.mu.Lock()
	ports := make([]*Port, 0, len(d.ports))
	for _, p := range d.ports {
		ports = append(ports, p)
	}
	errs := []error{appErr}
	for _, p := range ports {
		d.unlinkLocked(p)
		errs = append(errs, p.teardown(d))
	}
	for _, name := range d.order {
		s := d.switches[name]
		errs = append(errs, d.fastHostRemove(s), d.reg.Detach(vale.JoinName(name, s.tapName)))
		s.tapAd.Put() // closes the TAP
		errs = append(errs, d.reg.DestroySwitch(name))
	}
	d.mu.Unlock()
	errs = append(errs, d.reg.Close(), d.ifn.Close())
	if d.fast != nil {
		errs = append(errs, d.fast.Close())
	}
	if r := d.rings.Load(); r != nil {
		errs = append(errs, r.Close())
	}
	if d.nft != nil && opts.Uninstall {
		errs = append(errs, d.nft.remove(context.Background()))
	}
	if opts.Uninstall {
		// Without it (a restart) the peer routes stay, and pods keep reaching other nodes.
		errs = append(errs, d.removeStalePeerRoutes(nil), d.pruneTunnels(nil))
	}
	d.nl.Close()
	if d.ns >= 0 {
		errs = append(errs, d.ns.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close dataplane: %w", err)
	}
	return nil
}

// switchFor returns the named switch (for "", the first one in d.order:
// the first configured switch, or the first remaining one once it is
// removed). d.mu held.
func (d *Dataplane) switchFor(name string) (*swState, error) {
	if name == "" {
		if len(d.order) == 0 {
			return nil, fmt.Errorf("default switch: none left: %w", ErrNoSwitch)
		}
		name = d.order[0]
	}
	s, ok := d.switches[name]
	if !ok {
		return nil, fmt.Errorf("switch %q: %w", name, ErrNoSwitch)
	}
	return s, nil
}

// Switches lists the switches with their counters and ports.
func (d *Dataplane) Switches() []SwitchInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]SwitchInfo, 0, len(d.order))
	for _, name := range d.order {
		out = append(out, d.switchInfoLocked(d.switches[name]))
	}
	return out
}

// Switch describes one switch.
func (d *Dataplane) Switch(name string) (SwitchInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.switchFor(name)
	if err != nil {
		return SwitchInfo{}, fmt.Errorf("describe switch: %w", err)
	}
	return d.switchInfoLocked(s), nil
}

func (d *Dataplane) switchInfoLocked(s *swState) SwitchInfo {
	si := SwitchInfo{
		Name: s.cfg.Name, Config: s.cfg, HostPort: vale.JoinName(s.cfg.Name, s.tapName),
		Counters: s.sw.Counters(),
	}
	hp := HostPortStats(s.tap.Stats())
	si.HostPortStats = hp
	for _, pi := range s.sw.Ports() {
		if pi.Name == si.HostPort {
			si.Ports = append(si.Ports, PortInfo{
				Name: pi.Name, Switch: s.cfg.Name, HostIfName: s.tapName, HostIfIndex: s.tapIndex,
				Kind: KindHost, Index: pi.Index, Up: pi.Active, Counters: pi.Counters, FastPath: d.fastHostInfo(s),
			})
			continue
		}
		if p, ok := d.ports[pi.Name]; ok {
			si.Ports = append(si.Ports, p.info(d))
		}
	}
	si.Ports = append(si.Ports, d.appPortInfos(s)...)
	return si
}

// SwitchInfo describes a switch.
type SwitchInfo struct {
	Name          string
	Config        SwitchConfig
	HostPort      string // the host port's name "<switch>:<tap>"
	HostPortStats HostPortStats
	Counters      vale.Counters // switch-wide
	Ports         []PortInfo    // by index, host port included
}

// HostPortStats are the TAP's counters.
type HostPortStats hostport.Stats

// FDBEntry is one forwarding-table entry.
type FDBEntry struct {
	MAC    net.HardwareAddr
	Port   string // port name, or "#<index>" for a port that just left
	Static bool
	Age    time.Duration
}

// FDB dumps a switch's forwarding table, sorted by MAC.
func (d *Dataplane) FDB(sw string) ([]FDBEntry, error) {
	d.mu.Lock()
	s, err := d.switchFor(sw)
	d.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("dump fdb: %w", err)
	}
	ents, err := s.sw.FDB()
	if err != nil {
		return nil, fmt.Errorf("dump fdb: %w", err)
	}
	names := map[int]string{}
	for _, pi := range s.sw.Ports() {
		names[pi.Index] = pi.Name
	}
	out := make([]FDBEntry, 0, len(ents))
	for _, e := range ents {
		n, ok := names[int(e.Port)]
		if !ok {
			n = fmt.Sprintf("#%d", e.Port)
		}
		out = append(out, FDBEntry{MAC: e.MAC, Port: n, Static: e.Static, Age: e.Age})
	}
	return out, nil
}

// Ports lists the pod ports of every switch, sorted by name.
func (d *Dataplane) Ports() []PortInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]PortInfo, 0, len(d.ports))
	for _, p := range d.ports {
		out = append(out, p.info(d))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Port describes one pod port by name ("<switch>:<hostIfName>").
func (d *Dataplane) Port(name string) (PortInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.ports[name]
	if !ok {
		return PortInfo{}, fmt.Errorf("describe port %s: %w", name, ErrNoPort)
	}
	return p.info(d), nil
}
