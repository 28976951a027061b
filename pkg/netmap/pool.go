package netmap

import (
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
)

// DefaultBufSize is NETMAP_BUF_SIZE's default (2048 bytes, also the AF_XDP
// chunk size).
const DefaultBufSize = 2048

// reservedBufs are buffer indexes 0 and 1, never handed out (netmap treats
// idx < 2 as invalid, 004:1627).
const reservedBufs = 2

// Pool is the buffer allocator (netmap_mem_d's buffer part): one contiguous
// region cut into fixed-size buffers addressed by index. Index 0 and 1 are
// reserved. Buf is lock-free and allocation-free; Alloc/Free take a mutex
// (they run at ring creation and for extra buffers, not per packet).
//
// Ownership: a buffer index is owned by exactly one place at a time — a ring
// slot, an extra-buffer chain, or the free list. Zero-copy swaps move
// indexes between slots of rings that share the pool; they never change the
// outstanding count.
type Pool struct {
	mem     []byte
	bufSize uint32
	total   uint32 // objtotal

	mu    sync.Mutex
	free  []uint32 // free list (stack)
	inUse []bool   // double-free detection
	out   int      // outstanding buffers
}

// NewPool returns a pool of numBufs buffers (including the two reserved ones)
// of bufSize bytes each.
func NewPool(numBufs, bufSize int) (*Pool, error) {
	if numBufs <= reservedBufs {
		return nil, fmt.Errorf("create pool: numBufs %d must be > %d: %w", numBufs, reservedBufs, syscall.EINVAL)
	}
	if bufSize < 64 || bufSize > 65535 {
		return nil, fmt.Errorf("create pool: bufSize %d must be in [64, 65535]: %w", bufSize, syscall.EINVAL)
	}
	if numBufs > 1<<24 {
		return nil, fmt.Errorf("create pool: numBufs %d exceeds %d: %w", numBufs, 1<<24, syscall.EINVAL)
	}
	p := &Pool{
		mem:     make([]byte, numBufs*bufSize),
		bufSize: uint32(bufSize),
		total:   uint32(numBufs),
		free:    make([]uint32, 0, numBufs-reservedBufs),
		inUse:   make([]bool, numBufs),
	}
	for i := numBufs - 1; i >= reservedBufs; i-- {
		p.free = append(p.free, uint32(i))
	}
	return p, nil
}

// BufSize is NETMAP_BUF_SIZE.
func (p *Pool) BufSize() uint32 { return p.bufSize }

// Total is objtotal: the number of buffer indexes, reserved ones included.
func (p *Pool) Total() uint32 { return p.total }

// Valid reports whether idx can address a buffer (2 <= idx < objtotal).
func (p *Pool) Valid(idx uint32) bool { return idx >= reservedBufs && idx < p.total }

// Buf is NMB: the buffer for idx, or nil for an invalid index. The slice's
// capacity is the buffer size, so writes cannot spill into the next buffer.
func (p *Pool) Buf(idx uint32) []byte {
	if idx < reservedBufs || idx >= p.total {
		return nil
	}
	off := int(idx) * int(p.bufSize)
	end := off + int(p.bufSize)
	return p.mem[off:end:end]
}

// Region returns the whole buffer region (objtotal * buf size bytes), for a
// backend that registers the pool with the kernel (an AF_XDP UMEM whose chunk
// size is BufSize). Buffer idx starts at Offset(idx).
func (p *Pool) Region() []byte { return p.mem }

// Offset is the byte offset of buffer idx in Region.
func (p *Pool) Offset(idx uint32) uint64 { return uint64(idx) * uint64(p.bufSize) }

// IndexOf is the buffer index holding byte offset off of Region (the inverse
// of Offset for any address inside a buffer). It returns 0 (invalid) for an
// offset outside the region or in a reserved buffer.
func (p *Pool) IndexOf(off uint64) uint32 {
	idx := off / uint64(p.bufSize)
	if idx < reservedBufs || idx >= uint64(p.total) {
		return 0
	}
	return uint32(idx)
}

// Alloc takes one buffer. It fails with ENOMEM when the pool is empty.
func (p *Pool) Alloc() (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.free)
	if n == 0 {
		return 0, fmt.Errorf("alloc buffer: pool of %d exhausted: %w", p.total, syscall.ENOMEM)
	}
	idx := p.free[n-1]
	p.free = p.free[:n-1]
	p.inUse[idx] = true
	p.out++
	return idx, nil
}

// Free returns a buffer. Reserved, out-of-range and already-free indexes are
// rejected with EINVAL (and not counted), so a corrupted slot cannot corrupt
// the pool.
func (p *Pool) Free(idx uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if idx < reservedBufs || idx >= p.total {
		return fmt.Errorf("free buffer %d: out of range [2,%d): %w", idx, p.total, syscall.EINVAL)
	}
	if !p.inUse[idx] {
		return fmt.Errorf("free buffer %d: not allocated: %w", idx, syscall.EINVAL)
	}
	p.inUse[idx] = false
	p.free = append(p.free, idx)
	p.out--
	return nil
}

// Outstanding reports how many buffers are allocated (in rings, extra chains
// or held by callers). It returns to zero when everything is released.
func (p *Pool) Outstanding() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out
}

// Available reports how many buffers can still be allocated.
func (p *Pool) Available() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// AllocExtra is netmap_extra_alloc: take up to n buffers and chain them
// through the first 4 bytes (little endian) of each buffer, the last one
// holding 0. It returns the head of the chain (0 if none) and the number
// obtained.
func (p *Pool) AllocExtra(n int) (head uint32, got int) {
	for got < n {
		idx, err := p.Alloc()
		if err != nil {
			break
		}
		binary.LittleEndian.PutUint32(p.Buf(idx), head)
		head = idx
		got++
	}
	return head, got
}

// FreeExtra is netmap_extra_free: walk a chain from head and free every
// buffer. The walk is bounded (at most objtotal steps) and stops at the first
// invalid or already-free index, so a corrupted chain cannot loop or free
// foreign buffers twice. It returns how many buffers were freed.
func (p *Pool) FreeExtra(head uint32) int {
	freed := 0
	for i := uint32(0); head != 0 && i < p.total; i++ {
		b := p.Buf(head)
		if b == nil {
			break
		}
		next := binary.LittleEndian.Uint32(b)
		if p.Free(head) != nil {
			break
		}
		freed++
		head = next
	}
	return freed
}
