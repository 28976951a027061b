package dataplane

import (
	"fmt"
	"syscall"

	"github.com/epair-cni/epair/internal/appport"
	"github.com/epair-cni/epair/pkg/nmport"
	"github.com/epair-cni/epair/pkg/vale"
)

// ServeNetmap serves netmap ports of the dataplane's switches to
// applications on addr (a socket path, or "@name" for an abstract socket in
// the caller's network namespace); see internal/appport. A registration may
// name an ephemeral port, a pipe or a copy monitor on one of the switches,
// never create a switch; the pods' and host ports themselves are owned by
// their switch and refused (EBUSY) by netmap. o.Authorize, if set, is asked
// after that check. The server is closed by Close, before the switches go.
func (d *Dataplane) ServeNetmap(addr string, o appport.Options) (*appport.Server, error) {
	inner := o.Authorize
	o.Authorize = func(r *nmport.Request) error {
		sw, pn, err := vale.ParseName(r.Name)
		if err != nil {
			return fmt.Errorf("register %s: %w", r.Name, err)
		}
		d.mu.Lock()
		_, ok := d.switches[sw]
		closed := d.closed
		owner := d.appPortOwnerLocked(sw, pn)
		d.mu.Unlock()
		switch {
		case closed:
			return fmt.Errorf("register %s: the dataplane is closing: %w", r.Name, syscall.ENXIO)
		case !ok:
			return fmt.Errorf("register %s: no switch %q on this node: %w", r.Name, sw, syscall.ENOENT)
		case owner != "":
			// Neither the port nor its pipes or monitors: they are the pod's alone.
			return fmt.Errorf("register %s: an application port of pod %s: %w", r.Name, owner, syscall.EACCES)
		case reservedAppPortName(pn):
			// Nor a name one may get later: taking it first would keep that pod from starting.
			return fmt.Errorf("register %s: names nm<hex digits> are reserved for pods' application ports: %w", r.Name, syscall.EACCES)
		}
		if inner != nil {
			return inner(r)
		}
		return nil
	}
	innerOpen := o.OnOpen
	o.OnOpen = func(adapter string) error {
		if err := d.admitAppPort(adapter); err != nil {
			return err
		}
		if innerOpen != nil {
			return innerOpen(adapter)
		}
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("serve netmap on %s: %w", addr, ErrClosed)
	}
	srv, err := appport.Listen(addr, d.nm, o)
	if err != nil {
		return nil, err
	}
	d.appServers = append(d.appServers, srv)
	return srv, nil
}

// reservedAppPortName reports whether pn has the form of a pod's application port's switch
// name: "nm" and 4 to 10 lower-case hex digits (see internal/agent's appPortIdentity).
func reservedAppPortName(pn string) bool {
	if len(pn) < 6 || len(pn) > 12 || pn[:2] != "nm" {
		return false
	}
	for _, c := range []byte(pn[2:]) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// appPortOwnerLocked names the pod whose application port is port pn of switch sw, ""
// when it is none's (d.mu held).
func (d *Dataplane) appPortOwnerLocked(sw, pn string) string {
	for _, p := range d.podNetmaps {
		if p.p.sw.cfg.Name == sw && p.byPort[pn] != nil {
			if p.p.id.pod != "" {
				return p.p.id.pod
			}
			return p.p.owner
		}
	}
	return ""
}

// closeAppServers ends every application's registration (Close, before the
// switches are destroyed).
func (d *Dataplane) closeAppServers() error {
	d.mu.Lock()
	srvs := d.appServers
	d.appServers = nil
	for k, pn := range d.podNetmaps {
		srvs = append(srvs, pn.srv)
		delete(d.podNetmaps, k)
	}
	d.mu.Unlock()
	var first error
	for _, s := range srvs {
		if err := s.Close(); err != nil && first == nil {
			first = fmt.Errorf("close netmap socket %s: %w", s.Addr(), err)
		}
	}
	return first
}

// admitAppPort lets an application's VALE port send through its switch's
// lookup (pod and host ports are admitted by attach; anything else is
// dropped). It learns its source MACs like the host port; it cannot take a
// MAC that is a static entry (a pod's or the gateway's). Pipes and monitors
// are not switch ports and need nothing. The vale lookup forgets the port
// when it leaves the switch (PortDetached).
func (d *Dataplane) admitAppPort(adapter string) error {
	sw, pn, err := vale.ParseName(adapter)
	if err != nil {
		return nil // a pipe or a monitor
	}
	d.mu.Lock()
	s, ok := d.switches[sw]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("register %s: no switch %q on this node: %w", adapter, sw, syscall.ENOENT)
	}
	p, ok := s.sw.Port(pn)
	if !ok {
		return nil
	}
	s.guard.set(p.Index(), &portSec{learn: true})
	return nil
}
