package netmap

import (
	"sync"
	"sync/atomic"
)

// Slot flags (netmap.h NS_*). The values are netmap's ABI values.
const (
	// BufChanged (NS_BUF_CHANGED) must be set whenever BufIdx changes.
	BufChanged uint16 = 0x0001
	// Report (NS_REPORT) asks for a completion report on a TX slot.
	Report uint16 = 0x0002
	// Forward (NS_FORWARD) passes a released slot to the other side in
	// transparent mode (NIC RX -> host stack, host RX -> NIC TX).
	Forward uint16 = 0x0004
	// NoLearn (NS_NO_LEARN) tells VALE not to learn the source MAC.
	NoLearn uint16 = 0x0008
	// Indirect (NS_INDIRECT): VALE TX data lives at Ptr, not in the buffer.
	Indirect uint16 = 0x0010
	// MoreFrag (NS_MOREFRAG) is set on every fragment of a packet but the last.
	MoreFrag uint16 = 0x0020
	// PortShift and PortMask (NS_PORT_SHIFT/NS_PORT_MASK) carry a VALE
	// destination-port override in the high 8 bits.
	PortShift        = 8
	PortMask  uint16 = 0xff << PortShift
)

// Ring flags (netmap.h NR_*).
const (
	// RingTimestamp (NR_TIMESTAMP) stamps Ring.Ts on every sync.
	RingTimestamp uint32 = 0x0002
	// RingForward (NR_FORWARD) enables Forward processing on this ring.
	RingForward uint32 = 0x0004
)

// Slot is struct netmap_slot. Slots between Ring.Head and Ring.Tail belong to
// the user, all others to the kernel side (the adapter's sync code).
type Slot struct {
	BufIdx uint32 // buf_idx: index of the buffer in the adapter's Pool
	Len    uint16 // len: bytes used in the buffer
	Flags  uint16 // flags: BufChanged, Forward, MoreFrag, ...
	Ptr    uint64 // ptr: Indirect data (VALE), otherwise unused
}

// SwapBufs exchanges the buffers of two slots (a zero-copy move between
// rings of the same pool) and marks both with BufChanged, as netmap requires
// whenever buf_idx changes. Len moves with the buffer.
func SwapBufs(a, b *Slot) {
	a.BufIdx, b.BufIdx = b.BufIdx, a.BufIdx
	a.Len, b.Len = b.Len, a.Len
	a.Flags |= BufChanged
	b.Flags |= BufChanged
}

// Ring is struct netmap_ring, the user view of a ring. In netmap it lives in
// shared memory; here it is plain memory shared by the user goroutine and the
// sync code, which the user calls (TxSync/RxSync/Poll) from its own
// goroutine. So Head, Cur and Tail need no atomics: they are only touched by
// whoever holds the kring (busy flag, see Kring.TryGet).
//
// Ownership: Head and Cur are written by the user, Tail only by the kernel
// side (finalize); a user write to Tail is undone by the next prologue.
type Ring struct {
	NumSlots uint32 // num_slots (constant)
	BufSize  uint32 // nr_buf_size (constant)
	RingID   uint16 // ringid: index of the ring in its direction
	Dir      Direction

	Head  uint32 // head: first slot the user owns; written by the user
	Cur   uint32 // cur: wake-up point; written by the user
	Tail  uint32 // tail: first slot the kernel owns; written by the kernel
	Flags uint32 // RingTimestamp, RingForward; written by the user
	Ts    int64  // ts: UnixNano of the last sync that stamped it

	Slot []Slot // slot[num_slots]

	pool *Pool
}

// Next is nm_ring_next: the index after i.
func (r *Ring) Next(i uint32) uint32 {
	if i+1 == r.NumSlots {
		return 0
	}
	return i + 1
}

// Empty is nm_ring_empty: true when Cur == Tail (nothing for the user).
func (r *Ring) Empty() bool { return r.Cur == r.Tail }

// Space is nm_ring_space: slots available to the user between Cur and Tail.
func (r *Ring) Space() uint32 {
	if r.Tail >= r.Cur {
		return r.Tail - r.Cur
	}
	return r.Tail + r.NumSlots - r.Cur
}

// TxPending is nm_tx_pending: a TX ring still has slots the kernel has not
// taken (tail != head - 1). A producer that stops must keep syncing (or
// polling) until this is false, or the last frames stay in the ring.
func (r *Ring) TxPending() bool {
	prev := r.Head
	if prev == 0 {
		prev = r.NumSlots
	}
	return r.Tail != prev-1
}

// Buf returns the buffer of slot i, sliced to the buffer size (NETMAP_BUF).
// An invalid buffer index yields nil.
func (r *Ring) Buf(i uint32) []byte { return r.pool.Buf(r.Slot[i].BufIdx) }

// Pool returns the buffer pool the ring's slots index into.
func (r *Ring) Pool() *Pool { return r.pool }

// Advance sets Head and Cur to the slot after i (the common "I am done up to
// and including i" step).
func (r *Ring) Advance(next uint32) { r.Head, r.Cur = next, next }

// Direction selects TX or RX (enum txrx).
type Direction int

const (
	TX Direction = 0 // NR_TX
	RX Direction = 1 // NR_RX
)

func (d Direction) String() string {
	if d == TX {
		return "TX"
	}
	return "RX"
}

// Kring flags (nr_kflags).
const (
	KringExclusive uint32 = 1 << 0 // NKR_EXCLUSIVE
	KringPendIntr  uint32 = 1 << 1 // NKR_PENDINTR
)

// NoSlot is NR_NOSLOT, the "lease not complete" marker.
const NoSlot = ^uint32(0)

// SyncFlags are the flags passed to nm_sync.
type SyncFlags uint32

const (
	ForceReclaim SyncFlags = 1 << 0 // NAF_FORCE_RECLAIM (NIOCTXSYNC)
	ForceRead    SyncFlags = 1 << 1 // NAF_FORCE_READ (NIOCRXSYNC)
)

// SyncFunc is the signature of nm_sync (a kring's txsync or rxsync).
type SyncFunc func(k *Kring, flags SyncFlags) error

// NotifyFunc is the signature of nm_notify.
type NotifyFunc func(k *Kring, flags uint32)

// Kring is struct netmap_kring, the kernel mirror of a ring.
//
// Who writes what:
//   - NrHwcur: the ring's sync code (the holder of the busy flag), and for
//     rings fed by another goroutine (pipes, VALE RX rings, host RX ring)
//     the consumer side. Atomic because the producer side reads it from
//     another goroutine to compute free space.
//   - NrHwtail: the producer side. For TX rings the ring's own sync; for RX
//     rings the sync (native/generic) or a foreign producer (pipe peer, VALE
//     sender under QLock, host transmit). Atomic: the store that advances it
//     is the release edge that publishes the slot contents written before
//     it, and the consumer's load in rxsync is the acquire edge.
//   - RHead, RCur, RTail: only the prologue/finalize/reinit of the holder of
//     the busy flag.
//   - NkrHwlease, NkrLeases, NkrLeaseIdx: VALE senders, under QLock.
//   - Users, NrKflags(exclusive): the registration code under the global lock.
type Kring struct {
	Ring     *Ring  // ring: the user view
	NumSlots uint32 // nkr_num_slots
	RingID   uint32 // ring_id
	Dir      Direction
	Name     string // "<na> TX<i>" / "<na> RX<i>"

	NrHwcur  atomic.Uint32 // nr_hwcur: next slot the kernel processes
	NrHwtail atomic.Uint32 // nr_hwtail: first slot not owned by the user side
	RHead    uint32        // rhead: validated user head
	RCur     uint32        // rcur: validated user cur
	RTail    uint32        // rtail: validated user tail (= hwtail after finalize)

	NkrHwofs     int32  // nkr_hwofs: driver offset set by Reset
	NkrSlotFlags uint16 // nkr_slot_flags: flags set on imported slots (Forward in transparent mode)
	NrKflags     atomic.Uint32

	// Users counts binds on this kring (under the global lock).
	Users int

	// QLock is q_lock: protects concurrent producers (VALE senders, host
	// transmit) and, for rings with foreign producers, the consumer's sync.
	QLock sync.Mutex

	// Lease state for concurrent producers (VALE), protected by QLock.
	NkrHwlease  uint32   // nkr_hwlease: first slot not yet leased
	NkrLeases   []uint32 // nkr_leases: end of each lease, NoSlot while in progress
	NkrLeaseIdx uint32   // nkr_lease_idx: next lease slot to hand out

	// Sync is nm_sync; Notify is nm_notify. Set at krings creation, may be
	// replaced (monitors, bwrap) while the ring is stopped.
	Sync   SyncFunc
	Notify NotifyFunc

	// Peer is the cross-linked kring of a pipe (txkring->pipe).
	Peer *Kring

	na      *BaseAdapter
	busy    atomic.Bool // nkr_busy (nm_kr_tryget)
	stopped atomic.Bool // nkr_stopped
	si      waitq       // si: per-ring wait queue

	// Host RX queue (rx_queue mbq) for the host RX kring.
	hostq     hostQueue
	hostBatch [][]byte // preallocated batch for grabPackets

	monitors atomic.Pointer[[]*monitorLink]
	monTail  uint32 // mon_tail: RX position up to which monitors copied (busy-flag holder)

}

// Adapter returns the adapter this kring belongs to.
func (k *Kring) Adapter() *BaseAdapter { return k.na }

// Buf returns the buffer of a slot via the adapter's pool.
func (k *Kring) Buf(s *Slot) []byte { return k.Ring.pool.Buf(s.BufIdx) }

// Lim is nkr_num_slots - 1.
func (k *Kring) Lim() uint32 { return k.NumSlots - 1 }

// Next is nm_next for this kring.
func (k *Kring) Next(i uint32) uint32 {
	if i+1 >= k.NumSlots {
		return 0
	}
	return i + 1
}

// Prev is nm_prev for this kring.
func (k *Kring) Prev(i uint32) uint32 {
	if i == 0 {
		return k.NumSlots - 1
	}
	return i - 1
}

// Dist returns (b - a) mod NumSlots.
func (k *Kring) Dist(a, b uint32) uint32 {
	if b >= a {
		return b - a
	}
	return b + k.NumSlots - a
}

// Add returns (i + n) mod NumSlots for n < NumSlots.
func (k *Kring) Add(i, n uint32) uint32 {
	i += n
	if i >= k.NumSlots {
		i -= k.NumSlots
	}
	return i
}

// Stopped reports nkr_stopped.
func (k *Kring) Stopped() bool { return k.stopped.Load() }

// TryGet is nm_kr_tryget: take the busy flag. It fails with EBUSY when
// another sync holds it, and with ErrStopped (which is EBUSY too) when the
// ring is stopped, including when it was stopped after the flag was taken.
func (k *Kring) TryGet() error {
	if k.stopped.Load() {
		return errStopped
	}
	if !k.busy.CompareAndSwap(false, true) {
		return errBusy
	}
	if k.stopped.Load() {
		k.busy.Store(false)
		return errStopped
	}
	return nil
}

// Put is nm_kr_put: release the busy flag.
func (k *Kring) Put() { k.busy.Store(false) }

// get is nm_kr_get: wait until the busy flag is ours.
func (k *Kring) get() {
	for !k.busy.CompareAndSwap(false, true) {
		yieldCPU()
	}
}

// Stop is netmap_disable_ring: mark the ring stopped, wait for the running
// sync (if any) and for QLock holders to leave.
func (k *Kring) Stop() {
	k.stopped.Store(true)
	k.get()
	// An empty critical section on purpose: it waits for the current QLock
	// holders (senders with leases) to leave, as netmap_disable_ring does.
	k.QLock.Lock()
	k.QLock.Unlock() //lint:ignore SA2001 waiting for lock holders is the point
	k.Put()
}

// Start is the "enable ring" half: clear nkr_stopped.
func (k *Kring) Start() { k.stopped.Store(false) }

// NotifyNow calls the kring's nm_notify.
func (k *Kring) NotifyNow() {
	if n := k.Notify; n != nil {
		n(k, 0)
	}
}

// Space is nm_kr_space for an RX kring with leases: slots that can still be
// leased (num_slots - 1 - busy, busy = hwlease - hwcur). Call with QLock held.
func (k *Kring) Space() uint32 {
	busy := k.Dist(k.NrHwcur.Load(), k.NkrHwlease)
	return k.NumSlots - 1 - busy
}

// LeaseAcquire is nm_kr_lease: reserve up to n slots on an RX kring for a
// producer that will fill them without the lock. Call with QLock held. It
// returns the first reserved slot, the number reserved (possibly 0, never more
// than Space()) and the lease index to pass to LeaseComplete.
func (k *Kring) LeaseAcquire(n uint32) (start, got, leaseIdx uint32) {
	space := k.Space()
	if n > space {
		n = space
	}
	start = k.NkrHwlease
	leaseIdx = k.NkrLeaseIdx
	k.NkrLeases[leaseIdx] = NoSlot
	k.NkrLeaseIdx = k.Next(leaseIdx)
	k.NkrHwlease = k.Add(k.NkrHwlease, n)
	return start, n, leaseIdx
}

// LeaseComplete publishes a finished lease (its slots were written without
// the lock). end is start+got. Call with QLock held. hwtail advances only over
// leases whose predecessors are all complete; the result reports whether it
// moved, in which case the caller should notify the kring after unlocking.
func (k *Kring) LeaseComplete(leaseIdx, start, end uint32) bool {
	k.NkrLeases[leaseIdx] = end
	if start != k.NrHwtail.Load() {
		return false // an earlier lease is still in progress; it will publish us
	}
	j := start
	for leaseIdx != k.NkrLeaseIdx && k.NkrLeases[leaseIdx] != NoSlot {
		j = k.NkrLeases[leaseIdx]
		k.NkrLeases[leaseIdx] = NoSlot
		leaseIdx = k.Next(leaseIdx)
	}
	if j == start {
		return false
	}
	k.NrHwtail.Store(j)
	return true
}

// CheckInvariants verifies the kring/ring invariant
// hwcur <= rhead <= rcur <= rtail <= hwtail (cyclically), all < NumSlots, one
// slot always empty, and that the user view is inside the window the last
// sync gave it (rhead <= head <= cur <= rtail, tail == rtail). It is meant for tests and
// debugging: it reads the user view without synchronization, so call it only
// while holding the ring.
func (k *Kring) CheckInvariants() error {
	n := k.NumSlots
	hc, ht := k.NrHwcur.Load(), k.NrHwtail.Load()
	if hc >= n || ht >= n || k.RHead >= n || k.RCur >= n || k.RTail >= n {
		return invariantError(k, "index out of range")
	}
	// Distances from hwcur must be monotonic. rtail may lag hwtail when a
	// foreign producer (pipe peer, VALE sender) advanced it since the sync.
	dh, dc, drt, dt := k.Dist(hc, k.RHead), k.Dist(hc, k.RCur), k.Dist(hc, k.RTail), k.Dist(hc, ht)
	if dh > dc || dc > drt || drt > dt {
		return invariantError(k, "order hwcur<=rhead<=rcur<=rtail<=hwtail violated")
	}
	if dt > n-1 {
		return invariantError(k, "more than n-1 slots")
	}
	// The user may have moved forward since the last sync, but only inside
	// its window: rhead <= head <= cur <= rtail, and tail == rtail.
	r := k.Ring
	if r.Head >= n || r.Cur >= n || r.Tail != k.RTail {
		return invariantError(k, "user view out of range or tail overwritten")
	}
	win := k.Dist(k.RHead, k.RTail)
	if k.Dist(k.RHead, r.Head) > win || k.Dist(r.Head, r.Cur) > k.Dist(r.Head, k.RTail) {
		return invariantError(k, "user head/cur outside [rhead, rtail]")
	}
	return nil
}
