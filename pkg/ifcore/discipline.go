package ifcore

import (
	"fmt"
	"syscall"
)

// QueueState is what a discipline sees of its subqueue when it enqueues:
// the subqueue totals (including a prepended packet) and the limits.
type QueueState struct {
	Len, Bytes       int // ifsq_len, ifsq_bcnt
	MaxLen, MaxBytes int // ifsq_maxlen, ifsq_maxbcnt
}

// Full reports the classic "len >= maxlen || bcnt >= maxbcnt" condition.
func (s QueueState) Full() bool { return s.Len >= s.MaxLen || s.Bytes >= s.MaxBytes }

// Discipline is a queueing discipline: the ALTQ method table
// (enqueue/dequeue/poll/request) of one subqueue. All methods are called
// with the subqueue lock held, so implementations need no locking and must
// not block or allocate per packet.
type Discipline interface {
	// Enqueue takes p. When the discipline makes room by dropping an
	// already queued packet it returns that packet (the caller frees and
	// counts it). On failure it returns an error (ENOBUFS) and does not
	// keep p; the caller frees it.
	Enqueue(p *Packet, st QueueState) (evicted *Packet, err error)
	// Dequeue removes and returns the next packet, or nil (ALTDQ_REMOVE).
	Dequeue() *Packet
	// Poll returns the packet the next Dequeue would return without
	// removing it (ALTDQ_POLL).
	Poll() *Packet
	// Purge removes every packet and returns them as a chain linked
	// through the packets' internal link (ALTRQ_PURGE).
	Purge() *Packet
	// Len and Bytes are the discipline's own totals.
	Len() int
	Bytes() int
}

// Admitter is a Discipline that can say what Enqueue would do with p without doing it
// (a trace): whether p would be taken and whether it would evict a queued packet. Called
// with the subqueue lock held. Enqueue makes the same decision.
type Admitter interface {
	Admit(p *Packet, st QueueState) (ok, evict bool)
}

var (
	_ Admitter = (*Classic)(nil)
	_ Admitter = (*PrioClass)(nil)
	_ Admitter = (*Fair)(nil)
)

// DisciplineKind names the disciplines a port policy can select.
type DisciplineKind int

const (
	// DiscClassic is DragonFly's classic ifq: a priority FIFO and a normal
	// FIFO, priority packets evicting the oldest normal one when full.
	DiscClassic DisciplineKind = iota
	// DiscPrioClass is a strict-priority discipline over PrioClassBands
	// classes selected by Packet.Class (0 is served first).
	DiscPrioClass
	// DiscFair is deficit round robin over flow-hash buckets.
	DiscFair
)

func (k DisciplineKind) String() string {
	switch k {
	case DiscClassic:
		return "classic"
	case DiscPrioClass:
		return "prioclass"
	case DiscFair:
		return "fair"
	}
	return fmt.Sprintf("DisciplineKind(%d)", int(k))
}

// NewDiscipline returns a fresh discipline of kind k.
func NewDiscipline(k DisciplineKind) (Discipline, error) {
	switch k {
	case DiscClassic:
		return &Classic{}, nil
	case DiscPrioClass:
		return &PrioClass{}, nil
	case DiscFair:
		return NewFair(0, 0), nil
	}
	return nil, fmt.Errorf("new discipline: unknown kind %d (want classic, prioclass or fair): %w", int(k), syscall.EINVAL)
}

// Classic is ifsq_classic_{enqueue,dequeue,request}: two FIFOs.
type Classic struct {
	prio, norm pktList
}

var _ Discipline = (*Classic)(nil)

// Enqueue implements the seed's rule (002:2854-2886): when full, a
// priority packet evicts the oldest normal packet as long as the priority
// FIFO holds less than half of either limit; if the normal FIFO is empty
// the priority packet is dropped too (D-I14, kept).
func (c *Classic) Enqueue(p *Packet, st QueueState) (*Packet, error) {
	ok, evict := c.admit(p, st)
	switch {
	case !ok:
		return nil, syscall.ENOBUFS
	case evict:
		ev := c.norm.pop()
		c.prio.push(p)
		return ev, nil
	}
	if p.Flags&PktPrio != 0 {
		c.prio.push(p)
	} else {
		c.norm.push(p)
	}
	return nil, nil
}

// admit is Enqueue's decision: whether p is taken, and whether it evicts the oldest normal
// packet for it.
func (c *Classic) admit(p *Packet, st QueueState) (ok, evict bool) {
	if !st.Full() {
		return true, false
	}
	if p.Flags&PktPrio != 0 && c.prio.n < st.MaxLen/2 && c.prio.bytes < st.MaxBytes/2 && c.norm.n > 0 {
		return true, true
	}
	return false, false
}

// Admit implements Admitter.
func (c *Classic) Admit(p *Packet, st QueueState) (ok, evict bool) { return c.admit(p, st) }

// Dequeue pops the priority FIFO first, then the normal one.
func (c *Classic) Dequeue() *Packet {
	if p := c.prio.pop(); p != nil {
		return p
	}
	return c.norm.pop()
}

// Poll peeks in dequeue order.
func (c *Classic) Poll() *Packet {
	if c.prio.head != nil {
		return c.prio.head
	}
	return c.norm.head
}

// Purge empties both FIFOs.
func (c *Classic) Purge() *Packet {
	h := c.prio.take()
	n := c.norm.take()
	return joinChains(h, n)
}

// Len is the packet count of both FIFOs.
func (c *Classic) Len() int { return c.prio.n + c.norm.n }

// Bytes is the byte count of both FIFOs.
func (c *Classic) Bytes() int { return c.prio.bytes + c.norm.bytes }

// PrioLen is the priority FIFO's packet count (prio_len).
func (c *Classic) PrioLen() int { return c.prio.n }

func joinChains(a, b *Packet) *Packet {
	if a == nil {
		return b
	}
	t := a
	for t.next != nil {
		t = t.next
	}
	t.next = b
	return a
}

// PrioClassBands is the number of classes of the PrioClass discipline.
const PrioClassBands = 4

// PrioClass is a strict-priority discipline (in the spirit of ALTQ PRIQ):
// Packet.Class selects a band (clamped to PrioClassBands-1), band 0 is
// always served first, FIFO within a band. When the subqueue is full, a
// packet evicts the oldest packet of the lowest-priority non-empty band
// that is strictly lower than its own; otherwise it is dropped.
type PrioClass struct {
	bands [PrioClassBands]pktList
	n, b  int
}

var _ Discipline = (*PrioClass)(nil)

func prioBand(p *Packet) int {
	c := int(p.Class)
	if c >= PrioClassBands {
		c = PrioClassBands - 1
	}
	return c
}

// Enqueue appends p to its band, evicting a lower-priority packet if full.
func (q *PrioClass) Enqueue(p *Packet, st QueueState) (*Packet, error) {
	band := prioBand(p)
	var ev *Packet
	if st.Full() {
		from := q.victim(band)
		if from < 0 {
			return nil, syscall.ENOBUFS
		}
		ev = q.bands[from].pop()
		q.n--
		q.b -= ev.Len
	}
	q.bands[band].push(p)
	q.n++
	q.b += p.Len
	return ev, nil
}

// victim is the band a packet of band evicts from when the queue is full: the
// lowest-priority non-empty band below it, or -1 (refused).
func (q *PrioClass) victim(band int) int {
	for i := PrioClassBands - 1; i > band; i-- {
		if q.bands[i].n > 0 {
			return i
		}
	}
	return -1
}

// Admit implements Admitter.
func (q *PrioClass) Admit(p *Packet, st QueueState) (ok, evict bool) {
	if !st.Full() {
		return true, false
	}
	v := q.victim(prioBand(p))
	return v >= 0, v >= 0
}

// Dequeue pops the highest-priority non-empty band.
func (q *PrioClass) Dequeue() *Packet {
	for i := range q.bands {
		if p := q.bands[i].pop(); p != nil {
			q.n--
			q.b -= p.Len
			return p
		}
	}
	return nil
}

// Poll peeks in dequeue order.
func (q *PrioClass) Poll() *Packet {
	for i := range q.bands {
		if q.bands[i].head != nil {
			return q.bands[i].head
		}
	}
	return nil
}

// Purge empties every band.
func (q *PrioClass) Purge() *Packet {
	var h *Packet
	for i := len(q.bands) - 1; i >= 0; i-- {
		h = joinChains(q.bands[i].take(), h)
	}
	q.n, q.b = 0, 0
	return h
}

// Len is the packet count.
func (q *PrioClass) Len() int { return q.n }

// Bytes is the byte count.
func (q *PrioClass) Bytes() int { return q.b }

// Fair is deficit round robin over flow-hash buckets (Packet.Hash modulo
// the bucket count). Each active bucket may send Quantum bytes per round.
// When the subqueue is full the head of the longest bucket is evicted, so a
// single heavy flow cannot lock out the others.
type Fair struct {
	buckets []pktList
	deficit []int
	active  []int // ring of active bucket ids
	inRing  []bool
	ahead   int // index into active of the current bucket
	acount  int
	quantum int
	granted bool // the head bucket got its quantum this round
	n, b    int
}

var _ Discipline = (*Fair)(nil)

// NewFair returns a DRR discipline with nbuckets buckets (default 64) and
// the given quantum in bytes (default 1514).
func NewFair(nbuckets, quantum int) *Fair {
	if nbuckets <= 0 {
		nbuckets = 64
	}
	if quantum <= 0 {
		quantum = 1514
	}
	return &Fair{
		buckets: make([]pktList, nbuckets), deficit: make([]int, nbuckets),
		active: make([]int, nbuckets), inRing: make([]bool, nbuckets), quantum: quantum,
	}
}

func (f *Fair) activate(b int) {
	if f.inRing[b] {
		return
	}
	f.inRing[b] = true
	f.active[(f.ahead+f.acount)%len(f.active)] = b
	f.acount++
}

// Enqueue appends p to its flow bucket.
func (f *Fair) Enqueue(p *Packet, st QueueState) (*Packet, error) {
	var ev *Packet
	if st.Full() {
		fat := f.victim(p)
		if fat < 0 {
			return nil, syscall.ENOBUFS
		}
		ev = f.buckets[fat].pop()
		f.n--
		f.b -= ev.Len
		f.fixEmpty(fat)
	}
	b := int(p.Hash % uint32(len(f.buckets)))
	f.buckets[b].push(p)
	f.n++
	f.b += p.Len
	f.activate(b)
	return ev, nil
}

// victim is the bucket a full queue evicts from for p: the one holding the most bytes,
// unless that is p's own with at most one packet; -1 refuses p.
func (f *Fair) victim(p *Packet) int {
	fat := -1
	for i := range f.buckets {
		if f.buckets[i].n > 0 && (fat < 0 || f.buckets[i].bytes > f.buckets[fat].bytes) {
			fat = i
		}
	}
	own := int(p.Hash % uint32(len(f.buckets)))
	if fat < 0 || fat == own && f.buckets[own].n <= 1 {
		return -1
	}
	return fat
}

// Admit implements Admitter.
func (f *Fair) Admit(p *Packet, st QueueState) (ok, evict bool) {
	if !st.Full() {
		return true, false
	}
	v := f.victim(p)
	return v >= 0, v >= 0
}

// fixEmpty keeps an emptied bucket's deficit at zero; the ring entry is
// dropped lazily by next().
func (f *Fair) fixEmpty(b int) {
	if f.buckets[b].n == 0 {
		f.deficit[b] = 0
	}
}

// next advances the DRR state until the current bucket can send its head
// and returns that bucket, or -1. Advancing is idempotent with respect to
// what is sent next, so Poll may call it too.
func (f *Fair) next() int {
	for f.acount > 0 {
		b := f.active[f.ahead]
		if f.buckets[b].n == 0 {
			f.dropHead(b)
			continue
		}
		if !f.granted {
			f.deficit[b] += f.quantum
			f.granted = true
		}
		if f.deficit[b] >= f.buckets[b].head.Len {
			return b
		}
		// Out of credit for this round: rotate to the tail.
		f.ahead = (f.ahead + 1) % len(f.active)
		f.active[(f.ahead+f.acount-1)%len(f.active)] = b
		f.granted = false
	}
	return -1
}

func (f *Fair) dropHead(b int) {
	f.inRing[b] = false
	f.deficit[b] = 0
	f.ahead = (f.ahead + 1) % len(f.active)
	f.acount--
	f.granted = false
}

// Dequeue returns the next packet in DRR order.
func (f *Fair) Dequeue() *Packet {
	b := f.next()
	if b < 0 {
		return nil
	}
	p := f.buckets[b].pop()
	f.deficit[b] -= p.Len
	f.n--
	f.b -= p.Len
	if f.buckets[b].n == 0 {
		f.dropHead(b)
	}
	return p
}

// Poll returns what Dequeue would return.
func (f *Fair) Poll() *Packet {
	b := f.next()
	if b < 0 {
		return nil
	}
	return f.buckets[b].head
}

// Purge empties every bucket.
func (f *Fair) Purge() *Packet {
	var h *Packet
	for i := len(f.buckets) - 1; i >= 0; i-- {
		h = joinChains(f.buckets[i].take(), h)
		f.deficit[i] = 0
		f.inRing[i] = false
	}
	f.acount, f.ahead, f.n, f.b = 0, 0, 0, 0
	f.granted = false
	return h
}

// Len is the packet count.
func (f *Fair) Len() int { return f.n }

// Bytes is the byte count.
func (f *Fair) Bytes() int { return f.b }
