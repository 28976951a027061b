package ifcore

import (
	"sync"
	"sync/atomic"
)

// PktFlags are the per-packet metadata bits the disciplines and the
// statistics look at (the mbuf m_flags subset that if.c uses).
type PktFlags uint8

const (
	// PktPrio is M_PRIO: the classic discipline puts the packet on its
	// priority FIFO and lets it evict the oldest normal packet when full.
	PktPrio PktFlags = 1 << iota
	// PktMcast is M_MCAST: counted in omcasts.
	PktMcast
	// PktBcast is M_BCAST: counted in omcasts by the epair transmit path.
	PktBcast
)

// NoBuf is the Buf value of a packet that does not refer to an
// index-addressed buffer.
const NoBuf = ^uint32(0)

// Packet is ifcore's mbuf: a frame plus the metadata the queueing
// disciplines need. Only the metadata is pooled (sync.Pool); the frame bytes
// live in Data, which the owner points either at its own storage or, once
// pkg/netmap is wired in, at the netmap buffer whose index is Buf (see
// doc.go). A Packet is owned by exactly one party at a time: whoever holds it
// must either hand it on or call Free.
type Packet struct {
	// Data is the frame. ifcore never reads it; Len is authoritative.
	Data []byte
	// Buf is the index of the backing buffer in an index-addressed pool,
	// or NoBuf.
	Buf uint32
	// Len is the frame length in bytes (m_pkthdr.len).
	Len int
	// Flags carries PktPrio, PktMcast, PktBcast.
	Flags PktFlags
	// Class is the priority class (0 = highest) used by the PrioClass
	// discipline; other disciplines ignore it.
	Class uint8
	// Hash is the flow hash (m_pkthdr.hash) used by hash subqueue mapping
	// and by the fair discipline.
	Hash uint32
	// Rcvif is the receiving interface set by the epair transmit path
	// (m_pkthdr.rcvif).
	Rcvif *Ifnet

	next *Packet // m_nextpkt: intrusive FIFO link, owned by the holder
	pool *PacketPool
}

// PacketPool pools packet metadata and counts packets handed out and not yet
// freed, so tests can prove that nothing leaks.
type PacketPool struct {
	p           sync.Pool
	outstanding atomic.Int64
	// OnFree, if set, is called with every packet just before its metadata
	// is recycled, so the owner of Buf can return the buffer to its pool.
	OnFree func(p *Packet)
}

// DefaultPool is the pool used by NewPacket.
var DefaultPool = &PacketPool{}

// Get returns a zeroed packet owned by the caller.
func (pp *PacketPool) Get() *Packet {
	pp.outstanding.Add(1)
	if v := pp.p.Get(); v != nil {
		p := v.(*Packet)
		p.pool = pp
		return p
	}
	return &Packet{Buf: NoBuf, pool: pp}
}

// Outstanding returns the number of packets handed out and not yet freed.
func (pp *PacketPool) Outstanding() int64 { return pp.outstanding.Load() }

// NewPacket returns a packet from DefaultPool with Data, Len and Flags set.
func NewPacket(data []byte, flags PktFlags) *Packet {
	p := DefaultPool.Get()
	p.Data = data
	p.Len = len(data)
	p.Flags = flags
	return p
}

// Free returns the packet's metadata to its pool (m_freem). The packet must
// not be used afterwards.
func (p *Packet) Free() {
	pp := p.pool
	if pp == nil {
		panic("ifcore: free of a packet that is not from a pool (double free?)")
	}
	if pp.OnFree != nil {
		pp.OnFree(p)
	}
	*p = Packet{Buf: NoBuf}
	pp.outstanding.Add(-1)
	pp.p.Put(p)
}

// pktList is an intrusive FIFO of packets (the ifq head/tail pair).
type pktList struct {
	head, tail *Packet
	n          int
	bytes      int
}

func (l *pktList) push(p *Packet) {
	p.next = nil
	if l.tail == nil {
		l.head = p
	} else {
		l.tail.next = p
	}
	l.tail = p
	l.n++
	l.bytes += p.Len
}

func (l *pktList) pushFront(p *Packet) {
	p.next = l.head
	l.head = p
	if l.tail == nil {
		l.tail = p
	}
	l.n++
	l.bytes += p.Len
}

func (l *pktList) pop() *Packet {
	p := l.head
	if p == nil {
		return nil
	}
	l.head = p.next
	if l.head == nil {
		l.tail = nil
	}
	p.next = nil
	l.n--
	l.bytes -= p.Len
	return p
}

// take removes and returns the whole chain.
func (l *pktList) take() *Packet {
	h := l.head
	*l = pktList{}
	return h
}

// freeChain frees a chain linked through next and returns its length.
func freeChain(h *Packet) int {
	n := 0
	for h != nil {
		nx := h.next
		h.next = nil
		h.Free()
		h = nx
		n++
	}
	return n
}
