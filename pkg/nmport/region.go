package nmport

import "sync/atomic"

// Region is the agent's view of a registration's shared region. Every value
// it reads was written by the application and is untrusted: each accessor
// reads a field once, and Buf checks an index against the layout before
// handing out memory. The application cannot resize the region (the agent
// seals the memfd against shrinking and growing), so the mapping stays valid.
type Region struct {
	mem []byte
	l   Layout
}

// NewRegion wraps mem, a mapping of l.Size bytes.
func NewRegion(mem []byte, l Layout) *Region {
	if uint64(len(mem)) < l.Size {
		panic("nmport: region smaller than its layout")
	}
	return &Region{mem: mem, l: l}
}

// Layout returns the region's layout.
func (r *Region) Layout() *Layout { return &r.l }

// Atok reads ring i's head and cur from the CSB (application to kernel).
// Head is read first: the application stores cur before head, so a head
// that has moved comes with a cur at least as new, and a well-behaved
// application is never seen with cur behind head (netmap's
// sync_kloop_kernel_read has the same order).
func (r *Region) Atok(i int) (head, cur uint32) {
	a := ptr[csbAtok](r.mem, r.l.AtokOff(i))
	head = atomic.LoadUint32(&a.Head)
	cur = atomic.LoadUint32(&a.Cur)
	return head, cur
}

// ApplNeedKick reports whether the application waits for a notification on
// ring i.
func (r *Region) ApplNeedKick(i int) bool {
	return atomic.LoadUint32(&ptr[csbAtok](r.mem, r.l.AtokOff(i)).ApplNeedKick) != 0
}

// SetKtoa publishes ring i's hwcur and hwtail (kernel to application); the
// store of hwtail releases the slots written before it.
func (r *Region) SetKtoa(i int, hwcur, hwtail uint32) {
	k := ptr[csbKtoa](r.mem, r.l.KtoaOff(i))
	atomic.StoreUint32(&k.Hwcur, hwcur)
	atomic.StoreUint32(&k.Hwtail, hwtail)
}

// SetKernNeedKick asks the application to kick on its next sync of ring i
// (on: the agent is about to sleep).
func (r *Region) SetKernNeedKick(i int, on bool) {
	v := uint32(0)
	if on {
		v = 1
	}
	atomic.StoreUint32(&ptr[csbKtoa](r.mem, r.l.KtoaOff(i)).KernNeedKick, v)
}

// Slot reads slot s of ring i once.
func (r *Region) Slot(i int, s uint32) (idx uint32, length, flags uint16) {
	sl := ptr[Slot](r.mem, r.l.SlotOff(i, s))
	return atomic.LoadUint32(&sl.BufIdx), sl.Len, sl.Flags
}

// SetSlot writes the length and flags of slot s of ring i.
func (r *Region) SetSlot(i int, s uint32, length, flags uint16) {
	sl := ptr[Slot](r.mem, r.l.SlotOff(i, s))
	sl.Len, sl.Flags = length, flags
}

// Buf is buffer idx (nil for an index outside [2, NumBufs)).
func (r *Region) Buf(idx uint32) []byte {
	if idx < 2 || idx >= r.l.NumBufs {
		return nil
	}
	off := r.l.BufAt(idx)
	end := off + uint64(r.l.BufSize)
	return r.mem[off:end:end]
}

// SetState puts the port in error (errno != 0): the application's next sync
// returns it.
func (r *Region) SetState(errno uint32) {
	atomic.StoreUint32(&ptr[portHdr](r.mem, r.l.CSBOff).State, errno)
}

// InitRing sets ring i's positions in both views (netmap_ring and CSB) from
// the kernel side's, before the region is handed to the application.
func (r *Region) InitRing(i int, head, cur, tail, hwcur uint32) {
	h := ptr[ringHdr](r.mem, r.l.RingOff[i])
	h.Head, h.Cur, h.Tail = head, cur, tail
	a := ptr[csbAtok](r.mem, r.l.AtokOff(i))
	a.Head, a.Cur = head, cur
	r.SetKtoa(i, hwcur, tail)
}
