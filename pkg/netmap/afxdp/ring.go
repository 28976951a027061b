package afxdp

import (
	"sync/atomic"
)

// prodRing is a ring this package produces into (fill, TX); the kernel consumes.
type prodRing struct {
	producer *atomic.Uint32 // written by us (publish), read by the kernel
	consumer *atomic.Uint32 // written by the kernel, read by us
	flags    *atomic.Uint32 // written by the kernel (XDP_RING_NEED_WAKEUP)
	mask     uint32         // size-1, immutable
	size     uint32         // immutable
	// cachedProd is our producer index, ahead of *producer by the reserved-but-unpublished
	// entries. Only the owning side touches it.
	cachedProd uint32
	// cachedCons is the last kernel consumer index we read, plus size: the first index we
	// may not produce at. Only the owning side touches it.
	cachedCons uint32
}

// free returns how many entries may be produced, reading the kernel's consumer index only
// when the cached view has fewer than want.
func (r *prodRing) free(want uint32) uint32 {
	n := r.cachedCons - r.cachedProd
	if n >= want {
		return n
	}
	r.cachedCons = r.consumer.Load() + r.size
	return r.cachedCons - r.cachedProd
}

// publish makes the entries up to cachedProd visible to the kernel.
func (r *prodRing) publish() { r.producer.Store(r.cachedProd) }

// consRing is a ring the kernel produces into (RX, completion); this package consumes.
type consRing struct {
	producer *atomic.Uint32 // written by the kernel, read by us
	consumer *atomic.Uint32 // written by us (release), read by the kernel
	flags    *atomic.Uint32 // written by the kernel
	mask     uint32         // immutable
	size     uint32         // immutable
	// cachedProd is the last kernel producer index we read. Owning side only.
	cachedProd uint32
	// cachedCons is our consumer index, ahead of *consumer by the entries handed out but
	// not released yet. Owning side only.
	cachedCons uint32
}

// avail returns how many entries are ready, reading the kernel's producer index only when
// the cached view is empty.
func (r *consRing) avail() uint32 {
	n := r.cachedProd - r.cachedCons
	if n == 0 {
		r.cachedProd = r.producer.Load()
		n = r.cachedProd - r.cachedCons
	}
	return n
}

// release returns n consumed entries to the kernel.
func (r *consRing) release(n uint32) {
	r.cachedCons += n
	r.consumer.Store(r.cachedCons)
}
