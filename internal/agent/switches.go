package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// ErrNoSwitch is wrapped by the errors of switch operations on a switch the agent does not
// run.
var ErrNoSwitch = errors.New("no such switch")

// AddSwitch starts serving switch sc while running: its IPAM store (kept from an earlier
// run, if any), the dataplane's switch and host port, and def as the default policy of its
// pod ports (nil: the port security of sc). Attachments of the switch from before a
// restart are recovered as Recover does. sc is validated together with the running
// switches (a name or host port used twice is an error) and nothing is left behind on an
// error.
func (a *Agent) AddSwitch(ctx context.Context, sc SwitchConfig, def *dataplane.PortPolicy) (RecoverStats, error) {
	sc.setDefaults()
	pol := switchPolicy(&sc)
	if def != nil {
		pol = *def
	}
	if err := pol.Validate(); err != nil {
		return RecoverStats{}, fmt.Errorf("add switch %s: default policy: %w", sc.Name, err)
	}
	a.swMu.Lock()
	defer a.swMu.Unlock()
	if a.closed.Load() {
		return RecoverStats{}, fmt.Errorf("add switch %s: agent is shutting down", sc.Name)
	}
	cand := *a.cfg
	cand.Switches = append(slices.Clone(a.cfg.Switches), sc)
	if err := cand.Validate(); err != nil {
		return RecoverStats{}, fmt.Errorf("add switch %s: %w", sc.Name, err)
	}
	ranges, err := ipam.ParseRanges(sc.Ranges)
	if err != nil {
		return RecoverStats{}, fmt.Errorf("add switch %s: %w", sc.Name, err)
	}
	path := a.ipamPath(sc.Name)
	_, statErr := os.Stat(path)
	existed := statErr == nil
	st, err := a.openIPAM(path, ranges)
	if err != nil {
		return RecoverStats{}, fmt.Errorf("add switch %s: %w", sc.Name, err)
	}
	if err := a.dp.AddSwitch(sc); err != nil {
		errs := []error{fmt.Errorf("add switch %s: %w", sc.Name, err), st.Close()}
		if !existed {
			errs = append(errs, removeIfExists(path))
		}
		return RecoverStats{}, errors.Join(errs...)
	}
	a.cfg.Switches = cand.Switches
	a.stores[sc.Name] = st
	a.defaults[sc.Name] = pol
	rs, err := a.recoverSwitches(ctx, []string{sc.Name})
	if err != nil {
		return rs, fmt.Errorf("add switch %s: %w", sc.Name, err)
	}
	a.log.Info("added switch", "switch", sc.Name, "mtu", sc.MTU, "ranges", sc.Ranges, "secondary", sc.Secondary,
		"reattached", rs.Reattached, "stale", rs.Stale)
	return rs, nil
}

// RemoveSwitch stops serving a switch: each of its attachments is released (port detached,
// addresses freed, record forgotten) and its host link destroyed, which removes the pod's
// interface on that switch and nothing else of the pod; then the dataplane's switch and host
// port go, and the switch's IPAM store is deleted. The default switch (the first) cannot be
// removed: requests without a switch name go to it.
func (a *Agent) RemoveSwitch(ctx context.Context, name string) error {
	a.swMu.Lock()
	defer a.swMu.Unlock()
	i := slices.IndexFunc(a.cfg.Switches, func(s SwitchConfig) bool { return s.Name == name })
	switch {
	case i < 0:
		return fmt.Errorf("remove switch %s: %w; this node has %v", name, ErrNoSwitch, a.switchNames())
	case i == 0:
		return fmt.Errorf("remove switch %s: it is the default switch", name)
	}
	var errs []error
	n := 0
	for _, r := range a.records() {
		if r.Switch != name {
			continue
		}
		unlock := a.lock(r.Key)
		if _, err := a.release(r.Key); err != nil {
			errs = append(errs, err)
		} else if r.HostIfName != "" {
			if err := a.links.Destroy(r.HostIfName); err != nil {
				errs = append(errs, fmt.Errorf("destroy link %s of %s: %w", r.HostIfName, r.Key, err))
			}
		}
		unlock()
		n++
	}
	if err := a.dp.RemoveSwitch(ctx, name); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, a.stores[name].Close(), removeIfExists(a.ipamPath(name)))
	a.cfg.Switches = slices.Delete(a.cfg.Switches, i, i+1)
	delete(a.stores, name)
	delete(a.defaults, name)
	a.log.Info("removed switch", "switch", name, "attachments", n)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove switch %s: %w", name, err)
	}
	return nil
}

// SetSwitchDefault makes pol the default policy of switch name's pod ports, live: a port
// without a PortPolicy takes it, a port with one keeps its policy's fields over it (what
// the policy leaves unset, such as port security or the queue length, is the switch's),
// and a port attached afterwards gets it.
func (a *Agent) SetSwitchDefault(name string, pol dataplane.PortPolicy) error {
	if err := pol.Validate(); err != nil {
		return fmt.Errorf("set default policy of switch %s: %w", name, err)
	}
	a.swMu.Lock()
	defer a.swMu.Unlock()
	old, ok := a.defaults[name]
	if !ok {
		return fmt.Errorf("set default policy of switch %s: %w", name, ErrNoSwitch)
	}
	a.defaults[name] = pol
	if pol == old {
		return nil
	}
	var errs []error
	for _, r := range a.records() {
		if r.Switch != name || r.HostIfName == "" {
			continue
		}
		if err := a.dp.SetPortPolicy(r.Switch, r.HostIfName, a.policyOf(r)); err != nil && !errors.Is(err, dataplane.ErrNoPort) {
			errs = append(errs, fmt.Errorf("port %s: %w", r.HostIfName, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("set default policy of switch %s: %w", name, err)
	}
	return nil
}

// SwitchNames lists the switches the agent serves, the default one first.
func (a *Agent) SwitchNames() []string {
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	return a.switchNames()
}

// SwitchMTU is the MTU the named switch runs with (0 if the agent has no such switch).
func (a *Agent) SwitchMTU(name string) int {
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	if sc, ok := a.cfg.Switch(name); ok && name != "" {
		return sc.MTU
	}
	return 0
}

// unknownSwitch is the agent API's error for a request naming a switch the node does not
// run (swMu held).
func (a *Agent) unknownSwitch(name string) error {
	return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeInvalidRequest, Field: "switch",
		Message: fmt.Sprintf("switch: unknown switch %q; this node has %s", name, strings.Join(a.switchNames(), ", "))}}
}
