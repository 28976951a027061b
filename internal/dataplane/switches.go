package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/epair-cni/epair/internal/cleanup"
	"github.com/epair-cni/epair/pkg/vale"
)

// MaxSwitches bounds the switches a Dataplane runs at once: the configured
// ones and those added with AddSwitch (a configuration with more switches
// raises the bound to its own count). Each switch costs a TAP device, the
// goroutines of its host port and its tables; New sizes vale's registry
// for the bound (a slot per switch, nothing more until a switch exists).
const MaxSwitches = 64

// AddSwitch creates a switch and its host port while the dataplane runs, as New does for
// the configured ones: the VALE switch behind its port security, the TAP host port with
// the gateway addresses, the routes of the pod CIDRs, the gateway MAC's static FDB entry
// and, with Config.Masquerade, the switch's pod CIDRs and TAP in the nftables rules. The
// switch comes after the running ones in Switches, so it is the default switch of an
// AttachRequest without Switch only once every earlier switch is removed.
//
// sc is checked as Config.Validate checks a configured switch, and against the running
// switches: a name that runs already is ErrSwitchExists, a host port name that another
// switch uses is ErrInvalid, and so is a switch beyond MaxSwitches. On any error nothing
// is left behind. It waits for a switch change in flight (AddSwitch, RemoveSwitch);
// attaches and detaches on the other switches go on meanwhile. After Close it returns
// ErrClosed.
func (d *Dataplane) AddSwitch(sc SwitchConfig) (err error) {
	sc = cloneSwitchConfig(sc)
	if err := d.cfg.validateSwitch(&sc); err != nil {
		return fmt.Errorf("add switch: %w", err)
	}
	d.swMu.Lock()
	defer d.swMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("add switch %s: %w", sc.Name, ErrClosed)
	}
	if err := d.checkNewSwitchLocked(&sc); err != nil {
		d.mu.Unlock()
		return fmt.Errorf("add switch: %w", err)
	}
	running := d.switchConfigsLocked()
	d.ops.Add(1) // Close waits for the switch to be published or undone
	d.mu.Unlock()
	defer d.ops.Done()

	cl := cleanup.Make(nil)
	defer func() {
		if err != nil {
			_ = cl.Clean()
		}
	}()
	s, err := d.createSwitch(sc, &cl)
	if err != nil {
		return fmt.Errorf("add switch: %w", err)
	}
	if sc.Offload {
		if err := d.startRings(); err != nil {
			return fmt.Errorf("add switch %s: %w", sc.Name, err)
		}
	}
	if d.nft != nil {
		// install replaces the chain's rules: the running switches' and
		// this one's, and the running ones' alone again on an error.
		if err := d.nft.install(context.Background(), podNetOf(append(running, &s.cfg))); err != nil {
			return fmt.Errorf("add switch: switch %s: %w", sc.Name, err)
		}
		cl.Add(func() error { return d.nft.install(context.Background(), podNetOf(running)) })
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("add switch %s: %w", sc.Name, ErrClosed)
	}
	d.switches[sc.Name] = s
	d.order = append(d.order, sc.Name)
	cl.Release()
	return nil
}

// cloneSwitchConfig copies the slices of sc, so that the caller may reuse
// its own.
func cloneSwitchConfig(sc SwitchConfig) SwitchConfig {
	sc.HostPort.MAC = slices.Clone(sc.HostPort.MAC)
	sc.HostPort.Gateways = slices.Clone(sc.HostPort.Gateways)
	sc.HostPort.PodCIDRs = slices.Clone(sc.HostPort.PodCIDRs)
	return sc
}

// checkNewSwitchLocked checks a switch to add against the running ones,
// as Config.Validate checks the configured switches against each other,
// and against MaxSwitches. d.mu held.
func (d *Dataplane) checkNewSwitchLocked(sc *SwitchConfig) error {
	if _, ok := d.switches[sc.Name]; ok {
		return fmt.Errorf("switch %s: name %q: a switch of that name is running: %w", sc.Name, sc.Name, ErrSwitchExists)
	}
	tap := sc.HostPort.tapName(sc.Name)
	for _, name := range d.order {
		if d.switches[name].tapName == tap {
			return fmt.Errorf("switch %s: hostPort.name %q: the host port of switch %s: %w", sc.Name, tap, name, ErrInvalid)
		}
	}
	if len(d.switches) >= d.maxSwitches {
		return fmt.Errorf("switch %s: %d switches run, the most a dataplane runs (MaxSwitches): %w", sc.Name, len(d.switches), ErrInvalid)
	}
	return nil
}

// switchConfigsLocked returns the running switches' configurations in
// order. d.mu held.
func (d *Dataplane) switchConfigsLocked() []*SwitchConfig {
	scs := make([]*SwitchConfig, 0, len(d.order)+1)
	for _, name := range d.order {
		scs = append(scs, &d.switches[name].cfg)
	}
	return scs
}

// RemoveSwitch detaches every port of the switch (closing their sockets; pod links are never
// deleted, as in Close), removes its host port (TAP, addresses, routes) and destroys the
// switch; with Config.Masquerade its pod CIDRs and TAP leave the nftables rules.
//
// The switch disappears at once for the other methods: an attach to it that starts later
// fails with ErrNoSwitch, and so does one in flight, which undoes itself when it would
// publish its port (RemoveSwitch waits for it, for detaches in flight on the switch and for
// the sockets to close, none of which waits for long); a DetachPort of one of its ports
// succeeds (the port is gone). Any switch may be removed, the first and the last one too:
// an AttachRequest without Switch then goes to the first remaining switch, or fails with
// ErrNoSwitch when none is left. The name may be added again once RemoveSwitch returned.
//
// ctx bounds the nftables update only (the removal itself is never left half done); a
// failed update is reported, and the next switch change rewrites the rules whole. An
// unknown name is ErrNoSwitch; after Close it returns ErrClosed.
func (d *Dataplane) RemoveSwitch(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove switch %s: %w", name, err)
	}
	d.swMu.Lock()
	defer d.swMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("remove switch %s: %w", name, ErrClosed)
	}
	s, ok := d.switches[name]
	if !ok {
		d.mu.Unlock()
		return fmt.Errorf("remove switch %q: %w", name, ErrNoSwitch)
	}
	// Unpublish the switch and its ports under one lock: from here no new
	// claim on the switch starts (attach looks the switch up, detach the
	// port), so s.ops only goes down. Each port's link and owner stay
	// claimed until its socket is closed, like a DetachPort's.
	delete(d.switches, name)
	d.order = slices.DeleteFunc(d.order, func(n string) bool { return n == name })
	var ports []*Port
	for _, p := range d.ports {
		if p.sw == s {
			ports = append(ports, p)
		}
	}
	releases := make([]func(), len(ports))
	for i, p := range ports {
		d.unlinkLocked(p)
		releases[i] = d.claimLocked(s, p.hostIf, p.owner)
	}
	pn := d.podNetwork()
	d.ops.Add(1) // Close waits for the switch to be gone
	d.mu.Unlock()
	defer d.ops.Done()
	d.up.touch()

	var errs []error
	for i, p := range ports {
		errs = append(errs, p.unplug(d))
		go func() {
			defer releases[i]()
			p.ga.Put() // closes the socket (the XDP program goes with it)
		}()
	}
	// Attaches in flight on the switch fail when they publish and undo
	// themselves, detaches in flight finish, the sockets above close: all
	// of them release their claims, and only then does the switch go.
	s.ops.Wait()
	errs = append(errs, d.destroySwitch(s))
	if d.nft != nil {
		errs = append(errs, d.nft.install(ctx, pn))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove switch %s: %w", name, err)
	}
	return nil
}

// destroySwitch takes the host port out of a switch whose pod ports are
// gone and closes the TAP (its addresses and routes go with it), detaches
// whatever port is left (a persistent VALE port attached to the switch by
// name) and destroys the switch.
func (d *Dataplane) destroySwitch(s *swState) error {
	name := s.cfg.Name
	errs := []error{d.fastHostRemove(s)}
	if err := d.reg.Detach(vale.JoinName(name, s.tapName)); err != nil && !errors.Is(err, vale.ErrNoPort) {
		errs = append(errs, err)
	}
	s.tapAd.Put() // closes the TAP
	for _, pi := range s.sw.Ports() {
		if err := d.reg.Detach(pi.Name); err != nil && !errors.Is(err, vale.ErrNoPort) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, d.reg.DestroySwitch(name))
	return errors.Join(errs...)
}
