package controller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// PeerConfig is another node of the pod network, from its Node object: its InternalIP
// addresses (at most one per family) and its pod CIDRs.
type PeerConfig struct {
	Name      string
	Addresses []netip.Addr
	PodCIDRs  []netip.Prefix
}

// peerReconciler turns every other Node into a peer: on any Node change it lists them all
// and hands the whole set to Dataplane.SetPeers, so a node deleted while the agent was down
// is gone from the first set too (the dataplane removes what no peer wants).
type peerReconciler struct {
	client client.Client
	node   string
	dp     Dataplane
	status *nodeStatus
}

// peersKey is the one request every Node event maps to: the set is rebuilt whole.
var peersKey = reconcile.Request{}

func (r *peerReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	var l corev1.NodeList
	if err := r.client.List(ctx, &l); err != nil {
		return reconcile.Result{}, fmt.Errorf("list nodes: %w", err)
	}
	peers, skipped := PeersOf(l.Items, r.node)
	if err := r.dp.SetPeers(ctx, peers); err != nil {
		return reconcile.Result{}, fmt.Errorf("set %d peers: %w", len(peers), err)
	}
	if len(skipped) > 0 {
		log.FromContext(ctx).WithName("peers").Info("nodes not yet peers", "nodes", strings.Join(skipped, "; "))
	}
	return reconcile.Result{}, nil
}

// PeersOf is every node of nodes but self as a peer, by name; a node without an
// InternalIP or a pod CIDR (not yet assigned) is skipped, with the reason.
func PeersOf(nodes []corev1.Node, self string) (peers []PeerConfig, skipped []string) {
	for i := range nodes {
		n := &nodes[i]
		if n.Name == self {
			continue
		}
		p := PeerConfig{Name: n.Name}
		cidrs, err := PodCIDRsOf(n)
		if err != nil {
			skipped = append(skipped, err.Error())
			continue
		}
		p.PodCIDRs = cidrs
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			ad, err := netip.ParseAddr(a.Address)
			if err != nil || slices.ContainsFunc(p.Addresses, func(o netip.Addr) bool { return o.Is4() == ad.Is4() }) {
				continue
			}
			p.Addresses = append(p.Addresses, ad.Unmap())
		}
		switch {
		case len(p.PodCIDRs) == 0:
			skipped = append(skipped, n.Name+": no pod CIDR")
		case len(p.Addresses) == 0:
			skipped = append(skipped, n.Name+": no InternalIP")
		default:
			peers = append(peers, p)
		}
	}
	slices.SortFunc(peers, func(a, b PeerConfig) int { return strings.Compare(a.Name, b.Name) })
	return peers, skipped
}

// peerRelevant passes the Node events that change the peer set: creations, deletions, and
// updates of another node's pod CIDRs or addresses.
func peerRelevant(self string) predicate.Funcs {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return e.Object.GetName() != self },
		DeleteFunc: func(e event.DeleteEvent) bool { return e.Object.GetName() != self },
		UpdateFunc: func(e event.UpdateEvent) bool {
			a, b := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
			return a.Name != self && (!slices.Equal(a.Spec.PodCIDRs, b.Spec.PodCIDRs) || a.Spec.PodCIDR != b.Spec.PodCIDR ||
				!slices.Equal(a.Status.Addresses, b.Status.Addresses))
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
