package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
)

// policyReconciler is keyed by pod: it finds the PortPolicy that selects a
// pod of this node and applies it to the pod's live port, or clears it.
type policyReconciler struct {
	client   client.Client
	node     string
	dp       Dataplane
	status   *nodeStatus
	recorder events.EventRecorder

	mu      sync.Mutex
	desired map[types.NamespacedName]desiredPolicy // pods with a selecting policy
	applied map[types.NamespacedName]PolicyConfig  // what the dataplane holds
}

type desiredPolicy struct {
	uid types.UID
	cfg PolicyConfig
}

func newPolicyReconciler() *policyReconciler {
	return &policyReconciler{
		desired: map[types.NamespacedName]desiredPolicy{},
		applied: map[types.NamespacedName]PolicyConfig{},
	}
}

// policyFor returns the policy the pod's port should have.
func (r *policyReconciler) policyFor(ns, name string) (PolicyConfig, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.desired[types.NamespacedName{Namespace: ns, Name: name}]
	return d.cfg, ok
}

// SelectPolicy returns the policy among ps that applies to a pod with labels
// l: the oldest selecting one, ties broken by name, and the names of the other
// selecting policies (conflicts). Policies with an unparsable selector never
// select.
func SelectPolicy(ps []epairv1.PortPolicy, l map[string]string) (winner *epairv1.PortPolicy, losers []string) {
	var sel []*epairv1.PortPolicy
	for i := range ps {
		p := &ps[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil || !s.Matches(labels.Set(l)) {
			continue
		}
		sel = append(sel, p)
	}
	if len(sel) == 0 {
		return nil, nil
	}
	slices.SortFunc(sel, func(a, b *epairv1.PortPolicy) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	for _, p := range sel[1:] {
		losers = append(losers, p.Name)
	}
	return sel[0], losers
}

func (r *policyReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.NamespacedName
	var pod corev1.Pod
	err := r.client.Get(ctx, key, &pod)
	if apierrors.IsNotFound(err) || (err == nil && (pod.Spec.NodeName != r.node || pod.Spec.HostNetwork || podDone(&pod))) {
		// The pod's port goes with the pod (CNI DEL); only forget it.
		r.forget(key)
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("get pod %s: %w", key, err)
	}
	ref := PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
	var list epairv1.PortPolicyList
	if err := r.client.List(ctx, &list, client.InNamespace(pod.Namespace)); err != nil {
		return reconcile.Result{}, fmt.Errorf("list portpolicies in %s: %w", pod.Namespace, err)
	}
	winner, losers := SelectPolicy(list.Items, pod.Labels)
	if winner == nil {
		return reconcile.Result{}, r.clear(ctx, key, ref, &pod)
	}
	cfg, err := PolicyConfigFromSpec(winner)
	if err != nil {
		r.status.setPolicyErr(key.String(), err)
		r.recorder.Eventf(winner, &pod, corev1.EventTypeWarning, "InvalidSpec", "ApplyPortPolicy", "node %s: %v", r.node, err)
		return reconcile.Result{}, r.clear(ctx, key, ref, &pod)
	}
	if len(losers) > 0 {
		r.recorder.Eventf(&pod, winner, corev1.EventTypeWarning, "PortPolicyConflict", "SelectPortPolicy",
			"port policy %s applies; %v also select the pod and are ignored", winner.Name, losers)
	}
	r.mu.Lock()
	r.desired[key] = desiredPolicy{uid: pod.UID, cfg: cfg}
	prev, had := r.applied[key]
	r.mu.Unlock()
	if had && equalPolicy(prev, cfg) {
		return reconcile.Result{}, nil
	}
	if err := r.dp.ApplyPortPolicy(ctx, ref, cfg); err != nil {
		if errors.Is(err, ErrNoPort) {
			// Not attached yet: PortAttached brings the pod back here.
			r.status.setPolicyErr(key.String(), nil)
			return reconcile.Result{}, nil
		}
		err = fmt.Errorf("apply port policy %s to pod %s: %w", cfg.Policy, key, err)
		r.status.setPolicyErr(key.String(), err)
		r.recorder.Eventf(&pod, winner, corev1.EventTypeWarning, "ApplyFailed", "ApplyPortPolicy", "%v", err)
		return reconcile.Result{}, err
	}
	r.mu.Lock()
	r.applied[key] = cfg
	r.mu.Unlock()
	r.status.setPolicyErr(key.String(), nil)
	r.recorder.Eventf(&pod, winner, corev1.EventTypeNormal, "PortPolicyApplied", "ApplyPortPolicy", "port policy %s applied on node %s", winner.Name, r.node)
	return reconcile.Result{}, nil
}

// equalPolicy compares two configurations, the mirrors by value.
func equalPolicy(a, b PolicyConfig) bool {
	am, bm := a.Mirror, b.Mirror
	a.Mirror, b.Mirror = nil, nil
	if a != b || (am == nil) != (bm == nil) {
		return false
	}
	return am == nil || *am == *bm
}

func (r *policyReconciler) clear(ctx context.Context, key types.NamespacedName, ref PodRef, pod *corev1.Pod) error {
	r.mu.Lock()
	delete(r.desired, key)
	_, had := r.applied[key]
	r.mu.Unlock()
	if !had {
		r.status.setPolicyErr(key.String(), nil)
		return nil
	}
	if err := r.dp.ClearPortPolicy(ctx, ref); err != nil && !errors.Is(err, ErrNoPort) {
		err = fmt.Errorf("clear port policy of pod %s: %w", key, err)
		r.status.setPolicyErr(key.String(), err)
		return err
	}
	r.mu.Lock()
	delete(r.applied, key)
	r.mu.Unlock()
	r.status.setPolicyErr(key.String(), nil)
	r.recorder.Eventf(pod, nil, corev1.EventTypeNormal, "PortPolicyCleared", "ClearPortPolicy", "no port policy selects the pod; port uses its switch's default queue")
	return nil
}

func (r *policyReconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.desired, key)
	delete(r.applied, key)
	r.mu.Unlock()
	r.status.setPolicyErr(key.String(), nil)
}

// portDetached forgets what the dataplane held for a pod whose port went
// away, so a re-attached port gets its policy again.
func (r *policyReconciler) portDetached(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.applied, key)
	r.mu.Unlock()
}

func podDone(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}
