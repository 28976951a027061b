package vale

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/epair-cni/epair/pkg/netmap"
)

// HostSuffix ends the name of the port that carries an attached adapter's
// host rings ("eth0^", as in VALE).
const HostSuffix = "^"

// maxPullRounds bounds how many times the bwrap worker drains its sources
// before it checks for a stop request again.
const maxPullRounds = 64

// bwrap is netmap_bwrap_adapter: it attaches an adapter that is not a VALE
// port (a native one, or a generic AF_XDP/AF_PACKET one) to a switch. The
// adapter is registered by the switch ("owned by the kernel", NAF_BUSY, so
// users get EBUSY). Frames it receives are pulled by a worker goroutine
// owned by the bwrap, woken by the adapter's RX notifications, and
// forwarded; frames for it are written to its TX rings by the senders.
//
// Pulling in a goroutine rather than in the notify callback means a
// forwarding pass never runs inside another one (a destination's notify
// can never re-enter the switch), so the shared lock is never taken
// recursively.
type bwrap struct {
	r    *Registry
	a    netmap.Adapter
	na   *netmap.BaseAdapter
	port *Port
	host *Port // the host-rings port, or nil

	srcs []bwSource
	txs  []*txWriter // the adapter's TX rings (host TX ring last)

	txPending atomic.Bool // a TX ring has room again: push what it holds

	kick chan struct{} // capacity 1: "there may be frames"
	stop chan struct{}
	done chan struct{}

	detaching bool // under NMG_LOCK
}

type bwSource struct {
	k *netmap.Kring
	p *Port
}

// AttachAdapter attaches adapter a to a switch as the port named by name
// ("vale<sw>:<port>") through a bwrap; with host, a's host rings become a
// second port "<port>^" (EOPNOTSUPP if a has none). a must not be open by
// users (EBUSY) nor attached already (EBUSY). The registry takes its own
// reference on a, released by Detach.
func (r *Registry) AttachAdapter(name string, a netmap.Adapter, host bool) error {
	return r.AttachAdapterWith(name, a, host, PortOptions{})
}

// PortOptions complete a port before it is attached.
type PortOptions struct {
	// Deliverer is the port's pass-two hook (SetDeliverer): with it, the
	// switch never writes the adapter's TX rings, so whatever transmits
	// for the Deliverer is the link's only transmitter from the first
	// frame on.
	Deliverer Deliverer
	// Mirror is the port's mirror (SetMirror); nil for none.
	Mirror *Mirror
}

// AttachAdapterWith is AttachAdapter with the port's Deliverer and Mirror
// in place before the switch forwards a frame to or from it.
func (r *Registry) AttachAdapterWith(name string, a netmap.Adapter, host bool, o PortOptions) (err error) {
	swn, pn, err := ParseName(name)
	if err != nil {
		return fmt.Errorf("attach adapter: %w", err)
	}
	if a == nil {
		return fmt.Errorf("attach adapter %s: nil adapter: %w", name, ErrInvalid)
	}
	mirror, err := checkMirror(name, pn, o.Mirror)
	if err != nil {
		return fmt.Errorf("attach adapter %s: %w", name, err)
	}
	na := a.NA()
	r.nm.Lock()
	defer r.nm.Unlock()
	switch {
	case r.closed:
		return fmt.Errorf("attach adapter %s: %w", name, ErrClosed)
	case na.Flags()&netmap.NAFBusy != 0:
		return fmt.Errorf("attach adapter %s: %q is already attached to a switch: %w", name, na.Name, ErrPortBusy)
	case na.ActiveFds() > 0:
		return fmt.Errorf("attach adapter %s: %q is open by %d users: %w", name, na.Name, na.ActiveFds(), ErrPortBusy)
	case na.Detached():
		return fmt.Errorf("attach adapter %s: %q: %w", name, na.Name, netmap.ErrDetached)
	case host && na.Flags()&netmap.NAFHostRings == 0:
		return fmt.Errorf("attach adapter %s: %q has no host rings: %w", name, na.Name, ErrNotSupported)
	}
	if _, ok := a.(*vpAdapter); ok {
		return fmt.Errorf("attach adapter %s: VALE ports attach by name: %w", name, ErrInvalid)
	}
	s, created, err := r.switchForAttachLocked(swn)
	if err != nil {
		return fmt.Errorf("attach adapter %s: %w", name, err)
	}
	defer func() {
		if err != nil && created {
			r.dropSwitchLocked(s)
		}
	}()
	if _, ok := s.byName[pn]; ok {
		return fmt.Errorf("attach adapter %s: %w", name, ErrExists)
	}
	if _, ok := s.byName[pn+HostSuffix]; host && ok {
		return fmt.Errorf("attach adapter %s: host port %s: %w", name, pn+HostSuffix, ErrExists)
	}
	if host && s.nports+2 > s.cfg.MaxPorts || s.nports+1 > s.cfg.MaxPorts {
		return fmt.Errorf("attach adapter %s: switch has %d of %d ports: %w", name, s.nports, s.cfg.MaxPorts, ErrSwitchFull)
	}

	b := &bwrap{
		r: r, a: a, na: na,
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	nt, nr := na.NumTxRings, na.NumRxRings
	b.port = &Port{name: pn, kind: PortBwrap, bw: b, deliver: o.Deliverer, mirror: mirror}
	if host {
		b.host = &Port{name: pn + HostSuffix, kind: PortHost, bw: b}
	}

	// Put the adapter in netmap mode on behalf of the switch. The
	// sources' nm_notify is replaced after the krings exist and before
	// Register(true) starts the backend's goroutines that call it.
	if err := a.KringsCreate(); err != nil {
		return fmt.Errorf("attach adapter %s: %w", name, err)
	}
	for i := 0; i < nr; i++ {
		b.srcs = append(b.srcs, bwSource{k: na.RxRings[i], p: b.port})
	}
	if host {
		b.srcs = append(b.srcs, bwSource{k: na.RxRings[nr], p: b.host})
	}
	for _, src := range b.srcs {
		src.k.Notify = b.notify
	}
	// The TX rings' notify (room again after a backend could not take
	// everything) makes the worker push what is left in them.
	for i := 0; i < nt; i++ {
		b.txs = append(b.txs, &txWriter{k: na.TxRings[i]})
	}
	if host {
		b.txs = append(b.txs, &txWriter{k: na.TxRings[nt]})
	}
	for _, w := range b.txs {
		w.k.Notify = b.txNotify
	}
	if err := a.Register(true); err != nil {
		a.KringsDelete()
		return fmt.Errorf("attach adapter %s: register %q: %w", name, na.Name, err)
	}
	na.Get()
	na.SetFlags(netmap.NAFNetmapOn | netmap.NAFBusy)

	txs := b.txs[:nt]
	if err := s.addPort(b.port); err != nil { // cannot fail after the checks above, but unwind anyway
		b.unregister()
		return err
	}
	s.setOn(b.port, true, nil, txs)
	if host {
		if err := s.addPort(b.host); err != nil {
			r.detachLocked(b.port)
			b.unregister()
			return err
		}
		s.setOn(b.host, true, nil, b.txs[nt:])
	}
	r.bwraps[na.Name] = b
	go b.run()
	b.notify(nil, 0) // frames may already be waiting
	return nil
}

// notify is netmap_bwrap_intr_notify, minus the work: wake the worker.
func (b *bwrap) notify(_ *netmap.Kring, _ uint32) {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// txNotify is the TX rings' nm_notify: wake the worker to txsync them.
func (b *bwrap) txNotify(_ *netmap.Kring, _ uint32) {
	b.txPending.Store(true)
	b.notify(nil, 0)
}

// run is the worker: on each wake-up it drains every source ring until no
// frames are left (re-waking itself after maxPullRounds so that a stop
// request is seen even under constant load).
func (b *bwrap) run() {
	defer close(b.done)
	for {
		select {
		case <-b.stop:
			return
		case <-b.kick:
		}
		if b.txPending.Swap(false) {
			for _, w := range b.txs {
				w.flush()
			}
		}
		for round := 0; ; round++ {
			progress := false
			for _, src := range b.srcs {
				if b.pull(src) {
					progress = true
				}
			}
			if !progress {
				break
			}
			if round == maxPullRounds {
				b.notify(nil, 0)
				break
			}
		}
	}
}

// pull acts as the user of one source RX ring: rxsync to fetch frames,
// forward [head, tail), advance head past what was consumed and rxsync
// again to release the slots (the bwrap's rxsync / vp_txsync / rxsync
// sequence). Unlike netmap's bwrap it does not force the read
// (NAF_FORCE_READ): an adapter whose RX "interrupt" fired has
// NKR_PENDINTR set and reads, and a generic adapter whose backend came up
// empty saves the system call when the wake-up was for something else (a
// transmit notification, another source, a later round).
func (b *bwrap) pull(src bwSource) bool {
	k := src.k
	if k.TryGet() != nil {
		return false
	}
	defer k.Put()
	if k.SyncRx(0) != nil {
		return false
	}
	r := k.Ring
	if r.Head == r.Tail {
		return false
	}
	// One batch per source per round: the rest stays in the adapter's
	// ring (not consumed, not dropped) and the sources take turns.
	to := r.Tail
	if batch := uint32(src.p.sw.cfg.BatchSize); k.Dist(r.Head, to) > batch {
		to = k.Add(r.Head, batch)
	}
	next := src.p.sw.forward(src.p, r.Slot, r.Pool(), r.Head, to)
	if next == r.Head {
		return false
	}
	r.Head, r.Cur = next, next
	_ = k.SyncRx(0)
	return true
}

// detach unwraps the adapter: stop the worker, take the ports out of the
// switch (waiting for senders in flight), restore the notifications and
// give the adapter back.
func (b *bwrap) detach() error {
	r := b.r
	r.nm.Lock()
	if b.detaching {
		r.nm.Unlock()
		return fmt.Errorf("detach %s: already detached: %w", b.port.Name(), ErrNoPort)
	}
	b.detaching = true
	r.nm.Unlock()

	close(b.stop)
	<-b.done

	r.nm.Lock()
	defer r.nm.Unlock()
	if b.host != nil {
		r.detachLocked(b.host)
	}
	r.detachLocked(b.port)
	delete(r.bwraps, b.na.Name)
	b.unregister()
	return nil
}

// unregister takes the adapter out of netmap mode and drops the
// registry's reference. NMG_LOCK held. The sources' nm_notify is not
// restored: the krings it was installed on are deleted here, and the next
// registration creates new ones with the adapter's own notify.
func (b *bwrap) unregister() {
	b.na.ClearFlags(netmap.NAFNetmapOn | netmap.NAFBusy)
	_ = b.a.Register(false)
	b.a.KringsDelete()
	b.na.Put()
}

// txWriter writes frames for a bwrap'd adapter into one of its TX rings,
// acting as the ring's user (advance head, txsync). Senders to one TX ring
// serialise on mu for the copy: unlike a VALE port's RX ring, a TX ring's
// user side has no lease protocol in netmap.
type txWriter struct {
	mu sync.Mutex
	k  *netmap.Kring
}

// flush txsyncs the ring so the adapter takes frames it could not take
// before (and completed slots are reclaimed).
func (w *txWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.k.TryGet() != nil {
		return
	}
	_ = w.k.SyncTx(netmap.ForceReclaim)
	w.k.Put()
}

func (w *txWriter) deliver(frames []Frame, bufs [][]byte, order []int32, maxLen int32) (nf int, nbytes uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := w.k
	if k.TryGet() != nil {
		return 0, 0 // stopped (backend reset or gone)
	}
	defer k.Put()
	r := k.Ring
	bs := int32(r.BufSize)
	need := int32(0)
	for _, fi := range order {
		need += slotsFor(frames[fi].Len, bs)
	}
	space := int32(r.Space())
	if need > space {
		_ = k.SyncTx(netmap.ForceReclaim) // reclaim completed slots
		space = int32(r.Space())
	}
	used := int32(0)
	j := r.Head
	n := uint32(len(r.Slot))
	pool := r.Pool()
	for _, fi := range order {
		f := &frames[fi]
		ns := slotsFor(f.Len, bs)
		if used+ns > space {
			break
		}
		if ns == 1 {
			s := &r.Slot[j]
			s.Len = uint16(copy(pool.Buf(s.BufIdx), f.Data))
			s.Flags = 0
			if j++; j == n {
				j = 0
			}
		} else {
			j = copyFrags(r.Slot, pool, j, bufs[f.slot:f.slot+uint32(f.frags)], f.Len, bs)
		}
		used += ns
		nf++
		nbytes += uint64(f.Len)
	}
	if nf > 0 {
		r.Head, r.Cur = j, j
		_ = k.SyncTx(netmap.ForceReclaim)
	}
	return nf, nbytes
}
