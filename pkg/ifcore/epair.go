package ifcore

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// EpairConfig configures the in-memory epair cloner.
type EpairConfig struct {
	// Name is the cloner name and interface base name (default "epair").
	Name string
	// NetisrMaxLen is net.link.epair.netisr_maxqlen: the length of each
	// netisr queue (0: 16 × ifqmaxlen).
	NetisrMaxLen int
	// NodeID selects the project MAC scheme: bytes 1-4 come from a hash of
	// NodeID and the unit, stable across restarts and unique per node.
	// Empty selects the seed scheme (bytes 3-4 = the end's if_index).
	NodeID string
	// DestroyTimeout bounds how long a destroy waits for packets in flight
	// (default 5 s); on expiry destroy fails with EBUSY and can be retried.
	DestroyTimeout time.Duration
	// Input is if_input of every end made (nil: free the packet).
	Input InputFunc
	// Tap is the BPF_MTAP hook, called with every packet a sender hands to
	// the pair (including those then dropped because the peer is down).
	Tap func(ifp *Ifnet, p *Packet)
}

// Epair is the epair cloner: pairs of interfaces joined by a virtual
// cross-over cable, with the seed's bounded netisr queue, OACTIVE flow
// control and drain list. The seed's single global queue and lock are
// sharded per worker (D-E9): end X's received packets go through the queue
// of X's receive worker, and each queue has its own OACTIVE flag, drain list
// and drained callback.
type Epair struct {
	net    *Net
	cfg    EpairConfig
	units  *UnitAllocator
	queues []*epairQueue
}

var _ Cloner = (*Epair)(nil)

// epairQueue is one shard of the netisr queue (epairinq) with its lock
// (if_epair_mtx), global OACTIVE (epair_drv_flags) and drain list.
type epairQueue struct {
	mu       sync.Mutex
	w        *Worker
	q        pktList
	maxlen   int
	oactive  bool
	drain    []*epairSoftc // ordered set (D-E2: cannot fail)
	kicked   bool
	msg      Msg
	drops    atomic.Uint64
	drainedN atomic.Uint64
}

// epairSoftc is one end.
type epairSoftc struct {
	e        *Epair
	ifp      *Ifnet
	other    *epairSoftc
	rxq      *epairQueue // where packets to this end wait
	refcount atomic.Int32
	waitCh   chan struct{}
	unit     int
	gone     atomic.Bool
}

// epairDriver is an end's driver: if_start, if_ioctl and if_transmit.
type epairDriver struct{ sc *epairSoftc }

var (
	_ Driver        = epairDriver{}
	_ Ioctler       = epairDriver{}
	_ Transmitter   = epairDriver{}
	_ OutputCounter = epairDriver{}
)

// CountsOutput implements OutputCounter: epair_start counts obytes and
// omcasts when a packet reaches the peer's netisr queue, on every path
// (D-E7), so ifq_dispatch and ifq_handoff must not count them again.
func (epairDriver) CountsOutput() bool { return true }

// OutputCounter is implemented by a driver that counts obytes and omcasts
// itself when a packet leaves (the epair's start, D-E7): Dispatch and
// Handoff then leave them to it instead of counting them at enqueue, so a
// packet is counted once whichever path it takes.
type OutputCounter interface {
	CountsOutput() bool
}

// Transmitter is implemented by drivers with their own if_transmit, which
// Ifnet.Transmit prefers over Dispatch.
type Transmitter interface {
	Transmit(w *Worker, ifp *Ifnet, p *Packet) error
}

// Transmit is if_transmit: the driver's own transmit if it has one, else
// Dispatch.
func (ifp *Ifnet) Transmit(w *Worker, p *Packet) error {
	if t, ok := ifp.driver.(Transmitter); ok {
		return t.Transmit(w, ifp, p)
	}
	return ifp.Dispatch(w, p)
}

// NewEpair creates the cloner and attaches it to n.
func NewEpair(n *Net, cfg EpairConfig) (*Epair, error) {
	if cfg.Name == "" {
		cfg.Name = "epair"
	}
	if cfg.NetisrMaxLen < 0 {
		return nil, fmt.Errorf("new epair cloner: NetisrMaxLen %d is negative: %w", cfg.NetisrMaxLen, syscall.EINVAL)
	}
	if cfg.NetisrMaxLen == 0 {
		cfg.NetisrMaxLen = 16 * n.ifqmaxlen
	}
	if cfg.DestroyTimeout == 0 {
		cfg.DestroyTimeout = 5 * time.Second
	}
	e := &Epair{net: n, cfg: cfg, units: NewUnitAllocator(IF_MAXUNIT)}
	for i := 0; i < n.workers.N(); i++ {
		q := &epairQueue{w: n.workers.Get(i), maxlen: cfg.NetisrMaxLen}
		q.msg.fn = q.sintr
		e.queues = append(e.queues, q)
	}
	if err := n.AttachCloner(e); err != nil {
		return nil, fmt.Errorf("new epair cloner: %w", err)
	}
	return e, nil
}

// Name returns the cloner name.
func (e *Epair) Name() string { return e.cfg.Name }

// NetisrMaxLen returns the netisr queue length.
func (e *Epair) NetisrMaxLen() int { return e.cfg.NetisrMaxLen }

// Units returns the unit allocator.
func (e *Epair) Units() *UnitAllocator { return e.units }

// Match is epair_clone_match: the base name followed only by digits.
func (e *Epair) Match(name string) bool {
	b := e.cfg.Name
	if len(name) < len(b) || name[:len(b)] != b {
		return false
	}
	for _, c := range []byte(name[len(b):]) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Create is epair_clone_create without the two-phase params trick: both
// ends are made and attached, any failure is rolled back (D-E12).
func (e *Epair) Create(n *Net, name string, params any) ([]string, error) {
	unit, err := Name2Unit(name, e.cfg.Name)
	if err != nil {
		return nil, err
	}
	unit, err = e.units.Alloc(unit)
	if err != nil {
		return nil, err
	}
	base := e.cfg.Name + strconv.Itoa(unit)
	if len(base)+1 > IFNAMSIZ-1 {
		e.units.Free(unit)
		return nil, fmt.Errorf("name %sa: longer than %d bytes: %w", base, IFNAMSIZ-1, syscall.ENOSPC)
	}
	nw := n.workers.N()
	sca := &epairSoftc{e: e, unit: unit, rxq: e.queues[(2*unit)%nw], waitCh: make(chan struct{}, 1)}
	scb := &epairSoftc{e: e, unit: unit, rxq: e.queues[(2*unit+1)%nw], waitCh: make(chan struct{}, 1)}
	sca.refcount.Store(1)
	scb.refcount.Store(1)
	sca.other, scb.other = scb, sca
	mk := func(sc *epairSoftc, suffix string) (*Ifnet, error) {
		ifp, err := n.Attach(IfConfig{
			Name: base + suffix, Dname: e.cfg.Name, Dunit: unit, Type: IFT_ETHER,
			Flags: IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST, MTU: ETHERMTU,
			Baudrate: 10_000_000_000, Lladdr: make([]byte, 6), Driver: epairDriver{sc},
			Input: e.cfg.Input, Softc: sc,
		})
		if err != nil {
			return nil, err
		}
		sc.ifp = ifp
		// if_snd.ifq_maxlen = ifqmaxlen exactly (no staging headroom).
		for _, sq := range ifp.snd.subqs {
			sq.mu.Lock()
			sq.maxlen, sq.maxbcnt = n.ifqmaxlen, n.ifqmaxlen*MCLBytes
			sq.mu.Unlock()
			_ = sq.SetOwner(sc.other.rxq.w.id)
		}
		ifp.snd.maxlen.Store(int64(n.ifqmaxlen))
		mac := e.mac(ifp, unit, suffix[0]-'a'+0x0a)
		n.mu.Lock()
		ifp.lladdr = mac
		ifp.addrs[0].Addr = LinkSockaddr(mac)
		ifp.addrs[0].Addr.Index = ifp.index
		n.mu.Unlock()
		return ifp, nil
	}
	a, err := mk(sca, "a")
	if err != nil {
		e.units.Free(unit)
		return nil, err
	}
	if _, err := mk(scb, "b"); err != nil {
		_ = n.Detach(a)
		e.units.Free(unit)
		return nil, err
	}
	for _, sc := range []*epairSoftc{sca, scb} {
		_ = n.AddGroup(sc.ifp, e.cfg.Name)
	}
	// Only now are both ends RUNNING; neither is UP.
	sca.ifp.flags.Or(IFF_RUNNING)
	scb.ifp.flags.Or(IFF_RUNNING)
	return []string{sca.ifp.Name(), scb.ifp.Name()}, nil
}

// mac is the MAC scheme: 02 (locally administered, unicast), then either
// 00:00:idx>>8:idx&0xff (seed) or 4 bytes of SHA-256(NodeID/unit)
// (project), then 0a/0b for end a/b.
func (e *Epair) mac(ifp *Ifnet, unit int, last byte) []byte {
	m := []byte{0x02, 0, 0, byte(ifp.index >> 8), byte(ifp.index), last}
	if e.cfg.NodeID != "" {
		h := sha256.Sum256([]byte(e.cfg.NodeID + "/" + strconv.Itoa(unit)))
		copy(m[1:5], h[:4])
	}
	return m
}

func (sc *epairSoftc) release() {
	if sc.refcount.Add(-1) == 1 {
		select {
		case sc.waitCh <- struct{}{}:
		default:
		}
	}
}

// Refcount returns an end's in-flight reference count (1 when idle).
func (e *Epair) Refcount(ifp *Ifnet) int {
	if sc, ok := ifp.softc.(*epairSoftc); ok {
		return int(sc.refcount.Load())
	}
	return 0
}

// Peer returns the other end of an epair interface, or nil.
func (e *Epair) Peer(ifp *Ifnet) *Ifnet {
	if sc, ok := ifp.softc.(*epairSoftc); ok {
		return sc.other.ifp
	}
	return nil
}

// QueueState reports the netisr queue that feeds ifp: its length, global
// OACTIVE, and the names on its drain list in order.
func (e *Epair) QueueState(ifp *Ifnet) (qlen int, oactive bool, drain []string) {
	sc := ifp.softc.(*epairSoftc)
	q := sc.rxq
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range q.drain {
		drain = append(drain, d.ifp.Name())
	}
	return q.q.n, q.oactive, drain
}

// Drops returns the netisr queue overflow drops of the queue feeding ifp.
func (e *Epair) Drops(ifp *Ifnet) uint64 { return ifp.softc.(*epairSoftc).rxq.drops.Load() }

func (q *epairQueue) addDrain(sc *epairSoftc) {
	if !slices.Contains(q.drain, sc) { // at most once (I3)
		q.drain = append(q.drain, sc)
	}
}

func (q *epairQueue) kickLocked() {
	if !q.kicked {
		q.kicked = true
		q.w.Send(&q.msg)
	}
}

func peerUsable(ifp *Ifnet) bool {
	f := ifp.Flags()
	return f&IFF_RUNNING != 0 && f&IFF_UP != 0 && !ifp.dead.Load()
}

// Preallocated transmit errors: the packet path does not format.
var (
	errEpairNotRunning = fmt.Errorf("epair transmit: interface not running: %w", syscall.ENXIO)
	errEpairDown       = fmt.Errorf("epair transmit: interface down: %w", syscall.ENETDOWN)
	errEpairSndFull    = fmt.Errorf("epair transmit: send queue full: %w", syscall.ENOBUFS)
	errEpairNetisrFull = fmt.Errorf("epair transmit: netisr queue full: %w", syscall.ENOBUFS)
)

// Transmit is epair_transmit.
func (d epairDriver) Transmit(w *Worker, ifp *Ifnet, p *Packet) error {
	if p == nil {
		return nil
	}
	sc := d.sc
	f := ifp.Flags()
	if f&IFF_RUNNING == 0 {
		p.Free()
		return errEpairNotRunning
	}
	if f&IFF_UP == 0 {
		p.Free()
		return errEpairDown
	}
	peer := sc.other
	plen, mc := p.Len, p.Flags&(PktMcast|PktBcast) != 0
	q := peer.rxq
	q.mu.Lock()
	if tap := sc.e.cfg.Tap; tap != nil {
		tap(ifp, p)
	}
	// The peer check is made under the queue lock: Destroy clears RUNNING
	// before it purges under this lock, so nothing is queued to a pair
	// being destroyed after its purge.
	if !peerUsable(peer.ifp) {
		q.mu.Unlock()
		ifp.shard(w).OErrors.Add(1)
		p.Free()
		return nil
	}
	if q.oactive {
		// The queue is full: park in if_snd and register for the drain.
		sq := ifp.snd.subqs[0]
		err := sq.Enqueue(p)
		if err == nil {
			q.addDrain(sc)
			if q.q.n == 0 {
				q.kickLocked() // D-E3: nothing queued would call drained
			}
		}
		q.mu.Unlock()
		if err != nil {
			return errEpairSndFull
		}
		return nil
	}
	if q.q.n >= q.maxlen {
		q.oactive = true
		ifp.snd.subqs[0].SetOActive()
		q.addDrain(sc) // D-E3: register the sender on overflow
		q.drops.Add(1)
		q.mu.Unlock()
		p.Free()
		return errEpairNetisrFull
	}
	peer.refcount.Add(1)
	p.Rcvif = peer.ifp
	q.q.push(p)
	q.kickLocked()
	q.mu.Unlock()
	s := ifp.shard(w)
	s.OPackets.Add(1)
	s.OBytes.Add(uint64(plen))
	if mc {
		s.OMcasts.Add(1)
	}
	peer.ifp.shard(w).IPackets.Add(1) // seed semantic: counted at enqueue
	return nil
}

// Start is epair_start: drain if_snd into the peer's netisr queue.
func (d epairDriver) Start(w *Worker, sq *Subqueue) {
	q := d.sc.other.rxq
	q.mu.Lock()
	d.sc.startLocked(w, q)
	q.mu.Unlock()
}

// startLocked is epair_start_locked. On overflow it stops and keeps the
// packet at the head (D-E4), and registers for the drain.
func (sc *epairSoftc) startLocked(w *Worker, q *epairQueue) {
	ifp := sc.ifp
	f := ifp.Flags()
	if f&IFF_RUNNING == 0 || f&IFF_UP == 0 {
		return
	}
	sq := ifp.snd.subqs[0]
	peer := sc.other
	tap := sc.e.cfg.Tap
	s := ifp.shard(w)
	for {
		p := sq.Dequeue()
		if p == nil {
			return
		}
		if tap != nil {
			tap(ifp, p)
		}
		if !peerUsable(peer.ifp) {
			s.OErrors.Add(1)
			p.Free()
			continue
		}
		if q.q.n >= q.maxlen {
			q.oactive = true
			sq.SetOActive()
			q.addDrain(sc)
			sq.Prepend(p)
			return
		}
		plen, mc := p.Len, p.Flags&(PktMcast|PktBcast) != 0
		peer.refcount.Add(1)
		p.Rcvif = peer.ifp
		q.q.push(p)
		q.kickLocked()
		s.OPackets.Add(1)
		s.OBytes.Add(uint64(plen)) // D-E7: counted on every path
		if mc {
			s.OMcasts.Add(1)
		}
		peer.ifp.shard(w).IPackets.Add(1)
	}
}

// Ioctl is epair_ioctl + ether_ioctl: flags and multicast are accepted
// with nothing to program, MTU above ETHERMTU is EINVAL, the rest EINVAL.
func (d epairDriver) Ioctl(ifp *Ifnet, cmd IoctlCmd, r *Ifreq) error {
	switch cmd {
	case SIOCSIFFLAGS:
		d.sc.updateLinkState()
		return nil
	case SIOCADDMULTI, SIOCDELMULTI:
		return nil
	case SIOCSIFMTU:
		if r.MTU > ETHERMTU {
			return fmt.Errorf("set MTU of %s: %d above %d: %w", ifp.Name(), r.MTU, ETHERMTU, syscall.EINVAL)
		}
		return nil
	}
	return fmt.Errorf("epair ioctl %d on %s: %w", cmd, ifp.Name(), syscall.EINVAL)
}

// sintrBatch bounds one pass of the netisr handler so the worker's other
// messages and rollups get their turn.
const sintrBatch = 256

// sintr is the netisr handler (epair_sintr) for one queue shard, followed
// by the drained callback when the queue is empty.
func (q *epairQueue) sintr(w *Worker) {
	for done := 0; ; {
		q.mu.Lock()
		if q.q.n == 0 {
			q.kicked = false
			q.drainedLocked(w)
			q.mu.Unlock()
			return
		}
		if done >= sintrBatch {
			q.mu.Unlock()
			w.Send(&q.msg) // still kicked: continue after the others
			return
		}
		h := q.q.take()
		q.mu.Unlock()
		for h != nil {
			p := h
			h = h.next
			p.next = nil
			rcv := p.Rcvif
			sc := rcv.softc.(*epairSoftc)
			rcv.shard(w).IBytes.Add(uint64(p.Len))
			rcv.Input(w, p)
			sc.release() // after input: rcvif stays valid throughout
			done++
		}
	}
}

// drainedLocked is epair_sintr_drained with the fixes: FIFO with
// round-robin (a sender that still has parked packets moves to the tail,
// D-E8), stop when the queue overflows again, and clear the global OACTIVE
// whenever the list is empty (D-E3).
func (q *epairQueue) drainedLocked(w *Worker) {
	q.drainedN.Add(1)
	for n := len(q.drain); n > 0 && len(q.drain) > 0; n-- {
		sc := q.drain[0]
		q.oactive = false
		sq := sc.ifp.snd.subqs[0]
		sq.ClrOActive()
		sc.startLocked(w, q)
		q.drain = q.drain[1:]
		if sq.Len() > 0 || sq.IsOActive() {
			q.drain = append(q.drain, sc)
		}
		if sq.IsOActive() {
			q.oactive = true
			break
		}
	}
	if len(q.drain) == 0 {
		q.oactive = false
	}
}

// removeDrain takes sc off every drain list.
func (e *Epair) removeDrain(sc *epairSoftc) {
	for _, q := range e.queues {
		q.mu.Lock()
		q.drain = slices.DeleteFunc(q.drain, func(x *epairSoftc) bool { return x == sc })
		if len(q.drain) == 0 {
			q.oactive = false
		}
		q.mu.Unlock()
	}
}

// purgeFor frees packets queued for sc and releases their references.
func (e *Epair) purgeFor(sc *epairSoftc) {
	q := sc.rxq
	q.mu.Lock()
	var keep pktList
	var drop *Packet
	for p := q.q.take(); p != nil; {
		nx := p.next
		if p.Rcvif == sc.ifp {
			p.next = drop
			drop = p
		} else {
			keep.push(p)
		}
		p = nx
	}
	q.q = keep
	q.mu.Unlock()
	for drop != nil {
		nx := drop.next
		drop.next = nil
		drop.Free()
		sc.release()
		drop = nx
	}
}

// Destroy is epair_clone_destroy with the D-E6 order: not running, off the
// drain lists, purge if_snd, purge queued packets, wait for in-flight ones
// (EBUSY after DestroyTimeout, retryable), detach both ends (peer first),
// free the unit once. A destroy of an end already gone returns 0 (the
// seed's re-entry guard).
func (e *Epair) Destroy(n *Net, ifp *Ifnet) error {
	sc, ok := ifp.softc.(*epairSoftc)
	if !ok {
		return fmt.Errorf("destroy %s: not an epair: %w", ifp.Name(), syscall.EINVAL)
	}
	if sc.gone.Load() {
		return nil
	}
	o := sc.other
	ifp.flags.And(^IFF_RUNNING)
	o.ifp.flags.And(^IFF_RUNNING)
	e.removeDrain(sc)
	e.removeDrain(o)
	for _, x := range []*epairSoftc{sc, o} {
		x.ifp.snd.PurgeAll() // D-E5: refcounts untouched
		e.purgeFor(x)
	}
	deadline := time.NewTimer(e.cfg.DestroyTimeout)
	defer deadline.Stop()
	for _, x := range []*epairSoftc{sc, o} {
		for x.refcount.Load() != 1 {
			select {
			case <-x.waitCh:
			case <-deadline.C:
				return fmt.Errorf("destroy %s: %d packets still in flight to %s: %w", ifp.Name(), x.refcount.Load()-1, x.ifp.Name(), syscall.EBUSY)
			}
		}
	}
	sc.gone.Store(true)
	o.gone.Store(true)
	var first error
	for _, x := range []*epairSoftc{o, sc} {
		if err := n.Detach(x.ifp); err != nil && first == nil {
			first = err
		}
		n.forgetCloned(x.ifp)
	}
	e.units.Free(sc.unit)
	return first
}

// Qflush is epair_qflush with the D-E5 fix: purge the end's if_snd without
// touching reference counts and take it off the drain lists.
func (e *Epair) Qflush(ifp *Ifnet) {
	sc := ifp.softc.(*epairSoftc)
	e.removeDrain(sc)
	ifp.snd.PurgeAll()
}

// updateLinkState applies the userspace-pair rule (§2.12, Linux veth
// semantics): the link of both ends is UP iff both ends are admin-UP.
func (sc *epairSoftc) updateLinkState() {
	o := sc.other
	if sc.ifp == nil || o.ifp == nil {
		return
	}
	want := LinkStateDown
	if sc.ifp.Flags()&IFF_UP != 0 && o.ifp.Flags()&IFF_UP != 0 {
		want = LinkStateUp
	}
	for _, ifp := range []*Ifnet{sc.ifp, o.ifp} {
		if ifp.LinkState() != want {
			ifp.SetLinkState(want)
		}
	}
}
