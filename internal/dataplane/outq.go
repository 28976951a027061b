package dataplane

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/epair-cni/epair/pkg/ifcore"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/vale"
)

// outBatch is how many frames one if_start hands to the backend at a time.
const outBatch = 64

// outq is the output queue in front of one pod port: an ifcore interface
// (ifaltq subqueue with the port's discipline and token bucket) fed by the
// switch's pass two (vale.Deliverer) and drained by its if_start (Driver)
// into the port's backend TX queue.
//
// Frames are copied into buffers of a per-port pool when enqueued (the
// switch's frames are only valid during Deliver); the packet's Buf is the
// buffer index and the pool's OnFree returns it, so a packet freed anywhere
// (sent, dropped by the discipline, purged) gives its buffer back.
//
// Ownership: Deliver runs on the sources' bwrap goroutines under the
// switch's shared lock; Start runs with the subqueue's hardware serializer
// held (on the delivering goroutine or an ifcore worker), so the backend's
// TX queue has one user at a time; txWait is the TX "interrupt" goroutine,
// owned by the outq and stopped by close.
type outq struct {
	name    string
	be      netmap.GenericBackend
	net     *ifcore.Net
	ifp     *ifcore.Ifnet
	sq      *ifcore.Subqueue
	hw      ifcore.Serializer
	classes *classTable
	pp      ifcore.PacketPool
	bufs    bufPool
	hdrLen  int      // virtio-net header before each frame (offload switches)
	big     *bufPool // 64 KiB buffers for super-frames (offload switches), else nil

	batch  []*ifcore.Packet // under hw
	frames [][]byte         // under hw

	// fb is the backend's fragment transmit (offload ports), for the cut-through path;
	// direct says the policy allows it (no regulator). See cutThrough.
	fb     netmap.GenericFragBackend
	direct struct {
		atomic.Bool               // the policy allows it
		n           atomic.Uint64 // frames sent by it
	}

	closed atomic.Bool
	txKick chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	noBuf    atomic.Uint64 // frames dropped for want of a buffer
	txFrames atomic.Uint64 // frames handed to the backend
	txBytes  atomic.Uint64
	txErrors atomic.Uint64 // frames the backend refused with an error (dropped)
}

var (
	_ vale.Deliverer = (*outq)(nil)
	_ ifcore.Driver  = (*outq)(nil)
)

// queueShape is what an output queue holds: frames up to mtu bytes in
// buffers of bufSize, after a hdrLen-byte virtio-net header; with big,
// longer frames (super-frames, up to 64 KB) in buffers of bigBufSize.
type queueShape struct {
	mtu, bufSize, hdrLen int
	big                  bool
}

// queueShape is the shape of the output queues of s's pod ports.
func (s *swState) queueShape() queueShape {
	if s.cfg.Offload {
		// A frame of the MTU takes one buffer (jumbo frames too); longer ones are
		// super-frames, in the few big buffers.
		return queueShape{mtu: ifcore.IF_MAXMTU, bufSize: max(s.bufSize, s.hdrLen+s.cfg.mtu()+etherVLANHeader), hdrLen: s.hdrLen, big: true}
	}
	return queueShape{mtu: s.cfg.mtu() + etherVLANHeader, bufSize: s.bufSize}
}

// OffloadBigBufs bounds the super-frames (longer than a buffer) an output
// queue of an offload switch holds at a time: 16 × 64 KiB, made on first use.
const OffloadBigBufs = 16

// bigBufSize holds any frame a switch forwards (vale.MaxFrameHi).
const bigBufSize = 64 << 10

// bigFlag marks a packet's Buf as an index into the big pool.
const bigFlag = 1 << 31

func newOutq(n *ifcore.Net, name string, be netmap.GenericBackend, shape queueShape, pol PortPolicy, classes *classTable) (*outq, error) {
	q := &outq{
		name: name, be: be, net: n, classes: classes, hdrLen: shape.hdrLen,
		batch:  make([]*ifcore.Packet, outBatch),
		frames: make([][]byte, 0, outBatch),
		txKick: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	q.bufs.init(shape.bufSize, pol.queueLen()+2*outBatch)
	if shape.big {
		q.big = &bufPool{}
		q.big.init(bigBufSize, OffloadBigBufs)
	}
	q.pp.OnFree = func(p *ifcore.Packet) {
		if p.Buf&bigFlag != 0 {
			q.big.put(p.Buf &^ bigFlag)
			return
		}
		q.bufs.put(p.Buf)
	}
	ifp, err := n.Attach(ifcore.IfConfig{
		Name: name, Type: ifcore.IFT_ETHER, MTU: shape.mtu,
		MaxLen: pol.queueLen(), Discipline: pol.Discipline, Rate: pol.rate(),
		Driver: q,
	})
	if err != nil {
		return nil, fmt.Errorf("create output queue %s: %w", name, err)
	}
	ifp.SetFlagBits(ifcore.IFF_UP | ifcore.IFF_RUNNING)
	q.ifp, q.sq, q.hw = ifp, ifp.Snd().Subqueue(0), ifp.Serializer()
	q.fb, _ = be.(netmap.GenericFragBackend)
	q.direct.Store(pol.rate() == nil)
	ctx, cancel := context.WithCancel(context.Background())
	q.cancel = cancel
	go q.txWait(ctx)
	return q, nil
}

// setPolicy changes the queue length, discipline and regulator of the live
// queue; queued frames move to a new discipline in order.
func (q *outq) setPolicy(old, pol PortPolicy) error {
	if err := q.ifp.Snd().SetMaxLen(pol.queueLen()); err != nil {
		return fmt.Errorf("set queue length of %s: %w", q.name, err)
	}
	q.bufs.setMax(pol.queueLen() + 2*outBatch)
	if pol.Discipline != old.Discipline {
		if err := q.ifp.Snd().SetDiscipline(pol.Discipline); err != nil {
			return fmt.Errorf("set discipline of %s: %w", q.name, err)
		}
	}
	// A regulator takes the cut-through path away before it applies: frames that
	// passed it meanwhile were sent at once, as from an empty queue.
	q.direct.Store(false)
	if err := q.ifp.Snd().SetRate(pol.rate()); err != nil {
		return fmt.Errorf("set rate of %s: %w", q.name, err)
	}
	q.direct.Store(pol.rate() == nil)
	return nil
}

// Deliver implements vale.Deliverer: enqueue copies of the batch's frames
// for this port, then start transmission once for the whole batch.
func (q *outq) Deliver(d *vale.Delivery) int {
	if q.closed.Load() {
		return 0
	}
	n := d.Len()
	acc, start := 0, 0
	if q.fb != nil && q.direct.Load() && q.sq.Len() == 0 && !q.sq.IsOActive() && q.hw.TryLock() {
		if q.sq.Len() == 0 && !q.sq.IsOActive() {
			start = q.cutThrough(d)
			acc = start
		}
		q.hw.Unlock()
		if start == n {
			return acc
		}
	}
	cls, prio := q.classes.get(d.Source())
	for i := start; i < n; i++ {
		var idx uint32
		var buf []byte
		if q.big != nil && int(d.Frame(i).Len) > q.bufs.size {
			// A super-frame: a big buffer, or a drop of this frame only.
			if idx, buf = q.big.get(); buf == nil {
				q.noBuf.Add(1)
				continue
			}
			idx |= bigFlag
		} else if idx, buf = q.bufs.get(); buf == nil {
			q.noBuf.Add(uint64(n - i))
			break
		}
		l := d.CopyFrame(i, buf)
		p := q.pp.Get()
		p.Data, p.Len, p.Buf, p.Class = buf[:l], l, idx, cls
		if prio {
			p.Flags = ifcore.PktPrio
		}
		h := min(q.hdrLen, l)
		if l > h && buf[h]&1 != 0 {
			p.Flags |= ifcore.PktMcast
		}
		p.Hash = flowHash(buf[h:l])
		if q.sq.Enqueue(p) == nil { // on error p was freed and counted
			acc++
		}
	}
	if acc > 0 {
		q.kick()
	}
	return acc
}

// cutThrough sends the frames of d straight from the switch's buffers while the queue is
// empty, the port has no regulator and nothing else transmits (the caller holds the
// serializer): no copy into the queue's buffers, no enqueue and dequeue. Frames of one
// buffer go out together (sendmmsg), a super-frame's fragments with one writev. It
// returns how many it consumed (sent, or refused by the link and counted); when the link
// has no room it stops there, marks the queue OACTIVE and arms the TX waiter, and the
// rest is queued as usual (behind nothing: the queue was empty), so the order holds.
func (q *outq) cutThrough(d *vale.Delivery) int {
	n := d.Len()
	frames := q.frames[:0]
	defer clear(q.frames[:cap(q.frames)])
	i, sent := 0, 0
	var bytes uint64
	flush := func() bool {
		if len(frames) == 0 {
			return true
		}
		m, err := q.be.TxBatch(0, frames)
		if err != nil {
			q.txErrors.Add(uint64(len(frames) - m))
			m = len(frames)
		}
		for _, f := range frames[:m] {
			bytes += uint64(len(f))
		}
		sent += m
		full := m < len(frames)
		frames = frames[:0]
		return !full
	}
	room := true
	for ; i < n && room; i++ {
		frags := d.Fragments(i)
		if len(frags) == 1 {
			frames = append(frames, frags[0])
			if len(frames) == cap(frames) {
				room = flush()
			}
			continue
		}
		if room = flush(); !room {
			break
		}
		ok, err := q.fb.TxFrags(0, frags)
		if err != nil {
			q.txErrors.Add(1)
			ok = true
		}
		if !ok {
			room = false
			break
		}
		bytes += uint64(d.Frame(i).Len)
		sent++
	}
	if room {
		room = flush()
	}
	if sent > 0 {
		q.txFrames.Add(uint64(sent))
		q.txBytes.Add(bytes)
		q.direct.n.Add(uint64(sent))
	}
	if !room {
		q.sq.SetOActive() // before arming the waiter: its TxComplete clears it
		select {
		case q.txKick <- struct{}{}:
		default:
		}
	}
	return sent
}

// kick gets if_start going unless the backend's TX queue is full (its
// completion restarts it) or another goroutine holds the serializer (then
// the owner worker runs it, so delivery never waits for a transmit).
func (q *outq) kick() {
	if q.sq.IsOActive() {
		return
	}
	if q.hw.TryLock() {
		q.sq.DevstartLocked(nil)
		q.hw.Unlock()
		return
	}
	q.sq.DevstartSched()
}

// Start implements ifcore.Driver (if_start): dequeue in batches (the
// regulator decides how many may leave) and hand them to the backend; when
// the backend is full, push the rest back, set OACTIVE and let txWait clear
// it once there is room.
func (q *outq) Start(_ *ifcore.Worker, sq *ifcore.Subqueue) {
	if q.closed.Load() {
		sq.Purge()
		return
	}
	buf := q.batch
	for {
		n := sq.DequeueBatch(buf)
		if n == 0 {
			return
		}
		acc := q.transmit(buf[:n])
		if acc < n {
			sq.PrependBatch(buf[acc:n])
			sq.SetOActive() // before arming the waiter: its TxComplete clears it
			clear(buf[:n])
			select {
			case q.txKick <- struct{}{}:
			default:
			}
			return
		}
		clear(buf[:n])
	}
}

// transmit hands pkts to the backend and frees the ones it took. A backend
// error drops the whole batch (counted): retrying a refused batch forever
// would wedge the queue.
func (q *outq) transmit(pkts []*ifcore.Packet) int {
	frames := q.frames[:0]
	for _, p := range pkts {
		frames = append(frames, p.Data)
	}
	n, err := q.be.TxBatch(0, frames)
	clear(frames)
	if err != nil {
		q.txErrors.Add(uint64(len(pkts) - n))
		n = len(pkts)
	}
	var bytes uint64
	for _, p := range pkts[:n] {
		bytes += uint64(p.Len)
		p.Free()
	}
	q.txFrames.Add(uint64(n))
	q.txBytes.Add(bytes)
	return n
}

// txWait is the TX completion "interrupt": after a short transmit, wait in
// the netpoller for room, then clear OACTIVE and restart on the owner worker.
func (q *outq) txWait(ctx context.Context) {
	defer close(q.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.txKick:
		}
		if err := q.be.WaitReady(ctx, 0, netmap.TX); err != nil && ctx.Err() != nil {
			return
		}
		q.sq.TxComplete()
	}
}

// close stops the queue: no more deliveries or transmits, the TX waiter
// stopped, the interface detached from ifcore (purging what is queued).
// The switch must no longer deliver here (port detached) before close.
func (q *outq) close() error {
	if !q.closed.CompareAndSwap(false, true) {
		return nil
	}
	q.cancel()
	<-q.done
	err := q.net.Detach(q.ifp)
	q.sq.Purge()
	if err != nil {
		return fmt.Errorf("close output queue %s: %w", q.name, err)
	}
	return nil
}

// stats is a snapshot of the queue's counters.
func (q *outq) stats() QueueStats {
	return QueueStats{
		Len:      q.sq.Len(),
		MaxLen:   q.ifp.Snd().MaxLen(),
		Drops:    q.sq.Drops(),
		Evicted:  q.sq.Drops() - min(q.sq.Refused(), q.sq.Drops()),
		NoBuf:    q.noBuf.Load(),
		TxFrames: q.txFrames.Load(),
		TxBytes:  q.txBytes.Load(),
		TxErrors: q.txErrors.Load(),
		Direct:   q.direct.n.Load(),
	}
}

// QueueStats are the counters of a port's output queue.
type QueueStats struct {
	Len, MaxLen int    // frames queued now, queue limit (with staging headroom)
	Drops       uint64 // frames the discipline refused or evicted (queue full)
	// Evicted is the part of Drops that had been queued (evicted for a
	// higher-priority frame, or lost when the discipline changed); the rest,
	// refused at enqueue, are in the switch's DropNoSpace of the port too.
	Evicted  uint64
	NoBuf    uint64 // frames dropped for want of a buffer
	TxFrames uint64 // frames handed to the link
	TxBytes  uint64
	TxErrors uint64 // frames the link refused with an error
	// Direct is the part of TxFrames sent straight from the switch's buffers, without
	// being queued (an empty queue without a regulator: outq.cutThrough).
	Direct uint64
}

// bufPool is a port's frame buffers: at most max buffers of size bytes,
// made on first use and then recycled by index, so the steady state does
// not allocate and an idle port holds no more than it ever needed.
type bufPool struct {
	mu   sync.Mutex
	size int
	max  int
	bufs [][]byte
	free []uint32
}

func (b *bufPool) init(size, max int) {
	b.size, b.max = size, max
	b.free = make([]uint32, 0, max)
}

func (b *bufPool) setMax(max int) {
	b.mu.Lock()
	if max > b.max {
		b.max = max
	}
	b.mu.Unlock()
}

func (b *bufPool) get() (uint32, []byte) {
	b.mu.Lock()
	if n := len(b.free); n > 0 {
		idx := b.free[n-1]
		b.free = b.free[:n-1]
		buf := b.bufs[idx]
		b.mu.Unlock()
		return idx, buf
	}
	if len(b.bufs) < b.max {
		idx := uint32(len(b.bufs))
		buf := make([]byte, b.size)
		b.bufs = append(b.bufs, buf)
		b.mu.Unlock()
		return idx, buf
	}
	b.mu.Unlock()
	return 0, nil
}

func (b *bufPool) put(idx uint32) {
	b.mu.Lock()
	b.free = append(b.free, idx)
	b.mu.Unlock()
}

// classTable holds, per switch port index, the priority class the port's
// frames get in other ports' queues (and whether they go on the classic
// discipline's priority FIFO). Read per batch without locks.
type classTable struct {
	v []atomic.Uint32
}

func newClassTable(n int) *classTable { return &classTable{v: make([]atomic.Uint32, n)} }

func (t *classTable) set(idx uint16, p PortPolicy) {
	v := uint32(p.Priority)
	if p.PriorityFIFO {
		v |= 1 << 8
	}
	t.v[idx].Store(v)
}

func (t *classTable) get(idx uint16) (uint8, bool) {
	if int(idx) >= len(t.v) {
		return 0, false
	}
	v := t.v[idx].Load()
	return uint8(v), v&(1<<8) != 0
}

// flowHash is a cheap FNV-1a over the addresses and ports of IPv4/IPv6
// frames (the MAC addresses otherwise), for the fair discipline.
func flowHash(f []byte) uint32 {
	var key []byte
	switch {
	case len(f) >= 38 && f[12] == 0x08 && f[13] == 0x00:
		key = f[26:38]
	case len(f) >= 58 && f[12] == 0x86 && f[13] == 0xdd:
		key = f[22:58]
	case len(f) >= 12:
		key = f[:12]
	default:
		key = f
	}
	h := uint32(2166136261)
	for _, c := range key {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}
