package ifcore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Interface flags (if_flags), with the BSD values.
const (
	IFF_UP          uint32 = 0x1
	IFF_BROADCAST   uint32 = 0x2
	IFF_DEBUG       uint32 = 0x4
	IFF_LOOPBACK    uint32 = 0x8
	IFF_POINTOPOINT uint32 = 0x10
	IFF_SMART       uint32 = 0x20
	IFF_RUNNING     uint32 = 0x40
	IFF_NOARP       uint32 = 0x80
	IFF_PROMISC     uint32 = 0x100
	IFF_ALLMULTI    uint32 = 0x200
	IFF_OACTIVE     uint32 = 0x400
	IFF_SIMPLEX     uint32 = 0x800
	IFF_LINK0       uint32 = 0x1000
	IFF_LINK1       uint32 = 0x2000
	IFF_LINK2       uint32 = 0x4000
	IFF_MULTICAST   uint32 = 0x8000
	IFF_PPROMISC    uint32 = 0x20000
	IFF_MONITOR     uint32 = 0x40000
	IFF_STATICARP   uint32 = 0x80000
	IFF_NPOLLING    uint32 = 0x100000

	// IFF_CANTCHANGE are the flags SIOCSIFFLAGS may not change ([ext]
	// net/if.h; PROMISC is managed through the promiscuous count).
	IFF_CANTCHANGE = IFF_BROADCAST | IFF_POINTOPOINT | IFF_RUNNING | IFF_OACTIVE |
		IFF_SIMPLEX | IFF_MULTICAST | IFF_ALLMULTI | IFF_SMART | IFF_PROMISC | IFF_NPOLLING
)

// IfType is if_type (IFT_*).
type IfType uint8

// Interface types used here ([ext] net/if_types.h values).
const (
	IFT_OTHER         IfType = 0x1
	IFT_ETHER         IfType = 0x6
	IFT_LOOP          IfType = 0x18
	IFT_XETHER        IfType = 0x1a
	IFT_L2VLAN        IfType = 0x87
	IFT_IEEE8023ADLAG IfType = 0x88
)

// Limits ([ext] net/if.h).
const (
	IFNAMSIZ   = 16
	IF_MINMTU  = 72
	IF_MAXMTU  = 65535
	IFQ_MAXLEN = 50
	ETHERMTU   = 1500
	// DefaultStageCntMax is ifsq_stage_cntmax.
	DefaultStageCntMax = 4
)

// LinkState is if_link_state.
type LinkState int32

const (
	LinkStateUnknown LinkState = iota
	LinkStateDown
	LinkStateUp
)

// Driver is the transmit side of an interface: if_start. Start is called
// with the subqueue's hardware serializer held and the if_start interlock
// taken; it dequeues from sq and hands packets to the hardware, setting
// OACTIVE (and prepending what it could not send) when the hardware queue
// is full. w is the worker it runs on, or nil.
type Driver interface {
	Start(w *Worker, sq *Subqueue)
}

// Ioctler is implemented by drivers with an if_ioctl.
type Ioctler interface {
	Ioctl(ifp *Ifnet, cmd IoctlCmd, r *Ifreq) error
}

// Watchdogger is implemented by drivers with a legacy if_watchdog, run by
// the slow timer when Ifnet.SetTimer's count expires.
type Watchdogger interface {
	Watchdog(ifp *Ifnet)
}

// MultiResolver is if_resolvemulti: it may reject a multicast address and
// may yield the link-layer address to join as well.
type MultiResolver interface {
	ResolveMulti(ifp *Ifnet, sa Sockaddr) (ll Sockaddr, hasLL bool, err error)
}

// Serializer is the interface serializer (lwkt_serialize): a mutex with a
// non-blocking try. *sync.Mutex implements it.
type Serializer interface {
	Lock()
	Unlock()
	TryLock() bool
}

var _ Serializer = (*sync.Mutex)(nil)

// SerializeFuncs are driver-supplied serializer callbacks (option (a) of
// if_attach). All four or none.
type SerializeFuncs struct {
	Serialize        func()
	Deserialize      func()
	TrySerialize     func() bool
	AssertSerialized func(held bool)
}

type funcSerializer struct{ f SerializeFuncs }

func (s funcSerializer) Lock()         { s.f.Serialize() }
func (s funcSerializer) Unlock()       { s.f.Deserialize() }
func (s funcSerializer) TryLock() bool { return s.f.TrySerialize() }

// Counters are one worker's share of an interface's statistics
// (if_data_pcpu). Read the sums with Ifnet.Stats.
type Counters struct {
	IPackets, IErrors, OPackets, OErrors, Collisions, IBytes, OBytes,
	IMcasts, OMcasts, IQDrops, NoProto, OQDrops atomic.Uint64
	_ [32]byte
}

// IfData is a summed statistics snapshot plus the interface data.
type IfData struct {
	IPackets, IErrors, OPackets, OErrors, Collisions, IBytes, OBytes,
	IMcasts, OMcasts, IQDrops, NoProto, OQDrops uint64
	MTU        int
	Metric     int
	Baudrate   uint64
	LinkState  LinkState
	LastChange time.Time
}

// IfConfig describes an interface to attach (if_alloc + if_initname + the
// driver's setup before if_attach).
type IfConfig struct {
	// Name is the full interface name (if_xname); if empty it is
	// Dname followed by Dunit.
	Name  string
	Dname string
	Dunit int
	Type  IfType
	Flags uint32
	// MTU defaults to ETHERMTU.
	MTU      int
	Baudrate uint64
	// Lladdr is the link-level address (6 bytes for Ethernet).
	Lladdr       []byte
	Capabilities uint32
	Driver       Driver
	// At most one of Serializer (shared with the caller) and
	// SerializeFuncs; neither means a private mutex.
	Serializer     Serializer
	SerializeFuncs *SerializeFuncs
	// Subqueues is altq_subq_cnt (power of two, default 1).
	Subqueues int
	SubqMap   SubqMap
	// MaxLen is the requested queue length before staging headroom;
	// 0 means the Net's IfqMaxLen.
	MaxLen     int
	Discipline DisciplineKind
	Rate       *Rate
	// Input is if_input, called for packets received on this interface
	// (by the epair cloner). nil frees them.
	Input InputFunc
	Softc any
}

// Ifnet is an attached interface.
type Ifnet struct {
	net   *Net
	name  atomic.Pointer[string]
	dname string
	dunit int
	index uint32
	typ   IfType

	flags     atomic.Uint32
	mtu       atomic.Int32
	linkState atomic.Int32
	ifTimer   atomic.Int32 // legacy watchdog seconds (if_timer)
	dead      atomic.Bool
	baudrate  uint64

	// Control-plane state, guarded by Net.mu.
	lladdr       []byte
	metric       int
	tsolen       int
	capabilities uint32
	capenable    uint32
	pcount       int
	amcount      int
	groups       []string
	multi        []*Multiaddr
	addrs        []*Ifaddr
	lastchange   time.Time
	legacyMu     sync.Mutex
	legacy       IfData // stats_compat copy, written by the slow timer

	snd    Ifaltq
	driver Driver
	// selfCounting: the driver counts obytes/omcasts itself (OutputCounter).
	selfCounting bool
	serializer   Serializer
	stats        []Counters
	input        atomic.Pointer[InputFunc]
	softc        any
	cloner       *clonerEntry
}

// Name returns if_xname.
func (ifp *Ifnet) Name() string { return *ifp.name.Load() }

// Index returns if_index.
func (ifp *Ifnet) Index() uint32 { return ifp.index }

// Type returns if_type.
func (ifp *Ifnet) Type() IfType { return ifp.typ }

// Dname and Dunit are the driver name and unit.
func (ifp *Ifnet) Dname() string { return ifp.dname }

// Dunit returns the driver unit.
func (ifp *Ifnet) Dunit() int { return ifp.dunit }

// Flags returns if_flags.
func (ifp *Ifnet) Flags() uint32 { return ifp.flags.Load() }

// SetFlagBits sets bits in if_flags (driver use, e.g. IFF_RUNNING).
func (ifp *Ifnet) SetFlagBits(b uint32) { ifp.flags.Or(b) }

// ClearFlagBits clears bits in if_flags.
func (ifp *Ifnet) ClearFlagBits(b uint32) { ifp.flags.And(^b) }

// MTU returns if_mtu.
func (ifp *Ifnet) MTU() int { return int(ifp.mtu.Load()) }

// Baudrate returns if_baudrate.
func (ifp *Ifnet) Baudrate() uint64 { return ifp.baudrate }

// Snd returns the send queue (if_snd).
func (ifp *Ifnet) Snd() *Ifaltq { return &ifp.snd }

// Softc returns the driver's private data.
func (ifp *Ifnet) Softc() any { return ifp.softc }

// Serializer returns the interface serializer.
func (ifp *Ifnet) Serializer() Serializer { return ifp.serializer }

// Net returns the registry the interface is attached to.
func (ifp *Ifnet) Net() *Net { return ifp.net }

// Detached reports whether Detach has begun.
func (ifp *Ifnet) Detached() bool { return ifp.dead.Load() }

// Counters returns worker w's statistics shard (nil w: the shard shared by
// callers outside the workers).
func (ifp *Ifnet) Counters(w *Worker) *Counters { return ifp.shard(w) }

func (ifp *Ifnet) shard(w *Worker) *Counters {
	if w == nil {
		return &ifp.stats[len(ifp.stats)-1]
	}
	return &ifp.stats[w.id]
}

// Stats sums the per-worker counters (IFNET_STAT_GET), so it is always
// current (D-I15).
func (ifp *Ifnet) Stats() IfData {
	d := ifp.sumCounters()
	ifp.net.mu.Lock()
	d.Metric = ifp.metric
	d.LastChange = ifp.lastchange
	ifp.net.mu.Unlock()
	return d
}

// sumCounters sums the shards without taking the control-plane lock, so
// the slow timer can call it on worker 0.
func (ifp *Ifnet) sumCounters() IfData {
	var d IfData
	for i := range ifp.stats {
		s := &ifp.stats[i]
		d.IPackets += s.IPackets.Load()
		d.IErrors += s.IErrors.Load()
		d.OPackets += s.OPackets.Load()
		d.OErrors += s.OErrors.Load()
		d.Collisions += s.Collisions.Load()
		d.IBytes += s.IBytes.Load()
		d.OBytes += s.OBytes.Load()
		d.IMcasts += s.IMcasts.Load()
		d.OMcasts += s.OMcasts.Load()
		d.IQDrops += s.IQDrops.Load()
		d.NoProto += s.NoProto.Load()
		d.OQDrops += s.OQDrops.Load()
	}
	for _, sq := range ifp.snd.subqs {
		d.OQDrops += sq.drops.Load()
	}
	d.MTU = ifp.MTU()
	d.Baudrate = ifp.baudrate
	d.LinkState = LinkState(ifp.linkState.Load())
	return d
}

// LegacyStats returns the legacy if_data copy that the slow timer refreshes
// only when stats_compat is on (SIOCGIFDATA in the seed).
func (ifp *Ifnet) LegacyStats() IfData {
	ifp.legacyMu.Lock()
	defer ifp.legacyMu.Unlock()
	return ifp.legacy
}

// InputFunc is if_input: it owns p and must free or pass it on.
type InputFunc func(w *Worker, ifp *Ifnet, p *Packet)

// Input hands a received packet to if_input (freed if there is none).
func (ifp *Ifnet) Input(w *Worker, p *Packet) {
	fn := ifp.input.Load()
	if fn == nil || *fn == nil {
		p.Free()
		return
	}
	(*fn)(w, ifp, p)
}

// SetInput replaces if_input on a live interface (for example when the
// agent attaches the interface to a switch port).
func (ifp *Ifnet) SetInput(fn InputFunc) { ifp.input.Store(&fn) }

// SetTimer arms the legacy watchdog: it fires after n slow-timer ticks.
func (ifp *Ifnet) SetTimer(n int) { ifp.ifTimer.Store(int32(n)) }

// Timer returns if_timer.
func (ifp *Ifnet) Timer() int { return int(ifp.ifTimer.Load()) }

// Lladdr returns a copy of the link-level address.
func (ifp *Ifnet) Lladdr() []byte {
	ifp.net.mu.Lock()
	defer ifp.net.mu.Unlock()
	return append([]byte(nil), ifp.lladdr...)
}

// LinkState returns if_link_state.
func (ifp *Ifnet) LinkState() LinkState { return LinkState(ifp.linkState.Load()) }

// Counts returns the promiscuous and all-multicast reference counts.
func (ifp *Ifnet) Counts() (pcount, amcount int) {
	ifp.net.mu.Lock()
	defer ifp.net.mu.Unlock()
	return ifp.pcount, ifp.amcount
}

func (ifp *Ifnet) ioctlDriver(cmd IoctlCmd, r *Ifreq) (handled bool, err error) {
	if d, ok := ifp.driver.(Ioctler); ok {
		return true, d.Ioctl(ifp, cmd, r)
	}
	return false, nil
}

func validIfName(name string) error {
	if name == "" {
		return fmt.Errorf("check interface name: empty: %w", syscall.EINVAL)
	}
	if len(name) >= IFNAMSIZ {
		return fmt.Errorf("check interface name %q: longer than %d bytes: %w", name, IFNAMSIZ-1, syscall.EINVAL)
	}
	return nil
}
