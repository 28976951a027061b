package netmap

import (
	"fmt"
	"syscall"
)

// pipePair is the master/slave pair of a netmap pipe, identified by (parent,
// id). Both ends use the parent's pool, so the pipe moves frames by swapping
// buffer indexes: no copy.
type pipePair struct {
	parent Adapter
	id     uint32
	ends   [2]*pipeAdapter // 0 master, 1 slave
	pool   *Pool
}

// pipeExtraBufs is how many extra buffers (Req.Arg3) a pipe pair can hand out.
const pipeExtraBufs = 256

// Pool returns the buffer pool of a pipe end's pair (for leak checks).
func PipePool(a Adapter) *Pool {
	if p, ok := a.(*pipeAdapter); ok {
		return p.pair.pool
	}
	return nil
}

// pipeAdapter is netmap_pipe_adapter: one end of a pipe, with one TX and one
// RX ring. Its TX kring is cross-linked to the peer's RX kring and vice versa.
type pipeAdapter struct {
	BaseAdapter
	pair   *pipePair
	master bool
}

var _ Adapter = (*pipeAdapter)(nil)

func (p *pipeAdapter) peer() *pipeAdapter {
	if p.master {
		return p.pair.ends[1]
	}
	return p.pair.ends[0]
}

// getPipeNA is netmap_get_pipe_na: PIPE_MASTER/PIPE_SLAVE registrations on a
// parent name; the pipe id is the ring id. Both ends are created if missing.
func (nm *Netmap) getPipeNA(req *Req, create bool) (Adapter, error) {
	parentName, id, master, ok := pipeReq(req)
	if !ok {
		return nil, nil
	}
	preq := *req
	preq.Flags = RegAllNIC
	pa, err := nm.getNA(&preq, create)
	if err != nil {
		return nil, fmt.Errorf("get pipe %s{%d: %w", parentName, id, err)
	}
	pna := pa.NA()
	defer pna.Put() // the pair holds its own reference
	pair := pna.pipes[id]
	if pair == nil {
		if !create {
			return nil, fmt.Errorf("get pipe %s{%d: no such pipe: %w", parentName, id, syscall.ENXIO)
		}
		slots := req.TxSlots
		if slots == 0 {
			slots = pna.NumTxDesc
		}
		// Deviation: the pair gets its own pool (shared by both ends, so the
		// swaps stay zero-copy) instead of the parent's allocator, so pipes
		// cannot exhaust the parent's buffers.
		pool, err := NewPool(int(slots)*8+pipeExtraBufs+reservedBufs, int(pna.Mem.BufSize()))
		if err != nil {
			return nil, fmt.Errorf("create pipe %s{%d: %w", parentName, id, err)
		}
		pair = &pipePair{parent: pa, id: id, pool: pool}
		for i := range pair.ends {
			e := &pipeAdapter{pair: pair, master: i == 0}
			sep := "{"
			if i == 1 {
				sep = "}"
			}
			if err := e.Init(e, AdapterConfig{
				Name:     fmt.Sprintf("%s%s%d", pna.Name, sep, id),
				Geometry: Geometry{1, 1, slots, slots},
				Pool:     pool,
			}); err != nil {
				return nil, fmt.Errorf("create pipe %s{%d: %w", parentName, id, err)
			}
			e.nm = nm
			pair.ends[i] = e
		}
		if pna.pipes == nil {
			pna.pipes = map[uint32]*pipePair{}
		}
		pna.pipes[id] = pair
		pna.Get()
	}
	e := pair.ends[0]
	if !master {
		e = pair.ends[1]
	}
	if e.refcount.Load() == 0 {
		e.dtorDone.Store(false)
	}
	e.Get()
	return e, nil
}

// KringsCreate is netmap_pipe_krings_create: create both ends' krings (if the
// peer has not already) and cross-link them.
func (p *pipeAdapter) KringsCreate() error {
	if p.TxRings != nil {
		return nil
	}
	peer := p.peer()
	if err := p.CreateKrings(); err != nil {
		return err
	}
	if err := peer.CreateKrings(); err != nil {
		p.DeleteKrings()
		return err
	}
	p.TxRings[0].Peer, peer.RxRings[0].Peer = peer.RxRings[0], p.TxRings[0]
	p.RxRings[0].Peer, peer.TxRings[0].Peer = peer.TxRings[0], p.RxRings[0]
	return nil
}

// KringsDelete is netmap_pipe_krings_delete: only when the peer is idle too,
// and then for both ends.
func (p *pipeAdapter) KringsDelete() {
	peer := p.peer()
	if peer.activeFds > 0 {
		return
	}
	p.DeleteKrings()
	peer.DeleteKrings()
}

// TxSync is netmap_pipe_txsync: move [hwcur, rhead) into the peer's RX ring
// by swapping slots (zero copy), as far as the peer has room; publish the
// peer's hwtail (release), then notify it.
func (p *pipeAdapter) TxSync(tx *Kring, flags SyncFlags) error {
	rx := tx.Peer
	j := rx.NrHwtail.Load()
	k := tx.NrHwcur.Load()
	limit := tx.Dist(k, tx.RHead)
	free := rx.NumSlots - 1 - rx.Dist(rx.NrHwcur.Load(), j) // acquire: peer released these
	if limit > free {
		limit = free
	}
	if limit == 0 {
		return nil
	}
	ts, rs := tx.Ring.Slot, rx.Ring.Slot
	for ; limit > 0; limit-- {
		rs[j], ts[k] = ts[k], rs[j]
		ts[k].Flags |= BufChanged
		rs[j].Flags |= BufChanged
		j = rx.Next(j)
		k = tx.Next(k)
	}
	rx.NrHwtail.Store(j) // publish the slots to the peer
	tx.NrHwcur.Store(k)
	tx.NrHwtail.Store(tx.Prev(k))
	rx.NotifyNow()
	return nil
}

// RxSync is netmap_pipe_rxsync: release [hwcur, rhead) to the peer's TX side
// and notify it when something was released.
func (p *pipeAdapter) RxSync(rx *Kring, flags SyncFlags) error {
	old := rx.NrHwcur.Load()
	if old != rx.RHead {
		rx.NrHwcur.Store(rx.RHead)
		rx.Peer.NotifyNow()
	}
	return nil
}

// Dtor is netmap_pipe_dtor: when neither end is referenced any more, the pair
// leaves the parent and drops its reference on it.
func (p *pipeAdapter) Dtor() {
	peer := p.peer()
	if peer.refcount.Load() > 0 {
		return
	}
	pair := p.pair
	pna := pair.parent.NA()
	if pna.pipes[pair.id] == pair {
		delete(pna.pipes, pair.id)
		pna.Put()
	}
}
