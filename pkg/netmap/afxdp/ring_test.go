package afxdp

import (
	"math/rand/v2"
	"testing"

	"github.com/epair-cni/epair/internal/sys"
)

// newTestRings returns a producer ring and a consumer ring over plain memory standing in
// for the kernel's mapping, with both indices starting just below the uint32 wrap.
func newTestRings(size uint32, start uint32) (*prodRing, *consRing, []uint64, []byte) {
	mem := make([]byte, 64+8*size)
	p := &prodRing{producer: sys.Uint32At(mem, 0), consumer: sys.Uint32At(mem, 4), flags: sys.Uint32At(mem, 8), mask: size - 1, size: size}
	c := &consRing{producer: sys.Uint32At(mem, 0), consumer: sys.Uint32At(mem, 4), flags: sys.Uint32At(mem, 8), mask: size - 1, size: size}
	p.producer.Store(start)
	p.consumer.Store(start)
	p.cachedProd, p.cachedCons = start, start+size
	c.cachedProd, c.cachedCons = start, start
	return p, c, sys.Uint64sAt(mem, 64, size), mem
}

// TestRingsAcrossWrap drives a producer ring (our side of fill/TX) against a consumer ring
// (standing in for the kernel, and the same code as our side of RX/completion) with random
// batch sizes across the uint32 wrap, against a FIFO model.
func TestRingsAcrossWrap(t *testing.T) {
	for _, size := range []uint32{1, 2, 8, 128} {
		rng := rand.New(rand.NewPCG(uint64(size), 42))
		p, c, q, _ := newTestRings(size, ^uint32(0)-3*size)
		var model []uint64
		next := uint64(1)
		for step := range 20000 {
			if rng.IntN(2) == 0 {
				want := uint32(rng.IntN(int(size) + 2))
				free := p.free(want)
				// Lazy refresh: never more than the truth, and the truth whenever the
				// cached view could not satisfy want.
				if actual := size - uint32(len(model)); free > actual || (free < want && free != actual) {
					t.Fatalf("size %d step %d: free(%d) = %d, model says %d", size, step, want, free, actual)
				}
				k := min(want, free)
				for range k {
					q[p.cachedProd&p.mask] = next
					model = append(model, next)
					next++
					p.cachedProd++
				}
				p.publish()
			} else {
				n := c.avail()
				if actual := uint32(len(model)); n > actual || (n == 0 && actual != 0) {
					t.Fatalf("size %d step %d: avail = %d, model says %d", size, step, n, actual)
				}
				k := uint32(rng.IntN(int(n) + 1))
				for i := range k {
					if got := q[(c.cachedCons+i)&c.mask]; got != model[i] {
						t.Fatalf("size %d step %d: entry %d = %d, want %d", size, step, i, got, model[i])
					}
				}
				c.release(k)
				model = model[k:]
			}
		}
		if next <= uint64(3*size)+4 {
			t.Fatalf("size %d: produced only %d entries, the indices never wrapped", size, next-1)
		}
	}
}
