package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
)

// statusWriter keeps the node's NodeState up to date: at every interval, and
// at once (at most every minGap) when a condition changes. It is a manager
// Runnable that needs no leader election: one per node.
type statusWriter struct {
	client   client.Client
	reader   client.Reader // the API server, not the cache, for the Node's UID
	node     string
	dp       Dataplane
	status   *nodeStatus
	interval time.Duration
	minGap   time.Duration
	cniGate  func() bool // nil when the agent writes no conflist
	now      func() time.Time
}

var (
	_ manager.Runnable               = (*statusWriter)(nil)
	_ manager.LeaderElectionRunnable = (*statusWriter)(nil)
	_ manager.Runnable               = (*cniConfWriter)(nil)
	_ manager.LeaderElectionRunnable = (*cniConfWriter)(nil)
	_ reconcile.Reconciler           = (*nodeReconciler)(nil)
	_ reconcile.Reconciler           = (*switchReconciler)(nil)
	_ reconcile.Reconciler           = (*policyReconciler)(nil)
)

func (w *statusWriter) NeedLeaderElection() bool { return false }

func (w *statusWriter) Start(ctx context.Context) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	lg := log.FromContext(ctx).WithName("status")
	for {
		if err := w.write(ctx); err != nil && ctx.Err() == nil {
			lg.Error(err, "write node state")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-w.status.changed:
			select { // coalesce bursts of changes
			case <-ctx.Done():
				return nil
			case <-time.After(w.minGap):
			}
		}
	}
}

func (w *statusWriter) write(ctx context.Context) error {
	var ns epairv1.NodeState
	err := w.client.Get(ctx, client.ObjectKey{Name: w.node}, &ns)
	if apierrors.IsNotFound(err) {
		ns, err = w.create(ctx)
	}
	if err != nil {
		return fmt.Errorf("get nodestate %s: %w", w.node, err)
	}
	snap, snapErr := w.dp.Status(ctx)
	orig := ns.DeepCopy()
	ns.Status = w.build(ns.Status.Conditions, ns.Generation, snap, snapErr)
	// A merge patch without optimistic locking: this agent is the only
	// writer, and the cache may not have caught up with its last write yet.
	if err := w.client.Status().Patch(ctx, &ns, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("update nodestate %s status: %w", w.node, err)
	}
	return nil
}

func (w *statusWriter) create(ctx context.Context) (epairv1.NodeState, error) {
	var n corev1.Node
	if err := w.reader.Get(ctx, client.ObjectKey{Name: w.node}, &n); err != nil {
		return epairv1.NodeState{}, fmt.Errorf("get node %s: %w", w.node, err)
	}
	ns := epairv1.NodeState{
		ObjectMeta: metav1.ObjectMeta{
			Name: w.node,
			// Owned by the Node: the garbage collector removes it with the node.
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID,
			}},
			Labels: map[string]string{"app.kubernetes.io/managed-by": "epair-agent"},
		},
		Spec: epairv1.NodeStateSpec{NodeName: w.node},
	}
	if err := w.client.Create(ctx, &ns); err != nil {
		if apierrors.IsAlreadyExists(err) {
			err = w.client.Get(ctx, client.ObjectKey{Name: w.node}, &ns)
			return ns, err
		}
		return epairv1.NodeState{}, fmt.Errorf("create nodestate %s: %w", w.node, err)
	}
	return ns, nil
}

// build computes the status; meta.SetStatusCondition keeps
// lastTransitionTime when a condition's status does not change.
func (w *statusWriter) build(prev []metav1.Condition, gen int64, snap Snapshot, snapErr error) epairv1.NodeStateStatus {
	v := w.status.view()
	now := metav1.NewTime(w.now().Truncate(time.Second))
	st := epairv1.NodeStateStatus{
		Switches:   snap.Switches,
		Ports:      snap.Ports,
		Drops:      snap.Drops,
		Peers:      snap.Peers,
		UpdateTime: &now,
		Conditions: slices.Clone(prev),
	}
	for _, c := range v.cidrs {
		st.PodCIDRs = append(st.PodCIDRs, c.String())
	}
	set := func(typ string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}
	if len(v.cidrs) > 0 {
		set(epairv1.ConditionPodCIDRs, true, "Assigned", fmt.Sprintf("allocating from %s", strings.Join(st.PodCIDRs, ", ")))
	} else {
		set(epairv1.ConditionPodCIDRs, false, "NotAssigned", orText(v.cidrErr, "waiting for the node's spec.podCIDRs"))
	}
	if len(v.switchErrs) == 0 {
		set(epairv1.ConditionSwitches, true, "Applied", fmt.Sprintf("%d switch(es) applied: %s", len(v.switches), strings.Join(slices.Sorted(maps.Keys(v.switches)), ", ")))
	} else {
		set(epairv1.ConditionSwitches, false, "ApplyFailed", joinErrs(v.switchErrs))
	}
	if len(v.policyErrs) == 0 {
		set(epairv1.ConditionPolicies, true, "Applied", "every selecting port policy is applied")
	} else {
		set(epairv1.ConditionPolicies, false, "ApplyFailed", joinErrs(v.policyErrs))
	}
	if w.cniGate != nil {
		// A secondary network's conflist failing turns the condition false
		// too, but not Ready: the conflist's own network still serves pods.
		switch {
		case !v.cniConf:
			set(epairv1.ConditionCNIConfig, false, "NotInstalled", orText(v.cniErr, "waiting for the agent to be ready"))
		case v.cniNetsErr != "":
			set(epairv1.ConditionCNIConfig, false, "NetworksNotInstalled", "CNI configuration written; secondary networks: "+v.cniNetsErr)
		case len(v.cniNets) > 0:
			set(epairv1.ConditionCNIConfig, true, "Installed", "CNI configuration written, with the secondary networks of "+strings.Join(v.cniNets, ", "))
		default:
			set(epairv1.ConditionCNIConfig, true, "Installed", "CNI configuration written")
		}
	}
	ready, why := true, ""
	switch {
	case snapErr != nil:
		ready, why = false, "dataplane status: "+snapErr.Error()
	case !w.dp.Ready():
		ready, why = false, "dataplane not ready"
	case len(v.cidrs) == 0:
		ready, why = false, "no pod CIDRs"
	case w.cniGate != nil && !v.cniConf:
		ready, why = false, "CNI configuration not installed"
	}
	if ready {
		set(epairv1.ConditionReady, true, "Ready", "agent ready")
	} else {
		set(epairv1.ConditionReady, false, "NotReady", why)
	}
	return st
}

func joinErrs(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, m[k])
	}
	return joinMsgs(parts)
}

// joinMsgs joins condition messages with "; ", bounded.
func joinMsgs(parts []string) string {
	msg := strings.Join(parts, "; ")
	if len(msg) > 4096 { // Condition.message is bounded at 32768; stay well clear
		msg = strings.ToValidUTF8(msg[:4093], "") + "..."
	}
	return msg
}

func orText(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
