package netmap

import (
	"fmt"
	"sync/atomic"
	"syscall"
)

// monitorLink connects a monitored kring to the monitor's RX kring that gets
// the copies.
type monitorLink struct {
	mon *monitorAdapter
	dst *Kring
}

// monitorAdapter is netmap_monitor_adapter in copy mode: its RX ring i gets a
// copy of every frame transmitted on the parent's TX ring i (MonitorTX) and/or
// received on the parent's RX ring i (MonitorRX). A full monitor ring drops
// (counted): monitoring never slows the monitored port. Zero-copy monitors
// (NR_ZCOPY_MON) are not supported.
type monitorAdapter struct {
	BaseAdapter
	parent  Adapter
	mflags  uint32
	links   []*Kring // monitored krings we linked
	Dropped atomic.Uint64
}

var _ Adapter = (*monitorAdapter)(nil)

// getMonitorNA is netmap_get_monitor_na: a registration with MonitorTX and/or
// MonitorRX on an existing port's name. The parent must be in netmap mode.
func (nm *Netmap) getMonitorNA(req *Req, create bool) (Adapter, error) {
	mf := req.Flags & (MonitorTX | MonitorRX)
	if mf == 0 {
		return nil, nil
	}
	if req.Flags&ZCopyMon != 0 {
		return nil, fmt.Errorf("get monitor %q: zero-copy monitors not supported: %w", req.Name, syscall.EOPNOTSUPP)
	}
	preq := *req
	preq.Flags &^= MonitorTX | MonitorRX
	pa, err := nm.getNA(&preq, false)
	if err != nil {
		return nil, fmt.Errorf("get monitor %q: %w", req.Name, err)
	}
	pna := pa.NA()
	if !pna.On() || pna.TxRings == nil {
		pna.Put()
		return nil, fmt.Errorf("get monitor %q: port not in netmap mode: %w", req.Name, syscall.EINVAL)
	}
	nr := max(pna.NumTxRings, pna.NumRxRings)
	slots := max(pna.NumTxDesc, pna.NumRxDesc)
	pool, err := NewPool(int(slots)*(nr+3)+reservedBufs, int(pna.Mem.BufSize()))
	if err != nil {
		pna.Put()
		return nil, fmt.Errorf("get monitor %q: %w", req.Name, err)
	}
	m := &monitorAdapter{parent: pa, mflags: mf}
	if err := m.Init(m, AdapterConfig{
		Name:     fmt.Sprintf("%s/%s", pna.Name, monSuffix(mf)),
		Geometry: Geometry{1, nr, slots, slots},
		Pool:     pool,
	}); err != nil {
		pna.Put()
		return nil, fmt.Errorf("get monitor %q: %w", req.Name, err)
	}
	m.nm = nm
	m.Get()
	return m, nil // the parent reference is held until Dtor
}

func monSuffix(f uint32) string {
	switch f {
	case MonitorTX:
		return "t"
	case MonitorRX:
		return "r"
	}
	return "rt"
}

// Register links (on) or unlinks (off) the monitor to the parent's krings.
// Unlinking waits for a sync in progress on each parent kring, so no copy
// targets the monitor's rings after Register(false) returns.
func (m *monitorAdapter) Register(on bool) error {
	pna := m.parent.NA()
	if !on {
		for _, src := range m.links {
			unlinkMonitor(src, m)
		}
		m.links = nil
		return nil
	}
	if !pna.On() || pna.TxRings == nil {
		return fmt.Errorf("register monitor %s: port not in netmap mode: %w", m.Name, syscall.ENXIO)
	}
	for i := 0; i < m.NumRxRings; i++ {
		dst := m.RxRings[i]
		if m.mflags&MonitorTX != 0 && i < pna.NumTxRings {
			linkMonitor(pna.TxRings[i], &monitorLink{mon: m, dst: dst})
			m.links = append(m.links, pna.TxRings[i])
		}
		if m.mflags&MonitorRX != 0 && i < pna.NumRxRings {
			src := pna.RxRings[i]
			src.get() // monTail belongs to the busy-flag holder
			if src.monitors.Load() == nil {
				src.monTail = src.NrHwtail.Load()
			}
			src.Put()
			linkMonitor(pna.RxRings[i], &monitorLink{mon: m, dst: dst})
			m.links = append(m.links, pna.RxRings[i])
		}
	}
	return nil
}

func linkMonitor(src *Kring, l *monitorLink) {
	var next []*monitorLink
	if p := src.monitors.Load(); p != nil {
		next = append(next, *p...)
	}
	next = append(next, l)
	src.monitors.Store(&next)
}

func unlinkMonitor(src *Kring, m *monitorAdapter) {
	p := src.monitors.Load()
	if p == nil {
		return
	}
	var next []*monitorLink
	for _, l := range *p {
		if l.mon != m {
			next = append(next, l)
		}
	}
	if len(next) == 0 {
		src.monitors.Store(nil)
	} else {
		src.monitors.Store(&next)
	}
	src.get() // wait for a sync that may still use the old list
	src.Put()
}

// stopMonitors is netmap_monitor_stop: the monitored adapter's last unbind
// detaches every monitor from its krings (the monitors stay bound but idle).
func stopMonitors(na *BaseAdapter) {
	for _, rs := range [2][]*Kring{na.TxRings, na.RxRings} {
		for _, k := range rs {
			k.monitors.Store(nil)
		}
	}
}

// monitorCopy copies slots [from, to) of src into every monitor linked to it.
// Called by the holder of src's busy flag.
func monitorCopy(src *Kring, links []*monitorLink, from, to uint32) {
	if from == to {
		return
	}
	for _, l := range links {
		dst := l.dst
		dst.QLock.Lock()
		if dst.Stopped() {
			dst.QLock.Unlock()
			continue
		}
		j := dst.NrHwtail.Load()
		free := dst.NumSlots - 1 - dst.Dist(dst.NrHwcur.Load(), j)
		dp := dst.Ring.pool
		for i := from; i != to; i = src.Next(i) {
			if free == 0 {
				l.mon.Dropped.Add(uint64(src.Dist(i, to)))
				break
			}
			s := &src.Ring.Slot[i]
			d := &dst.Ring.Slot[j]
			sb := src.Ring.pool.Buf(s.BufIdx)
			db := dp.Buf(d.BufIdx)
			n := min(int(s.Len), len(sb), len(db))
			copy(db, sb[:n])
			d.Len = uint16(n)
			d.Flags = s.Flags & MoreFrag
			j = dst.Next(j)
			free--
		}
		dst.NrHwtail.Store(j)
		dst.QLock.Unlock()
		dst.NotifyNow()
	}
}

// TxSync of a monitor: its TX ring carries nothing; release everything.
func (m *monitorAdapter) TxSync(k *Kring, flags SyncFlags) error {
	k.NrHwcur.Store(k.RHead)
	k.NrHwtail.Store(k.Prev(k.RHead))
	return nil
}

// RxSync of a monitor: release the slots the user returned (under QLock, as
// the producer reads hwcur under it).
func (m *monitorAdapter) RxSync(k *Kring, flags SyncFlags) error {
	k.QLock.Lock()
	k.NrHwcur.Store(k.RHead)
	k.QLock.Unlock()
	return nil
}

// Dtor drops the parent reference.
func (m *monitorAdapter) Dtor() { m.parent.NA().Put() }
