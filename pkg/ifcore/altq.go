package ifcore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// MCLBytes is the cluster size used for the byte limit: a subqueue holds
// at most maxlen*MCLBytes bytes (ifsq_maxbcnt).
const MCLBytes = 2048

// SubqMap selects how ifq_map_subq picks a subqueue.
type SubqMap int

const (
	// MapDefault always picks subqueue 0 (ifq_mapsubq_default).
	MapDefault SubqMap = iota
	// MapWorker picks worker id & mask (ifq_mapsubq_mask).
	MapWorker
	// MapHash picks Packet.Hash & mask.
	MapHash
)

// Ifaltq is the interface send queue (if_snd): a set of subqueues.
type Ifaltq struct {
	ifp    *Ifnet
	subqs  []*Subqueue
	mask   int
	mapsq  SubqMap
	maxlen atomic.Int64 // altq_maxlen
}

// Subqueue returns subqueue i.
func (q *Ifaltq) Subqueue(i int) *Subqueue { return q.subqs[i] }

// NumSubqueues returns altq_subq_cnt.
func (q *Ifaltq) NumSubqueues() int { return len(q.subqs) }

// MaxLen returns altq_maxlen (including the staging headroom).
func (q *Ifaltq) MaxLen() int { return int(q.maxlen.Load()) }

// MapSubq returns the subqueue for a packet sent from worker cpu.
func (q *Ifaltq) MapSubq(cpu int, p *Packet) *Subqueue {
	switch q.mapsq {
	case MapWorker:
		return q.subqs[cpu&q.mask]
	case MapHash:
		return q.subqs[int(p.Hash)&q.mask]
	}
	return q.subqs[0]
}

// SetMaxLen is ifq_set_maxlen: every subqueue gets maxlen
// len + nworkers*stage_cntmax (headroom for packets staged per worker) and
// a byte limit of maxlen*MCLBytes. Safe on a live interface; packets above
// a lowered limit stay queued and only new enqueues see the new limit.
func (q *Ifaltq) SetMaxLen(n int) error {
	if n <= 0 {
		return fmt.Errorf("set queue length %d: must be positive: %w", n, syscall.EINVAL)
	}
	net := q.ifp.net
	ml := n + net.workers.N()*max(int(net.stageCntMax.Load()), 0)
	q.maxlen.Store(int64(ml))
	for _, sq := range q.subqs {
		sq.mu.Lock()
		sq.maxlen = ml
		sq.maxbcnt = ml * MCLBytes
		sq.mu.Unlock()
	}
	return nil
}

// SetDiscipline installs a new discipline of kind k on every subqueue of a
// live interface. Queued packets are moved into the new discipline in
// their current dequeue order; any the new one refuses are dropped and
// counted.
func (q *Ifaltq) SetDiscipline(k DisciplineKind) error {
	for _, sq := range q.subqs {
		d, err := NewDiscipline(k)
		if err != nil {
			return fmt.Errorf("set discipline: %w", err)
		}
		sq.SetDiscipline(d)
	}
	return nil
}

// SetRate installs (or, with nil, removes) a token-bucket regulator on
// every subqueue. Each subqueue gets its own bucket at the full rate.
func (q *Ifaltq) SetRate(r *Rate) error {
	if r != nil {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("set rate: %w", err)
		}
	}
	for _, sq := range q.subqs {
		sq.SetRate(r)
	}
	return nil
}

// QueuePolicy is the output-queue part of a per-pod PortPolicy: what Apply
// changes on a live interface. Zero fields are left alone; ClearRate
// removes the regulator.
type QueuePolicy struct {
	Discipline *DisciplineKind
	MaxLen     int
	Rate       *Rate
	ClearRate  bool
}

// Apply changes discipline, queue length and rate of a live interface,
// validating everything first so a bad policy changes nothing.
func (q *Ifaltq) Apply(p QueuePolicy) error {
	if p.Discipline != nil {
		if _, err := NewDiscipline(*p.Discipline); err != nil {
			return fmt.Errorf("apply queue policy: %w", err)
		}
	}
	if p.MaxLen < 0 {
		return fmt.Errorf("apply queue policy: queue length %d is negative: %w", p.MaxLen, syscall.EINVAL)
	}
	if p.Rate != nil {
		if p.ClearRate {
			return fmt.Errorf("apply queue policy: both Rate and ClearRate set: %w", syscall.EINVAL)
		}
		if err := p.Rate.Validate(); err != nil {
			return fmt.Errorf("apply queue policy: %w", err)
		}
	}
	if p.MaxLen > 0 {
		_ = q.SetMaxLen(p.MaxLen)
	}
	if p.Discipline != nil {
		_ = q.SetDiscipline(*p.Discipline)
	}
	if p.Rate != nil || p.ClearRate {
		_ = q.SetRate(p.Rate)
	}
	return nil
}

// PurgeAll purges every subqueue (ifq_purge_all).
func (q *Ifaltq) PurgeAll() {
	for _, sq := range q.subqs {
		sq.Purge()
	}
}

// Len is the sum of the subqueue lengths.
func (q *Ifaltq) Len() int {
	n := 0
	for _, sq := range q.subqs {
		n += sq.Len()
	}
	return n
}

// ifsqStage is the per-(subqueue, worker) staging record. Only its worker
// touches it.
type ifsqStage struct {
	sq    *Subqueue
	qued  bool // IFSQ_STAGE_FLAG_QUED: on the worker's stage list
	sched bool // IFSQ_STAGE_FLAG_SCHED: a deferred schedule is requested
	cnt   int
	len   int
}

// startMsg is the per-(subqueue, worker) if_start netmsg; inflight is the
// inverse of MSGF_DONE.
type startMsg struct {
	msg      Msg
	inflight atomic.Bool
}

// Subqueue is an ifaltq_subque: a discipline behind a lock, an optional
// prepend area and regulator, the if_start interlock (started), the
// hardware-queue-full flag (OACTIVE), the owner worker, and per-worker
// stages and if_start messages.
type Subqueue struct {
	mu        sync.Mutex // ALTQ_SQ_LOCK
	ifp       *Ifnet
	index     int
	disc      Discipline
	prepended pktList // ifsq_prepended, a FIFO so a batch can be pushed back
	maxlen    int
	maxbcnt   int
	started   bool // if_start interlock
	tbr       *tokenBucket
	rate      Rate // tbr's setting
	tbrTimer  Timer
	tbrFire   func()

	oactive atomic.Bool
	cpuid   atomic.Int32
	hw      Serializer

	stages    []ifsqStage
	startMsgs []startMsg
	devMsg    startMsg
	drops     atomic.Uint64
	refused   atomic.Uint64 // the part of drops that Enqueue refused (the rest were queued first)
	enqueued  atomic.Uint64
	batch     []*Packet // driver scratch, used under the hw serializer
	wd        *Watchdog
}

// Index returns the subqueue index.
func (sq *Subqueue) Index() int { return sq.index }

// Ifnet returns the interface.
func (sq *Subqueue) Ifnet() *Ifnet { return sq.ifp }

func newSubqueue(ifp *Ifnet, idx int, nworkers int, hw Serializer) *Subqueue {
	sq := &Subqueue{ifp: ifp, index: idx, disc: &Classic{}, hw: hw}
	sq.stages = make([]ifsqStage, nworkers)
	sq.startMsgs = make([]startMsg, nworkers)
	for i := range sq.stages {
		sq.stages[i].sq = sq
		m := &sq.startMsgs[i]
		m.msg.fn = func(w *Worker) { sq.ifstartDispatch(w, m) }
	}
	sq.devMsg.msg.fn = sq.devstartDispatch
	sq.tbrFire = sq.tbrExpire
	return sq
}

func (sq *Subqueue) stateLocked() QueueState {
	return QueueState{
		Len:    sq.prepended.n + sq.disc.Len(),
		Bytes:  sq.prepended.bytes + sq.disc.Bytes(),
		MaxLen: sq.maxlen, MaxBytes: sq.maxbcnt,
	}
}

// enqueueLocked is ifsq_enqueue_locked: on failure the packet is freed
// and counted as a drop.
func (sq *Subqueue) enqueueLocked(p *Packet) error {
	if sq.ifp.dead.Load() {
		// Checked under the subqueue lock: Detach marks the interface
		// dead before its final purge, so nothing can slip in after it.
		p.Free()
		return errDetached
	}
	ev, err := sq.disc.Enqueue(p, sq.stateLocked())
	if ev != nil {
		ev.Free()
		sq.drops.Add(1)
	}
	if err != nil {
		p.Free()
		sq.drops.Add(1)
		sq.refused.Add(1)
		return err
	}
	sq.enqueued.Add(1)
	return nil
}

// Enqueue is ifsq_enqueue: it queues p without starting the interface.
// On ENOBUFS the packet has been freed.
func (sq *Subqueue) Enqueue(p *Packet) error {
	sq.mu.Lock()
	err := sq.enqueueLocked(p)
	sq.mu.Unlock()
	return err
}

func (sq *Subqueue) dequeueLocked() *Packet {
	if p := sq.prepended.pop(); p != nil {
		return p
	}
	if sq.tbr != nil {
		if sq.disc.Len() == 0 {
			return nil
		}
		if !sq.tbr.allow(sq.ifp.net.clock.Now()) {
			sq.armTBRLocked()
			return nil
		}
		p := sq.disc.Dequeue()
		if p != nil {
			sq.tbr.charge(p)
		}
		return p
	}
	return sq.disc.Dequeue()
}

// Admission is what Enqueue would do with a packet now (Subqueue.Admit): a trace's view of
// the queue, taken under its lock and changing nothing.
type Admission struct {
	// Known: the discipline is an Admitter, so OK and Evict are its decision; otherwise
	// they only say whether the queue is full.
	Known bool
	// OK: the packet would be queued; Evict: by evicting a queued packet.
	OK, Evict bool
	// Dead: the interface is detached (everything is refused).
	Dead bool
	// State is the queue's length and limits.
	State QueueState
	// Discipline is the discipline's kind name ("classic", "prioclass", "fair", or its type).
	Discipline string
	// Rate is the token bucket's state, nil without one.
	Rate *RateState
}

// RateState is a token bucket's state at one moment.
type RateState struct {
	Rate Rate
	// ByteTokens and PktTokens are the balances now (negative: a packet overdrew them);
	// meaningful for the dimensions Rate limits.
	ByteTokens, PktTokens float64
	// Wait is how long the queue's head must wait for tokens now, 0 if it may leave.
	Wait time.Duration
}

// Admit says what Enqueue would do with p now, without queueing it or changing anything.
func (sq *Subqueue) Admit(p *Packet) Admission {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	a := Admission{State: sq.stateLocked(), Dead: sq.ifp.dead.Load(), Discipline: disciplineName(sq.disc)}
	if ad, ok := sq.disc.(Admitter); ok && !a.Dead {
		a.Known = true
		a.OK, a.Evict = ad.Admit(p, a.State)
	} else {
		a.OK = !a.Dead && !a.State.Full()
	}
	if tb := sq.tbr; tb != nil {
		c := *tb // project the refill on a copy
		now := sq.ifp.net.clock.Now()
		rs := &RateState{Rate: sq.rate}
		if !c.allow(now) {
			rs.Wait = c.wait()
		}
		rs.ByteTokens, rs.PktTokens = c.byteTok, c.pktTok
		a.Rate = rs
	}
	return a
}

func disciplineName(d Discipline) string {
	switch d.(type) {
	case *Classic:
		return DiscClassic.String()
	case *PrioClass:
		return DiscPrioClass.String()
	case *Fair:
		return DiscFair.String()
	}
	return fmt.Sprintf("%T", d)
}

// Dequeue removes the next packet: a prepended one first, then the
// discipline's, subject to the regulator (ifsq_dequeue).
func (sq *Subqueue) Dequeue() *Packet {
	sq.mu.Lock()
	p := sq.dequeueLocked()
	sq.mu.Unlock()
	return p
}

// DequeueBatch fills dst with up to len(dst) packets and returns the count.
func (sq *Subqueue) DequeueBatch(dst []*Packet) int {
	sq.mu.Lock()
	n := 0
	for n < len(dst) {
		p := sq.dequeueLocked()
		if p == nil {
			break
		}
		dst[n] = p
		n++
	}
	sq.mu.Unlock()
	return n
}

// Poll returns the packet Dequeue would return, without removing it.
func (sq *Subqueue) Poll() *Packet {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	if sq.prepended.head != nil {
		return sq.prepended.head
	}
	if sq.tbr != nil && !sq.tbr.allow(sq.ifp.net.clock.Now()) {
		return nil
	}
	return sq.disc.Poll()
}

// Prepend pushes p back at the head (ifsq_prepend): the driver could not
// transmit it. Repeated prepends of a batch's unsent tail must be done in
// reverse order (or use PrependBatch).
func (sq *Subqueue) Prepend(p *Packet) {
	sq.mu.Lock()
	sq.prepended.pushFront(p)
	sq.mu.Unlock()
}

// PrependBatch pushes pkts back at the head, keeping their order.
func (sq *Subqueue) PrependBatch(pkts []*Packet) {
	sq.mu.Lock()
	for i := len(pkts) - 1; i >= 0; i-- {
		sq.prepended.pushFront(pkts[i])
	}
	sq.mu.Unlock()
}

// Purge frees every queued packet, the prepended ones included
// (ALTRQ_PURGE), and returns how many were freed.
func (sq *Subqueue) Purge() int {
	sq.mu.Lock()
	h := joinChains(sq.prepended.take(), sq.disc.Purge())
	sq.mu.Unlock()
	return freeChain(h)
}

// Len is ifsq_len.
func (sq *Subqueue) Len() int {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	return sq.prepended.n + sq.disc.Len()
}

// Bytes is ifsq_bcnt.
func (sq *Subqueue) Bytes() int {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	return sq.prepended.bytes + sq.disc.Bytes()
}

// Limits returns (maxlen, maxbcnt).
func (sq *Subqueue) Limits() (int, int) {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	return sq.maxlen, sq.maxbcnt
}

// Drops returns the number of packets dropped by enqueue (full queue or
// eviction).
func (sq *Subqueue) Drops() uint64 { return sq.drops.Load() }

// Refused returns the part of Drops that Enqueue refused (the queue was
// full); the rest had been queued (evicted for a higher-priority packet, or
// lost when the discipline changed). A caller of Enqueue that counts its
// refusals itself adds only Drops − Refused.
func (sq *Subqueue) Refused() uint64 { return sq.refused.Load() }

// dataReadyLocked is ifsq_data_ready: not empty, and with a regulator, the
// regulator lets the head leave now.
func (sq *Subqueue) dataReadyLocked() bool {
	if sq.prepended.n > 0 {
		return true
	}
	if sq.disc.Len() == 0 {
		return false
	}
	if sq.tbr != nil && !sq.tbr.allow(sq.ifp.net.clock.Now()) {
		sq.armTBRLocked()
		return false
	}
	return true
}

// IsStarted reports the if_start interlock.
func (sq *Subqueue) IsStarted() bool {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	return sq.started
}

// IsOActive reports the hardware-queue-full flag.
func (sq *Subqueue) IsOActive() bool { return sq.oactive.Load() }

// SetOActive is ifsq_set_oactive; the driver calls it (with the hardware
// serializer held) when its transmit ring is full.
func (sq *Subqueue) SetOActive() { sq.oactive.Store(true) }

// ClrOActive is ifsq_clr_oactive.
func (sq *Subqueue) ClrOActive() { sq.oactive.Store(false) }

// Owner returns the owner worker id (ifsq_get_cpuid).
func (sq *Subqueue) Owner() int { return int(sq.cpuid.Load()) }

// SetOwner moves the subqueue to another worker (ifsq_set_cpuid). A start
// already scheduled on the old owner chases the new one.
func (sq *Subqueue) SetOwner(cpu int) error {
	if cpu < 0 || cpu >= sq.ifp.net.workers.N() {
		return fmt.Errorf("set subqueue owner %d: want 0..%d: %w", cpu, sq.ifp.net.workers.N()-1, syscall.EINVAL)
	}
	sq.cpuid.Store(int32(cpu))
	return nil
}

// SerializeHW takes the subqueue's hardware serializer.
func (sq *Subqueue) SerializeHW() { sq.hw.Lock() }

// DeserializeHW releases it.
func (sq *Subqueue) DeserializeHW() { sq.hw.Unlock() }

// SetDiscipline swaps the discipline on a live subqueue: queued packets
// move over in dequeue order; those the new discipline refuses are dropped
// and counted.
func (sq *Subqueue) SetDiscipline(d Discipline) {
	sq.mu.Lock()
	old := sq.disc
	h := old.Purge()
	sq.disc = d
	var drop *Packet
	for h != nil {
		nx := h.next
		h.next = nil
		ev, err := d.Enqueue(h, sq.stateLocked())
		if ev != nil {
			ev.next = drop
			drop = ev
		}
		if err != nil {
			h.next = drop
			drop = h
		}
		h = nx
	}
	sq.mu.Unlock()
	sq.drops.Add(uint64(freeChain(drop)))
}

// SetRate installs or removes (nil) the token-bucket regulator. When it is
// removed while throttled, transmission restarts.
func (sq *Subqueue) SetRate(r *Rate) {
	sq.mu.Lock()
	if sq.tbrTimer != nil {
		sq.tbrTimer.Stop()
		sq.tbrTimer = nil
	}
	if r == nil {
		sq.tbr = nil
	} else {
		sq.tbr = newTokenBucket(*r, sq.ifp.net.clock.Now())
		sq.rate = *r
	}
	sq.mu.Unlock()
	sq.DevstartSched()
}

func (sq *Subqueue) armTBRLocked() {
	if sq.tbrTimer == nil && !sq.ifp.dead.Load() {
		sq.tbrTimer = sq.ifp.net.clock.AfterFunc(sq.tbr.wait(), sq.tbrFire)
	}
}

// tbrExpire is the TBR callout: tokens are available again, restart.
func (sq *Subqueue) tbrExpire() {
	sq.mu.Lock()
	sq.tbrTimer = nil
	sq.mu.Unlock()
	sq.DevstartSched()
}

func (sq *Subqueue) stopTimers() {
	sq.mu.Lock()
	if sq.tbrTimer != nil {
		sq.tbrTimer.Stop()
		sq.tbrTimer = nil
	}
	sq.mu.Unlock()
	if sq.wd != nil {
		sq.wd.Stop()
	}
}
