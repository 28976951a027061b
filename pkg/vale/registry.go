package vale

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/epair-cni/epair/pkg/netmap"
)

// Options configures a Registry.
type Options struct {
	// MaxSwitches bounds the number of switches (VALE's NM_BRIDGES = 8).
	// [1, 1024].
	MaxSwitches int
	// Defaults is the configuration of switches created implicitly by the
	// first port of an unknown switch name.
	Defaults Config
	// PortGeometry is the default ring layout of VALE ports; a
	// registration may ask for other ring and slot counts.
	PortGeometry PortGeometry
	// Clock returns monotonic nanoseconds, read once per batch for FDB
	// aging. Nil uses the time since New.
	Clock func() int64
}

// DefaultOptions returns VALE's defaults.
func DefaultOptions() Options {
	return Options{MaxSwitches: DefaultMaxSwitches, Defaults: DefaultConfig(), PortGeometry: DefaultPortGeometry}
}

// Registry holds the switches of one netmap instance (VALE's nm_bridges
// array) and plugs VALE into it: names "vale<sw>:<port>" resolve to VALE
// ports when registered, and the NETMAP_BDG_* commands come here. Its
// configuration lock is the netmap instance's global lock (NMG_LOCK).
type Registry struct {
	nm    *netmap.Netmap
	opts  Options
	clock func() int64

	// Under NMG_LOCK.
	switches   map[string]*Switch
	slots      []*Switch // by NETMAP_BDG_LIST index
	persistent map[string]*vpAdapter
	bwraps     map[string]*bwrap // by wrapped adapter name
	closed     bool
}

// New creates a registry over nm and registers it as nm's VALE: the
// port lookup for "vale…" names and the bridge-command handler.
func New(nm *netmap.Netmap, opts Options) (*Registry, error) {
	if nm == nil {
		return nil, fmt.Errorf("create vale registry: nil netmap: %w", ErrInvalid)
	}
	if opts.MaxSwitches < 1 || opts.MaxSwitches > MaxSwitchesHi {
		return nil, fmt.Errorf("create vale registry: max switches %d not in [1, %d]: %w", opts.MaxSwitches, MaxSwitchesHi, ErrInvalid)
	}
	if err := opts.Defaults.Validate(); err != nil {
		return nil, fmt.Errorf("create vale registry: defaults: %w", err)
	}
	if err := opts.PortGeometry.Validate(); err != nil {
		return nil, fmt.Errorf("create vale registry: %w", err)
	}
	r := &Registry{
		nm:         nm,
		opts:       opts,
		clock:      opts.Clock,
		switches:   map[string]*Switch{},
		slots:      make([]*Switch, opts.MaxSwitches),
		persistent: map[string]*vpAdapter{},
		bwraps:     map[string]*bwrap{},
	}
	if r.clock == nil {
		start := time.Now()
		r.clock = func() int64 { return int64(time.Since(start)) }
	}
	nm.AddLookup(r.portLookup)
	nm.SetBridgeCtl(r.bridgeCtl)
	return r, nil
}

// Netmap returns the netmap instance the registry is plugged into.
func (r *Registry) Netmap() *netmap.Netmap { return r.nm }

// newSwitchLocked creates and registers a switch. NMG_LOCK held.
func (r *Registry) newSwitchLocked(name string, cfg Config, held bool) (*Switch, error) {
	if err := ValidateSwitchName(name); err != nil {
		return nil, fmt.Errorf("create switch: %w", err)
	}
	if _, ok := r.switches[name]; ok {
		return nil, fmt.Errorf("create switch %q: %w", name, ErrExists)
	}
	slot := -1
	for i, s := range r.slots {
		if s == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		return nil, fmt.Errorf("create switch %q: %d switches exist: %w", name, len(r.slots), ErrSwitchFull)
	}
	s, err := newSwitch(r, name, cfg, slot)
	if err != nil {
		return nil, err
	}
	s.held = held
	r.switches[name] = s
	r.slots[slot] = s
	return s, nil
}

// CreateSwitch creates a switch with cfg. Unlike a switch created by its
// first port, it stays until DestroySwitch even without ports (the agent
// configures switches before pods arrive). EEXIST if it exists.
func (r *Registry) CreateSwitch(name string, cfg Config) (*Switch, error) {
	r.nm.Lock()
	defer r.nm.Unlock()
	if r.closed {
		return nil, fmt.Errorf("create switch %q: %w", name, ErrClosed)
	}
	return r.newSwitchLocked(name, cfg, true)
}

// DestroySwitch removes a switch. A switch cannot be deleted while it has
// ports (EBUSY).
func (r *Registry) DestroySwitch(name string) error {
	r.nm.Lock()
	defer r.nm.Unlock()
	s, ok := r.switches[name]
	if !ok {
		return fmt.Errorf("destroy switch %q: %w", name, ErrNoSwitch)
	}
	if s.nports > 0 {
		return fmt.Errorf("destroy switch %q: %d ports attached: %w", name, s.nports, ErrPortBusy)
	}
	r.dropSwitchLocked(s)
	return nil
}

func (r *Registry) dropSwitchLocked(s *Switch) {
	delete(r.switches, s.name)
	r.slots[s.slot] = nil
}

// Switch returns the named switch.
func (r *Registry) Switch(name string) (*Switch, error) {
	r.nm.Lock()
	defer r.nm.Unlock()
	s, ok := r.switches[name]
	if !ok {
		return nil, fmt.Errorf("get switch %q: %w", name, ErrNoSwitch)
	}
	return s, nil
}

// List describes every switch and its ports, sorted by name
// (NETMAP_BDG_LIST).
func (r *Registry) List() []SwitchInfo {
	r.nm.Lock()
	defer r.nm.Unlock()
	out := make([]SwitchInfo, 0, len(r.switches))
	for _, s := range r.switches {
		out = append(out, s.infoLocked())
	}
	sortInfos(out)
	return out
}

// Info describes one switch.
func (r *Registry) Info(name string) (SwitchInfo, error) {
	r.nm.Lock()
	defer r.nm.Unlock()
	s, ok := r.switches[name]
	if !ok {
		return SwitchInfo{}, fmt.Errorf("get info of switch %q: %w", name, ErrNoSwitch)
	}
	return s.infoLocked(), nil
}

// PortInfo describes the port "vale<sw>:<port>".
func (r *Registry) PortInfo(name string) (PortInfo, error) {
	swn, pn, err := ParseName(name)
	if err != nil {
		return PortInfo{}, err
	}
	r.nm.Lock()
	defer r.nm.Unlock()
	s, ok := r.switches[swn]
	if !ok {
		return PortInfo{}, fmt.Errorf("get info of port %s: %w", name, ErrNoSwitch)
	}
	p, ok := s.byName[pn]
	if !ok {
		return PortInfo{}, fmt.Errorf("get info of port %s: %w", name, ErrNoPort)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return p.info(), nil
}

// portLookup is netmap_get_bdg_na, called by netmap with NMG_LOCK held:
// (nil, nil) for names that are not VALE's; an existing VALE port; or,
// when create is set, a new ephemeral port (and its switch if needed).
func (r *Registry) portLookup(nm *netmap.Netmap, req *netmap.Req, create bool) (netmap.Adapter, error) {
	if !strings.HasPrefix(req.Name, NamePrefix) {
		return nil, nil
	}
	swn, pn, err := ParseName(req.Name)
	if err != nil {
		return nil, fmt.Errorf("get vale port: %w", err)
	}
	if r.closed {
		return nil, fmt.Errorf("get vale port %s: %w", req.Name, ErrClosed)
	}
	s := r.switches[swn]
	if s != nil {
		if p, ok := s.byName[pn]; ok {
			if p.vp == nil {
				return nil, fmt.Errorf("get vale port %s: an attached interface is owned by the switch: %w", req.Name, ErrPortBusy)
			}
			p.vp.Get()
			return p.vp, nil
		}
	}
	if !create {
		return nil, fmt.Errorf("get vale port %s: %w", req.Name, ErrNoPort)
	}
	if _, ok := r.persistent[pn]; ok {
		return nil, fmt.Errorf("get vale port %s: %q is a persistent port, attach it first: %w", req.Name, pn, ErrPortBusy)
	}
	v, err := newVP(r, req.Name, r.geometryFromReq(req), false)
	if err != nil {
		return nil, err
	}
	created := false
	if s == nil {
		if s, err = r.newSwitchLocked(swn, r.opts.Defaults, false); err != nil {
			return nil, fmt.Errorf("get vale port %s: %w", req.Name, err)
		}
		created = true
	}
	p := &Port{name: pn, kind: PortEphemeral, vp: v}
	if err := s.addPort(p); err != nil {
		if created {
			r.dropSwitchLocked(s)
		}
		return nil, err
	}
	v.port.Store(p)
	v.Get()
	return v, nil
}

// detachLocked removes p from its switch and drops the switch if that was
// its last port and it was not created explicitly. NMG_LOCK held.
func (r *Registry) detachLocked(p *Port) {
	s := p.sw
	if p.detached.Load() {
		return
	}
	s.removePort(p)
	if p.vp != nil {
		p.vp.port.Store(nil)
	}
	if s.nports == 0 && !s.held && r.switches[s.name] == s {
		r.dropSwitchLocked(s)
	}
}

// NewIf creates a persistent VALE port named ifname (NETMAP_BDG_NEWIF),
// registered in netmap as an interface so that it can be attached to a
// switch with Attach("vale<sw>:<ifname>"). g's zero fields take the
// registry's default geometry.
func (r *Registry) NewIf(ifname string, g PortGeometry) error {
	if err := validatePortName(ifname); err != nil {
		return fmt.Errorf("create persistent port: %w", err)
	}
	if strings.HasPrefix(ifname, NamePrefix) {
		return fmt.Errorf("create persistent port %q: name must not start with %q: %w", ifname, NamePrefix, ErrInvalid)
	}
	def := r.opts.PortGeometry
	if g.TxRings == 0 {
		g.TxRings = def.TxRings
	}
	if g.RxRings == 0 {
		g.RxRings = def.RxRings
	}
	if g.TxSlots == 0 {
		g.TxSlots = def.TxSlots
	}
	if g.RxSlots == 0 {
		g.RxSlots = def.RxSlots
	}
	if g.BufSize == 0 {
		g.BufSize = def.BufSize
	}
	v, err := newVP(r, ifname, g, true)
	if err != nil {
		return err
	}
	r.nm.Lock()
	if r.closed {
		r.nm.Unlock()
		return fmt.Errorf("create persistent port %q: %w", ifname, ErrClosed)
	}
	if _, ok := r.persistent[ifname]; ok {
		r.nm.Unlock()
		return fmt.Errorf("create persistent port %q: %w", ifname, ErrExists)
	}
	r.persistent[ifname] = v
	r.nm.Unlock()
	if err := r.nm.Attach(v); err != nil { // takes the registry's reference
		r.nm.Lock()
		delete(r.persistent, ifname)
		r.nm.Unlock()
		return fmt.Errorf("create persistent port %q: %w", ifname, err)
	}
	return nil
}

// DelIf deletes a persistent port (NETMAP_BDG_DELIF): EBUSY while it is
// attached to a switch or open.
func (r *Registry) DelIf(ifname string) error {
	r.nm.Lock()
	v, ok := r.persistent[ifname]
	if !ok {
		r.nm.Unlock()
		return fmt.Errorf("delete persistent port %q: %w", ifname, ErrNoPort)
	}
	if v.port.Load() != nil {
		r.nm.Unlock()
		return fmt.Errorf("delete persistent port %q: attached to a switch: %w", ifname, ErrPortBusy)
	}
	if v.ActiveFds() > 0 {
		r.nm.Unlock()
		return fmt.Errorf("delete persistent port %q: open by %d users: %w", ifname, v.ActiveFds(), ErrPortBusy)
	}
	delete(r.persistent, ifname)
	r.nm.Unlock()
	if err := r.nm.Detach(ifname); err != nil {
		return fmt.Errorf("delete persistent port %q: %w", ifname, err)
	}
	return nil
}

// Attach attaches an interface known to netmap to a switch
// (NETMAP_BDG_ATTACH on "vale<sw>:<ifname>"): a persistent VALE port
// directly, any other adapter through a bwrap (see AttachAdapter). The
// switch is created with the registry defaults if needed.
func (r *Registry) Attach(name string, host bool) error {
	swn, ifname, err := ParseName(name)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	r.nm.Lock()
	if v, ok := r.persistent[ifname]; ok {
		defer r.nm.Unlock()
		if host {
			return fmt.Errorf("attach %s: a VALE port has no host rings: %w", name, ErrNotSupported)
		}
		if v.port.Load() != nil {
			return fmt.Errorf("attach %s: already attached to %s: %w", name, v.port.Load().sw.name, ErrPortBusy)
		}
		s, created, err := r.switchForAttachLocked(swn)
		if err != nil {
			return fmt.Errorf("attach %s: %w", name, err)
		}
		p := &Port{name: ifname, kind: PortPersistent, vp: v}
		if err := s.addPort(p); err != nil {
			if created {
				r.dropSwitchLocked(s)
			}
			return err
		}
		v.port.Store(p)
		if v.On() { // already open by users: start receiving
			s.setOn(p, true, v.RxRings[:v.NumRxRings], nil)
		}
		return nil
	}
	r.nm.Unlock()
	a, err := r.nm.LookupAdapter(&netmap.Req{Name: ifname, Version: netmap.API})
	if err != nil {
		return fmt.Errorf("attach %s: %w", name, err)
	}
	err = r.AttachAdapter(name, a, host)
	a.NA().Put() // AttachAdapter took its own reference
	return err
}

func (r *Registry) switchForAttachLocked(swn string) (*Switch, bool, error) {
	if r.closed {
		return nil, false, ErrClosed
	}
	if s, ok := r.switches[swn]; ok {
		return s, false, nil
	}
	s, err := r.newSwitchLocked(swn, r.opts.Defaults, false)
	return s, err == nil, err
}

// Detach detaches the port "vale<sw>:<port>" (NETMAP_BDG_DETACH): a bwrap
// is unwrapped and its adapter given back (with its host port, if any); a
// persistent port leaves the switch and stays available. Ephemeral ports go
// away with their last user and cannot be detached (EBUSY).
func (r *Registry) Detach(name string) error {
	swn, pn, err := ParseName(name)
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	r.nm.Lock()
	s, ok := r.switches[swn]
	if !ok {
		r.nm.Unlock()
		return fmt.Errorf("detach %s: %w", name, ErrNoSwitch)
	}
	p, ok := s.byName[pn]
	if !ok {
		r.nm.Unlock()
		return fmt.Errorf("detach %s: %w", name, ErrNoPort)
	}
	switch p.kind {
	case PortEphemeral:
		r.nm.Unlock()
		return fmt.Errorf("detach %s: an ephemeral port lives as long as its users: %w", name, ErrPortBusy)
	case PortPersistent:
		defer r.nm.Unlock()
		r.detachLocked(p)
		return nil
	}
	b := p.bw
	r.nm.Unlock()
	return b.detach()
}

// Close detaches every bwrap (stopping their goroutines) and refuses new
// switches and ports. VALE ports stay until their users close them.
func (r *Registry) Close() error {
	r.nm.Lock()
	r.closed = true
	bws := make([]*bwrap, 0, len(r.bwraps))
	for _, b := range r.bwraps {
		bws = append(bws, b)
	}
	r.nm.Unlock()
	var errs []error
	for _, b := range bws {
		if err := b.detach(); err != nil && !errors.Is(err, ErrNoPort) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// bridgeCtl is netmap_bdg_ctl: the NETMAP_BDG_* commands of NIOCREGIF and
// NIOCGINFO. Called without NMG_LOCK.
func (r *Registry) bridgeCtl(nm *netmap.Netmap, req *netmap.Req) error {
	switch req.Cmd {
	case netmap.BdgAttach:
		return r.Attach(req.Name, req.Arg1&bdgHost != 0)
	case netmap.BdgDetach:
		return r.Detach(req.Name)
	case netmap.BdgNewIf:
		return r.NewIf(req.Name, PortGeometry{TxRings: int(req.TxRings), RxRings: int(req.RxRings), TxSlots: req.TxSlots, RxSlots: req.RxSlots})
	case netmap.BdgDelIf:
		return r.DelIf(req.Name)
	case netmap.BdgList:
		return r.list(req)
	case netmap.BdgVnetHdr:
		return r.checkVnetHdr(req.Name, int(req.Arg1))
	}
	return fmt.Errorf("bridge command %d on %s: %w", req.Cmd, req.Name, syscall.EINVAL)
}

// checkVnetHdr is NETMAP_BDG_VNET_HDR. The header length is a property of
// the whole switch (Config.VnetHdrLen): the request succeeds when it asks
// for the length the port's switch already uses (0 on a switch of a name
// not created yet), and fails with ErrNotSupported otherwise, since the
// switch does not convert between header lengths.
func (r *Registry) checkVnetHdr(name string, l int) error {
	swn, _, err := ParseName(name)
	if err != nil {
		return fmt.Errorf("set vnet header on %s: %w", name, err)
	}
	r.nm.Lock()
	have := 0
	if s, ok := r.switches[swn]; ok {
		have = s.cfg.VnetHdrLen
	}
	r.nm.Unlock()
	if l != have {
		return fmt.Errorf("set vnet header on %s: length %d: the switch uses %d and does not convert: %w", name, l, have, ErrNotSupported)
	}
	return nil
}

// bdgHost is NETMAP_BDG_HOST in nr_arg1: also attach the host rings.
const bdgHost = 1

// list is NETMAP_BDG_LIST: with a name, return its switch index in Arg1
// and port index in Arg2; without, return the first port at or after
// (Arg1, Arg2) and its name, or ENOENT after the last.
func (r *Registry) list(req *netmap.Req) error {
	r.nm.Lock()
	defer r.nm.Unlock()
	if req.Name != "" {
		swn, pn, err := ParseName(req.Name)
		if err != nil {
			return fmt.Errorf("list: %w", err)
		}
		s, ok := r.switches[swn]
		if !ok {
			return fmt.Errorf("list %s: %w", req.Name, ErrNoSwitch)
		}
		p, ok := s.byName[pn]
		if !ok {
			return fmt.Errorf("list %s: %w", req.Name, ErrNoPort)
		}
		req.Arg1, req.Arg2 = uint16(s.slot), p.idx
		return nil
	}
	for i := int(req.Arg1); i < len(r.slots); i++ {
		s := r.slots[i]
		if s == nil {
			continue
		}
		j := 0
		if i == int(req.Arg1) {
			j = int(req.Arg2)
		}
		for ; j < len(s.ports); j++ {
			if p := s.ports[j]; p != nil {
				req.Name = p.Name()
				req.Arg1, req.Arg2 = uint16(i), uint16(j)
				return nil
			}
		}
	}
	return fmt.Errorf("list: no port at or after %d:%d: %w", req.Arg1, req.Arg2, syscall.ENOENT)
}
