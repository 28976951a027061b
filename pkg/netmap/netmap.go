package netmap

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// API versions (NETMAP_API, NETMAP_MIN_API, NETMAP_MAX_API).
const (
	API    = 11
	MinAPI = 11
	MaxAPI = 15
)

// nr_ringid bits.
const (
	RingMask uint16 = 0x0fff // NETMAP_RING_MASK
	NoTxPoll uint16 = 0x1000 // NETMAP_NO_TX_POLL
	SWRing   uint16 = 0x2000 // NETMAP_SW_RING (legacy)
	HWRing   uint16 = 0x4000 // NETMAP_HW_RING (legacy)
	DoRxPoll uint16 = 0x8000 // NETMAP_DO_RX_POLL (ignored, as in the seed)
)

// nr_flags: registration modes (NR_REG_*) and extra bits.
const (
	RegDefault    uint32 = 0
	RegAllNIC     uint32 = 1
	RegSW         uint32 = 2
	RegNICSW      uint32 = 3
	RegOneNIC     uint32 = 4
	RegPipeMaster uint32 = 5
	RegPipeSlave  uint32 = 6
	RegMask       uint32 = 0xf

	MonitorTX   uint32 = 0x100  // NR_MONITOR_TX
	MonitorRX   uint32 = 0x200  // NR_MONITOR_RX
	ZCopyMon    uint32 = 0x400  // NR_ZCOPY_MON (not supported: copy monitors only)
	Exclusive   uint32 = 0x800  // NR_EXCLUSIVE
	RxRingsOnly uint32 = 0x2000 // NR_RX_RINGS_ONLY: bind no TX ring
	TxRingsOnly uint32 = 0x4000 // NR_TX_RINGS_ONLY: bind no RX ring
)

// nr_cmd values (NETMAP_BDG_*).
const (
	BdgAttach  uint16 = 1
	BdgDetach  uint16 = 2
	BdgRegops  uint16 = 3
	BdgList    uint16 = 4
	BdgVnetHdr uint16 = 5
	BdgNewIf   uint16 = 6
	BdgDelIf   uint16 = 7
)

// Admode is dev.netmap.admode.
type Admode int

const (
	AdmodeBest    Admode = 0 // native with generic fallback (AF_XDP, else AF_PACKET)
	AdmodeNative  Admode = 1 // native only
	AdmodeGeneric Admode = 2 // force generic
)

// Config holds the dev.netmap.* tunables that affect this package.
type Config struct {
	Admode      Admode
	Fwd         bool // dev.netmap.fwd: transparent mode on every ring
	NoTimestamp bool // dev.netmap.no_timestamp (default false = stamp in poll)
	// StrictSync makes TxSync/RxSync return an error wrapping EINVAL after a
	// failed prologue. The default (false) keeps netmap's "return 0 after
	// reinit"; the ring is reset either way.
	StrictSync bool
}

// Req mirrors struct nmreq.
type Req struct {
	Name    string
	Version uint32
	Offset  uint32 // nr_offset (always 0: no shared region)
	Memsize uint32 // nr_memsize: bytes in the adapter's pool
	TxSlots uint32
	RxSlots uint32
	TxRings uint16
	RxRings uint16
	RingID  uint16
	Cmd     uint16
	Arg1    uint16
	Arg2    uint16 // out: memory region id
	Arg3    uint32 // in: extra buffers wanted; out: obtained
	Flags   uint32
}

// PortLookup resolves names it owns (for example "vale0:p1" for pkg/vale):
// it returns (nil, nil) for "not mine", (nil, err) for "mine but failed" and
// (adapter, nil) with a reference taken for a match (netmap_get_bdg_na). It
// is called with the registry lock (NMG_LOCK) held: it must not call Lock,
// Attach or Handle methods.
type PortLookup func(nm *Netmap, req *Req, create bool) (Adapter, error)

// BridgeCtl handles the NETMAP_BDG_* commands (netmap_bdg_ctl). It is called
// without the registry lock; it may take it with Netmap.Lock.
type BridgeCtl func(nm *Netmap, req *Req) error

// Netmap is the netmap "device": the registry of adapters and the global
// configuration lock (NMG_LOCK). The zero value is not usable; call New.
type Netmap struct {
	mu       sync.Mutex // NMG_LOCK
	cfg      Config
	cfgp     atomic.Pointer[Config] // lock-free snapshot of cfg for the data path
	ifaces   map[string]*iface
	lookups  []PortLookup
	bdgCtl   BridgeCtl
	useCount int
	memID    uint16
}

// iface is an "ifp": a name with a native adapter and/or a generic factory.
type iface struct {
	native     Adapter
	generic    Adapter // current generic adapter, if any
	newGeneric func() (Adapter, error)
}

// New returns a netmap instance. An invalid admode is reset to AdmodeBest.
func New(cfg Config) *Netmap {
	if cfg.Admode < AdmodeBest || cfg.Admode > AdmodeGeneric {
		cfg.Admode = AdmodeBest
	}
	nm := &Netmap{cfg: cfg, ifaces: map[string]*iface{}}
	c := cfg
	nm.cfgp.Store(&c)
	return nm
}

// SetConfig replaces the tunables (under the global lock).
func (nm *Netmap) SetConfig(cfg Config) {
	nm.mu.Lock()
	nm.cfg = cfg
	c := cfg
	nm.cfgp.Store(&c)
	nm.mu.Unlock()
}

// Lock and Unlock take NMG_LOCK, for packages (vale) that change
// configuration. They must not be held while calling Handle methods.
func (nm *Netmap) Lock()   { nm.mu.Lock() }
func (nm *Netmap) Unlock() { nm.mu.Unlock() }

// AddLookup registers a PortLookup (netmap_get_bdg_na's place in the cascade).
func (nm *Netmap) AddLookup(l PortLookup) {
	nm.mu.Lock()
	nm.lookups = append(nm.lookups, l)
	nm.mu.Unlock()
}

// SetBridgeCtl registers the handler for NETMAP_BDG_* commands.
func (nm *Netmap) SetBridgeCtl(c BridgeCtl) {
	nm.mu.Lock()
	nm.bdgCtl = c
	nm.mu.Unlock()
}

// UseCount is netmap_use_count: open handles.
func (nm *Netmap) UseCount() int {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.useCount
}

// Attach is netmap_attach: register an adapter under its name (the "ifp")
// and take the registry's reference. It marks the adapter NAFNative unless
// the adapter declares itself generic (NAFSkipIntr, as a GenericAdapter
// with GenericConfig.Native false does).
func (nm *Netmap) Attach(a Adapter) error {
	na := a.NA()
	if na.self == nil {
		return fmt.Errorf("attach adapter: not initialized (call BaseAdapter.Init): %w", syscall.EINVAL)
	}
	nm.mu.Lock()
	defer nm.mu.Unlock()
	ifp := nm.ifaces[na.Name]
	if ifp != nil && ifp.native != nil {
		return fmt.Errorf("attach adapter %q: name in use: %w", na.Name, syscall.EEXIST)
	}
	if ifp == nil {
		ifp = &iface{}
		nm.ifaces[na.Name] = ifp
	}
	na.nm = nm
	if na.Flags()&NAFSkipIntr == 0 {
		na.SetFlags(NAFNative)
	}
	na.Get()
	ifp.native = a
	return nil
}

// AttachGeneric registers an interface that can be driven through a generic
// adapter, created on demand by newGeneric (generic_netmap_attach).
func (nm *Netmap) AttachGeneric(name string, newGeneric func() (Adapter, error)) error {
	if name == "" || newGeneric == nil {
		return fmt.Errorf("attach generic %q: name and factory required: %w", name, syscall.EINVAL)
	}
	nm.mu.Lock()
	defer nm.mu.Unlock()
	ifp := nm.ifaces[name]
	if ifp == nil {
		ifp = &iface{}
		nm.ifaces[name] = ifp
	}
	if ifp.newGeneric != nil {
		return fmt.Errorf("attach generic %q: already attached: %w", name, syscall.EEXIST)
	}
	ifp.newGeneric = newGeneric
	return nil
}

// Detach is netmap_detach (004:2837-2867): the backend of name went away.
// Rings are stopped, the adapter is marked detached and netmap mode off, the
// registry's reference is dropped; bound users keep the adapter alive and
// later syncs and registrations fail with ENXIO.
func (nm *Netmap) Detach(name string) error {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	ifp := nm.ifaces[name]
	if ifp == nil {
		return fmt.Errorf("detach %q: no such interface: %w", name, syscall.ENXIO)
	}
	delete(nm.ifaces, name)
	for _, a := range []Adapter{ifp.generic, ifp.native} {
		if a == nil {
			continue
		}
		na := a.NA()
		na.DisableAllRings()
		na.detached.Store(true)
		na.ClearFlags(NAFNetmapOn)
		destroyed := false
		if a == ifp.native {
			destroyed = na.Put()
		}
		if !destroyed {
			for _, rs := range [2][]*Kring{na.TxRings, na.RxRings} {
				for _, k := range rs {
					k.Start()
					k.NotifyNow() // give them a chance to notice
				}
			}
			na.si[TX].wake()
			na.si[RX].wake()
		}
	}
	return nil
}

// getNA is netmap_get_na (004:1353-1436): monitor, pipe, lookups (VALE),
// then hardware. On success a reference is held. Called with nm.mu held.
func (nm *Netmap) getNA(req *Req, create bool) (Adapter, error) {
	if a, err := nm.getMonitorNA(req, create); a != nil || err != nil {
		return a, err
	}
	if a, err := nm.getPipeNA(req, create); a != nil || err != nil {
		return a, err
	}
	for _, l := range nm.lookups {
		if a, err := l(nm, req, create); a != nil || err != nil {
			if a != nil && a.NA().nm == nil {
				a.NA().nm = nm
			}
			return a, err
		}
	}
	ifp := nm.ifaces[req.Name]
	if ifp == nil {
		return nil, fmt.Errorf("get adapter %q: no such interface: %w", req.Name, syscall.ENXIO)
	}
	a, err := nm.getHwNA(ifp, req.Name, create)
	if err != nil {
		return nil, err
	}
	a.NA().Get()
	return a, nil
}

// getHwNA is netmap_get_hw_na's decision table (004:1247-1350).
func (nm *Netmap) getHwNA(ifp *iface, name string, create bool) (Adapter, error) {
	mode := nm.cfg.Admode
	if mode < AdmodeBest || mode > AdmodeGeneric {
		mode = AdmodeBest
		nm.cfg.Admode = mode
		c := nm.cfg
		nm.cfgp.Store(&c)
	}
	if ifp.generic != nil {
		return ifp.generic, nil
	}
	if n := ifp.native; n != nil {
		na := n.NA()
		owned := na.activeFds > 0 || na.Flags()&NAFBusy != 0
		if owned || mode != AdmodeGeneric || na.Flags()&NAFForceNative != 0 || len(na.pipes) > 0 {
			return n, nil
		}
	} else if mode == AdmodeNative {
		return nil, fmt.Errorf("get adapter %q: no native support with admode native: %w", name, syscall.EOPNOTSUPP)
	}
	if ifp.newGeneric == nil {
		return nil, fmt.Errorf("get adapter %q: no generic support: %w", name, syscall.EOPNOTSUPP)
	}
	if !create {
		return nil, fmt.Errorf("get adapter %q: generic adapter not created: %w", name, syscall.ENXIO)
	}
	g, err := ifp.newGeneric()
	if err != nil {
		return nil, fmt.Errorf("create generic adapter %q: %w", name, err)
	}
	gna := g.NA()
	gna.nm = nm
	gna.ClearFlags(NAFNative)
	if ifp.native != nil {
		ifp.native.NA().Get() // gna->prev keeps the native adapter alive; released in onDtor (D-N15)
		gna.prev = ifp.native
	}
	ifp.generic = g
	gna.onDtor = func() {
		if ifp.generic == g {
			ifp.generic = nil
		}
		if gna.prev != nil {
			gna.prev.NA().Put()
			gna.prev = nil
		}
	}
	return g, nil
}

// Prev returns the native adapter a generic adapter shadows (gna->prev).
func (na *BaseAdapter) Prev() Adapter { return na.prev }

// LookupAdapter finds an adapter by request without binding (it takes a
// reference the caller must Put). It never creates generic adapters (D-N11).
func (nm *Netmap) LookupAdapter(req *Req) (Adapter, error) {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.getNA(req, false)
}

func checkVersion(req *Req) error {
	v := req.Version
	req.Version = API // always write back the supported version
	if v < MinAPI || v > MaxAPI {
		return fmt.Errorf("check version: %d outside [%d,%d]: %w", v, MinAPI, MaxAPI, syscall.EINVAL)
	}
	return nil
}

func truncName(req *Req) {
	if len(req.Name) > 15 {
		req.Name = req.Name[:15]
	}
}

// Info is NIOCGINFO (004:2115-2151), with D-N1 fixed (versions outside
// [MinAPI, MaxAPI] are EINVAL, Version is rewritten to API) and D-N11 fixed
// (it never creates adapters). An empty name reports only memory info.
func (nm *Netmap) Info(req *Req) error {
	truncName(req)
	if err := checkVersion(req); err != nil {
		return err
	}
	if req.Cmd == BdgList {
		nm.mu.Lock()
		ctl := nm.bdgCtl
		nm.mu.Unlock()
		if ctl == nil {
			return fmt.Errorf("info: bridge list: no switch support: %w", syscall.EOPNOTSUPP)
		}
		return ctl(nm, req)
	}
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if req.Name == "" {
		req.Memsize = 0
		req.Arg2 = nm.memID
		return nil
	}
	a, err := nm.getNA(req, false)
	if err != nil {
		return err
	}
	na := a.NA()
	defer na.Put()
	nm.updateConfig(na)
	req.Memsize = uint32(uint64(na.Mem.Total()) * uint64(na.Mem.BufSize()))
	req.Arg2 = nm.memID
	req.Offset = 0
	req.TxRings, req.RxRings = uint16(na.NumTxRings), uint16(na.NumRxRings)
	req.TxSlots, req.RxSlots = na.NumTxDesc, na.NumRxDesc
	return nil
}

// UpdateConfig is netmap_update_config (004:686-728): adopt a changed
// geometry only when nobody is bound. It returns true when a change was
// refused because the adapter is active.
func (nm *Netmap) UpdateConfig(a Adapter) bool {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.updateConfig(a.NA())
}

func (nm *Netmap) updateConfig(na *BaseAdapter) bool {
	g, err := na.self.Config()
	if err != nil {
		return false
	}
	cur := Geometry{na.NumTxRings, na.NumRxRings, na.NumTxDesc, na.NumRxDesc}
	if g == cur {
		return false
	}
	if g.TxRings <= 0 || g.RxRings <= 0 || g.TxSlots < 2 || g.RxSlots < 2 {
		return false
	}
	if na.activeFds == 0 && na.TxRings == nil {
		na.NumTxRings, na.NumRxRings, na.NumTxDesc, na.NumRxDesc = g.TxRings, g.RxRings, g.TxSlots, g.RxSlots
		return false
	}
	return true // "this is bad": keep the old geometry
}

// InterpRingID is netmap_interp_ringid (004:1649-1730): the [qfirst, qlast)
// interval per direction for a registration, and np_flags. hostRings is
// NAF_HOST_RINGS.
func InterpRingID(ntx, nrx int, hostRings bool, ringid uint16, flags uint32) (qfirst, qlast [2]int, npFlags uint32, err error) {
	i := int(ringid & RingMask)
	reg := flags & RegMask
	if reg == RegDefault { // legacy API
		switch {
		case ringid&SWRing != 0:
			reg = RegSW
		case ringid&HWRing != 0:
			reg = RegOneNIC
		default:
			reg = RegAllNIC
		}
	}
	nr := [2]int{ntx, nrx}
	switch reg {
	case RegAllNIC, RegPipeMaster, RegPipeSlave:
		for t := range nr {
			qfirst[t], qlast[t] = 0, nr[t]
		}
	case RegSW, RegNICSW:
		if !hostRings {
			return qfirst, qlast, 0, fmt.Errorf("interp ringid: host rings not supported for mode %d: %w", reg, syscall.EINVAL)
		}
		for t := range nr {
			if reg == RegSW {
				qfirst[t] = nr[t]
			}
			qlast[t] = nr[t] + 1
		}
	case RegOneNIC:
		if i >= ntx && i >= nrx {
			return qfirst, qlast, 0, fmt.Errorf("interp ringid: ring %d beyond %d tx / %d rx rings: %w", i, ntx, nrx, syscall.EINVAL)
		}
		for t := range nr {
			j := i
			if j >= nr[t] {
				j = 0 // fallback to the first ring
			}
			qfirst[t], qlast[t] = j, j+1
		}
	default:
		return qfirst, qlast, 0, fmt.Errorf("interp ringid: invalid register mode %d: %w", reg, syscall.EINVAL)
	}
	if flags&TxRingsOnly != 0 && flags&RxRingsOnly != 0 {
		return qfirst, qlast, 0, fmt.Errorf("interp ringid: both TX-only and RX-only: %w", syscall.EINVAL)
	}
	if flags&TxRingsOnly != 0 {
		qfirst[RX], qlast[RX] = 0, 0
	}
	if flags&RxRingsOnly != 0 {
		qfirst[TX], qlast[TX] = 0, 0
	}
	return qfirst, qlast, (flags &^ RegMask) | reg, nil
}

// isPipeName reports whether req names a pipe end, and its parent/id.
func pipeReq(req *Req) (parent string, id uint32, master, ok bool) {
	reg := req.Flags & RegMask
	if reg != RegPipeMaster && reg != RegPipeSlave {
		return "", 0, false, false
	}
	return req.Name, uint32(req.RingID & RingMask), reg == RegPipeMaster, true
}

// HasPrefix is a helper for PortLookup implementations.
func HasPrefix(name, prefix string) bool { return strings.HasPrefix(name, prefix) }
