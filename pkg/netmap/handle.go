package netmap

import (
	"fmt"
	"sync/atomic"
	"syscall"
)

// binding is what a registered handle holds (np_na, np_qfirst/np_qlast,
// np_flags, np_txpoll, the netmap_if).
type binding struct {
	a       Adapter
	na      *BaseAdapter
	qfirst  [2]int
	qlast   [2]int
	flags   uint32
	txpoll  bool
	siUser  [2]bool
	extra   int // extra buffers handed out
	pipeEnd *pipeAdapter
	// rings are the adapter's krings at bind time (host kring last). The
	// data path reads them from here, never from the adapter, so deleting
	// the krings (which stops each of them first) cannot race a slice read.
	rings [2][]*Kring
}

// Handle is struct netmap_priv_d: an open /dev/netmap descriptor. Register
// binds it to an adapter; TxSync, RxSync and Poll operate on the bound rings.
//
// The rings a handle exposes are used by one goroutine at a time per ring
// (netmap's rule); syncs from two goroutines on the same ring are refused
// with EBUSY, never a data race on kernel state. A handle bound to several
// rings may be polled from several goroutines, but Poll's lock-free check and
// txpoll read the user view of every bound ring: split TX and RX users
// across handles (ONE_NIC binds, or NoTxPoll) when they run on different
// goroutines. Close may be called while other goroutines sync or poll the
// handle: a running sync completes first, later ones fail (ENXIO, or EBUSY
// for a ring being torn down), and a blocked Poll returns PollErr.
type Handle struct {
	nm *Netmap

	// bind is published after registration completes (np_nifp): readers on
	// other goroutines (Poll, TxSync) load it without the global lock.
	bind atomic.Pointer[binding]

	refs   int // np_refs, under nm.mu
	closed bool

	// BufsHead is nifp->ni_bufs_head: the head of the extra-buffer chain.
	// The user may change it (taking or giving back buffers); Close frees
	// the chain it finds here.
	BufsHead uint32
}

// Open is open("/dev/netmap"): a new, unbound handle.
func (nm *Netmap) Open() *Handle {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	nm.useCount++
	return &Handle{nm: nm, refs: 1}
}

// Dup adds a reference to the handle (np_refs++), as dup(2)/fork would.
func (h *Handle) Dup() *Handle {
	h.nm.mu.Lock()
	h.refs++
	h.nm.mu.Unlock()
	return h
}

// Adapter returns the bound adapter, or nil.
func (h *Handle) Adapter() Adapter {
	if b := h.bind.Load(); b != nil {
		return b.a
	}
	return nil
}

// Interval returns [qfirst, qlast) of direction t (zero if unbound).
func (h *Handle) Interval(t Direction) (first, last int) {
	if b := h.bind.Load(); b != nil {
		return b.qfirst[t], b.qlast[t]
	}
	return 0, 0
}

// Flags returns np_flags.
func (h *Handle) Flags() uint32 {
	if b := h.bind.Load(); b != nil {
		return b.flags
	}
	return 0
}

// TxPoll reports np_txpoll.
func (h *Handle) TxPoll() bool {
	b := h.bind.Load()
	return b != nil && b.txpoll
}

// TxRing returns the user view of TX ring i (NETMAP_TXRING); i may name the
// host ring (i == NumTxRings). Nil if unbound or out of range.
func (h *Handle) TxRing(i int) *Ring { return h.ring(TX, i) }

// RxRing returns the user view of RX ring i (NETMAP_RXRING).
func (h *Handle) RxRing(i int) *Ring { return h.ring(RX, i) }

// Ring returns the user view of ring i of direction t.
func (h *Handle) Ring(t Direction, i int) *Ring { return h.ring(t, i) }

func (h *Handle) ring(t Direction, i int) *Ring {
	b := h.bind.Load()
	if b == nil {
		return nil
	}
	rs := b.rings[t]
	if i < 0 || i >= len(rs) {
		return nil
	}
	return rs[i].Ring
}

// Kring returns the kernel view of ring i of direction t (for adapters and
// tests; users go through the Ring).
func (h *Handle) Kring(t Direction, i int) *Kring {
	b := h.bind.Load()
	if b == nil {
		return nil
	}
	rs := b.rings[t]
	if i < 0 || i >= len(rs) {
		return nil
	}
	return rs[i]
}

// Buf returns the buffer for idx in the bound adapter's pool (NETMAP_BUF).
func (h *Handle) Buf(idx uint32) []byte {
	if b := h.bind.Load(); b != nil {
		return b.na.Mem.Buf(idx)
	}
	return nil
}

// Register is NIOCREGIF (004:2153-2223). Bridge commands go to the registered
// BridgeCtl; nr_cmd REGOPS, LIST and unknown values are EINVAL. On success
// req is filled with the geometry, and Arg3 with the number of extra buffers
// obtained (their chain starts at BufsHead).
func (h *Handle) Register(req *Req) error {
	truncName(req)
	if err := checkVersion(req); err != nil {
		return err
	}
	nm := h.nm
	switch req.Cmd {
	case 0:
	case BdgAttach, BdgDetach, BdgVnetHdr, BdgNewIf, BdgDelIf:
		nm.mu.Lock()
		ctl := nm.bdgCtl
		nm.mu.Unlock()
		if ctl == nil {
			return fmt.Errorf("register %q: bridge command %d: no switch support: %w", req.Name, req.Cmd, syscall.EOPNOTSUPP)
		}
		return ctl(nm, req)
	default:
		return fmt.Errorf("register %q: invalid nr_cmd %d: %w", req.Name, req.Cmd, syscall.EINVAL)
	}
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if h.closed {
		return fmt.Errorf("register %q: handle closed: %w", req.Name, syscall.EBADF)
	}
	if h.bind.Load() != nil {
		return fmt.Errorf("register %q: handle already bound: %w", req.Name, syscall.EBUSY)
	}
	a, err := nm.getNA(req, true)
	if err != nil {
		return err
	}
	na := a.NA()
	if na.Flags()&NAFBusy != 0 {
		na.Put()
		return fmt.Errorf("register %q: owned by a switch: %w", req.Name, syscall.EBUSY)
	}
	b, err := nm.doRegif(a, req.RingID, req.Flags)
	if err != nil {
		na.Put()
		return err
	}
	req.TxRings, req.RxRings = uint16(na.NumTxRings), uint16(na.NumRxRings)
	req.TxSlots, req.RxSlots = na.NumTxDesc, na.NumRxDesc
	req.Memsize = uint32(uint64(na.Mem.Total()) * uint64(na.Mem.BufSize()))
	req.Arg2 = nm.memID
	req.Offset = 0
	if req.Arg3 > 0 {
		head, got := na.Mem.AllocExtra(int(req.Arg3))
		h.BufsHead = head
		b.extra = got
		req.Arg3 = uint32(got)
	}
	if pe, ok := a.(*pipeAdapter); ok {
		b.pipeEnd = pe
	}
	h.bind.Store(b) // publish (np_nifp): release edge for lock-free readers
	return nil
}

// doRegif is netmap_do_regif (004:1859-2023) with full unwinding (D-N9).
func (nm *Netmap) doRegif(a Adapter, ringid uint16, flags uint32) (*binding, error) {
	na := a.NA()
	if na.detached.Load() {
		return nil, fmt.Errorf("register %q: %w", na.Name, ErrDetached)
	}
	nm.updateConfig(na)
	b := &binding{a: a, na: na}
	var err error
	b.qfirst, b.qlast, b.flags, err = InterpRingID(na.NumTxRings, na.NumRxRings, na.Flags()&NAFHostRings != 0, ringid, flags)
	if err != nil {
		return nil, fmt.Errorf("register %q: %w", na.Name, err)
	}
	b.txpoll = ringid&NoTxPoll == 0
	// netmap_set_ringid: si_users for directions spanning several rings.
	for t := range b.qfirst {
		if b.qlast[t]-b.qfirst[t] > 1 {
			b.siUser[t] = true
			na.siUsers[t].Add(1)
		}
	}
	unsetRingid := func() {
		for t := range b.siUser {
			if b.siUser[t] {
				na.siUsers[t].Add(-1)
				b.siUser[t] = false
			}
		}
	}
	createdKrings := false
	if na.activeFds == 0 {
		if err := a.KringsCreate(); err != nil {
			unsetRingid()
			return nil, fmt.Errorf("register %q: %w", na.Name, err)
		}
		createdKrings = true
	}
	if err := getExclusive(na, b); err != nil {
		if createdKrings {
			a.KringsDelete()
		}
		unsetRingid()
		return nil, fmt.Errorf("register %q: %w", na.Name, err)
	}
	na.activeFds++
	b.rings = [2][]*Kring{na.TxRings, na.RxRings}
	if na.flags.Load()&NAFNetmapOn == 0 {
		if err := a.Register(true); err != nil {
			na.activeFds--
			relExclusive(na, b)
			if createdKrings {
				a.KringsDelete()
			}
			unsetRingid()
			return nil, fmt.Errorf("register %q: %w", na.Name, err)
		}
		na.regCnt++
		na.SetFlags(NAFNetmapOn)
	}
	return b, nil
}

// RegisterCount reports how many times nm_register(on) ran (diagnostics).
func (na *BaseAdapter) RegisterCount() int { return na.regCnt }

// getExclusive is netmap_get_exclusive (004:1779-1829): check all, then commit.
func getExclusive(na *BaseAdapter, b *binding) error {
	excl := b.flags&Exclusive != 0
	for t := TX; t <= RX; t++ {
		for i := b.qfirst[t]; i < b.qlast[t]; i++ {
			k := na.Rings(t)[i]
			if k.NrKflags.Load()&KringExclusive != 0 || (k.Users > 0 && excl) {
				return fmt.Errorf("get exclusive %s: %w", k.Name, syscall.EBUSY)
			}
		}
	}
	for t := TX; t <= RX; t++ {
		for i := b.qfirst[t]; i < b.qlast[t]; i++ {
			k := na.Rings(t)[i]
			k.Users++
			if excl {
				k.NrKflags.Or(KringExclusive)
			}
		}
	}
	return nil
}

// relExclusive is netmap_rel_exclusive.
func relExclusive(na *BaseAdapter, b *binding) {
	excl := b.flags&Exclusive != 0
	for t := TX; t <= RX; t++ {
		for i := b.qfirst[t]; i < b.qlast[t]; i++ {
			k := na.Rings(t)[i]
			if excl {
				k.NrKflags.And(^KringExclusive)
			}
			k.Users--
		}
	}
}

// doUnregif is netmap_do_unregif (004:894-955).
func (nm *Netmap) doUnregif(h *Handle, b *binding) {
	na := b.na
	na.activeFds--
	relExclusive(na, b)
	if na.activeFds == 0 {
		stopMonitors(na)
		if na.flags.Load()&NAFNetmapOn != 0 {
			_ = b.a.Register(false)
			na.ClearFlags(NAFNetmapOn)
		}
		na.si[TX].wake() // poll sleepers wake up and see POLLERR
		na.si[RX].wake()
		// Wait for syncs still running on these rings (another goroutine
		// of this handle) and refuse new ones before the buffers go back
		// to the pool.
		for _, rs := range b.rings {
			for _, k := range rs {
				k.Stop()
			}
		}
		b.a.KringsDelete()
		if na.TxRings != nil { // kept (a pipe end whose peer is bound): usable again
			for _, rs := range b.rings {
				for _, k := range rs {
					k.Start()
				}
			}
		}
	}
	for t := range b.siUser {
		if b.siUser[t] {
			na.siUsers[t].Add(-1)
		}
	}
	if b.extra > 0 || h.BufsHead != 0 {
		na.Mem.FreeExtra(h.BufsHead)
		h.BufsHead = 0
	}
}

// Close is the descriptor's last close (netmap_dtor): with other references
// (Dup) it only drops one; the last one unbinds and releases the adapter.
func (h *Handle) Close() error {
	nm := h.nm
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if h.closed {
		return nil
	}
	h.refs--
	if h.refs > 0 {
		return nil
	}
	h.closed = true
	nm.useCount--
	b := h.bind.Load()
	if b == nil {
		return nil
	}
	h.bind.Store(nil)
	// Wake a Poll of this handle blocked on a queue that outlives the bind
	// (other handles may keep the rings): it sees the handle unbound.
	for t := TX; t <= RX; t++ {
		b.na.si[t].wake()
		if rs := b.rings[t]; b.qfirst[t] < len(rs) {
			rs[b.qfirst[t]].si.wake()
		}
	}
	nm.doUnregif(h, b)
	b.na.Put()
	return nil
}

// TxSync is NIOCTXSYNC (004:2225-2284).
func (h *Handle) TxSync() error { return h.sync(TX) }

// RxSync is NIOCRXSYNC; it always stamps the rings it syncs.
func (h *Handle) RxSync() error { return h.sync(RX) }

func (h *Handle) sync(t Direction) error {
	b := h.bind.Load()
	if b == nil {
		return ErrNotBound
	}
	na := b.na
	if !na.On() {
		return ErrDetached
	}
	rings := b.rings[t]
	var bad error
	for i := b.qfirst[t]; i < b.qlast[t]; i++ {
		k := rings[i]
		if err := k.TryGet(); err != nil {
			return err
		}
		var err error
		if t == TX {
			err = k.SyncTx(ForceReclaim)
		} else {
			err = k.SyncRx(ForceRead)
			stamp(k.Ring)
		}
		k.Put()
		if err == ErrBadRing && bad == nil {
			bad = err
		}
	}
	if bad != nil && h.nm.cfgp.Load().StrictSync {
		return bad
	}
	return nil
}
