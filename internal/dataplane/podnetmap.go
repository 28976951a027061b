package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"

	"github.com/epair-cni/epair/internal/appport"
	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/ifcore"
	"github.com/epair-cni/epair/pkg/limits"
	"github.com/epair-cni/epair/pkg/nmport"
	"github.com/epair-cni/epair/pkg/vale"
)

// KindApp is a pod's application port: a netmap port of the switch that an
// application in the pod registers through the pod's netmap socket.
const KindApp PortKind = "app"

// PodNetmapSocket is the abstract unix socket the agent serves a pod's
// application ports on, inside the pod's own network namespace: abstract
// sockets are scoped to their network namespace, so only the pod reaches
// it, and it needs no hostPath.
const PodNetmapSocket = "@epair-netmap"

// MaxAppPorts is the most application ports one pod interface may have.
const MaxAppPorts = limits.MaxNetmapPorts

// AppPort is one netmap port a pod asked for.
type AppPort struct {
	// Name is the pod's name for it: the pod registers "<switch>:<Name>"
	// (with netmap's suffixes for one ring, a pipe or a monitor).
	Name string
	// Port is its VALE port on the switch, unique on the node.
	Port string
	// MAC and Addrs are its identity: the switch pins MAC to the port, and
	// anti-spoofing (the pod's policy) holds its frames to MAC and the
	// addresses, which the registration's response tells the application.
	MAC   net.HardwareAddr
	Addrs []nmport.Address
}

func (a *AppPort) validate() error {
	if err := vale.ValidatePortName(a.Name); err != nil || strings.HasSuffix(a.Name, "^") {
		return fmt.Errorf("application port name %q: want 1-%d bytes of [A-Za-z0-9_.-]: %w", a.Name, vale.MaxNameLen, ErrInvalid)
	}
	if err := vale.ValidatePortName(a.Port); err != nil || strings.HasSuffix(a.Port, "^") {
		return fmt.Errorf("application port %s: switch port name %q: %w", a.Name, a.Port, ErrInvalid)
	}
	if len(a.MAC) != 6 || a.MAC[0]&1 != 0 || slices.Equal(a.MAC, make(net.HardwareAddr, 6)) {
		return fmt.Errorf("application port %s: MAC %v: want a 6-byte unicast address: %w", a.Name, a.MAC, ErrInvalid)
	}
	if len(a.Addrs) == 0 || len(a.Addrs) > 2 {
		return fmt.Errorf("application port %s: %d addresses: want 1 or 2 (one per family): %w", a.Name, len(a.Addrs), ErrInvalid)
	}
	for _, ad := range a.Addrs {
		if !ad.Prefix.IsValid() {
			return fmt.Errorf("application port %s: address %v: %w", a.Name, ad.Prefix, ErrInvalid)
		}
	}
	return nil
}

func (a *AppPort) ips() []netip.Addr {
	out := make([]netip.Addr, len(a.Addrs))
	for i, ad := range a.Addrs {
		out[i] = ad.Prefix.Addr()
	}
	return out
}

// podNetmap serves one pod port's application ports.
type podNetmap struct {
	srv    *appport.Server
	p      *Port
	ifName string // the pod's interface ("eth0"): it may monitor it
	byName map[string]*appPortState
	byPort map[string]*appPortState

	mu sync.Mutex // guards appPortState.open/vp
}

type appPortState struct {
	AppPort
	id      podIdentity
	refused refusedCounters
	open    bool
	vp      *vale.Port
}

// ServePodNetmap serves the application ports of the pod behind the pod
// port of host link hostIf on PodNetmapSocket in the pod's network
// namespace netnsPath. ifName is the pod's interface of that port (no
// application port may have its name). The pod may register its
// application ports by their Name, with netmap's ring, pipe and monitor
// suffixes: nothing else, so no pod can open, steal or watch another pod's
// port, and none can make ports of its own. An application port is admitted to the switch
// when registered: its MAC pinned to it, its frames held to its identity by
// the pod port's policy (anti-spoofing, storm control). The server goes
// with the pod port (DetachPort) or the dataplane (Close). A pod port has
// at most one: serving the same ports again does nothing (a retried
// attach), other ports replace the old ones.
func (d *Dataplane) ServePodNetmap(hostIf, netnsPath, ifName string, ports []AppPort, o appport.Options) error {
	what := "serve application ports of " + hostIf
	if len(ports) == 0 || len(ports) > MaxAppPorts {
		return fmt.Errorf("%s: %d ports, want 1-%d: %w", what, len(ports), MaxAppPorts, ErrInvalid)
	}
	d.mu.Lock()
	p, ok := d.byLink[hostIf]
	old := d.podNetmaps[hostIf]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: %w", what, ErrNoPort)
	}
	if old != nil {
		if old.p == p && old.ifName == ifName && old.same(ports) {
			return nil
		}
		if err := d.stopPodNetmap(hostIf); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	pn := &podNetmap{p: p, ifName: ifName, byName: map[string]*appPortState{}, byPort: map[string]*appPortState{}}
	for i := range ports {
		a := ports[i]
		if err := a.validate(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if full := vale.JoinName(p.sw.cfg.Name, a.Port); len(full) > vale.MaxNameLen {
			return fmt.Errorf("%s: application port %s: switch port name %s longer than %d bytes: %w", what, a.Name, full, vale.MaxNameLen, ErrInvalid)
		}
		if a.Name == ifName {
			return fmt.Errorf("%s: application port %q has the name of the pod's interface: %w", what, a.Name, ErrInvalid)
		}
		if pn.byName[a.Name] != nil || pn.byPort[a.Port] != nil {
			return fmt.Errorf("%s: application port %s (%s) named twice: %w", what, a.Name, a.Port, ErrInvalid)
		}
		if _, ok := p.sw.sw.Port(a.Port); ok {
			return fmt.Errorf("%s: switch port %s exists already: %w", what, vale.JoinName(p.sw.cfg.Name, a.Port), ErrBusy)
		}
		st := &appPortState{AppPort: a, id: podIdentity{mac: a.MAC, ips: a.ips(), pod: p.id.pod}}
		pn.byName[a.Name], pn.byPort[a.Port] = st, st
	}
	o.Authorize = pn.authorize
	o.OnOpen = pn.admit
	o.OnClose = pn.closed
	o.Identity = pn.identity
	o.Shape = pn.shape
	h, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("%s: open the pod's network namespace %s: %w", what, netnsPath, err)
	}
	defer h.Close()
	err = sys.InNetNS(h, netnsPath, func() error {
		pn.srv, err = appport.Listen(PodNetmapSocket, d.nm, o)
		return err
	})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			err = fmt.Errorf("%w (a process in the pod bound it first)", err)
		}
		return fmt.Errorf("%s in %s: %w", what, netnsPath, err)
	}
	d.mu.Lock()
	if d.closed || d.byLink[hostIf] != p || d.podNetmaps[hostIf] != nil {
		d.mu.Unlock()
		pn.srv.Close()
		return fmt.Errorf("%s: the port went or is served meanwhile: %w", what, ErrBusy)
	}
	d.podNetmaps[hostIf] = pn
	d.mu.Unlock()
	return nil
}

// same reports whether pn serves exactly ports.
func (pn *podNetmap) same(ports []AppPort) bool {
	if len(ports) != len(pn.byName) {
		return false
	}
	for _, a := range ports {
		st := pn.byName[a.Name]
		if st == nil || st.Port != a.Port || !slices.Equal(st.MAC, a.MAC) || !slices.Equal(st.Addrs, a.Addrs) {
			return false
		}
	}
	return true
}

// stopPodNetmap ends the application ports of pod port hostIf, if any.
func (d *Dataplane) stopPodNetmap(hostIf string) error {
	d.mu.Lock()
	pn := d.podNetmaps[hostIf]
	delete(d.podNetmaps, hostIf)
	d.mu.Unlock()
	if pn == nil {
		return nil
	}
	if err := pn.srv.Close(); err != nil {
		return fmt.Errorf("close application ports of %s: %w", hostIf, err)
	}
	return nil
}

// authorize lets the pod register its own application ports, their pipes
// and monitors, rewriting the pod's names into the switch's.
func (pn *podNetmap) authorize(r *nmport.Request) error {
	sw, name, err := vale.ParseName(r.Name)
	if err != nil {
		return fmt.Errorf("register %s: %w: %w", r.Name, err, syscall.EINVAL)
	}
	own := pn.p.sw.cfg.Name
	if sw != own {
		return fmt.Errorf("register %s: this pod's application ports are on switch %s: %w", r.Name, own, syscall.EACCES)
	}
	if st := pn.byName[name]; st != nil {
		r.Name = vale.JoinName(sw, st.Port)
		return nil
	}
	names := make([]string, 0, len(pn.byName))
	for n := range pn.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Errorf("register %s: this pod may open its application ports on %s (%s), their pipes and monitors, nothing else: %w",
		r.Name, own, strings.Join(names, ", "), syscall.EACCES)
}

// admit puts a registered application port into the switch's lookup: its
// MAC as a static entry, its security from the pod port's policy. Pipes
// and monitors are not switch ports and need nothing.
func (pn *podNetmap) admit(adapter string) error {
	_, name, err := vale.ParseName(adapter)
	if err != nil {
		return nil
	}
	st := pn.byPort[name]
	if st == nil {
		return nil
	}
	s := pn.p.sw
	vp, ok := s.sw.Port(name)
	if !ok {
		return fmt.Errorf("register %s: not on switch %s: %w", adapter, s.cfg.Name, syscall.ENXIO)
	}
	if err := s.sw.AddStatic(st.MAC, name); err != nil {
		if errors.Is(err, vale.ErrExists) {
			return fmt.Errorf("register %s: MAC %s is another port's: %w", adapter, st.MAC, syscall.EBUSY)
		}
		return fmt.Errorf("register %s: pin MAC %s: %w", adapter, st.MAC, err)
	}
	pn.p.polMu.Lock()
	pol := pn.p.policy
	pn.mu.Lock()
	st.open, st.vp = true, vp
	s.classes.set(vp.Index(), pol)
	s.guard.set(vp.Index(), newPodSec(st.id, pol, &st.refused))
	pn.mu.Unlock()
	pn.p.polMu.Unlock()
	return nil
}

// shape is a registered application port's receive rate: the pod port's
// (PortPolicy's rate, what may leave the switch toward the pod).
func (pn *podNetmap) shape(adapter string) *ifcore.Rate {
	if _, name, err := vale.ParseName(adapter); err != nil || pn.byPort[name] == nil {
		return nil
	}
	pn.p.polMu.Lock()
	defer pn.p.polMu.Unlock()
	return pn.p.policy.rate()
}

// setPolicy puts the application ports under pol, the pod port's new
// policy: the registered ones' security and priority class, and every
// registration's receive rate (p.polMu held).
func (pn *podNetmap) setPolicy(pol PortPolicy) error {
	pn.mu.Lock()
	for _, st := range pn.byPort {
		if st.open {
			pn.p.sw.classes.set(st.vp.Index(), pol)
			pn.p.sw.guard.set(st.vp.Index(), newPodSec(st.id, pol, &st.refused))
		}
	}
	pn.mu.Unlock()
	var errs []error
	for _, st := range pn.byPort {
		errs = append(errs, pn.srv.SetRate(vale.JoinName(pn.p.sw.cfg.Name, st.Port), pol.rate()))
	}
	return errors.Join(errs...)
}

// closed: the registration is ending. Its port leaves the switch next,
// which forgets its static entry and security (PortDetached); from now on
// setPolicy leaves its switch index alone.
func (pn *podNetmap) closed(adapter string) {
	_, name, err := vale.ParseName(adapter)
	if err != nil {
		return
	}
	pn.mu.Lock()
	if st := pn.byPort[name]; st != nil && st.vp != nil {
		pn.p.sw.classes.set(st.vp.Index(), PortPolicy{})
		st.open, st.vp = false, nil
	}
	pn.mu.Unlock()
}

func (pn *podNetmap) identity(adapter string) (net.HardwareAddr, []nmport.Address) {
	if _, name, err := vale.ParseName(adapter); err == nil {
		if st := pn.byPort[name]; st != nil {
			return st.MAC, st.Addrs
		}
	}
	return nil, nil
}

// appPortInfo describes the application ports of the pod ports on s
// (d.mu held): registered or not.
func (d *Dataplane) appPortInfos(s *swState) []PortInfo {
	var out []PortInfo
	for _, pn := range d.podNetmaps {
		if pn.p.sw != s {
			continue
		}
		pn.mu.Lock()
		for _, st := range pn.byPort {
			pi := PortInfo{Name: vale.JoinName(s.cfg.Name, st.Port), Switch: s.cfg.Name,
				Owner: pn.p.owner, Pod: pn.p.id.pod, Kind: KindApp, Index: -1, Backend: "netmap", Up: st.open,
				Refused: st.refused.snapshot(), PodMAC: st.MAC, PodIPs: st.ips()}
			if st.vp != nil {
				pi.Index, pi.Counters = int(st.vp.Index()), st.vp.Counters()
			}
			out = append(out, pi)
		}
		pn.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b PortInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}
