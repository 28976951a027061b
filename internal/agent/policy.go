package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/internal/dataplane"
)

// PodPolicies is what the agent asks of the cluster's policy reconciler
// (*controller.Controller implements it): the PortPolicy of a pod at attach time, and a
// notice once its port is attached, so that a policy the reconciler could not apply
// before (the pod had no port yet) is applied at once.
type PodPolicies interface {
	PolicyFor(namespace, name string) (controller.PolicyConfig, bool)
	PortAttached(pod controller.PodRef)
	PodAnnotation(ctx context.Context, namespace, name, key string) (string, bool, error)
}

var _ PodPolicies = (*controller.Controller)(nil)

// podPolicy is the PortPolicy of r's pod, nil when none selects it or the agent runs
// without a controller.
func (a *Agent) podPolicy(r *record) *controller.PolicyConfig {
	if a.pods == nil || r.PodName == "" || r.PodNamespace == "" {
		return nil
	}
	if pc, ok := a.pods.PolicyFor(r.PodNamespace, r.PodName); ok {
		return &pc
	}
	return nil
}

// portAttached tells the policy reconciler that r's port is up.
func (a *Agent) portAttached(r *record) {
	if a.pods != nil && r.PodName != "" && r.PodNamespace != "" {
		a.pods.PortAttached(podRef(r))
	}
}

func podRef(r *record) controller.PodRef {
	return controller.PodRef{Namespace: r.PodNamespace, Name: r.PodName, UID: types.UID(r.PodUID)}
}

// policyOf is r's effective port policy: its switch's default as it is now, with the pod's
// PortPolicy over it (swMu held).
func (a *Agent) policyOf(r *record) dataplane.PortPolicy {
	def := a.defaults[r.Switch]
	if r.policy == nil {
		return def
	}
	return portPolicy(*r.policy, def)
}

// SetPodPolicy gives every port of pod (one per interface) PortPolicy p over its switch's
// default, or the default alone when p is nil. Without a port it returns an error wrapping
// controller.ErrNoPort for a policy and nil for a clear.
func (a *Agent) SetPodPolicy(_ context.Context, pod controller.PodRef, p *controller.PolicyConfig) error {
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	what := "clear policy of " + pod.String()
	if p != nil {
		what = fmt.Sprintf("apply policy %s to %s", p.Policy, pod)
	}
	var errs []error
	n := 0
	for _, r := range a.records() {
		if r.PodNamespace != pod.Namespace || r.PodName != pod.Name || r.HostIfName == "" ||
			(pod.UID != "" && r.PodUID != "" && r.PodUID != string(pod.UID)) {
			continue
		}
		unlock := a.lock(r.Key)
		if cur, ok := a.get(r.Key); ok && cur.HostIfName != "" {
			nr := *cur
			nr.policy = nil
			if p != nil {
				pc := *p
				nr.policy = &pc
			}
			err := a.dp.SetPortPolicy(nr.Switch, nr.HostIfName, a.policyOf(&nr))
			switch {
			case errors.Is(err, dataplane.ErrNoPort):
			case err != nil:
				errs = append(errs, fmt.Errorf("port %s: %w", nr.HostIfName, err))
			default:
				a.set(&nr)
				n++
			}
		}
		unlock()
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %w", what, errors.Join(errs...))
	}
	if n == 0 && p != nil {
		return fmt.Errorf("%s: %w", what, controller.ErrNoPort)
	}
	return nil
}

// portPolicy maps a PortPolicy onto the dataplane's; zero fields keep def's.
func portPolicy(p controller.PolicyConfig, def dataplane.PortPolicy) dataplane.PortPolicy {
	pol := dataplane.PortPolicy{
		Discipline:     def.Discipline,
		QueueLen:       def.QueueLen,
		Priority:       uint8(p.Priority),
		PriorityFIFO:   p.Priority <= 1,
		RateBitsPerSec: uint64(max(p.RateBPS, 0)),
		BurstBytes:     int(max(p.BurstBytes, 0)),
		RatePktsPerSec: uint64(max(p.PacketRate, 0)),
		BurstPkts:      int(max(p.PacketBurst, 0)),
		AllowSpoofing:  def.AllowSpoofing,
		BroadcastRate:  def.BroadcastRate,
		MulticastRate:  def.MulticastRate,
	}
	if p.AntiSpoofing != nil {
		pol.AllowSpoofing = !*p.AntiSpoofing
	}
	if p.BroadcastRate != nil {
		pol.BroadcastRate = uint32(*p.BroadcastRate)
	}
	if p.MulticastRate != nil {
		pol.MulticastRate = uint32(*p.MulticastRate)
	}
	if m := p.Mirror; m != nil {
		pol.Mirror = dataplane.Mirror{Monitor: m.Monitor, RX: m.RX, TX: m.TX}
	}
	if p.Discipline != "" {
		pol.Discipline = discipline(p.Discipline)
	}
	if p.QueueLength > 0 {
		pol.QueueLen = p.QueueLength
	}
	return pol
}

// switchDefaultPolicy is the policy of a port whose pod no PortPolicy selects: the
// VirtualSwitch's default queue and port security.
func switchDefaultPolicy(sc controller.SwitchConfig) dataplane.PortPolicy {
	q, ps := sc.DefaultQueue, sc.PortSecurity
	return dataplane.PortPolicy{Discipline: discipline(q.Discipline), QueueLen: q.Length, RateBitsPerSec: uint64(max(q.RateBPS, 0)),
		AllowSpoofing: !ps.AntiSpoofing, BroadcastRate: uint32(max(ps.BroadcastRate, 0)), MulticastRate: uint32(max(ps.MulticastRate, 0))}
}

func discipline(d epairv1.Discipline) dataplane.Discipline {
	switch strings.ToLower(string(d)) {
	case "prioclass":
		return dataplane.DiscPrioClass
	case "fair":
		return dataplane.DiscFair
	}
	return dataplane.DiscClassic
}
