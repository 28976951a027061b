package controller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// nodeReconciler hands the node's pod CIDRs to the dataplane's IPAM.
type nodeReconciler struct {
	client   client.Client
	node     string
	dp       Dataplane
	status   *nodeStatus
	recorder events.EventRecorder
	applied  []netip.Prefix
	addrs    []netip.Addr // the node's InternalIPs as last given to the dataplane
}

// internalIPs are a Node's InternalIP addresses.
func internalIPs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ad, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ad.Unmap())
		}
	}
	return out
}

// PodCIDRsOf parses a Node's pod CIDRs (spec.podCIDRs, else spec.podCIDR).
func PodCIDRsOf(n *corev1.Node) ([]netip.Prefix, error) {
	raw := n.Spec.PodCIDRs
	if len(raw) == 0 && n.Spec.PodCIDR != "" {
		raw = []string{n.Spec.PodCIDR}
	}
	out := make([]netip.Prefix, 0, len(raw))
	for _, s := range raw {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("parse pod cidr of node %s: %w", n.Name, &FieldError{"spec.podCIDRs", s, "a CIDR such as 10.244.0.0/24"})
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (r *nodeReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if req.Name != r.node {
		return reconcile.Result{}, nil
	}
	var n corev1.Node
	if err := r.client.Get(ctx, client.ObjectKey{Name: r.node}, &n); err != nil {
		if apierrors.IsNotFound(err) {
			r.status.setCIDRs(nil, fmt.Errorf("node %s not found", r.node))
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("get node %s: %w", r.node, err)
	}
	cidrs, err := PodCIDRsOf(&n)
	if err != nil {
		r.status.setCIDRs(nil, err)
		r.recorder.Eventf(&n, nil, corev1.EventTypeWarning, "InvalidPodCIDR", "SetPodCIDRs", "%v", err)
		return reconcile.Result{}, nil // a new Node update retriggers
	}
	if len(cidrs) == 0 {
		r.status.setCIDRs(nil, fmt.Errorf("node %s has no spec.podCIDRs yet", r.node))
		return reconcile.Result{}, nil
	}
	if addrs := internalIPs(&n); !slices.Equal(addrs, r.addrs) {
		if err := r.dp.SetNodeAddresses(ctx, addrs); err != nil {
			return reconcile.Result{}, fmt.Errorf("set node addresses %v: %w", addrs, err)
		}
		r.addrs = addrs
	}
	if slices.Equal(cidrs, r.applied) {
		return reconcile.Result{}, nil
	}
	if err := r.dp.SetPodCIDRs(ctx, cidrs); err != nil {
		r.status.setCIDRs(nil, err)
		return reconcile.Result{}, fmt.Errorf("set pod cidrs %v: %w", cidrs, err)
	}
	r.applied = cidrs
	r.status.setCIDRs(cidrs, nil)
	r.recorder.Eventf(&n, nil, corev1.EventTypeNormal, "PodCIDRsAssigned", "SetPodCIDRs", "epair agent allocates pod addresses from %v", cidrs)
	return reconcile.Result{}, nil
}
