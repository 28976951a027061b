package dataplane

import (
	"fmt"

	"github.com/epair-cni/epair/pkg/fastpath"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
)

// FastPathInfo is what the kernel fast path (Config.FastPath, pkg/fastpath) does for a
// pod port (or a switch's host port: Dataplane.fastHostInfo): whether the frames the pod sends (Source) and the frames sent to it (Dest)
// may bypass the switch, and the frames and bytes it moved from the pod (In) and to it
// (Out). They are not in PortInfo.Counters, which count what the switch saw. Error is
// why the fast path could not take the port's last change (its frames then cross the
// switch).
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

// fastSync puts p's present eligibility into the fast path. It is called when the
// port is plugged and after whatever changes its eligibility (policy, captures).
func (d *Dataplane) fastSync(p *Port) error {
	return p.withFast(func() error { return d.fastSet(p) })
}

// fastSet is fastSync under p.fastMu.
func (d *Dataplane) fastSet(p *Port) error {
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
	if err := d.inNS(func() error { return d.fast.Set(fp) }); err != nil {
		p.fastErr = err.Error()
		return err
	}
	p.fastSrc, p.fastDst, p.fastErr = src, dst, ""
	return nil
}

// fastRemove takes p out of the fast path for good (before it leaves the switch):
// from then on the switch sees all its frames.
func (d *Dataplane) fastRemove(p *Port) error {
	return p.withFast(func() error {
		p.fastGone, p.fastSrc, p.fastDst = true, false, false
		return d.fast.Remove(p.ifindex)
	})
}

// withFast runs f under p.fastMu if p takes part in the fast path and has not left it.
func (p *Port) withFast(f func() error) error {
	if !p.fastOn {
		return nil
	}
	p.fastMu.Lock()
	defer p.fastMu.Unlock()
	if p.fastGone {
		return nil
	}
	return f()
}

// fastInfo is p's FastPathInfo.
func (d *Dataplane) fastInfo(p *Port) FastPathInfo {
	if !p.fastOn {
		return FastPathInfo{}
	}
	p.fastMu.Lock()
	fi := FastPathInfo{Source: p.fastSrc, Dest: p.fastDst, Error: p.fastErr}
	p.fastMu.Unlock()
	fi.Stats, _ = d.fast.Stats(p.ifindex) // a lookup in an array the fast path owns: it does not fail
	return fi
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
	s.fastHostMu.Lock()
	defer s.fastHostMu.Unlock()
	if s.fastHostGone {
		return nil
	}
	on := s.hostCaptures.Load() == 0
	fp := fastpath.Port{Ifindex: s.tapIndex, Switch: s.fastID, MAC: s.tapMAC, Host: true, Source: on, Dest: on}
	if err := d.inNS(func() error { return d.fast.Set(fp) }); err != nil {
		s.fastHostErr = err.Error()
		return err
	}
	s.fastHostOn, s.fastHostErr = on, ""
	return nil
}

// fastHostInfo is FastPathInfo for a switch's host port: In counts the node's frames the
// fast path moved to pods, Out the pods' frames it moved into the node's stack.
func (d *Dataplane) fastHostInfo(s *swState) FastPathInfo {
	if d.fast == nil || !s.cfg.Offload {
		return FastPathInfo{}
	}
	s.fastHostMu.Lock()
	fi := FastPathInfo{Source: s.fastHostOn, Dest: s.fastHostOn, Error: s.fastHostErr}
	s.fastHostMu.Unlock()
	fi.Stats, _ = d.fast.Stats(s.tapIndex) // a lookup in an array the fast path owns: it does not fail
	return fi
}

// fastHostRemove takes a switch's host port out of the fast path for good (before the
// TAP goes).
func (d *Dataplane) fastHostRemove(s *swState) error {
	if d.fast == nil {
		return nil
	}
	s.fastHostMu.Lock()
	defer s.fastHostMu.Unlock()
	s.fastHostGone, s.fastHostOn = true, false
	return d.fast.Remove(s.tapIndex)
}
