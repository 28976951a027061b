package agent

import (
	"context"
	"slices"
	"strings"

	"github.com/epair-cni/epair/pkg/agentapi"
)

var _ agentapi.PeerLister = (*Agent)(nil)

// Peers implements agentapi.PeerLister: the dataplane's peers, by name, with their traffic
// counters when the dataplane counts them.
func (a *Agent) Peers(context.Context) (*agentapi.PeerList, error) {
	out := &agentapi.PeerList{Items: []agentapi.PeerInfo{}}
	for _, p := range a.dp.Peers() {
		pi := agentapi.PeerInfo{Name: p.Name, Mode: p.Mode, Reason: p.Reason, Routes: p.Routes}
		if p.Counted {
			pi.Counters = &agentapi.PeerCounters{TxFrames: p.TxFrames, TxBytes: p.TxBytes, RxFrames: p.RxFrames, RxBytes: p.RxBytes}
		}
		for _, ad := range p.Addresses {
			pi.Addresses = append(pi.Addresses, ad.String())
		}
		for _, c := range p.PodCIDRs {
			pi.PodCIDRs = append(pi.PodCIDRs, c.String())
		}
		out.Items = append(out.Items, pi)
	}
	slices.SortFunc(out.Items, func(x, y agentapi.PeerInfo) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}
