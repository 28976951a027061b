package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
)

// RecoverStats says what Recover did.
type RecoverStats struct {
	Reattached int // records whose host link was found and put back on its switch
	Orphans    int // addresses without a record (crash inside Allocate): recorded for GC
	Dropped    int // records without addresses (crash inside Release): forgotten
	Stale      int // attachments whose host link is gone (pod deleted while we were down): released
	Pending    int // allocated, never attached, younger than RecoverGrace: kept for the ADD's retry
}

// Recover rebuilds the agent's state after a start: it reconciles the attachment records
// with the IPAM stores (both survive kill -9 and reboots), finds every pod's host link by its
// owner alias and re-attaches it (the pods are not touched: their links, addresses and
// routes are as the plugin left them), and releases what belongs to pods that are gone.
// The agent is ready when it returns nil.
func (a *Agent) Recover(ctx context.Context) (RecoverStats, error) {
	var st RecoverStats
	// 1. Records ↔ addresses.
	owners := map[agentapi.Key]string{}
	for name, s := range a.stores {
		als, err := s.List()
		if err != nil {
			return st, fmt.Errorf("recover: %w", err)
		}
		for _, al := range als {
			owners[agentapi.Key{ContainerID: al.Owner.ContainerID, IfName: al.Owner.IfName}] = name
			if _, ok := a.get(agentapi.Key{ContainerID: al.Owner.ContainerID, IfName: al.Owner.IfName}); ok {
				continue
			}
			r := &record{Key: agentapi.Key{ContainerID: al.Owner.ContainerID, IfName: al.Owner.IfName}, Switch: name,
				MTU: a.switchMTU(name), Created: al.Created}
			if err := a.recs.put(r); err != nil {
				return st, fmt.Errorf("recover: %w", err)
			}
			a.set(r)
			st.Orphans++
		}
	}
	for _, r := range a.records() {
		if sw, ok := owners[r.Key]; !ok || sw != r.Switch {
			if err := a.recs.delete(r.Key); err != nil {
				return st, fmt.Errorf("recover: %w", err)
			}
			a.drop(r.Key)
			st.Dropped++
		}
	}
	// 2. Host links ↔ records.
	pairs, err := a.links.List()
	if err != nil {
		return st, fmt.Errorf("recover: %w", err)
	}
	byOwner := make(map[string]epair.Pair, len(pairs))
	for _, p := range pairs {
		byOwner[p.Owner] = p
	}
	for _, r := range a.records() {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("recover: %w", err)
		}
		p, ok := byOwner[ownerKey(r)]
		if !ok && r.Network == "" {
			// An orphan's network is unknown: match the alias by container and ifname, and
			// take the network from it.
			for o, q := range byOwner {
				if network, cid, ifn, ok2 := epair.ParseOwnerKey(o); ok2 && (agentapi.Key{ContainerID: cid, IfName: ifn}) == r.Key {
					p, ok = q, true
					nr := *r
					nr.Network = network
					if err := a.recs.put(&nr); err != nil {
						return st, fmt.Errorf("recover: %w", err)
					}
					a.set(&nr)
					r = &nr
					break
				}
			}
		}
		switch {
		case ok:
			if err := a.reattach(ctx, r, p); err != nil {
				a.log.Warn("recover: re-attach failed", "key", r.Key.String(), "link", p.HostName, "err", err)
				continue
			}
			st.Reattached++
		case r.HostIfName != "" || time.Since(r.Created) > time.Duration(a.cfg.RecoverGrace):
			unlock := a.lock(r.Key)
			_, err := a.release(r.Key)
			unlock()
			if err != nil {
				return st, fmt.Errorf("recover: %w", err)
			}
			st.Stale++
		default:
			st.Pending++
		}
	}
	// The gateway's MAC is stable across restarts, so the pods' neighbor entries are still
	// right; the announcement is for pods that have another (an older agent's random one).
	if err := a.dp.AnnounceGateways(); err != nil {
		a.log.Warn("recover: announce the gateways", "err", err)
	}
	a.ready.Store(true)
	a.log.Info("recovered state", "reattached", st.Reattached, "orphans", st.Orphans, "dropped", st.Dropped,
		"stale", st.Stale, "pending", st.Pending)
	return st, nil
}

func (a *Agent) switchMTU(name string) int {
	if s, ok := a.cfg.Switch(name); ok {
		return s.MTU
	}
	return DefaultMTU
}

func (a *Agent) reattach(ctx context.Context, r *record, p epair.Pair) error {
	defer a.lock(r.Key)()
	mac := r.identityMAC()
	if mac == "" {
		// A record from before the plugin reported the pod's MAC: the pod end has the MAC
		// scheme's address (one the runtime asked for would be in the record).
		if u, err := epair.ParseHostName(p.HostName); err == nil {
			if id, err := epair.NodeID(a.cfg.NodeID); err == nil {
				_, pod := epair.MACs(id, u)
				mac = pod.String()
			}
		}
	}
	if _, err := a.dp.AdoptPort(ctx, PortRequest{Switch: r.Switch, HostIfName: p.HostName, HostIfIndex: p.HostIndex,
		Owner: p.Owner, PodMAC: mac, PodIPs: a.podIPs(r)}); err != nil {
		return err
	}
	if r.HostIfName == p.HostName && r.HostIfIndex == p.HostIndex {
		return nil
	}
	nr := *r
	nr.HostIfName, nr.HostIfIndex = p.HostName, p.HostIndex
	if err := a.recs.put(&nr); err != nil {
		return err
	}
	a.set(&nr)
	return nil
}

// Reconcile releases the attachments of pods that are gone: an attached one whose host link
// has disappeared (its pod's namespace was deleted without a DEL), and one allocated but
// never attached for longer than RecoverGrace with no link bearing its owner alias (an ADD
// that died half-way and was never cleaned up by the runtime). It returns the released keys.
func (a *Agent) Reconcile(ctx context.Context) ([]agentapi.Key, error) {
	// The records first, the links second: a port attached after the snapshot is not in it,
	// and one attached before has its link in the list.
	recs := a.records()
	pairs, err := a.links.List()
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	present := make(map[string]int, len(pairs))
	owners := make(map[string]bool, len(pairs))
	for _, p := range pairs {
		present[p.HostName] = p.HostIndex
		owners[p.Owner] = true
	}
	var out []agentapi.Key
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("reconcile: %w", err)
		}
		switch {
		case r.HostIfName != "":
			if idx, ok := present[r.HostIfName]; ok && idx == r.HostIfIndex {
				continue
			}
		case time.Since(r.Created) > time.Duration(a.cfg.RecoverGrace) && !owners[ownerKey(r)]:
		default:
			continue
		}
		unlock := a.lock(r.Key)
		cur, ok := a.get(r.Key)
		if ok && cur.HostIfName == r.HostIfName && cur.HostIfIndex == r.HostIfIndex && cur.Created.Equal(r.Created) {
			if _, err := a.release(r.Key); err != nil {
				unlock()
				return out, fmt.Errorf("reconcile: %w", err)
			}
			out = append(out, r.Key)
			a.log.Info("released the attachment of a pod that is gone", "key", r.Key.String(), "link", r.HostIfName)
		}
		unlock()
	}
	return out, nil
}

// Close stops serving requests, detaches every port and closes the dataplane and the
// stores. The pods' links, addresses and the persistent state are kept: a restarted agent
// re-attaches them.
func (a *Agent) Close() error {
	if a.closed.Swap(true) {
		return nil
	}
	return a.shutdown(false)
}

func (a *Agent) shutdown(uninstall bool) error {
	a.ready.Store(false)
	// Wait for in-flight calls: each holds its key's lock.
	for i := range a.locks {
		a.locks[i].Lock()
	}
	defer func() {
		for i := range a.locks {
			a.locks[i].Unlock()
		}
	}()
	err := a.dp.Close(uninstall)
	return errors.Join(err, a.closeStores(), a.links.Close())
}

// Uninstall removes everything the agent and the plugin put on the node: every attachment's
// host link (which deletes the pod end too), the ports, the dataplane's host ports and
// rules, and the state directory's stores. It closes the agent.
func (a *Agent) Uninstall() error {
	if a.closed.Swap(true) {
		return fmt.Errorf("uninstall: agent already closed")
	}
	var errs []error
	for _, r := range a.records() {
		_, err := a.release(r.Key)
		errs = append(errs, err)
	}
	pairs, err := a.links.List()
	errs = append(errs, err)
	for _, p := range pairs {
		errs = append(errs, a.links.Destroy(p.HostName))
	}
	errs = append(errs, a.shutdown(true))
	for _, sw := range a.cfg.Switches {
		errs = append(errs, removeIfExists(filepath.Join(a.cfg.StateDir, "ipam-"+sw.Name+".db")))
	}
	errs = append(errs, removeIfExists(filepath.Join(a.cfg.StateDir, "attachments.db")))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (a *Agent) closeStores() error {
	var errs []error
	for _, s := range a.stores {
		errs = append(errs, s.Close())
	}
	if a.recs != nil {
		errs = append(errs, a.recs.close())
	}
	return errors.Join(errs...)
}
