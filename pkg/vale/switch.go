package vale

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"

	"github.com/epair-cni/epair/pkg/netmap"
)

// Switch is one VALE switch (struct nm_bridge).
//
// Locks: mu is the per-switch shared/exclusive lock. Forwarding holds it
// shared for a whole batch (gather, lookup, both passes); adding, removing,
// enabling or disabling a port, changing its mirror or known-only mark,
// and replacing the lookup or static FDB entries, hold it exclusively,
// always after NMG_LOCK (the netmap instance's global lock). byName and
// nports are only touched under NMG_LOCK.
type Switch struct {
	reg  *Registry
	name string
	cfg  Config
	slot int // index in the registry (NETMAP_BDG_LIST's bridge index)
	held bool

	mu       sync.RWMutex
	ports    []*Port  // by index; nil = free (len MaxPorts)
	active   []uint16 // ports that receive, in index order (the flood set)
	lookup   Lookup
	learning *Learning // the default lookup, or nil after SetLookup

	byName map[string]*Port
	nports int

	ctxMu sync.Mutex
	ctxs  []*fwdCtx // idle forwarding contexts

	stats counters
}

func newSwitch(r *Registry, name string, cfg Config, slot int) (*Switch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("create switch %q: %w", name, err)
	}
	fdb, err := NewFDB(cfg.FDBSize, cfg.Aging)
	if err != nil {
		return nil, fmt.Errorf("create switch %q: %w", name, err)
	}
	l, err := NewLearningVnet(fdb, cfg.MaxPorts, cfg.VnetHdrLen)
	if err != nil {
		return nil, fmt.Errorf("create switch %q: %w", name, err)
	}
	return &Switch{
		reg:      r,
		name:     name,
		cfg:      cfg,
		slot:     slot,
		ports:    make([]*Port, cfg.MaxPorts),
		lookup:   l,
		learning: l,
		byName:   map[string]*Port{},
	}, nil
}

// Name returns the switch name ("vale0").
func (s *Switch) Name() string { return s.name }

// Config returns the switch's configuration.
func (s *Switch) Config() Config { return s.cfg }

// Counters returns the switch-wide counters (lock-free).
func (s *Switch) Counters() Counters { return s.stats.snapshot() }

func (s *Switch) getCtx() *fwdCtx {
	s.ctxMu.Lock()
	if n := len(s.ctxs); n > 0 {
		c := s.ctxs[n-1]
		s.ctxs = s.ctxs[:n-1]
		s.ctxMu.Unlock()
		return c
	}
	s.ctxMu.Unlock()
	c := newFwdCtx(s.cfg.BatchSize, s.cfg.MaxPorts)
	c.hdrLen = s.cfg.VnetHdrLen
	return c
}

func (s *Switch) putCtx(c *fwdCtx) {
	s.ctxMu.Lock()
	s.ctxs = append(s.ctxs, c)
	s.ctxMu.Unlock()
}

// forward is nm_bdg_preflush + nm_bdg_flush: it forwards the frames in
// slots [from, to) of a source ring that belongs to port src, in batches of
// at most BatchSize slots, and returns the first slot it did not consume
// (before to only when a fragment chain is incomplete). Frames that cannot
// be delivered are dropped and counted; forwarding never blocks on a
// destination.
func (s *Switch) forward(src *Port, slots []netmap.Slot, pool *netmap.Pool, from, to uint32) uint32 {
	c := s.getCtx()
	for from != to {
		s.mu.RLock()
		if src.detached.Load() {
			// The port left the switch while its user was sending:
			// consume and drop, as VALE does for a port without bridge.
			s.mu.RUnlock()
			from = to
			break
		}
		next := c.gather(slots, pool, from, to, s.cfg.BatchSize, s.cfg.MaxFrame)
		if len(c.frames) > 0 {
			c.passOne(s.lookup, src.idx, s.ports, s.reg.clock())
			if m := src.mirror; m != nil && m.RX {
				s.mirrorTo(c, src, m, c.all[:min(len(c.frames), len(c.all))], src.idx)
			}
			if len(src.taps) > 0 {
				d := c.delivery(c.all[:min(len(c.frames), len(c.all))], src.idx)
				for _, t := range src.taps {
					t.Tapped(d, false)
				}
			}
			s.passTwo(c, src.idx)
		}
		s.mu.RUnlock()
		src.stats.addIn(&c.st)
		s.stats.addIn(&c.st)
		if next == from {
			break // an incomplete chain: wait for the user
		}
		from = next
	}
	s.putCtx(c)
	return from
}

// passTwo visits each destination once: the touched ones with their
// unicast frames merged with the broadcast list and (unless the port is
// known-only) the unknown-unicast list, then (if there were any) every
// other receiving port with the broadcast and unknown-unicast lists, or a
// known-only port with the broadcast list alone.
func (s *Switch) passTwo(c *fwdCtx, src uint16) {
	for _, d := range c.touched {
		p := s.ports[d]
		order := c.merge(c.heads[d], !p.knownOnly)
		c.heads[d] = listDone
		s.deliverTo(c, p, order, src)
	}
	if c.bcHead >= 0 || c.unHead >= 0 {
		flood := c.flattenFlood()
		bcast, bcastDone := flood, c.unHead < 0
		for _, d := range s.active {
			if d == src || c.heads[d] == listDone {
				continue
			}
			p := s.ports[d]
			order := flood
			if p.knownOnly {
				if !bcastDone {
					bcast, bcastDone = c.flattenBroadcast(), true
				}
				order = bcast
			}
			if len(order) == 0 {
				continue
			}
			s.deliverTo(c, p, order, src)
		}
	}
	c.resetLists()
}

func (s *Switch) deliverTo(c *fwdCtx, p *Port, order []int32, src uint16) {
	if c.trace != nil {
		s.traceTo(c, p, order, src)
		return
	}
	if p == nil || !p.on {
		// Attached but not receiving (nobody has the port open): VALE
		// skips such a port; count it.
		c.st.drops[DropNoDest] += uint64(len(order))
		return
	}
	var nf int
	var nb uint64
	switch {
	case p.deliver != nil:
		nf = p.deliver.Deliver(c.delivery(order, src))
		if nf < 0 {
			nf = 0
		} else if nf > len(order) {
			nf = len(order)
		}
		for _, fi := range order[:nf] {
			nb += uint64(c.frames[fi].Len)
		}
	case len(p.rx) > 0:
		k := p.rx[int(src)%len(p.rx)]
		nf, nb = deliverRing(k, c.frames, c.bufs, order, c.maxLen, &c.sink)
	case len(p.tx) > 0:
		w := p.tx[int(src)%len(p.tx)]
		nf, nb = w.deliver(c.frames, c.bufs, order, c.maxLen)
	}
	drops := uint64(len(order) - nf)
	p.stats.addOut(uint64(nf), nb, drops)
	s.stats.addOut(uint64(nf), nb, drops)
	if m := p.mirror; m != nil && m.TX && nf > 0 {
		s.mirrorTo(c, p, m, order[:nf], src)
	}
	if len(p.taps) > 0 {
		if nf > 0 {
			d := c.delivery(order[:nf], src)
			for _, t := range p.taps {
				t.Tapped(d, true)
			}
		}
		if nf < len(order) {
			d := c.delivery(order[nf:], src)
			for _, t := range p.taps {
				if dt, ok := t.(DropTap); ok {
					dt.TappedDropped(d)
				}
			}
		}
	}
}

// Tap receives the frames of a port for a capture: with tx false, every frame the switch
// received from the port, with the lookup's decision in Frame.Dst (DstDrop and DstRefused
// for the ones it dropped); with tx true, every frame the switch handed to the port (that
// its ring or Deliverer accepted). Tapped runs on the forwarding path under the switch's
// shared lock and the Delivery is valid only during the call: it copies what it keeps and
// never blocks.
type Tap interface {
	Tapped(d *Delivery, tx bool)
}

// DropTap is a Tap that also takes the frames the port refused (its ring or Deliverer had
// no room: DropNoSpace), after Tapped, under the same rules.
type DropTap interface {
	Tap
	TappedDropped(d *Delivery)
}

// AddTap adds t to the port's taps (by its name within the switch); the returned remove
// takes it off again (idempotent). Both take effect from the next batch; several taps of
// one port each get every frame.
func (s *Switch) AddTap(port string, t Tap) (remove func(), err error) {
	if t == nil {
		return nil, fmt.Errorf("add tap to %s: nil tap: %w", JoinName(s.name, port), ErrInvalid)
	}
	var p *Port
	if err := s.setPort(port, "add tap to", func(q *Port) {
		p = q
		q.taps = append(slices.Clip(q.taps), t)
	}); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.reg.nm.Lock()
			defer s.reg.nm.Unlock()
			s.mu.Lock()
			defer s.mu.Unlock()
			if i := slices.Index(p.taps, t); i >= 0 {
				p.taps = slices.Delete(slices.Clone(p.taps), i, i+1)
			}
		})
	}, nil
}

// Mirror sends copies of a port's frames to a monitor port of the same
// switch: RX, every frame the switch receives from the port (before the
// lookup's decision: dropped ones too); TX, every frame the switch hands
// to the port (that its ring or deliverer accepted). Monitor is the
// monitor's port name (the part after ':'); while no such port is attached
// and receiving, copies are dropped and counted as the monitor's
// no-destination, and when the monitor's ring is full as its queue-full:
// mirroring never blocks the mirrored port. The copies count as the
// monitor's Out. A frame the monitor itself sent is not copied back to it.
type Mirror struct {
	Monitor string
	RX, TX  bool
}

// SetMirror sets (nil: removes) the mirror of a port; it takes effect from
// the next batch. The monitor need not exist yet.
func (s *Switch) SetMirror(port string, m *Mirror) error {
	m, err := checkMirror(JoinName(s.name, port), port, m)
	if err != nil {
		return fmt.Errorf("set mirror of %w", err)
	}
	return s.setPort(port, "set mirror of", func(p *Port) { p.mirror = m })
}

// checkMirror validates port's mirror m (full is the port's "switch:port"
// name) and returns the port's copy of it: nil when m is nil or copies no
// direction.
func checkMirror(full, port string, m *Mirror) (*Mirror, error) {
	if m == nil {
		return nil, nil
	}
	if m.Monitor == "" || m.Monitor == port {
		return nil, fmt.Errorf("%s: monitor %q: want another port of the switch: %w", full, m.Monitor, ErrInvalid)
	}
	if !m.RX && !m.TX {
		return nil, nil
	}
	c := *m
	return &c, nil
}

// setPort changes a port (by its name within the switch) under NMG_LOCK and
// the exclusive lock, so the change takes effect from the next batch.
func (s *Switch) setPort(port, what string, f func(*Port)) error {
	s.reg.nm.Lock()
	defer s.reg.nm.Unlock()
	p, ok := s.byName[port]
	if !ok {
		return fmt.Errorf("%s %s: %w", what, JoinName(s.name, port), ErrNoPort)
	}
	s.mu.Lock()
	f(p)
	s.mu.Unlock()
	return nil
}

// SetKnownOnly marks a port (by its name within the switch) known-only, or
// clears the mark; it takes effect from the next batch. A known-only port
// receives the unicast frames the lookup sends to it and broadcast and
// multicast (DstBroadcast), never unknown unicast (DstUnknown): a pod on
// it cannot see other pods' unicast by making the switch forget their
// addresses (or before the switch has learned them). Other ports still get
// unknown unicast flooded, as in VALE. The mark goes with the port: a port
// attached later at the same index starts with Config.KnownOnly.
func (s *Switch) SetKnownOnly(port string, on bool) error {
	return s.setPort(port, "set known-only", func(p *Port) { p.knownOnly = on })
}

// mirrorTo copies frames (order) of port p's mirror m to its monitor.
// Shared lock held.
func (s *Switch) mirrorTo(c *fwdCtx, p *Port, m *Mirror, order []int32, src uint16) {
	mon := s.byName[m.Monitor]
	if mon == p || (mon != nil && mon.idx == src) {
		return
	}
	if mon == nil || !mon.on {
		if mon != nil {
			mon.stats.drops[DropNoDest].Add(uint64(len(order)))
		}
		s.stats.drops[DropNoDest].Add(uint64(len(order)))
		return
	}
	var nf int
	var nb uint64
	switch {
	case mon.deliver != nil:
		nf = min(max(mon.deliver.Deliver(c.delivery(order, src)), 0), len(order))
		for _, fi := range order[:nf] {
			nb += uint64(c.frames[fi].Len)
		}
	case len(mon.rx) > 0:
		nf, nb = deliverRing(mon.rx[int(src)%len(mon.rx)], c.frames, c.bufs, order, c.maxLen, &c.sink)
	case len(mon.tx) > 0:
		nf, nb = mon.tx[int(src)%len(mon.tx)].deliver(c.frames, c.bufs, order, c.maxLen)
	}
	drops := uint64(len(order) - nf)
	mon.stats.addOut(uint64(nf), nb, drops)
	s.stats.addOut(uint64(nf), nb, drops)
}

// addPort inserts p at the lowest free index. Called with NMG_LOCK held.
func (s *Switch) addPort(p *Port) error {
	if _, ok := s.byName[p.name]; ok {
		return fmt.Errorf("attach port %s: %w", JoinName(s.name, p.name), ErrExists)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := -1
	for i, q := range s.ports {
		if q == nil {
			idx = i
			break
		}
	}
	if idx < 0 {
		return fmt.Errorf("attach port %s: switch has %d ports: %w", JoinName(s.name, p.name), s.cfg.MaxPorts, ErrSwitchFull)
	}
	p.sw = s
	p.idx = uint16(idx)
	p.knownOnly = s.cfg.KnownOnly
	s.ports[idx] = p
	s.byName[p.name] = p
	s.nports++
	s.rebuildActive()
	return nil
}

// removePort takes p out of the switch: after it returns no forwarding
// pass sees p (the exclusive lock waited for the ones in flight), and the
// lookup has forgotten its index. Called with NMG_LOCK held.
func (s *Switch) removePort(p *Port) {
	s.mu.Lock()
	p.detached.Store(true)
	p.on = false
	s.ports[p.idx] = nil
	delete(s.byName, p.name)
	s.nports--
	s.rebuildActive()
	s.lookup.PortDetached(p.idx)
	if s.lookup != Lookup(s.learning) && s.learning != nil {
		s.learning.PortDetached(p.idx)
	}
	s.mu.Unlock()
}

// setOn enables or disables delivery to p (netmap_vp_reg). Called with
// NMG_LOCK held.
func (s *Switch) setOn(p *Port, on bool, rx []*netmap.Kring, tx []*txWriter) {
	s.mu.Lock()
	p.on = on
	if on {
		p.rx, p.tx = rx, tx
	} else {
		p.rx, p.tx = nil, nil
	}
	s.rebuildActive()
	s.mu.Unlock()
}

func (s *Switch) rebuildActive() {
	a := s.active[:0]
	for i, p := range s.ports {
		if p != nil && p.on {
			a = append(a, uint16(i))
		}
	}
	s.active = a
}

// SetLookup replaces the lookup (NETMAP_BDG_REGOPS); nil restores the
// default learning bridge. It waits for the batches in flight.
func (s *Switch) SetLookup(l Lookup) {
	s.reg.nm.Lock()
	defer s.reg.nm.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if l == nil {
		l = s.learning
	}
	s.lookup = l
}

// SetDeliverer installs (or with nil removes) the pass-two hook of a port.
func (s *Switch) SetDeliverer(port string, d Deliverer) error {
	return s.setPort(port, "set deliverer", func(p *Port) { p.deliver = d })
}

// Port returns the port with the given name (the part after ':').
func (s *Switch) Port(name string) (*Port, bool) {
	s.reg.nm.Lock()
	defer s.reg.nm.Unlock()
	p, ok := s.byName[name]
	return p, ok
}

// Ports lists the ports in index order.
func (s *Switch) Ports() []PortInfo {
	s.reg.nm.Lock()
	defer s.reg.nm.Unlock()
	return s.portsLocked()
}

func (s *Switch) portsLocked() []PortInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]PortInfo, 0, s.nports)
	for _, p := range s.ports {
		if p != nil {
			out = append(out, p.info())
		}
	}
	return out
}

// FDB returns the learning bridge's table (expired entries left out), or
// ENOTSUP-style ErrNotSupported when a custom lookup replaced it.
func (s *Switch) FDB() ([]FDBEntry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.learning == nil || s.lookup != Lookup(s.learning) && !wrapsLearning(s.lookup, s.learning) {
		return nil, fmt.Errorf("dump fdb of %s: custom lookup in use: %w", s.name, ErrNotSupported)
	}
	return s.learning.FDB().Entries(s.reg.clock()), nil
}

// AddStatic adds a static FDB entry mac → port (by port name).
func (s *Switch) AddStatic(mac net.HardwareAddr, port string) error {
	s.reg.nm.Lock()
	defer s.reg.nm.Unlock()
	p, ok := s.byName[port]
	if !ok {
		return fmt.Errorf("add static entry %v on %s: %w", mac, JoinName(s.name, port), ErrNoPort)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.learning.FDB().AddStatic(mac, p.idx)
}

// DeleteStatic removes the FDB entry for mac (static or learned).
func (s *Switch) DeleteStatic(mac net.HardwareAddr) error {
	s.reg.nm.Lock()
	defer s.reg.nm.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.learning.FDB().Delete(mac) {
		return fmt.Errorf("delete fdb entry %v on %s: %w", mac, s.name, ErrNoPort)
	}
	return nil
}

// Age removes expired learned entries and returns how many. The agent
// calls it periodically; forwarding ignores expired entries without it.
func (s *Switch) Age() int {
	if s.learning == nil {
		return 0
	}
	return s.learning.FDB().Expire(s.reg.clock())
}

// SwitchInfo describes a switch.
type SwitchInfo struct {
	Name     string
	Index    int // NETMAP_BDG_LIST's bridge index
	Config   Config
	Held     bool // created by CreateSwitch; survives without ports
	Ports    []PortInfo
	Counters Counters
}

func (s *Switch) infoLocked() SwitchInfo {
	return SwitchInfo{Name: s.name, Index: s.slot, Config: s.cfg, Held: s.held, Ports: s.portsLocked(), Counters: s.stats.snapshot()}
}

func sortInfos(in []SwitchInfo) {
	sort.Slice(in, func(i, j int) bool { return in[i].Name < in[j].Name })
}

// Learning returns the switch's default learning lookup (the one SetLookup(nil)
// restores), for a Lookup that wraps it (see LearningWrapper).
func (s *Switch) Learning() *Learning { return s.learning }

// LearningWrapper is implemented by a Lookup that filters frames and hands
// the rest to the switch's own learning lookup: FDB keeps dumping the table
// while it is installed. The switch still tells the learning lookup about
// detached ports itself.
type LearningWrapper interface {
	Lookup
	WrappedLearning() *Learning
}

func wrapsLearning(lk Lookup, l *Learning) bool {
	w, ok := lk.(LearningWrapper)
	return ok && w.WrappedLearning() == l
}
