package vale

import (
	"fmt"
)

// Prober is a Lookup that can decide for frames without changing anything: the same
// decision Lookup would take now, but nothing learned, no token taken, nothing counted.
// Switch.Trace needs it. Probe may run concurrently with Lookup for the same source port.
type Prober interface {
	Probe(src uint16, frames []Frame, now int64)
}

// TraceDeliverer is a Deliverer that can say what Deliver would do with the one frame of
// d without doing it (Switch.Trace). It runs under the switch's shared lock like Deliver.
type TraceDeliverer interface {
	TraceDeliver(d *Delivery) DeliverTrace
}

// DeliverTrace is what a destination would do with a frame.
type DeliverTrace struct {
	// Accepted: the frame would be taken (queued or written to a ring).
	Accepted bool
	// Drop names the reason when it would not be (a DropReason's name, or the
	// Deliverer's own, such as "queue-full").
	Drop string
	// Detail says what the decision was made of (queue state, rate, ring space).
	Detail string
}

// Trace is what Switch.Trace found the switch would do with one frame.
type Trace struct {
	// Source is the port the frame came from (its name within the switch).
	Source string
	// Drop names the reason when the frame is dropped before any destination is chosen:
	// "bad-frame", "too-long", "refused" (with Reason, the lookup's code) or
	// "no-destination"; "" when it goes on to Out.
	Drop string
	// Dst is the lookup's decision (a port index, DstUnknown, DstBroadcast, DstRefused,
	// DstDrop); meaningless when Drop is "bad-frame" or "too-long".
	Dst uint16
	// Reason is the lookup's code of why it refused the frame (Frame.Reason).
	Reason uint8
	// DstPort names the port Dst indexes, when it is one.
	DstPort string
	// Out lists the destinations pass two would hand the frame to, in its order.
	Out []TraceOut
}

// TraceOut is one destination of a traced frame.
type TraceOut struct {
	Port string // name within the switch
	DeliverTrace
}

// Delivered reports whether any destination would take the frame.
func (t *Trace) Delivered() bool {
	for _, o := range t.Out {
		if o.Accepted {
			return true
		}
	}
	return false
}

// Trace runs frame (as port would send it: starting with the switch's virtio-net header
// when it has one) through the switch's forwarding code without forwarding it: the
// frame checks of gather, the lookup's decision (through Prober, which changes nothing),
// pass one's threading and pass two's choice of destinations, where each destination says
// what it would do (TraceDeliverer for a Deliverer, ring space for a ring). Nothing is
// delivered, learned or counted, and real traffic goes on meanwhile, so a real frame sent
// next meets the same decisions unless the state changes in between (a queue drains, an
// address is learned).
func (s *Switch) Trace(port string, frame []byte) (Trace, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	src, ok := s.byNameShared(port)
	if !ok {
		return Trace{}, fmt.Errorf("trace %s: no port %q: %w", s.name, port, ErrNoPort)
	}
	pr, ok := s.lookup.(Prober)
	if !ok {
		return Trace{}, fmt.Errorf("trace %s: lookup %T cannot be traced (not a Prober): %w", s.name, s.lookup, ErrNotSupported)
	}
	t := Trace{Source: port, Dst: DstDrop}
	c := s.getCtx()
	defer s.putCtx(c)
	c.frames = c.frames[:0]
	if r, drop := c.frameDrop(len(frame), len(frame), s.cfg.MaxFrame); drop {
		t.Drop = r.String()
		return t, nil
	}
	c.bufs[0] = frame
	c.frames = append(c.frames, Frame{Data: frame, Len: int32(len(frame)), next: -1, frags: 1})
	c.maxLen = int32(len(frame))
	c.st = batchStats{}
	pr.Probe(src.idx, c.frames, s.reg.clock())
	f := &c.frames[0]
	t.Dst, t.Reason = f.Dst, f.Reason
	if int(f.Dst) < len(s.ports) && s.ports[f.Dst] != nil {
		t.DstPort = s.ports[f.Dst].name
	}
	c.thread(src.idx, s.ports)
	switch {
	case c.st.drops[DropRefused] > 0:
		t.Drop = DropRefused.String()
	case c.st.drops[DropNoDest] > 0:
		t.Drop = DropNoDest.String()
	default:
		c.trace = &t
		s.passTwo(c, src.idx)
		c.trace = nil
	}
	c.bufs[0] = nil
	c.frames = c.frames[:0]
	return t, nil
}

// byNameShared finds a port by name with s.mu held (the names change only under it and the
// registry's lock, both exclusive).
func (s *Switch) byNameShared(name string) (*Port, bool) {
	for _, p := range s.ports {
		if p != nil && p.name == name && !p.detached.Load() {
			return p, true
		}
	}
	return nil, false
}

// traceTo records what pass two would do with the traced frame for destination p (deliverTo's
// cases, in its order).
func (s *Switch) traceTo(c *fwdCtx, p *Port, order []int32, src uint16) {
	o := TraceOut{Port: p.name}
	switch {
	case !p.on:
		o.Drop, o.Detail = DropNoDest.String(), "the port is attached but not receiving (nobody has it open)"
	case p.deliver != nil:
		if td, ok := p.deliver.(TraceDeliverer); ok {
			o.DeliverTrace = td.TraceDeliver(c.delivery(order, src))
		} else {
			o.Accepted, o.Detail = true, fmt.Sprintf("handed to the port's %T", p.deliver)
		}
	case len(p.rx) > 0:
		k := p.rx[int(src)%len(p.rx)]
		need := slotsFor(c.frames[order[0]].Len, int32(k.Ring.BufSize))
		k.QLock.Lock()
		stopped, space := k.Stopped(), int32(k.Space())
		k.QLock.Unlock()
		o.traceRing("RX ring", int(src)%len(p.rx), stopped, space, need)
	case len(p.tx) > 0:
		i := int(src) % len(p.tx)
		w := p.tx[i]
		w.mu.Lock()
		stopped := w.k.TryGet() != nil
		var space int32
		if !stopped {
			space = int32(w.k.Ring.Space())
			w.k.Put()
		}
		need := slotsFor(c.frames[order[0]].Len, int32(w.k.Ring.BufSize))
		w.mu.Unlock()
		o.traceRing("TX ring", i, stopped, space, need)
		if !o.Accepted && !stopped {
			o.Detail += " (completed slots not yet reclaimed would be reclaimed first)"
		}
	default:
		o.Drop, o.Detail = DropNoDest.String(), "the port has no rings"
	}
	c.trace.Out = append(c.trace.Out, o)
}

func (o *TraceOut) traceRing(what string, i int, stopped bool, space, need int32) {
	switch {
	case stopped:
		o.Drop, o.Detail = DropNoSpace.String(), fmt.Sprintf("%s %d is stopped", what, i)
	case need > space:
		o.Drop, o.Detail = DropNoSpace.String(), fmt.Sprintf("%s %d has %d free slots, the frame needs %d", what, i, space, need)
	default:
		o.Accepted, o.Detail = true, fmt.Sprintf("%s %d has %d free slots", what, i, space)
	}
}
