package dataplane

import (
	"fmt"
	"sync"

	"github.com/epair-cni/epair/pkg/fastpath"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
)

// FastPathInfo is what the kernel fast path (Config.FastPath, pkg/fastpath) does for a
// pod port: whether the frames the pod sends (Source) and the frames sent to it (Dest)
// may bypass the switch, and the frames and bytes it moved from the pod (In) and to it
// (Out); for a switch's host port, the node's frames it moved to pods (In) and the pods'
// frames it moved into the node's stack (Out). They are not in PortInfo.Counters, which
// count what the switch saw. Error is why the fast path could not take the port's last
// change (its frames then cross the switch).
type FastPathInfo struct {
	Source, Dest bool
	Error        string
	fastpath.Stats
}

// fastLater puts a new port on the fast path in the background: that waits for RCU grace
// periods (the tc link, the order of the maps' changes), which a pod's ADD should not
// wait for; until then the port's frames cross the switch. Close and RemoveSwitch wait
// for it (d.ops, s.ops), and a detach meanwhile wins (fastGone).
func (d *Dataplane) fastLater(p *Port) {
	if !p.fastOn {
		return
	}
	d.ops.Add(1)
	p.sw.ops.Add(1)
	go func() {
		defer func() {
			p.sw.ops.Done()
			d.ops.Done()
		}()
		_ = d.fastSync(p) // a failure is the port's FastPathInfo.Error
	}()
}

// newFastPath is fastpath.New; tests make it fail.
var newFastPath = fastpath.New

// startFastPath creates the fast path in the dataplane's namespace (Config.FastPath).
func (d *Dataplane) startFastPath() error {
	return d.inNS(func() error {
		f, err := newFastPath()
		if err != nil {
			return fmt.Errorf("fast path: %w", err)
		}
		d.fast = f
		return nil
	})
}

// fastFilter attaches the fast path's socket filter to an offload port's socket, so
// that the frames the fast path moves never reach the switch; the port then takes
// part in the fast path (fastSync).
func (d *Dataplane) fastFilter(p *Port) error {
	if d.fast == nil || !p.sw.cfg.Offload {
		return nil
	}
	s, ok := p.opened.Port.(*afpacket.Socket)
	if !ok {
		return nil // not a packet socket: the fast path's filter cannot keep frames from it
	}
	if err := s.AttachFilter(d.fast.Filter().FD()); err != nil {
		return err
	}
	p.fastOn = true
	return nil
}

// fastEligible says which of p's frames may bypass the switch now: none while a
// capture watches the port; the pod's frames unless a mirror copies them (RX); the
// frames to the pod unless a mirror copies them (TX) or its output queue shapes them
// (a rate, or a discipline other than the classic one).
func (p *Port) fastEligible() (src, dst bool) {
	if p.captures.Load() > 0 || len(p.id.mac) != 6 {
		return false, false
	}
	p.polMu.Lock()
	pol := p.policy
	p.polMu.Unlock()
	src = !pol.Mirror.RX
	dst = !pol.Mirror.TX && pol.RateBitsPerSec == 0 && pol.RatePktsPerSec == 0 && pol.Discipline == DiscClassic
	return src, dst
}

// fastState is what the fast path was last told of one port (a pod port, or a switch's
// host port) and why it refused the last change. mu also orders the changes: set and
// remove hold it while they call the fast path, so the record is what the fast path
// has. gone: the port left the fast path for good.
type fastState struct {
	mu       sync.Mutex
	src, dst bool
	err      string
	gone     bool
}

// set tells the fast path the port mk describes (mk runs under mu) and records it,
// unless the port has left the fast path.
func (st *fastState) set(d *Dataplane, mk func() fastpath.Port) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone {
		return nil
	}
	fp := mk()
	if err := d.inNS(func() error { return d.fast.Set(fp) }); err != nil {
		st.err = err.Error()
		return err
	}
	st.src, st.dst, st.err = fp.Source, fp.Dest, ""
	return nil
}

// remove takes the port of ifindex out of the fast path for good.
func (st *fastState) remove(d *Dataplane, ifindex int) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone {
		return nil
	}
	st.gone, st.src, st.dst = true, false, false
	return d.fast.Remove(ifindex)
}

// info is the port's FastPathInfo.
func (st *fastState) info(d *Dataplane, ifindex int) FastPathInfo {
	st.mu.Lock()
	fi := FastPathInfo{Source: st.src, Dest: st.dst, Error: st.err}
	st.mu.Unlock()
	fi.Stats, _ = d.fast.Stats(ifindex) // a lookup in an array the fast path owns: it does not fail
	return fi
}

// fastSync puts p's present eligibility into the fast path. It is called when the
// port is plugged and after whatever changes its eligibility (policy, captures).
func (d *Dataplane) fastSync(p *Port) error {
	if !p.fastOn {
		return nil
	}
	return p.fast.set(d, func() fastpath.Port {
		src, dst := p.fastEligible()
		fp := fastpath.Port{Ifindex: p.ifindex, Switch: p.sw.fastID, MAC: p.id.mac, Source: src, Dest: dst}
		for _, a := range p.id.ips {
			switch {
			case a.Is4() && !fp.IPv4.IsValid():
				fp.IPv4 = a
			case a.Is6() && !a.Is4In6() && !a.IsLinkLocalUnicast() && !fp.IPv6.IsValid():
				fp.IPv6 = a
			}
		}
		return fp
	})
}

// fastRemove takes p out of the fast path for good (before it leaves the switch):
// from then on the switch sees all its frames.
func (d *Dataplane) fastRemove(p *Port) error {
	if !p.fastOn {
		return nil
	}
	return p.fast.remove(d, p.ifindex)
}

// fastInfo is p's FastPathInfo.
func (d *Dataplane) fastInfo(p *Port) FastPathInfo {
	if !p.fastOn {
		return FastPathInfo{}
	}
	return p.fast.info(d, p.ifindex)
}

// fastHostSync puts a switch's host port (its TAP) on the fast path, or takes it off while
// a capture watches it: with it, the pods' frames to the gateway MAC go into the TAP's
// ingress (the node's stack) and the node's frames to the pods go out of the TAP's
// egress to their veths, without the switch; everything the fast path does not take
// (ARP, neighbour discovery, broadcast, a pod port the switch must see) still crosses it.
func (d *Dataplane) fastHostSync(s *swState) error {
	if d.fast == nil || !s.cfg.Offload {
		return nil
	}
	return s.fastHost.set(d, func() fastpath.Port {
		on := s.hostCaptures.Load() == 0
		return fastpath.Port{Ifindex: s.tapIndex, Switch: s.fastID, MAC: s.tapMAC, Host: true, Source: on, Dest: on}
	})
}

// fastHostInfo is FastPathInfo for a switch's host port: In counts the node's frames the
// fast path moved to pods, Out the pods' frames it moved into the node's stack.
func (d *Dataplane) fastHostInfo(s *swState) FastPathInfo {
	if d.fast == nil || !s.cfg.Offload {
		return FastPathInfo{}
	}
	return s.fastHost.info(d, s.tapIndex)
}

// fastHostRemove takes a switch's host port out of the fast path for good (before the
// TAP goes).
func (d *Dataplane) fastHostRemove(s *swState) error {
	if d.fast == nil {
		return nil
	}
	return s.fastHost.remove(d, s.tapIndex)
}
