package netmap

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
)

// MemPort is a memory-backed port: what a VALE port is (netmap_vp_adapter),
// with a private buffer pool. Two MemPorts can be cross-connected with
// ConnectMemPorts: frames sent on TX ring i of one are copied into RX ring
// i mod nrx of the other, using the RX kring lease scheme, so several TX rings
// (several goroutines) can feed the same RX ring concurrently. An unconnected
// MemPort drops what it sends (counted).
//
// It is both a usable port and the reference for pkg/vale: its TxSync is the
// shape of nm_bdg_flush (read [hwcur, rhead), lease, copy unlocked, publish,
// notify) and its RxSync is netmap_vp_rxsync.
type MemPort struct {
	BaseAdapter
	link    *memLink
	Sent    atomic.Uint64
	Dropped atomic.Uint64
}

var _ Adapter = (*MemPort)(nil)

// memLink is the "switch" between two ports: its RWMutex is the bridge lock,
// held shared by a forwarding pass and exclusively to remove krings.
type memLink struct {
	mu   sync.RWMutex
	ends [2]*MemPort
}

// NewMemPort creates a port with g's geometry and a private pool sized for
// its rings (host rings included) plus extra buffers.
func NewMemPort(name string, g Geometry, bufSize, extraBufs int) (*MemPort, error) {
	if bufSize == 0 {
		bufSize = DefaultBufSize
	}
	if g.TxRings <= 0 || g.RxRings <= 0 || g.TxRings > 64 || g.RxRings > 64 {
		return nil, fmt.Errorf("create mem port %q: rings %d/%d outside [1, 64]: %w", name, g.TxRings, g.RxRings, syscall.EINVAL)
	}
	if extraBufs < 0 {
		return nil, fmt.Errorf("create mem port %q: negative extra buffers: %w", name, syscall.EINVAL)
	}
	nbufs := int(g.TxSlots)*(g.TxRings+1) + int(g.RxSlots)*(g.RxRings+1) + extraBufs + reservedBufs
	pool, err := NewPool(nbufs, bufSize)
	if err != nil {
		return nil, fmt.Errorf("create mem port %q: %w", name, err)
	}
	p := &MemPort{}
	if err := p.Init(p, AdapterConfig{Name: name, Geometry: g, Pool: pool, Flags: NAFMemOwner}); err != nil {
		return nil, err
	}
	return p, nil
}

// ConnectMemPorts cross-connects a and b. Both must be unconnected and idle.
func ConnectMemPorts(a, b *MemPort) error {
	if a == b || a.link != nil || b.link != nil {
		return fmt.Errorf("connect mem ports: ports must be distinct and unconnected: %w", syscall.EINVAL)
	}
	l := &memLink{ends: [2]*MemPort{a, b}}
	a.link, b.link = l, l
	return nil
}

func (p *MemPort) peer() *MemPort {
	if p.link == nil {
		return nil
	}
	if p.link.ends[0] == p {
		return p.link.ends[1]
	}
	return p.link.ends[0]
}

// TxSync forwards [hwcur, rhead) to the peer and reclaims the slots.
func (p *MemPort) TxSync(k *Kring, flags SyncFlags) error {
	head := k.RHead
	cur := k.NrHwcur.Load()
	n := k.Dist(cur, head)
	if n == 0 {
		return nil
	}
	if l := p.link; l != nil {
		l.mu.RLock()
		n = p.forward(k, cur, n)
		l.mu.RUnlock()
	}
	if n > 0 {
		p.Dropped.Add(uint64(n))
	}
	k.NrHwcur.Store(head)
	k.NrHwtail.Store(k.Prev(head))
	return nil
}

// forward copies n slots from src starting at cur into the peer; it returns
// how many could not be delivered. Called with the link read-locked.
func (p *MemPort) forward(src *Kring, cur, n uint32) uint32 {
	q := p.peer()
	if q == nil || !q.On() || q.RxRings == nil {
		return n
	}
	dst := q.RxRings[int(src.RingID)%q.NumRxRings]
	dst.QLock.Lock()
	if dst.Stopped() {
		dst.QLock.Unlock()
		return n
	}
	if dst.Space() == 0 {
		dst.QLock.Unlock()
		return n
	}
	start, got, lease := dst.LeaseAcquire(n)
	dst.QLock.Unlock()

	j := start
	sp, dp := src.Ring.pool, dst.Ring.pool
	for i := uint32(0); i < got; i++ {
		s := &src.Ring.Slot[cur]
		d := &dst.Ring.Slot[j]
		sb, db := sp.Buf(s.BufIdx), dp.Buf(d.BufIdx)
		l := min(int(s.Len), len(sb), len(db))
		copy(db, sb[:l])
		d.Len = uint16(l)
		d.Flags = s.Flags & MoreFrag
		cur = src.Next(cur)
		j = dst.Next(j)
	}

	dst.QLock.Lock()
	published := dst.LeaseComplete(lease, start, j)
	dst.QLock.Unlock()
	if published {
		dst.NotifyNow()
	}
	p.Sent.Add(uint64(got))
	return n - got
}

// RxSync is netmap_vp_rxsync: release [hwcur, rhead) under the kring lock.
func (p *MemPort) RxSync(k *Kring, flags SyncFlags) error {
	k.QLock.Lock()
	k.NrHwcur.Store(k.RHead)
	k.QLock.Unlock()
	return nil
}

// KringsCreate takes the link's write lock: the peer's forwarding reads our
// kring array under the read lock.
func (p *MemPort) KringsCreate() error {
	if l := p.link; l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
	}
	return p.CreateKrings()
}

// KringsDelete takes the link's write lock so no forwarding pass of the peer
// still writes into our rings.
func (p *MemPort) KringsDelete() {
	if l := p.link; l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
	}
	p.DeleteKrings()
}
