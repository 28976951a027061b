package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
)

// switchReconciler runs the VirtualSwitches that select this node.
type switchReconciler struct {
	client   client.Client
	node     string
	dp       Dataplane
	status   *nodeStatus
	recorder events.EventRecorder
}

// selectsNode reports whether sel selects a node with labels l; nil or empty
// selects every node.
func selectsNode(sel *metav1.LabelSelector, l map[string]string) (bool, error) {
	if sel == nil {
		return true, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(l)), nil
}

func (r *switchReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var vs epairv1.VirtualSwitch
	err := r.client.Get(ctx, req.NamespacedName, &vs)
	if apierrors.IsNotFound(err) || (err == nil && !vs.DeletionTimestamp.IsZero()) {
		return reconcile.Result{}, r.remove(ctx, req.Name)
	}
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("get virtualswitch %s: %w", req.Name, err)
	}
	var n corev1.Node
	if err := r.client.Get(ctx, client.ObjectKey{Name: r.node}, &n); err != nil {
		return reconcile.Result{}, fmt.Errorf("get node %s: %w", r.node, err)
	}
	selected, err := selectsNode(vs.Spec.NodeSelector, n.Labels)
	if err != nil {
		err = fmt.Errorf("parse node selector of virtualswitch %s: %w", vs.Name, err)
		r.status.setSwitch(vs.Name, 0, false, err)
		r.recorder.Eventf(&vs, &n, corev1.EventTypeWarning, "InvalidSpec", "ApplySwitch", "node %s: %v", r.node, err)
		return reconcile.Result{}, nil // only a spec change can fix it
	}
	if !selected {
		return reconcile.Result{}, r.remove(ctx, vs.Name)
	}
	cfg, err := SwitchConfigFromSpec(&vs)
	if err != nil {
		r.status.setSwitch(vs.Name, 0, r.status.switchApplied(vs.Name), err)
		r.recorder.Eventf(&vs, &n, corev1.EventTypeWarning, "InvalidSpec", "ApplySwitch", "node %s: %v", r.node, err)
		return reconcile.Result{}, nil
	}
	if err := r.dp.ApplySwitch(ctx, cfg); err != nil {
		err = fmt.Errorf("apply switch %s: %w", vs.Name, err)
		r.status.setSwitch(vs.Name, 0, r.status.switchApplied(vs.Name), err)
		r.recorder.Eventf(&vs, &n, corev1.EventTypeWarning, "ApplyFailed", "ApplySwitch", "node %s: %v", r.node, err)
		return reconcile.Result{}, err
	}
	r.status.setSwitch(vs.Name, vs.Generation, true, nil)
	r.recorder.Eventf(&vs, &n, corev1.EventTypeNormal, "Applied", "ApplySwitch", "node %s runs switch %s (generation %d)", r.node, vs.Name, vs.Generation)
	return reconcile.Result{}, nil
}

func (r *switchReconciler) remove(ctx context.Context, name string) error {
	if !r.status.switchApplied(name) {
		return nil
	}
	if err := r.dp.DeleteSwitch(ctx, name); err != nil {
		err = fmt.Errorf("delete switch %s: %w", name, err)
		r.status.setSwitch(name, 0, true, err)
		return err
	}
	r.status.setSwitch(name, 0, false, nil)
	return nil
}
