package controller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// recordingDataplane is the test double of Dataplane: it records every call
// in order and keeps the state a real dataplane would (switches, per-pod
// policies), so tests assert on both what was called and what resulted.
type recordingDataplane struct {
	mu       sync.Mutex
	ready    bool
	calls    []string
	cidrs    []netip.Prefix
	peers    []PeerConfig
	switches map[string]SwitchConfig
	ports    map[string]bool // "ns/name" of pods that have a port
	policies map[string]PolicyConfig
	failNext error // returned once by the next Apply*
	snap     Snapshot
	changed  chan struct{}
}

var _ Dataplane = (*recordingDataplane)(nil)

func newRecordingDataplane() *recordingDataplane {
	return &recordingDataplane{
		ready:    true,
		switches: map[string]SwitchConfig{},
		ports:    map[string]bool{},
		policies: map[string]PolicyConfig{},
		changed:  make(chan struct{}, 1),
	}
}

func (d *recordingDataplane) record(format string, a ...any) {
	d.calls = append(d.calls, fmt.Sprintf(format, a...))
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func (d *recordingDataplane) takeFail() error {
	err := d.failNext
	d.failNext = nil
	return err
}

func (d *recordingDataplane) SetPeers(_ context.Context, ps []PeerConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers = slices.Clone(ps)
	var names []string
	for _, p := range ps {
		names = append(names, fmt.Sprintf("%s%v%v", p.Name, p.Addresses, p.PodCIDRs))
	}
	d.record("SetPeers %v", names)
	return nil
}

func (d *recordingDataplane) SetNodeAddresses(_ context.Context, a []netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("SetNodeAddresses %v", a)
	return nil
}

func (d *recordingDataplane) SetPodCIDRs(_ context.Context, c []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cidrs = slices.Clone(c)
	d.record("SetPodCIDRs %v", c)
	return nil
}

func (d *recordingDataplane) ApplySwitch(_ context.Context, cfg SwitchConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.takeFail(); err != nil {
		d.record("ApplySwitch %s failed", cfg.Name)
		return err
	}
	d.switches[cfg.Name] = cfg
	d.record("ApplySwitch %s gen=%d mtu=%d", cfg.Name, cfg.Generation, cfg.MTU)
	return nil
}

func (d *recordingDataplane) DeleteSwitch(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.switches, name)
	d.record("DeleteSwitch %s", name)
	return nil
}

func (d *recordingDataplane) ApplyPortPolicy(_ context.Context, pod PodRef, p PolicyConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ports[pod.String()] {
		d.record("ApplyPortPolicy %s noport", pod)
		return fmt.Errorf("apply port policy: %s: %w", pod, ErrNoPort)
	}
	if err := d.takeFail(); err != nil {
		d.record("ApplyPortPolicy %s failed", pod)
		return err
	}
	d.policies[pod.String()] = p
	d.record("ApplyPortPolicy %s %s rate=%d", pod, p.Policy, p.RateBPS)
	return nil
}

func (d *recordingDataplane) ClearPortPolicy(_ context.Context, pod PodRef) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.policies, pod.String())
	d.record("ClearPortPolicy %s", pod)
	return nil
}

func (d *recordingDataplane) Status(context.Context) (Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.snap, nil
}

func (d *recordingDataplane) Ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ready
}

func (d *recordingDataplane) setReady(r bool) {
	d.mu.Lock()
	d.ready = r
	d.mu.Unlock()
}

func (d *recordingDataplane) addPort(pod string) {
	d.mu.Lock()
	d.ports[pod] = true
	d.mu.Unlock()
}

func (d *recordingDataplane) policy(pod string) (PolicyConfig, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.policies[pod]
	return p, ok
}

func (d *recordingDataplane) switchCfg(name string) (SwitchConfig, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.switches[name]
	return s, ok
}

func (d *recordingDataplane) podCIDRs() []netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.cidrs)
}

func (d *recordingDataplane) callLog() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// waitFor polls cond until it holds or the timeout passes; it returns how
// long it took.
func waitFor(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
