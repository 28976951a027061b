package vale

import (
	"fmt"
	"sync/atomic"

	"github.com/epair-cni/epair/pkg/netmap"
)

// PortGeometry is the ring layout of a VALE port (nr_tx_rings, nr_rx_rings,
// nr_tx_slots, nr_rx_slots) and the buffer size of its private pool.
type PortGeometry struct {
	TxRings, RxRings int
	TxSlots, RxSlots uint32
	BufSize          int
}

// DefaultPortGeometry is VALE's default: one ring of 1024 slots each way,
// 2048-byte buffers.
var DefaultPortGeometry = PortGeometry{TxRings: 1, RxRings: 1, TxSlots: 1024, RxSlots: 1024, BufSize: netmap.DefaultBufSize}

// Validate checks the geometry; errors wrap ErrInvalid and name the field.
func (g PortGeometry) Validate() error {
	switch {
	case g.TxRings < 1 || g.TxRings > 16:
		return fmt.Errorf("validate port geometry: tx rings %d not in [1, 16]: %w", g.TxRings, ErrInvalid)
	case g.RxRings < 1 || g.RxRings > 16:
		return fmt.Errorf("validate port geometry: rx rings %d not in [1, 16]: %w", g.RxRings, ErrInvalid)
	case g.TxSlots < 8 || g.TxSlots > 16384:
		return fmt.Errorf("validate port geometry: tx slots %d not in [8, 16384]: %w", g.TxSlots, ErrInvalid)
	case g.RxSlots < 8 || g.RxSlots > 16384:
		return fmt.Errorf("validate port geometry: rx slots %d not in [8, 16384]: %w", g.RxSlots, ErrInvalid)
	case g.BufSize < 64 || g.BufSize > 65535:
		return fmt.Errorf("validate port geometry: buffer size %d not in [64, 65535]: %w", g.BufSize, ErrInvalid)
	}
	return nil
}

// geometryFromReq applies nmreq's ring and slot requests over the default.
func (r *Registry) geometryFromReq(req *netmap.Req) PortGeometry {
	g := r.opts.PortGeometry
	if req == nil {
		return g
	}
	if req.TxRings > 0 {
		g.TxRings = int(req.TxRings)
	}
	if req.RxRings > 0 {
		g.RxRings = int(req.RxRings)
	}
	if req.TxSlots > 0 {
		g.TxSlots = req.TxSlots
	}
	if req.RxSlots > 0 {
		g.RxSlots = req.RxSlots
	}
	return g
}

// extraBufs is the slack in a VALE port's pool for NIOCREGIF's extra
// buffers (nr_arg3).
const extraBufs = 64

// vpAdapter is netmap_vp_adapter: a VALE port. It embeds the netmap base
// adapter; its TX rings feed the switch (txsync = forward) and its RX rings
// are filled by the switch (rxsync = release what the user consumed).
type vpAdapter struct {
	netmap.BaseAdapter
	reg        *Registry
	persistent bool
	// port is the switch port, nil while a persistent port is not
	// attached. Read by txsync without NMG_LOCK.
	port atomic.Pointer[Port]
}

var _ netmap.Adapter = (*vpAdapter)(nil)

func newVP(r *Registry, name string, g PortGeometry, persistent bool) (*vpAdapter, error) {
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("create port %s: %w", name, err)
	}
	// Every kring, host krings included (netmap always creates them),
	// gets a buffer per slot.
	nbufs := (g.TxRings+1)*int(g.TxSlots) + (g.RxRings+1)*int(g.RxSlots) + 2 + extraBufs
	pool, err := netmap.NewPool(nbufs, g.BufSize)
	if err != nil {
		return nil, fmt.Errorf("create port %s: %w", name, err)
	}
	v := &vpAdapter{reg: r, persistent: persistent}
	err = v.Init(v, netmap.AdapterConfig{
		Name:     name,
		Geometry: netmap.Geometry{TxRings: g.TxRings, RxRings: g.RxRings, TxSlots: g.TxSlots, RxSlots: g.RxSlots},
		Pool:     pool,
	})
	if err != nil {
		return nil, fmt.Errorf("create port %s: %w", name, err)
	}
	return v, nil
}

// Register is netmap_vp_reg: with the switch's exclusive lock, start or
// stop delivering to the port's RX rings. Called with NMG_LOCK held.
func (v *vpAdapter) Register(on bool) error {
	p := v.port.Load()
	if p == nil {
		return nil
	}
	if on {
		p.sw.setOn(p, true, v.RxRings[:v.NumRxRings], nil)
	} else {
		p.sw.setOn(p, false, nil, nil)
	}
	return nil
}

// TxSync is netmap_vp_txsync: forward [hwcur, rhead) and give the slots
// back to the user at once (the frames were copied).
func (v *vpAdapter) TxSync(k *netmap.Kring, _ netmap.SyncFlags) error {
	head := k.RHead
	done := head
	if p := v.port.Load(); p != nil {
		done = p.sw.forward(p, k.Ring.Slot, k.Ring.Pool(), k.NrHwcur.Load(), head)
	}
	k.NrHwcur.Store(done)
	k.NrHwtail.Store(k.Prev(done))
	return nil
}

// RxSync is netmap_vp_rxsync: release the slots the user consumed. New
// frames were published by senders (hwtail); finalize shows them.
func (v *vpAdapter) RxSync(k *netmap.Kring, _ netmap.SyncFlags) error {
	k.QLock.Lock()
	k.NrHwcur.Store(k.RHead)
	k.QLock.Unlock()
	return nil
}

// Dtor runs when the last reference goes (with NMG_LOCK held): an
// ephemeral port leaves its switch, which may then disappear.
func (v *vpAdapter) Dtor() {
	if p := v.port.Load(); p != nil {
		v.reg.detachLocked(p)
	}
}
