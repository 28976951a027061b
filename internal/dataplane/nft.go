package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// masq is the dataplane's nftables table (family inet) with one NAT
// postrouting chain (and the per-peer counters of peercount.go beside it):
//
//   - traffic from the pod network that leaves through any interface but
//     a host port is masqueraded (pods reach the world with the node's
//     address);
//   - traffic from the pod network that was DNATed (a service address)
//     and goes back into the pod network through a host port is
//     masqueraded too: that is the hairpin case, where a pod reaches
//     itself through a service and would otherwise get a packet with its
//     own source address (which Linux drops as martian). The switch then
//     forwards the frame from the host port to the pod like any other.
//
// It uses the nft binary through sigs.k8s.io/knftables: the module is
// already a dependency (kube-proxy's nftables mode uses it, so the node has
// a working nft), transactions are atomic (one `nft -f`), and the rules
// stay readable in `nft list table inet epair`. google/nftables would avoid
// the binary but adds a dependency and hand-assembled expressions for the
// same two rules.
type masq struct {
	d     *Dataplane
	table string
	nft   knftables.Interface
	peers []netip.Prefix // the peers' pod CIDRs (SetPeers), under d.peerMu or before start
	count *peerCount     // the per-peer counters (resync, under d.peerMu)
}

// tableComment is the table's comment (peercount.go recreates the table with it too).
const tableComment = "epair pod network masquerade"

// podNet is what the rules match: the pod CIDRs and the host ports, and the peers' pod
// CIDRs (traffic to them is not masqueraded: pods reach pods without NAT).
type podNet struct {
	cidrs []netip.Prefix
	taps  []string
	peers []netip.Prefix
}

func newMasq(d *Dataplane, table string) (*masq, error) {
	m := &masq{d: d, table: table}
	m.count = &peerCount{m: m}
	err := d.inNS(func() error {
		var err error
		m.nft, err = knftables.New(knftables.InetFamily, table)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open nftables table %s: %w", table, err)
	}
	return m, nil
}

// rules returns the postrouting rules for pn.
func (pn podNet) rules() []string {
	var v4, v6, p4, p6 []string
	split := func(ps []netip.Prefix, a, b *[]string) {
		for _, c := range ps {
			if c.Addr().Is4() {
				*a = append(*a, c.String())
			} else {
				*b = append(*b, c.String())
			}
		}
	}
	split(pn.cidrs, &v4, &v6)
	split(pn.peers, &p4, &p6)
	taps := "{ " + strings.Join(quoteAll(pn.taps), ", ") + " }"
	var out []string
	for _, fam := range []struct {
		sel          string
		cidrs, peers []string
	}{{"ip", v4, p4}, {"ip6", v6, p6}} {
		if len(fam.cidrs) == 0 {
			continue
		}
		set := "{ " + strings.Join(fam.cidrs, ", ") + " }"
		notPeers := ""
		if len(fam.peers) > 0 {
			notPeers = fmt.Sprintf(" %s daddr != { %s }", fam.sel, strings.Join(fam.peers, ", "))
		}
		out = append(out,
			fmt.Sprintf("%s saddr %s%s oifname != %s masquerade", fam.sel, set, notPeers, taps),
			fmt.Sprintf("%s saddr %s oifname %s ct status dnat masquerade", fam.sel, set, taps),
		)
	}
	return out
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = `"` + s + `"`
	}
	return out
}

// install replaces the table's content with the rules for pn, atomically.
func (m *masq) install(ctx context.Context, pn podNet) error {
	pn.peers = m.peers
	tx := m.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo(tableComment)})
	tx.Add(&knftables.Chain{
		Name:     "postrouting",
		Type:     knftables.PtrTo(knftables.NATType),
		Hook:     knftables.PtrTo(knftables.PostroutingHook),
		Priority: knftables.PtrTo(knftables.SNATPriority),
	})
	tx.Flush(&knftables.Chain{Name: "postrouting"})
	for _, r := range pn.rules() {
		tx.Add(&knftables.Rule{Chain: "postrouting", Rule: r})
	}
	err := m.d.inNS(func() error { return m.nft.Run(ctx, tx) })
	if err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", m.table, err)
	}
	return nil
}

// setPeers makes peers the destinations not masqueraded and reinstalls the rules for pn.
func (m *masq) setPeers(ctx context.Context, pn podNet, peers []netip.Prefix) error {
	m.peers = slices.Clone(peers)
	return m.install(ctx, pn)
}

// remove deletes the table; a missing table is not an error.
func (m *masq) remove(ctx context.Context) error {
	m.count.stale.Store(true) // the next resync reads what is left
	tx := m.nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	err := m.d.inNS(func() error { return m.nft.Run(ctx, tx) })
	if err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("remove nftables table inet %s: %w", m.table, err)
	}
	return nil
}
