package ifcore

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// EventKind is the kind of an interface event (the routing-socket,
// devctl and eventhandler announcements of the seed).
type EventKind int

const (
	EvAttach      EventKind = iota // ifnet_attach_event / devctl ATTACH
	EvArrival                      // RTM_IFANNOUNCE IFAN_ARRIVAL
	EvDetach                       // ifnet_detach_event / devctl DETACH
	EvDeparture                    // RTM_IFANNOUNCE IFAN_DEPARTURE
	EvIfMsg                        // rt_ifmsg (flags or MTU changed)
	EvLinkUp                       // devctl LINK_UP
	EvLinkDown                     // devctl LINK_DOWN
	EvNewMaddr                     // RTM_NEWMADDR
	EvDelMaddr                     // RTM_DELMADDR
	EvLladdr                       // iflladdr_event
	EvGARP                         // gratuitous ARP for an IPv4 address
	EvDriverFlags                  // the driver saw SIOCSIFFLAGS
)

var evNames = [...]string{"attach", "arrival", "detach", "departure", "ifmsg", "link-up", "link-down",
	"new-maddr", "del-maddr", "lladdr", "garp", "driver-flags"}

func (k EventKind) String() string {
	if int(k) < len(evNames) {
		return evNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is an interface announcement.
type Event struct {
	Kind  EventKind
	Name  string
	Index uint32
	Flags uint32
	Addr  Sockaddr
}

// Config configures a Net.
type Config struct {
	// Workers is the number of netisr workers (0: one per CPU).
	Workers int
	// StageCntMax is ifsq_stage_cntmax (0: DefaultStageCntMax; negative:
	// staging off). SetStageCntMax changes it at run time.
	StageCntMax int
	// IfqMaxLen is ifqmaxlen, the default queue length (0: IFQ_MAXLEN).
	IfqMaxLen int
	// Clock drives the slow timer, watchdogs and regulators (nil: real).
	Clock Clock
	// Events receives interface announcements, synchronously, on the
	// control-plane goroutine that caused them (or worker 0 for link
	// state changes made there). It must not call back into Net.
	Events func(Event)
	// StatsCompat is if_stats_compat.
	StatsCompat bool
	// Logger receives rare diagnostics (driver misconfiguration); nil
	// discards them. Nothing is logged per packet.
	Logger *slog.Logger
}

// Net is the interface registry with its workers: ifnet list, index table,
// copy-on-write array, groups, cloners and the slow timer.
type Net struct {
	workers   *Workers
	clock     Clock
	events    func(Event)
	log       *slog.Logger
	ifqmaxlen int

	stageCntMax atomic.Int32
	statsCompat atomic.Bool

	mu       sync.Mutex // ifnet_lock; never taken on a worker
	list     []*Ifnet   // attach order
	indexLim int
	ifIndex  atomic.Uint32
	index    atomic.Pointer[[]atomic.Pointer[Ifnet]]
	array    atomic.Pointer[[]*Ifnet]
	groups   map[string]*ifgroup
	gorder   []*ifgroup
	cloners  []*clonerEntry

	slowMsg      Msg
	slowInflight atomic.Bool
	slowTimer    Timer
	slowStopped  bool
	closed       bool
}

// New starts the workers and the slow timer.
func New(cfg Config) (*Net, error) {
	if cfg.IfqMaxLen < 0 {
		return nil, fmt.Errorf("new ifcore: IfqMaxLen %d is negative: %w", cfg.IfqMaxLen, syscall.EINVAL)
	}
	n := &Net{clock: cfg.Clock, events: cfg.Events, log: cfg.Logger, ifqmaxlen: cfg.IfqMaxLen,
		groups: map[string]*ifgroup{}}
	if n.clock == nil {
		n.clock = RealClock{}
	}
	if n.ifqmaxlen == 0 {
		n.ifqmaxlen = IFQ_MAXLEN
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.StageCntMax == 0:
		n.stageCntMax.Store(DefaultStageCntMax)
	case cfg.StageCntMax < 0:
		n.stageCntMax.Store(0)
	default:
		n.stageCntMax.Store(int32(cfg.StageCntMax))
	}
	n.statsCompat.Store(cfg.StatsCompat)
	empty := []*Ifnet{}
	n.array.Store(&empty)
	n.workers = NewWorkers(cfg.Workers, ifstartRollup)
	n.slowMsg.fn = n.slowtimoDispatch
	n.mu.Lock()
	n.slowTimer = n.clock.AfterFunc(time.Second, n.slowtimo)
	n.mu.Unlock()
	return n, nil
}

// Workers returns the worker set.
func (n *Net) Workers() *Workers { return n.workers }

// Clock returns the Net's clock.
func (n *Net) Clock() Clock { return n.clock }

// IfqMaxLen returns ifqmaxlen.
func (n *Net) IfqMaxLen() int { return n.ifqmaxlen }

// StageCntMax returns net.link.stage_cntmax.
func (n *Net) StageCntMax() int { return int(n.stageCntMax.Load()) }

// SetStageCntMax sets net.link.stage_cntmax; 0 or less disables staging.
func (n *Net) SetStageCntMax(v int) { n.stageCntMax.Store(int32(max(v, 0))) }

// SetStatsCompat sets net.link.stats_compat.
func (n *Net) SetStatsCompat(on bool) { n.statsCompat.Store(on) }

// ServiceSync is netmsg_service_sync.
func (n *Net) ServiceSync() error { return n.workers.ServiceSync() }

// Close destroys every cloned interface, detaches the rest, stops the slow
// timer and the workers. The Net is unusable afterwards.
func (n *Net) Close() error {
	var first error
	for {
		n.mu.Lock()
		if len(n.list) == 0 {
			n.mu.Unlock()
			break
		}
		ifp := n.list[len(n.list)-1]
		n.mu.Unlock()
		var err error
		if ifp.cloner != nil {
			err = n.CloneDestroy(ifp.Name())
		} else {
			err = n.Detach(ifp)
		}
		if err != nil {
			if first == nil {
				first = err
			}
			// Make progress regardless; a stuck destroy was reported.
			if e2 := n.Detach(ifp); e2 != nil && first == nil {
				first = e2
			}
		}
	}
	n.mu.Lock()
	n.slowStopped = true
	n.closed = true
	if n.slowTimer != nil {
		n.slowTimer.Stop()
	}
	n.mu.Unlock()
	n.workers.Close()
	return first
}

// lock is ifnet_lock: it refuses to run on a worker, where waiting for a
// service sync would deadlock.
func (n *Net) lock(op string) error {
	if w := n.workers.onWorker(); w != nil {
		return fmt.Errorf("%s: control-plane lock taken on worker %d: %w", op, w.id, syscall.EDEADLK)
	}
	n.mu.Lock()
	return nil
}

func (n *Net) emit(ev Event) {
	if n.events != nil {
		n.events(ev)
	}
}

func (n *Net) emitIf(k EventKind, ifp *Ifnet) {
	n.emit(Event{Kind: k, Name: ifp.Name(), Index: ifp.index, Flags: ifp.Flags()})
}

// Attach is if_attach: it builds the send queue, allocates the index
// (max+1), publishes the interface to lock-free readers, waits for the
// workers (service sync) and announces it.
func (n *Net) Attach(cfg IfConfig) (*Ifnet, error) {
	name := cfg.Name
	if name == "" && cfg.Dname != "" {
		name = fmt.Sprintf("%s%d", cfg.Dname, cfg.Dunit)
	}
	if err := validIfName(name); err != nil {
		return nil, fmt.Errorf("attach interface: %w", err)
	}
	if cfg.Driver == nil {
		return nil, fmt.Errorf("attach interface %s: no driver: %w", name, syscall.EINVAL)
	}
	// 1. Serializer (§2.2): all four callbacks or none; callbacks exclude
	// an external serializer.
	var ser Serializer
	if f := cfg.SerializeFuncs; f != nil {
		set := 0
		for _, ok := range []bool{f.Serialize != nil, f.Deserialize != nil, f.TrySerialize != nil, f.AssertSerialized != nil} {
			if ok {
				set++
			}
		}
		if set != 4 {
			return nil, fmt.Errorf("attach interface %s: %d of 4 serializer callbacks supplied: %w", name, set, syscall.EINVAL)
		}
		if cfg.Serializer != nil {
			return nil, fmt.Errorf("attach interface %s: serializer callbacks and a serializer both supplied: %w", name, syscall.EINVAL)
		}
		ser = funcSerializer{*f}
	} else if cfg.Serializer != nil {
		ser = cfg.Serializer
	} else {
		ser = new(sync.Mutex)
	}
	nsq := cfg.Subqueues
	if nsq == 0 {
		nsq = 1
	}
	if nsq < 0 || nsq&(nsq-1) != 0 {
		return nil, fmt.Errorf("attach interface %s: %d subqueues is not a power of two: %w", name, nsq, syscall.EINVAL)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = ETHERMTU
	}
	if mtu < IF_MINMTU || mtu > IF_MAXMTU {
		return nil, fmt.Errorf("attach interface %s: MTU %d outside %d..%d: %w", name, mtu, IF_MINMTU, IF_MAXMTU, syscall.EINVAL)
	}
	disc, err := NewDiscipline(cfg.Discipline)
	if err != nil {
		return nil, fmt.Errorf("attach interface %s: %w", name, err)
	}
	if cfg.Rate != nil {
		if err := cfg.Rate.Validate(); err != nil {
			return nil, fmt.Errorf("attach interface %s: %w", name, err)
		}
	}

	ifp := &Ifnet{net: n, dname: cfg.Dname, dunit: cfg.Dunit, typ: cfg.Type, baudrate: cfg.Baudrate,
		lladdr: append([]byte(nil), cfg.Lladdr...), capabilities: cfg.Capabilities,
		driver: cfg.Driver, serializer: ser, softc: cfg.Softc}
	if oc, ok := cfg.Driver.(OutputCounter); ok {
		ifp.selfCounting = oc.CountsOutput()
	}
	if cfg.Input != nil {
		ifp.SetInput(cfg.Input)
	}
	ifp.name.Store(&name)
	ifp.flags.Store(cfg.Flags)
	ifp.mtu.Store(int32(mtu))
	ifp.lastchange = n.clock.Now()
	// 2-4. Address list with the AF_LINK address first.
	ifp.addrs = []*Ifaddr{{Addr: LinkSockaddr(ifp.lladdr), link: true}}
	// 5. Per-worker statistics (+1 shard for non-worker callers).
	ifp.stats = make([]Counters, n.workers.N()+1)
	// 6-9. The ifaltq and its subqueues, classic by default.
	ifp.snd.ifp = ifp
	ifp.snd.mapsq = cfg.SubqMap
	ifp.snd.mask = nsq - 1
	for i := 0; i < nsq; i++ {
		sq := newSubqueue(ifp, i, n.workers.N(), ser)
		ifp.snd.subqs = append(ifp.snd.subqs, sq)
	}
	ifp.snd.subqs[0].disc = disc
	for _, sq := range ifp.snd.subqs[1:] {
		sq.disc, _ = NewDiscipline(cfg.Discipline)
	}
	ml := cfg.MaxLen
	if ml == 0 {
		n.log.Debug("driver didn't set altq_maxlen", "ifname", name)
		ml = n.ifqmaxlen
	}
	if err := ifp.snd.SetMaxLen(ml); err != nil {
		return nil, fmt.Errorf("attach interface %s: %w", name, err)
	}
	if cfg.Rate != nil {
		for _, sq := range ifp.snd.subqs {
			sq.tbr = newTokenBucket(*cfg.Rate, n.clock.Now())
		}
	}

	// 10. Index and publication, under ifnet_lock.
	if err := n.lock("attach interface " + name); err != nil {
		return nil, err
	}
	if n.closed {
		n.mu.Unlock()
		return nil, fmt.Errorf("attach interface %s: registry closed: %w", name, syscall.ENXIO)
	}
	for _, o := range n.list {
		if o.Name() == name {
			n.mu.Unlock()
			return nil, fmt.Errorf("attach interface %s: name in use: %w", name, syscall.EEXIST)
		}
	}
	idx := n.ifIndex.Load() + 1
	ifp.index = idx
	ifp.addrs[0].Addr.Index = idx
	tbl := n.index.Load()
	if tbl == nil || int(idx) >= n.indexLim {
		if n.indexLim == 0 {
			n.indexLim = 8
		}
		for int(idx) >= n.indexLim {
			n.indexLim *= 2
		}
		nt := make([]atomic.Pointer[Ifnet], n.indexLim)
		if tbl != nil {
			for i := range *tbl {
				nt[i].Store((*tbl)[i].Load())
			}
		}
		n.index.Store(&nt)
		tbl = &nt
	}
	(*tbl)[idx].Store(ifp)
	// Publish if_index only after the slot is set: lock-free readers check
	// idx <= if_index and then load the slot.
	n.ifIndex.Store(idx)
	old := *n.array.Load()
	arr := make([]*Ifnet, len(old), len(old)+1)
	copy(arr, old)
	arr = append(arr, ifp)
	n.array.Store(&arr)
	n.list = append(n.list, ifp)
	n.mu.Unlock()

	// 11. Barrier: every worker sees the new array before we return.
	if err := n.ServiceSync(); err != nil {
		return ifp, fmt.Errorf("attach interface %s: %w", name, err)
	}
	// 13. Announce.
	n.emitIf(EvAttach, ifp)
	n.emitIf(EvArrival, ifp)
	return ifp, nil
}

// Detach is if_detach: announce departure, unpublish (index slot, list,
// array), service sync, if_down (which purges the queues and syncs),
// remove the addresses (AF_LINK last), the multicast memberships, the
// groups, and this interface's stages on every worker. The Ifnet stays
// valid for reading; nothing runs on it afterwards.
func (n *Net) Detach(ifp *Ifnet) error {
	if w := n.workers.onWorker(); w != nil {
		return fmt.Errorf("detach interface %s: called on worker %d: %w", ifp.Name(), w.id, syscall.EDEADLK)
	}
	n.mu.Lock()
	pos := -1
	for i, o := range n.list {
		if o == ifp {
			pos = i
		}
	}
	n.mu.Unlock()
	if pos < 0 {
		return fmt.Errorf("detach interface %s: not attached: %w", ifp.Name(), syscall.ENXIO)
	}
	// 1. Announce first.
	n.emitIf(EvDetach, ifp)
	n.emitIf(EvDeparture, ifp)

	// 2. Unpublish.
	n.mu.Lock()
	tbl := *n.index.Load()
	tbl[ifp.index].Store(nil)
	top := n.ifIndex.Load()
	for top > 0 && tbl[top].Load() == nil {
		top--
	}
	n.ifIndex.Store(top)
	for i, o := range n.list {
		if o == ifp {
			n.list = append(n.list[:i:i], n.list[i+1:]...)
			break
		}
	}
	old := *n.array.Load()
	arr := make([]*Ifnet, 0, len(old))
	for _, o := range old {
		if o != ifp {
			arr = append(arr, o)
		}
	}
	n.array.Store(&arr)
	n.mu.Unlock()

	// 3. Barrier.
	if err := n.ServiceSync(); err != nil {
		return fmt.Errorf("detach interface %s: %w", ifp.Name(), err)
	}
	// 4. if_down: clear UP, purge, sync.
	if err := n.ifDown(ifp); err != nil {
		return fmt.Errorf("detach interface %s: %w", ifp.Name(), err)
	}
	ifp.dead.Store(true)
	for _, sq := range ifp.snd.subqs {
		sq.stopTimers()
	}
	// 5-8. Addresses (AF_LINK last), multicast (flushed entirely, D-I9),
	// groups.
	n.mu.Lock()
	var link *Ifaddr
	for _, a := range ifp.addrs {
		if a.link {
			link = a
		}
	}
	ifp.addrs = nil
	_ = link
	var maddrs []*Multiaddr
	maddrs, ifp.multi = ifp.multi, nil
	groups := append([]string(nil), ifp.groups...)
	n.mu.Unlock()
	for _, ma := range maddrs {
		n.emit(Event{Kind: EvDelMaddr, Name: ifp.Name(), Index: ifp.index, Addr: ma.Addr})
	}
	for _, g := range groups {
		_ = n.DelGroup(ifp, g)
	}
	// 9. Remove this interface's stages from every worker, then purge
	// whatever raced in.
	err := n.workers.ForwardAll(func(w *Worker) { removeStages(w, ifp) })
	ifp.snd.PurgeAll()
	if err != nil {
		return fmt.Errorf("detach interface %s: %w", ifp.Name(), err)
	}
	return nil
}

// IfIndex returns the global if_index (the highest index in use).
func (n *Net) IfIndex() uint32 { return n.ifIndex.Load() }

// indexLimit returns the index table size (if_indexlim).
func (n *Net) indexLimit() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.indexLim
}

// ByIndex looks an interface up by index without locking
// (ifindex2ifnet); nil for an unused index.
func (n *Net) ByIndex(idx uint32) *Ifnet {
	if idx == 0 || idx > n.ifIndex.Load() {
		return nil
	}
	tbl := n.index.Load()
	if tbl == nil || int(idx) >= len(*tbl) {
		return nil
	}
	return (*tbl)[idx].Load()
}

// Interfaces returns the current copy-on-write array; it is immutable and
// may be iterated on a worker without locking (ifnet_array_get).
func (n *Net) Interfaces() []*Ifnet { return *n.array.Load() }

// Unit is ifunit: an exact name match under the control-plane lock.
func (n *Net) Unit(name string) (*Ifnet, error) {
	if err := n.lock("look up interface"); err != nil {
		return nil, err
	}
	defer n.mu.Unlock()
	return n.unitLocked(name)
}

func (n *Net) unitLocked(name string) (*Ifnet, error) {
	for _, ifp := range n.list {
		if ifp.Name() == name {
			return ifp, nil
		}
	}
	return nil, fmt.Errorf("look up interface %q: %w", name, syscall.ENXIO)
}

// UnitNetisr is ifunit_netisr: the lock-free lookup over the array, for
// workers.
func (n *Net) UnitNetisr(name string) *Ifnet {
	for _, ifp := range n.Interfaces() {
		if ifp.Name() == name {
			return ifp
		}
	}
	return nil
}

// slowtimo is the 1 s callout: send the slow-timer message to worker 0
// unless the previous one is still queued.
func (n *Net) slowtimo() {
	if n.slowInflight.CompareAndSwap(false, true) {
		n.workers.Get(0).Send(&n.slowMsg)
	}
}

// slowtimoDispatch is if_slowtimo_dispatch, on worker 0. The callout is
// re-armed only at the end, so ticks never overlap.
func (n *Net) slowtimoDispatch(w *Worker) {
	n.slowInflight.Store(false)
	compat := n.statsCompat.Load()
	for _, ifp := range n.Interfaces() {
		if compat {
			d := ifp.sumCounters()
			ifp.legacyMu.Lock()
			ifp.legacy = d
			ifp.legacyMu.Unlock()
		}
		t := ifp.ifTimer.Load()
		if t == 0 {
			continue
		}
		t--
		ifp.ifTimer.Store(t)
		if t != 0 {
			continue
		}
		if wd, ok := ifp.driver.(Watchdogger); ok {
			if ifp.serializer.TryLock() {
				wd.Watchdog(ifp)
				ifp.serializer.Unlock()
			} else {
				ifp.ifTimer.Add(1) // try again next tick
			}
		}
	}
	n.mu.Lock()
	if !n.slowStopped {
		n.slowTimer = n.clock.AfterFunc(time.Second, n.slowtimo)
	}
	n.mu.Unlock()
}

// removeStages is the per-worker half of ifq_stage_detach.
func removeStages(w *Worker, ifp *Ifnet) {
	for _, sq := range ifp.snd.subqs {
		if stg := &sq.stages[w.id]; stg.qued {
			w.stageRemove(stg)
		}
	}
}
