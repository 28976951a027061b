package netmap

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// GenericBackend is what a kernel-facing backend (AF_XDP, AF_PACKET, or an
// in-memory test double) implements to be driven as netmap rings by a
// GenericAdapter. It is batch-first and queue-indexed; a backend is used by
// one goroutine per (queue, direction) at a time for TxBatch/RxBatch, while
// WaitReady runs on the adapter's own goroutines.
type GenericBackend interface {
	// Queues reports the number of TX and RX queues (>= 1 each).
	Queues() (tx, rx int)
	// FrameSize is the largest frame the backend carries (<= MaxGenericFrame).
	// When it exceeds the buffer size the adapter runs in chain mode: frames
	// longer than a buffer travel in the rings as NS_MOREFRAG slot chains,
	// gathered into one frame for TxBatch and scattered from RxBatch's.
	FrameSize() int
	// TxBatch transmits frames on queue q in order and returns how many it
	// accepted (a prefix); it must copy or finish with each frame before
	// returning, since the buffers are reused. Accepting fewer than offered
	// means "no room now": the adapter retries after WaitReady(TX).
	TxBatch(q int, frames [][]byte) (int, error)
	// RxBatch fills up to len(bufs) received frames of queue q into bufs
	// (each a full netmap buffer), storing each length in lens, and returns
	// the number filled. It does not block. Filling fewer than len(bufs)
	// means the queue had no more frames when it looked (RxSync then waits
	// for the RX loop's word before it asks again).
	RxBatch(q int, bufs [][]byte, lens []int) (int, error)
	// WaitReady blocks until queue q has received frames (RX) or room to
	// transmit (TX), or ctx ends (it then returns ctx.Err()). Backends use
	// the Go runtime poller: no busy polling.
	WaitReady(ctx context.Context, q int, dir Direction) error
	// Close releases the backend. The adapter calls it once, from Dtor.
	Close() error
}

// GenericRxProber is an optional interface of a backend that can tell, without
// blocking, whether frames wait on queue q (RxSpin).
type GenericRxProber interface {
	RxPending(q int) bool
}

// GenericFragBackend is an optional interface of a backend whose frames can
// be longer than a buffer (chain mode): it moves a frame between the kernel
// and the ring's fragments directly, saving the adapter's gather (TX) and
// scatter (RX) copies. Same goroutine rules as TxBatch/RxBatch.
type GenericFragBackend interface {
	// TxFrags transmits one frame given as its fragments, in order. false
	// with a nil error means no room now: the adapter retries after
	// WaitReady(TX). A frame the backend refuses is consumed (true) and
	// counted by the backend.
	TxFrags(q int, frags [][]byte) (bool, error)
	// RxScatter copies at most one received frame of queue q into bufs,
	// filling each buffer before the next, and returns its length. ok is
	// false when nothing is pending; n == 0 with ok means a frame was
	// dropped (counted by the backend). The caller offers room for a
	// frame of FrameSize bytes.
	RxScatter(q int, bufs [][]byte) (n int, ok bool, err error)
}

// GenericConfig configures NewGenericAdapter.
type GenericConfig struct {
	Slots     uint32 // slots per ring (generic_ringsize, default 1024)
	BufSize   int    // buffer size (default 2048, or Pool's); must be >= FrameSize
	HostRings bool   // NAF_HOST_RINGS (host rings are off by default on Linux)
	Native    bool   // the backend is "native" (AF_XDP) rather than generic (AF_PACKET)
	// RxSpin, when positive and the backend is a GenericRxProber, is how long the RX
	// "interrupt" keeps looking for frames after traffic, calling Yield (the caller's
	// way to give the CPU away, e.g. sched_yield; this package makes no system calls)
	// between looks, before it parks in the poller: a frame that comes soon after the
	// last one is taken without a wake-up. A look asks the prober, or, for short
	// frames over a GenericFragBackend, receives them itself (RxBatch).
	RxSpin time.Duration
	Yield  func()
	Host   HostStack
	// Pool, if set, is used instead of a private pool (for example one
	// whose Region a backend registered as its AF_XDP UMEM). It must hold
	// at least Slots*(tx+1+rx+1) free buffers of at least FrameSize bytes.
	Pool *Pool
}

// GenericAdapter is netmap_generic_adapter: it presents a GenericBackend as a
// netmap adapter (one kring pair per queue). TX sync hands [hwcur, rhead) to
// TxBatch; RX sync releases [hwcur, rhead) and imports frames with RxBatch into
// the free slots. While registered, one goroutine per RX queue waits for
// readiness and notifies the kring (the "interrupt"), re-arming only after the
// user's next rxsync; one goroutine per TX queue waits for room when a TX sync
// could not hand over everything. Register(false) stops and waits for them.
type GenericAdapter struct {
	BaseAdapter
	b        GenericBackend
	maxFrame int

	bufSize int
	chain   bool // chain mode: maxFrame > bufSize

	txScratch [][]byte           // chain mode: per TX queue, where chains are gathered
	rxScratch [][][]byte         // chain mode: per RX queue, whole frames before scattering
	rxSlots   int                // chain mode: slots one frame of maxFrame bytes needs
	fb        GenericFragBackend // chain mode, when the backend has it
	rxStash   []rxStash          // chain mode over fb: frames received in a batch, per RX queue

	txFrames [][][]byte
	txPos    [][]uint32
	rxBufs   [][][]byte
	rxLens   [][]int
	rxRearm  []chan struct{}
	// rxDrained says, per RX queue, that the backend's last receive found it empty
	// (it returned fewer frames than asked). Only RxSync touches it, under the
	// kring's sync.
	rxDrained []bool
	txWant    []chan struct{}
	rxProbe   GenericRxProber // nil: no RX spin
	rxSpin    time.Duration
	yield     func()

	cancel context.CancelFunc
	wg     sync.WaitGroup

	TxDropped atomic.Uint64 // frames dropped (multi-fragment outside chain mode, or too long)
	// TxChains and RxChains count frames that crossed as slot chains (chain mode).
	TxChains atomic.Uint64
	RxChains atomic.Uint64
	RxErrors atomic.Uint64
	TxErrors atomic.Uint64
	closed   atomic.Bool
}

var _ Adapter = (*GenericAdapter)(nil)

// Chain-mode sizing.
const (
	// MaxGenericFrame bounds a backend's FrameSize: a 64 KB GSO super-frame.
	MaxGenericFrame = 65535
	// genericTxScratchFrames and genericRxScratchFrames are how many
	// maximal frames a queue gathers (TX) or imports (RX) per batch in chain
	// mode.
	genericTxScratchFrames = 4
	genericRxScratchFrames = 8
)

// NewGenericAdapter wraps b. The adapter owns b and closes it in Dtor.
func NewGenericAdapter(name string, b GenericBackend, cfg GenericConfig) (*GenericAdapter, error) {
	if b == nil {
		return nil, fmt.Errorf("create generic adapter %q: nil backend: %w", name, syscall.EINVAL)
	}
	if cfg.Slots == 0 {
		cfg.Slots = 1024
	}
	if cfg.Pool != nil {
		cfg.BufSize = int(cfg.Pool.BufSize())
	} else if cfg.BufSize == 0 {
		cfg.BufSize = DefaultBufSize
	}
	ntx, nrx := b.Queues()
	fs := b.FrameSize()
	if fs <= 0 || fs > MaxGenericFrame {
		return nil, fmt.Errorf("create generic adapter %q: frame size %d outside (0, %d]: %w", name, fs, MaxGenericFrame, syscall.EINVAL)
	}
	if ntx <= 0 || nrx <= 0 || ntx > 256 || nrx > 256 {
		return nil, fmt.Errorf("create generic adapter %q: queues %d/%d outside [1, 256]: %w", name, ntx, nrx, syscall.EINVAL)
	}
	pool := cfg.Pool
	if pool == nil {
		nbufs := int(cfg.Slots)*(ntx+1+nrx+1) + reservedBufs + 64
		var err error
		if pool, err = NewPool(nbufs, cfg.BufSize); err != nil {
			return nil, fmt.Errorf("create generic adapter %q: %w", name, err)
		}
	} else if pool.Available() < int(cfg.Slots)*(ntx+1+nrx+1) {
		return nil, fmt.Errorf("create generic adapter %q: pool has %d free buffers, need %d: %w",
			name, pool.Available(), int(cfg.Slots)*(ntx+1+nrx+1), syscall.EINVAL)
	}
	g := &GenericAdapter{b: b, maxFrame: fs, bufSize: cfg.BufSize, chain: fs > cfg.BufSize}
	flags := NAFMemOwner
	if cfg.HostRings {
		flags |= NAFHostRings
	}
	if cfg.Native {
		flags |= NAFNative
	} else {
		flags |= NAFSkipIntr
	}
	if err := g.Init(g, AdapterConfig{Name: name, Geometry: Geometry{ntx, nrx, cfg.Slots, cfg.Slots}, Pool: pool, Flags: flags}); err != nil {
		return nil, err
	}
	g.Host = cfg.Host
	g.txFrames = make([][][]byte, ntx)
	g.txPos = make([][]uint32, ntx)
	g.txWant = make([]chan struct{}, ntx)
	for i := range g.txFrames {
		g.txFrames[i] = make([][]byte, 0, cfg.Slots)
		g.txPos[i] = make([]uint32, 0, cfg.Slots)
		g.txWant[i] = make(chan struct{}, 1)
	}
	if g.chain {
		g.fb, _ = b.(GenericFragBackend)
		g.rxSlots = (fs + cfg.BufSize - 1) / cfg.BufSize
		if g.rxSlots > int(cfg.Slots)-1 {
			return nil, fmt.Errorf("create generic adapter %q: a %d-byte frame needs %d slots of %d bytes, the rings have %d: %w",
				name, fs, g.rxSlots, cfg.BufSize, cfg.Slots, syscall.EINVAL)
		}
		g.txScratch = make([][]byte, ntx)
		for i := range g.txScratch {
			g.txScratch[i] = make([]byte, genericTxScratchFrames*fs)
		}
		g.rxStash = make([]rxStash, nrx)
		for i := range g.rxStash {
			g.rxStash[i] = rxStash{lens: make([]int, genericRxScratchFrames), big: true}
		}
		g.rxScratch = make([][][]byte, nrx)
		for i := range g.rxScratch {
			g.rxScratch[i] = make([][]byte, genericRxScratchFrames)
			for j := range g.rxScratch[i] {
				g.rxScratch[i][j] = make([]byte, fs)
			}
		}
	}
	g.rxBufs = make([][][]byte, nrx)
	g.rxLens = make([][]int, nrx)
	if pr, ok := b.(GenericRxProber); ok && cfg.RxSpin > 0 {
		g.rxProbe, g.rxSpin, g.yield = pr, cfg.RxSpin, cfg.Yield
		if g.yield == nil {
			g.yield = runtime.Gosched
		}
	}
	g.rxRearm = make([]chan struct{}, nrx)
	g.rxDrained = make([]bool, nrx)
	for i := range g.rxBufs {
		g.rxBufs[i] = make([][]byte, 0, cfg.Slots)
		g.rxLens[i] = make([]int, cfg.Slots)
		g.rxRearm[i] = make(chan struct{}, 1)
	}
	return g, nil
}

// Backend returns the wrapped backend.
func (g *GenericAdapter) Backend() GenericBackend { return g.b }

// Register starts (on) or stops (off) the readiness goroutines.
func (g *GenericAdapter) Register(on bool) error {
	if !on {
		g.stop()
		return nil
	}
	if g.closed.Load() {
		return fmt.Errorf("register generic %s: backend closed: %w", g.Name, syscall.ENXIO)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	for q := range g.rxBufs {
		// Armed from the start: the first wait needs no rxsync.
		select {
		case g.rxRearm[q] <- struct{}{}:
		default:
		}
		g.wg.Add(1)
		go g.rxLoop(ctx, q)
	}
	for q := range g.txFrames {
		g.wg.Add(1)
		go g.txLoop(ctx, q)
	}
	return nil
}

func (g *GenericAdapter) stop() {
	if g.cancel != nil {
		g.cancel()
		g.wg.Wait()
		g.cancel = nil
	}
}

// rxLoop is the generic RX "interrupt": wait until the queue is readable, then
// notify the kring, then wait for the user's rxsync before waiting again (so a
// slow consumer does not make it spin).
func (g *GenericAdapter) rxLoop(ctx context.Context, q int) {
	defer g.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.rxRearm[q]:
		}
		if !g.spinRX(q) {
			if err := g.b.WaitReady(ctx, q, RX); err != nil {
				if ctx.Err() != nil {
					return
				}
				g.RxErrors.Add(1)
			}
		}
		k := g.RxRings[q]
		k.NrKflags.Or(KringPendIntr) // the backend has frames: the next RxSync reads
		k.NotifyNow()
	}
}

// spinRX looks for frames on queue q for up to the adapter's RxSpin, yielding between
// looks; true if it found some.
func (g *GenericAdapter) spinRX(q int) bool {
	if g.rxProbe == nil {
		return false
	}
	for end := time.Now().Add(g.rxSpin); ; {
		if g.lookRX(q) {
			return true
		}
		if !time.Now().Before(end) || g.closed.Load() {
			return false
		}
		g.yield()
	}
}

// lookRX is one look of spinRX. In batch mode over a GenericFragBackend the look is the
// receive itself: RxBatch into the empty stash, which the next sync places into the
// ring, so a frame found costs one system call where a probe and then a receive cost
// two. Frames already stashed count as found: they wait for that sync. Otherwise it
// asks the prober.
func (g *GenericAdapter) lookRX(q int) bool {
	if st := g.stashOf(q); st != nil {
		st.mu.Lock()
		if st.pos < st.n {
			st.mu.Unlock()
			return true
		}
		if !st.big {
			// Frames received before an error are kept; the error is the next
			// sync's to report, when it asks the backend again.
			n, err := g.b.RxBatch(q, g.rxScratch[q], st.lens)
			st.pos, st.n = 0, n
			st.emptied = err == nil && n > 0 && n < len(g.rxScratch[q])
			st.mu.Unlock()
			return n > 0
		}
		st.mu.Unlock()
	}
	return g.rxProbe.RxPending(q)
}

// txLoop waits for room on a TX queue after a TX sync left frames pending.
func (g *GenericAdapter) txLoop(ctx context.Context, q int) {
	defer g.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.txWant[q]:
		}
		if err := g.b.WaitReady(ctx, q, TX); err != nil {
			if ctx.Err() != nil {
				return
			}
			g.TxErrors.Add(1)
		}
		g.TxRings[q].NotifyNow()
	}
}

// TxSync is generic_netmap_txsync: hand [hwcur, rhead) to the backend in one
// batch. Multi-fragment packets are dropped (counted) unless the adapter is in
// chain mode, where each NS_MOREFRAG chain is gathered into one frame (in a
// per-queue scratch area; a full area is handed over first). A chain whose
// last slot is not yet in [hwcur, rhead) waits for the next sync.
func (g *GenericAdapter) TxSync(k *Kring, flags SyncFlags) error {
	if g.fb != nil {
		return g.txFrags(k)
	}
	q := int(k.RingID)
	frames, pos := g.txFrames[q][:0], g.txPos[q][:0]
	head := k.RHead
	end := head      // where the scan stopped
	first := head    // slot of frames[0]
	newHwcur := head // where the next sync resumes
	used := 0        // bytes of txScratch[q] holding gathered chains
	full := true     // the backend took everything offered
	inFrag := false  // outside chain mode: inside a chain being dropped
	var err error
	for i := k.NrHwcur.Load(); i != head; {
		s := &k.Ring.Slot[i]
		if s.Flags&MoreFrag == 0 || !g.chain {
			next := k.Next(i)
			frag := inFrag || s.Flags&MoreFrag != 0
			inFrag = s.Flags&MoreFrag != 0
			buf := g.Mem.Buf(s.BufIdx)
			if frag || buf == nil || int(s.Len) > g.maxFrame || int(s.Len) > len(buf) {
				g.TxDropped.Add(1)
			} else {
				if len(frames) == 0 {
					first = i
				}
				frames = append(frames, buf[:s.Len])
				pos = append(pos, next)
			}
			i = next
			continue
		}
		// Chain mode, a chain starts at i: find its last slot and its length.
		total, bad, j := 0, false, i
		for {
			sj := &k.Ring.Slot[j]
			buf := g.Mem.Buf(sj.BufIdx)
			if buf == nil || int(sj.Len) > len(buf) {
				bad = true
			}
			total += int(sj.Len)
			if sj.Flags&MoreFrag == 0 {
				break
			}
			if j = k.Next(j); j == head {
				break
			}
		}
		if j == head { // incomplete: resume at its first slot
			end = i
			break
		}
		next := k.Next(j)
		if bad || total > g.maxFrame {
			g.TxDropped.Add(1)
			i = next
			continue
		}
		if used+total > len(g.txScratch[q]) {
			var resume uint32
			resume, full, err = g.txFlush(q, frames, pos, first)
			frames, pos, used = frames[:0], pos[:0], 0
			if !full || err != nil {
				newHwcur = resume
				end = resume
				break
			}
		}
		dst := g.txScratch[q][used : used+total]
		off := 0
		for c := i; ; c = k.Next(c) {
			sc := &k.Ring.Slot[c]
			off += copy(dst[off:], g.Mem.Buf(sc.BufIdx)[:sc.Len])
			if c == j {
				break
			}
		}
		used += total
		if len(frames) == 0 {
			first = i
		}
		frames = append(frames, dst)
		pos = append(pos, next)
		g.TxChains.Add(1)
		i = next
	}
	if full && err == nil {
		newHwcur = end
		if len(frames) > 0 {
			newHwcur, full, err = g.txFlush(q, frames, pos, first)
			if full {
				newHwcur = end
			}
		}
	}
	clear(frames)
	k.NrHwcur.Store(newHwcur)
	k.NrHwtail.Store(k.Prev(newHwcur))
	if err != nil {
		return fmt.Errorf("txsync %s: %w", k.Name, err)
	}
	return nil
}

// txFrags is TxSync in chain mode over a GenericFragBackend: each frame
// goes to TxFrags as its list of fragments, in ring order.
func (g *GenericAdapter) txFrags(k *Kring) error {
	q := int(k.RingID)
	head := k.RHead
	frags := g.txFrames[q][:0]
	i := k.NrHwcur.Load()
	var err error
	for i != head {
		start := i
		frags = frags[:0]
		total, bad, complete := 0, false, false
		for {
			s := &k.Ring.Slot[i]
			buf := g.Mem.Buf(s.BufIdx)
			if buf == nil || int(s.Len) > len(buf) {
				bad = true
			} else {
				frags = append(frags, buf[:s.Len])
			}
			total += int(s.Len)
			i = k.Next(i)
			if s.Flags&MoreFrag == 0 {
				complete = true
				break
			}
			if i == head {
				break
			}
		}
		if !complete { // the user has not released the chain's end yet
			i = start
			break
		}
		if bad || total == 0 || total > g.maxFrame {
			g.TxDropped.Add(1)
			continue
		}
		var ok bool
		if ok, err = g.fb.TxFrags(q, frags); err != nil {
			break // consumed
		}
		if !ok {
			i = start
			select {
			case g.txWant[q] <- struct{}{}:
			default:
			}
			break
		}
		if len(frags) > 1 {
			g.TxChains.Add(1)
		}
	}
	clear(frags)
	k.NrHwcur.Store(i)
	k.NrHwtail.Store(k.Prev(i))
	if err != nil {
		return fmt.Errorf("txsync %s: %w", k.Name, err)
	}
	return nil
}

// txFlush hands frames (their slots end at pos, the first starts at first)
// to the backend. When it takes fewer it returns where to resume (dropped
// slots before the first frame are consumed) and asks the TX goroutine to
// wait for room.
func (g *GenericAdapter) txFlush(q int, frames [][]byte, pos []uint32, first uint32) (resume uint32, all bool, err error) {
	n, err := g.b.TxBatch(q, frames)
	if n >= len(frames) {
		return 0, true, err
	}
	resume = first
	if n > 0 {
		resume = pos[n-1]
	}
	select {
	case g.txWant[q] <- struct{}{}:
	default:
	}
	return resume, false, err
}

// RxSync is generic_netmap_rxsync: release [hwcur, rhead), then import up to
// the free slots from the backend. Imported slots get nkr_slot_flags. In chain
// mode frames are imported whole into a per-queue scratch area (as many as the
// free slots hold at the largest frame size) and scattered over consecutive
// slots, every slot but a frame's last with NS_MOREFRAG.
//
// It asks the backend for frames only when they may be there (netmap's rule with
// netmap_no_pendintr off: NAF_FORCE_READ or NKR_PENDINTR): when the caller forces the
// read, when the RX loop saw the backend readable since the last sync (KringPendIntr),
// or when the last receive did not find the backend empty. A sync that only releases
// slots after a receive that drained the backend costs no system call; frames that
// arrive after it are announced by the RX loop, which every RxSync re-arms.
func (g *GenericAdapter) RxSync(k *Kring, flags SyncFlags) error {
	q := int(k.RingID)
	k.NrHwcur.Store(k.RHead)
	pend := k.NrKflags.And(^KringPendIntr)&KringPendIntr != 0
	var err error
	if flags&ForceRead != 0 || pend || !g.rxDrained[q] {
		hwtail := k.NrHwtail.Load()
		free := k.NumSlots - 1 - k.Dist(k.RHead, hwtail)
		if g.chain {
			err = g.rxChains(k, q, hwtail, free)
		} else {
			err = g.rxSingle(k, q, hwtail, free)
		}
	}
	select { // re-arm the RX "interrupt"
	case g.rxRearm[q] <- struct{}{}:
	default:
	}
	if err != nil && !errors.Is(err, syscall.EAGAIN) {
		return fmt.Errorf("rxsync %s: %w", k.Name, err)
	}
	return nil
}

// slotBuf returns slot j's buffer, giving the slot a new one if reinit left
// it invalid (nil when the pool is empty).
func (g *GenericAdapter) slotBuf(s *Slot) []byte {
	if !g.Mem.Valid(s.BufIdx) {
		idx, err := g.Mem.Alloc()
		if err != nil {
			return nil
		}
		s.BufIdx = idx
	}
	return g.Mem.Buf(s.BufIdx)
}

func (g *GenericAdapter) rxSingle(k *Kring, q int, hwtail, free uint32) error {
	bufs := g.rxBufs[q][:0]
	for i, j := uint32(0), hwtail; i < free; i, j = i+1, k.Next(j) {
		buf := g.slotBuf(&k.Ring.Slot[j])
		if buf == nil {
			break
		}
		bufs = append(bufs, buf)
	}
	if len(bufs) == 0 {
		g.rxDrained[q] = false // the ring is full
		return nil
	}
	lens := g.rxLens[q][:len(bufs)]
	n, err := g.b.RxBatch(q, bufs, lens)
	g.rxDrained[q] = err == nil && n < len(bufs)
	j := hwtail
	for i := 0; i < n; i++ {
		s := &k.Ring.Slot[j]
		s.Len = uint16(lens[i])
		s.Flags = k.NkrSlotFlags
		j = k.Next(j)
	}
	k.NrHwtail.Store(j)
	clear(bufs)
	return err
}

func (g *GenericAdapter) rxChains(k *Kring, q int, hwtail, free uint32) error {
	if g.fb != nil {
		return g.rxAdaptive(k, q, hwtail, free)
	}
	nf := min(int(free)/g.rxSlots, len(g.rxScratch[q]))
	if nf == 0 {
		g.rxDrained[q] = false // the ring is full
		return nil
	}
	lens := g.rxLens[q][:nf]
	n, err := g.b.RxBatch(q, g.rxScratch[q][:nf], lens)
	g.rxDrained[q] = err == nil && n < nf
	j := hwtail
frames:
	for i := 0; i < n; i++ {
		f := g.rxScratch[q][i][:min(lens[i], g.maxFrame)]
		if len(f) > g.bufSize {
			g.RxChains.Add(1)
		}
		next, ok := g.fillChain(k, j, f)
		if !ok { // pool exhausted: drop this frame and the rest
			break frames
		}
		j = next
	}
	k.NrHwtail.Store(j)
	return err
}

// fillChain copies frame f into the slots from j on, a buffer each, every slot but the
// last marked NS_MOREFRAG, and returns the slot after it. When the pool has no buffer left
// the frame is dropped (counted) and ok is false.
func (g *GenericAdapter) fillChain(k *Kring, j uint32, f []byte) (next uint32, ok bool) {
	start := j
	for len(f) > 0 {
		s := &k.Ring.Slot[j]
		buf := g.slotBuf(s)
		if buf == nil {
			g.RxErrors.Add(1)
			return start, false
		}
		c := copy(buf[:g.bufSize], f)
		f = f[c:]
		s.Len = uint16(c)
		s.Flags = k.NkrSlotFlags
		if len(f) > 0 {
			s.Flags |= MoreFrag
		}
		j = k.Next(j)
	}
	return j, true
}

// rxStash is one RX queue's frames received in a batch and not yet in the ring
// (rxAdaptive): rxScratch[q][pos:n], lengths in lens (0: a frame the backend
// dropped). big says frames longer than a buffer came lately.
//
// In batch mode the RX loop's looks receive into an empty stash themselves (lookRX):
// emptied says the frames there came from a look whose batch came back short (the
// backend was empty then), until a sync places them. mu serializes the queue's
// receives: the look on the RX loop's goroutine, rxAdaptive on the syncing one.
type rxStash struct {
	mu      sync.Mutex
	lens    []int
	pos, n  int
	big     bool
	emptied bool
}

// rxAdaptive is rxChains over a GenericFragBackend. Frames go into the ring one
// of two ways, chosen by what came lately:
//   - after super-frames (big), one RxScatter per frame straight into the free
//     slots (no copy in user space; one system call per frame, and one more
//     that finds the backend empty);
//   - after a sync that saw short frames only, RxBatch takes up to genericRxScratchFrames
//     frames with one system call into the queue's scratch buffers (each as long
//     as the largest frame, so nothing is cut), which are copied into the slots
//     (a short copy for short frames). What the ring has no room for waits in the
//     scratch for the next sync, ahead of anything newer, so the order holds. A
//     super-frame seen this way switches back to scatter once the scratch is empty.
func (g *GenericAdapter) rxAdaptive(k *Kring, q int, hwtail, free uint32) error {
	st := &g.rxStash[q]
	st.mu.Lock()
	defer st.mu.Unlock()
	j := hwtail
	var err error
	drained := st.emptied // a look's batch that found the backend empty
	st.emptied = false
	for {
		j, free = g.placeStash(k, q, st, j, free)
		if st.pos < st.n { // the ring is full: the rest waits
			drained = false
			break
		}
		if st.big {
			k.NrHwtail.Store(j)
			return g.rxScatter(k, q, j, free)
		}
		if drained { // the last batch was short: the backend is empty
			break
		}
		var n int
		n, err = g.b.RxBatch(q, g.rxScratch[q], st.lens)
		st.pos, st.n = 0, n
		drained = err == nil && n < len(g.rxScratch[q])
		if n == 0 || err != nil {
			break
		}
	}
	g.rxDrained[q] = drained
	k.NrHwtail.Store(j)
	return err
}

// placeStash copies the stash's frames into the free slots from j on, while they fit;
// it returns where it stopped and the slots left.
func (g *GenericAdapter) placeStash(k *Kring, q int, st *rxStash, j, free uint32) (uint32, uint32) {
	for ; st.pos < st.n; st.pos++ {
		l := min(st.lens[st.pos], g.maxFrame)
		if l <= 0 {
			continue // dropped by the backend (counted there)
		}
		need := uint32((l + g.bufSize - 1) / g.bufSize)
		if need > free {
			break
		}
		if need > 1 {
			g.RxChains.Add(1)
			st.big = true
		}
		if next, ok := g.fillChain(k, j, g.rxScratch[q][st.pos][:l]); ok { // else dropped for want of a buffer
			j, free = next, free-need
		}
	}
	return j, free
}

// rxScatter is rxChains over a GenericFragBackend: the free slots' buffers
// are offered to RxScatter frame by frame while room for a largest frame
// remains.
func (g *GenericAdapter) rxScatter(k *Kring, q int, hwtail, free uint32) error {
	bufs := g.rxBufs[q][:0]
	for i, j := uint32(0), hwtail; i < free; i, j = i+1, k.Next(j) {
		buf := g.slotBuf(&k.Ring.Slot[j])
		if buf == nil {
			break
		}
		bufs = append(bufs, buf[:g.bufSize])
	}
	j, pos := hwtail, 0
	var err error
	short, long := 0, 0
	g.rxDrained[q] = false // unless RxScatter finds the backend empty
	for len(bufs)-pos >= g.rxSlots {
		var n int
		var ok bool
		n, ok, err = g.fb.RxScatter(q, bufs[pos:pos+g.rxSlots])
		if err != nil || !ok {
			g.rxDrained[q] = err == nil
			break
		}
		if n <= 0 {
			continue
		}
		used := (n + g.bufSize - 1) / g.bufSize
		if used > 1 {
			g.RxChains.Add(1)
			long++
		} else {
			short++
		}
		for c := 0; c < used; c++ {
			s := &k.Ring.Slot[j]
			s.Len = uint16(min(n-c*g.bufSize, g.bufSize))
			s.Flags = k.NkrSlotFlags
			if c < used-1 {
				s.Flags |= MoreFrag
			}
			j = k.Next(j)
		}
		pos += used
	}
	k.NrHwtail.Store(j)
	clear(bufs)
	if st := g.stashOf(q); st != nil && long == 0 && short >= 1 {
		// Short frames only: take them in batches, where a batch that comes back
		// short also says the backend is empty (no second system call to find out).
		st.big = false
	}
	return err
}

// stashOf is RX queue q's stash, or nil outside chain mode over a GenericFragBackend.
func (g *GenericAdapter) stashOf(q int) *rxStash {
	if g.fb != nil && q < len(g.rxStash) {
		return &g.rxStash[q]
	}
	return nil
}

// Dtor stops the goroutines (if still running) and closes the backend.
func (g *GenericAdapter) Dtor() {
	g.stop()
	if g.closed.CompareAndSwap(false, true) {
		_ = g.b.Close()
	}
}
