package netmap

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
)

// Adapter flags (na_flags, NAF_*).
const (
	NAFSkipIntr    uint32 = 1 << 0 // NAF_SKIP_INTR: generic mode, RxIRQ returns 0
	NAFSWOnly      uint32 = 1 << 1 // NAF_SW_ONLY (unused, ABI completeness)
	NAFBdgMaySleep uint32 = 1 << 2 // NAF_BDG_MAYSLEEP
	NAFMemOwner    uint32 = 1 << 3 // NAF_MEM_OWNER: the adapter owns its pool
	NAFNative      uint32 = 1 << 4 // NAF_NATIVE: a native (non-generic) adapter
	NAFNetmapOn    uint32 = 1 << 5 // NAF_NETMAP_ON: registered (nm_register(on))
	NAFHostRings   uint32 = 1 << 6 // NAF_HOST_RINGS: host rings are usable
	NAFForceNative uint32 = 1 << 7 // NAF_FORCE_NATIVE
	NAFBusy        uint32 = 1 << 8 // NAF_BUSY: owned by the kernel (attached to a switch)
)

// Adapter is the set of na_* callbacks of struct netmap_adapter. Concrete
// adapters embed *BaseAdapter (or BaseAdapter) and override what they need,
// the way C's netmap_vp_adapter embeds netmap_adapter. The core always calls
// the callbacks through the Adapter interface (never through the embedded
// base), so overrides take effect.
type Adapter interface {
	// NA returns the embedded common state.
	NA() *BaseAdapter
	// Register is nm_register: on=true when the first bind turns netmap
	// mode on, false when the last unbind turns it off.
	Register(on bool) error
	// TxSync and RxSync are nm_txsync/nm_rxsync for the hardware rings
	// (indexes below NumTxRings/NumRxRings). They run with the kring's busy
	// flag held, after a successful prologue.
	TxSync(k *Kring, flags SyncFlags) error
	RxSync(k *Kring, flags SyncFlags) error
	// KringsCreate is nm_krings_create; KringsDelete is nm_krings_delete.
	// Overrides normally call BaseAdapter.CreateKrings/DeleteKrings.
	KringsCreate() error
	KringsDelete()
	// Notify is the default nm_notify installed on every kring.
	Notify(k *Kring, flags uint32)
	// Config is nm_config: the backend's current geometry.
	Config() (Geometry, error)
	// Dtor is nm_dtor, run once when the last reference goes away.
	Dtor()
}

// Geometry is the ring and slot counts of an adapter.
type Geometry struct {
	TxRings, RxRings int
	TxSlots, RxSlots uint32
}

// AdapterConfig is what netmap_attach's argument carries.
type AdapterConfig struct {
	Name     string
	Geometry Geometry
	// Pool is the buffer pool (nm_mem). Required.
	Pool  *Pool
	Flags uint32 // initial NAF_* flags (NAFHostRings, NAFNative, ...)
}

// BaseAdapter is struct netmap_adapter: the state common to every adapter.
// It also implements default callbacks so that it can be embedded.
//
// Fields are written under the registry lock (NMG_LOCK) unless noted.
type BaseAdapter struct {
	self Adapter
	nm   *Netmap

	Name       string
	NumTxRings int    // num_tx_rings (hardware rings, host ring excluded)
	NumRxRings int    // num_rx_rings
	NumTxDesc  uint32 // num_tx_desc
	NumRxDesc  uint32 // num_rx_desc
	Mem        *Pool  // nm_mem

	// TxRings and RxRings hold NumTxRings+1 / NumRxRings+1 krings while
	// krings exist (the last one is the host kring); nil otherwise.
	TxRings []*Kring
	RxRings []*Kring

	krMu      sync.RWMutex // guards TxRings/RxRings against concurrent host transmit
	flags     atomic.Uint32
	refcount  atomic.Int32
	activeFds int
	siUsers   [2]atomic.Int32 // si_users
	si        [2]waitq        // adapter-global wait queues
	detached  atomic.Bool     // ifp == NULL (driver gone)
	dtorDone  atomic.Bool

	// Host is the host stack sink (if_input / send_up) for the host TX ring
	// and transparent mode. Nil drops.
	Host HostStack

	pipes  map[uint32]*pipePair // na_next_pipe
	prev   Adapter              // generic adapter: the native one it shadows
	onDtor func()               // registry cleanup
	regCnt int                  // number of Register(true) calls (tests)
}

var _ Adapter = (*BaseAdapter)(nil)

// Init is netmap_attach_common: validate the geometry and initialize the base
// for the adapter self (which embeds this base). EINVAL for zero rings, a
// missing pool or bad slot counts.
func (na *BaseAdapter) Init(self Adapter, cfg AdapterConfig) error {
	g := cfg.Geometry
	switch {
	case self == nil || self.NA() != na:
		return fmt.Errorf("attach adapter %q: self must embed this base: %w", cfg.Name, syscall.EINVAL)
	case cfg.Name == "":
		return fmt.Errorf("attach adapter: empty name: %w", syscall.EINVAL)
	case g.TxRings <= 0 || g.RxRings <= 0:
		return fmt.Errorf("attach adapter %q: %d tx / %d rx rings, need at least 1 each: %w", cfg.Name, g.TxRings, g.RxRings, syscall.EINVAL)
	case g.TxRings > int(RingMask) || g.RxRings > int(RingMask):
		return fmt.Errorf("attach adapter %q: more than %d rings: %w", cfg.Name, int(RingMask), syscall.EINVAL)
	case g.TxSlots < 2 || g.RxSlots < 2 || g.TxSlots > 1<<16 || g.RxSlots > 1<<16:
		return fmt.Errorf("attach adapter %q: slots %d/%d outside [2, 65536]: %w", cfg.Name, g.TxSlots, g.RxSlots, syscall.EINVAL)
	case cfg.Pool == nil:
		return fmt.Errorf("attach adapter %q: nil pool: %w", cfg.Name, syscall.EINVAL)
	}
	na.self = self
	na.Name = cfg.Name
	na.NumTxRings, na.NumRxRings = g.TxRings, g.RxRings
	na.NumTxDesc, na.NumRxDesc = g.TxSlots, g.RxSlots
	na.Mem = cfg.Pool
	na.flags.Store(cfg.Flags &^ (NAFNetmapOn | NAFBusy))
	na.refcount.Store(0)
	return nil
}

// NA implements Adapter.
func (na *BaseAdapter) NA() *BaseAdapter { return na }

// Self returns the outer adapter this base was initialized for.
func (na *BaseAdapter) Self() Adapter { return na.self }

// Flags returns na_flags.
func (na *BaseAdapter) Flags() uint32 { return na.flags.Load() }

// SetFlags sets bits in na_flags; ClearFlags clears them.
func (na *BaseAdapter) SetFlags(f uint32)   { na.flags.Or(f) }
func (na *BaseAdapter) ClearFlags(f uint32) { na.flags.And(^f) }

// On is nm_netmap_on: registered and not detached.
func (na *BaseAdapter) On() bool {
	return na.flags.Load()&NAFNetmapOn != 0 && !na.detached.Load()
}

// Detached reports whether the backend went away (ifp == NULL).
func (na *BaseAdapter) Detached() bool { return na.detached.Load() }

// ActiveFds is active_fds (read under the registry lock for exactness).
func (na *BaseAdapter) ActiveFds() int { return na.activeFds }

// Refs is the adapter reference count.
func (na *BaseAdapter) Refs() int { return int(na.refcount.Load()) }

// SIUsers is si_users[t].
func (na *BaseAdapter) SIUsers(t Direction) int { return int(na.siUsers[t].Load()) }

// Rings returns the krings of direction t (host kring last).
func (na *BaseAdapter) Rings(t Direction) []*Kring {
	if t == TX {
		return na.TxRings
	}
	return na.RxRings
}

// NumRings returns the hardware ring count of direction t.
func (na *BaseAdapter) NumRings(t Direction) int {
	if t == TX {
		return na.NumTxRings
	}
	return na.NumRxRings
}

// NumDesc returns the slot count of direction t.
func (na *BaseAdapter) NumDesc(t Direction) uint32 {
	if t == TX {
		return na.NumTxDesc
	}
	return na.NumRxDesc
}

// Get is netmap_adapter_get.
func (na *BaseAdapter) Get() {
	if na != nil {
		na.refcount.Add(1)
	}
}

// Put is netmap_adapter_put: it returns true if this released the last
// reference, in which case nm_dtor and the common detach ran exactly once.
func (na *BaseAdapter) Put() bool {
	if na == nil {
		return true
	}
	if na.refcount.Add(-1) > 0 {
		return false
	}
	if !na.dtorDone.CompareAndSwap(false, true) {
		return true
	}
	na.self.Dtor()
	na.detachCommon()
	return true
}

// detachCommon is netmap_detach_common: delete leftover krings and run the
// registry cleanup.
func (na *BaseAdapter) detachCommon() {
	if na.TxRings != nil {
		na.self.KringsDelete()
	}
	// No pipes can be left here: every pipe pair holds a reference on its
	// parent until both ends are gone (pipeAdapter.Dtor).
	if na.onDtor != nil {
		na.onDtor()
	}
}

// Register implements the default nm_register: a no-op.
func (na *BaseAdapter) Register(on bool) error { return nil }

// TxSync implements a default nm_txsync that fails: adapters must override it.
func (na *BaseAdapter) TxSync(k *Kring, flags SyncFlags) error {
	return fmt.Errorf("txsync %s: %w", k.Name, syscall.EOPNOTSUPP)
}

// RxSync implements a default nm_rxsync that fails: adapters must override it.
func (na *BaseAdapter) RxSync(k *Kring, flags SyncFlags) error {
	return fmt.Errorf("rxsync %s: %w", k.Name, syscall.EOPNOTSUPP)
}

// KringsCreate implements the default nm_krings_create (netmap_hw_krings_create).
func (na *BaseAdapter) KringsCreate() error { return na.CreateKrings() }

// KringsDelete implements the default nm_krings_delete.
func (na *BaseAdapter) KringsDelete() { na.DeleteKrings() }

// Config implements the default nm_config: the stored geometry.
func (na *BaseAdapter) Config() (Geometry, error) {
	return Geometry{na.NumTxRings, na.NumRxRings, na.NumTxDesc, na.NumRxDesc}, nil
}

// Dtor implements the default nm_dtor: nothing.
func (na *BaseAdapter) Dtor() {}

// Notify is netmap_notify (004:2605-2621): wake the kring's waiters, and the
// adapter-global queue of that direction only if some bind spans several
// rings (si_users > 0).
func (na *BaseAdapter) Notify(k *Kring, flags uint32) {
	k.si.wake()
	if na.siUsers[k.Dir].Load() > 0 {
		na.si[k.Dir].wake()
	}
}

// CreateKrings is netmap_krings_create (004:753-838): one kring per hardware
// ring plus the host kring in each direction (always created), each with its
// user Ring and a buffer from the pool in every slot (netmap_mem_rings_create).
// TX krings start with all slots but one free, RX krings empty. Failure to get
// buffers is ENOMEM and leaves nothing allocated.
func (na *BaseAdapter) CreateKrings() error {
	if na.TxRings != nil {
		return nil
	}
	var made []*Kring
	fail := func(err error) error {
		for _, k := range made {
			na.freeRing(k)
		}
		return err
	}
	var rings [2][]*Kring
	for _, t := range [2]Direction{TX, RX} {
		nr := na.NumRings(t)
		ndesc := na.NumDesc(t)
		rings[t] = make([]*Kring, nr+1)
		for i := 0; i <= nr; i++ {
			k, err := na.newKring(t, i, ndesc, i == nr)
			if err != nil {
				return fail(err)
			}
			made = append(made, k)
			rings[t][i] = k
		}
	}
	na.krMu.Lock()
	na.TxRings, na.RxRings = rings[TX], rings[RX]
	na.krMu.Unlock()
	return nil
}

func (na *BaseAdapter) newKring(t Direction, i int, ndesc uint32, host bool) (*Kring, error) {
	k := &Kring{
		NumSlots: ndesc,
		RingID:   uint32(i),
		Dir:      t,
		Name:     fmt.Sprintf("%s %s%d", na.Name, t, i),
		na:       na,
	}
	r := &Ring{NumSlots: ndesc, BufSize: na.Mem.bufSize, RingID: uint16(i), Dir: t, pool: na.Mem, Slot: make([]Slot, ndesc)}
	k.Ring = r
	for j := range r.Slot {
		idx, err := na.Mem.Alloc()
		if err != nil {
			for _, s := range r.Slot[:j] {
				_ = na.Mem.Free(s.BufIdx)
			}
			return nil, fmt.Errorf("create krings %s: %w", k.Name, err)
		}
		r.Slot[j].BufIdx = idx
	}
	if t == TX {
		k.NrHwtail.Store(ndesc - 1)
		k.RTail = ndesc - 1
		r.Tail = ndesc - 1
	}
	k.NkrHwlease = k.NrHwtail.Load()
	k.NkrLeases = make([]uint32, ndesc)
	for j := range k.NkrLeases {
		k.NkrLeases[j] = NoSlot
	}
	self := na.self
	switch {
	case host && t == TX: // D-N2: per-direction host index
		k.Sync = na.txsyncToHost
	case host && t == RX:
		k.Sync = na.rxsyncFromHost
		k.hostq.init(ndesc, na.Mem.bufSize)
	case t == TX:
		k.Sync = self.TxSync
	default:
		k.Sync = self.RxSync
	}
	k.Notify = self.Notify
	k.hostBatch = make([][]byte, 0, 64) // grabPackets batch (host TX, transparent mode)
	return k, nil
}

// DeleteKrings is netmap_krings_delete: return every slot's buffer to the
// pool and drop the krings. Slots repaired by Reinit (idx 0) free nothing.
func (na *BaseAdapter) DeleteKrings() {
	for _, rs := range [2][]*Kring{na.TxRings, na.RxRings} {
		for _, k := range rs {
			na.freeRing(k)
		}
	}
	na.krMu.Lock()
	na.TxRings, na.RxRings = nil, nil
	na.krMu.Unlock()
}

func (na *BaseAdapter) freeRing(k *Kring) {
	k.si.wake()
	for i := range k.Ring.Slot {
		s := &k.Ring.Slot[i]
		if na.Mem.Valid(s.BufIdx) {
			_ = na.Mem.Free(s.BufIdx) // duplicate indexes planted by a user are rejected, not double-freed
		}
		s.BufIdx = 0
	}
	k.hostq.purge()
}

// SetAllRings is netmap_set_all_rings: stop (or start) every hardware and host
// kring in both directions. No-op unless netmap is on.
func (na *BaseAdapter) SetAllRings(stopped bool) {
	if na.flags.Load()&NAFNetmapOn == 0 {
		return
	}
	for _, rs := range [2][]*Kring{na.TxRings, na.RxRings} {
		for _, k := range rs {
			if stopped {
				k.Stop()
			} else {
				k.Start()
				k.NotifyNow()
			}
		}
	}
}

// DisableAllRings / EnableAllRings are the driver entry points used around
// a backend reset (netmap_disable_all_rings / netmap_enable_all_rings).
func (na *BaseAdapter) DisableAllRings() { na.SetAllRings(true) }
func (na *BaseAdapter) EnableAllRings()  { na.SetAllRings(false) }

// RxIRQ is netmap_rx_irq for queue q: 0 if netmap is off or the adapter is
// generic (NAFSkipIntr), otherwise PENDINTR is set, *workDone = 1 (if not
// nil) and the RX kring is notified; 1 is returned. A q beyond the rings (after
// masking with RingMask) notifies nothing.
func (na *BaseAdapter) RxIRQ(q uint32, workDone *int) int {
	if !na.On() || na.flags.Load()&NAFSkipIntr != 0 {
		return 0
	}
	na.commonIRQ(RX, q, workDone)
	return 1
}

// TxIRQ is netmap_tx_irq: notify TX kring q.
func (na *BaseAdapter) TxIRQ(q uint32) int {
	if !na.On() || na.flags.Load()&NAFSkipIntr != 0 {
		return 0
	}
	na.commonIRQ(TX, q, nil)
	return 1
}

func (na *BaseAdapter) commonIRQ(t Direction, q uint32, workDone *int) {
	q &= uint32(RingMask)
	if int(q) >= na.NumRings(t) {
		return // not a physical queue
	}
	k := na.Rings(t)[q]
	if t == RX {
		k.NrKflags.Or(KringPendIntr)
		if workDone != nil {
			*workDone = 1
		}
	}
	k.NotifyNow()
}

// Reset is netmap_reset (004:2950-3023): a backend re-initialized ring n of
// direction t with its own current position newCur. Returns nil if the adapter
// is not a native adapter in netmap mode or n is out of range; otherwise it
// sets nkr_hwofs, makes a TX ring fully available, notifies and returns the
// slots.
func (na *BaseAdapter) Reset(t Direction, n int, newCur uint32) []Slot {
	if !na.On() || na.flags.Load()&NAFNative == 0 {
		return nil
	}
	if n < 0 || n >= na.NumRings(t) {
		return nil
	}
	k := na.Rings(t)[n]
	lim := int32(k.NumSlots - 1)
	var ofs int32
	if t == TX {
		ofs = int32(k.NrHwcur.Load()) - int32(newCur)
	} else {
		ofs = int32(k.NrHwtail.Load()) - int32(newCur)
	}
	if ofs > lim {
		ofs -= lim + 1
	}
	k.NkrHwofs = ofs
	if t == TX {
		k.NrHwtail.Store(k.Prev(k.NrHwcur.Load()))
	}
	k.NotifyNow()
	return k.Ring.Slot
}
