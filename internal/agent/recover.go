package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/epair-cni/epair/internal/ipam"
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
	Waiting    int // records of a switch the agent does not run (yet): kept for AddSwitch
	Rebuilt    int // running pods whose addresses were restored into a lost IPAM store
}

// Recover rebuilds the agent's state after a start: it reconciles the attachment records
// with the IPAM stores (both survive kill -9 and reboots), finds every pod's host link by its
// owner alias and re-attaches it (the pods are not touched: their links, addresses and
// routes are as the plugin left them), and releases what belongs to pods that are gone.
// Records of a switch the agent does not run are kept: AddSwitch recovers them, and
// Reconcile releases them once the agent has run RecoverGrace without that switch.
// The agent is ready when it returns nil.
func (a *Agent) Recover(ctx context.Context) (RecoverStats, error) {
	a.swMu.RLock()
	st, err := a.recoverSwitches(ctx, a.switchNames())
	if err == nil {
		for _, r := range a.records() {
			if _, ok := a.stores[r.Switch]; !ok {
				st.Waiting++
			}
		}
	}
	a.swMu.RUnlock()
	if err != nil {
		return st, err
	}
	// The gateway's MAC is stable across restarts, so the pods' neighbor entries are still
	// right; the announcement is for pods that have another (an older agent's random one).
	if err := a.dp.AnnounceGateways(); err != nil {
		a.log.Warn("recover: announce the gateways", "err", err)
	}
	a.readyAt.Store(time.Now().UnixNano())
	a.ready.Store(true)
	a.log.Info("recovered state", "reattached", st.Reattached, "orphans", st.Orphans, "dropped", st.Dropped,
		"stale", st.Stale, "pending", st.Pending, "waiting", st.Waiting, "rebuilt", st.Rebuilt)
	return st, nil
}

// recoverSwitches is Recover for the attachments of the named switches (swMu held).
func (a *Agent) recoverSwitches(ctx context.Context, names []string) (RecoverStats, error) {
	var st RecoverStats
	on := make(map[string]bool, len(names))
	for _, n := range names {
		on[n] = true
	}
	// 0. A lost IPAM store (new, truncated, moved aside as damaged) gets the addresses of
	// the pods still running back before anything is allocated or released.
	var fresh []string
	for _, name := range names {
		if a.stores[name].Fresh() {
			fresh = append(fresh, name)
		}
	}
	if len(fresh) > 0 {
		n, err := a.rebuildIPAM(fresh)
		st.Rebuilt = n
		if err != nil {
			return st, fmt.Errorf("recover: %w", err)
		}
	}
	// 1. Records ↔ addresses.
	owners := map[agentapi.Key]string{}
	for _, name := range names {
		als, err := a.stores[name].List()
		if err != nil {
			return st, fmt.Errorf("recover: %w", err)
		}
		for _, al := range als {
			k, app := keyOfOwner(al.Owner)
			if app {
				continue // an application port's: its attachment's record accounts for it
			}
			owners[k] = name
			if r, ok := a.get(k); ok {
				if r.Switch == name && !slices.Equal(r.IPs, al.Addrs) {
					// A record of an older agent, without the addresses: add them.
					nr := *r
					nr.IPs = al.Addrs
					if err := a.recs.put(&nr); err != nil {
						return st, fmt.Errorf("recover: %w", err)
					}
					a.set(&nr)
				}
				continue
			}
			r := &record{Key: k, Switch: name, MTU: a.switchMTU(name), Created: al.Created, IPs: al.Addrs}
			if err := a.recs.put(r); err != nil {
				return st, fmt.Errorf("recover: %w", err)
			}
			a.set(r)
			st.Orphans++
		}
	}
	for _, r := range a.records() {
		if !on[r.Switch] {
			continue
		}
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
		if !on[r.Switch] {
			continue
		}
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
	return st, nil
}

// linkOf finds r's host link among the links by owner alias (an orphan's network is
// unknown: then by container and ifname).
func linkOf(r *record, byOwner map[string]epair.Pair) (epair.Pair, bool) {
	if p, ok := byOwner[ownerKey(r)]; ok || r.Network != "" {
		return p, ok
	}
	for o, p := range byOwner {
		if _, cid, ifn, ok := epair.ParseOwnerKey(o); ok && (agentapi.Key{ContainerID: cid, IfName: ifn}) == r.Key {
			return p, true
		}
	}
	return epair.Pair{}, false
}

// rebuildIPAM restores into the fresh IPAM stores of the named switches (created by this
// start: the file was missing, truncated to zero bytes, or moved aside as damaged) the
// addresses of every pod that still runs: an attachment record of the switch whose host
// link is still on the node (the pod's namespace holds it) gets its recorded addresses back.
// A record whose link is gone needs nothing (the pod is gone; step 1 of recoverSwitches
// forgets it). If a running pod's addresses cannot be told (its record has none, or no
// record accounts for a link carrying an owner alias, and no IPAM store holds its owner),
// the agent refuses to start: it would hand those addresses to new pods. Once every pod
// is restored the stores are marked Rebuilt; until then they stay fresh, so a failed
// start is retried by the next. swMu held.
func (a *Agent) rebuildIPAM(fresh []string) (int, error) {
	isFresh := make(map[string]bool, len(fresh))
	var files []string
	for _, n := range fresh {
		isFresh[n] = true
		files = append(files, a.ipamPath(n))
	}
	pairs, err := a.links.List()
	if err != nil {
		return 0, err
	}
	byOwner := make(map[string]epair.Pair, len(pairs))
	for _, p := range pairs {
		byOwner[p.Owner] = p
	}
	matched := map[string]bool{} // host links a record accounts for
	var unknown []string
	n := 0
	for _, r := range a.records() {
		p, ok := linkOf(r, byOwner)
		if !ok {
			continue
		}
		matched[p.HostName] = true
		if !isFresh[r.Switch] {
			continue
		}
		if len(r.IPs) == 0 {
			unknown = append(unknown, fmt.Sprintf("%s (attachment %s: its record has no addresses)", p.HostName, r.Key))
			continue
		}
		if err := a.stores[r.Switch].Restore(owner(r.Key), r.IPs, r.Created); err != nil {
			unknown = append(unknown, fmt.Sprintf("%s (attachment %s: %v)", p.HostName, r.Key, err))
			continue
		}
		for _, ap := range r.AppPorts {
			if err := a.stores[r.Switch].Restore(appOwner(r.Key, ap.Name), ap.IPs, r.Created); err != nil {
				unknown = append(unknown, fmt.Sprintf("%s (application port %s of %s: %v)", p.HostName, ap.Name, r.Key, err))
			}
		}
		n++
		a.log.Warn("IPAM store lost: restored a running pod's addresses from its attachment record",
			"file", a.ipamPath(r.Switch), "key", r.Key.String(), "link", p.HostName, "ips", ipList(r.IPs))
	}
	held := map[agentapi.Key]bool{}
	for name, st := range a.stores {
		if isFresh[name] {
			continue
		}
		als, err := st.List()
		if err != nil {
			return n, err
		}
		for _, al := range als {
			k, _ := keyOfOwner(al.Owner)
			held[k] = true
		}
	}
	for _, p := range pairs {
		if matched[p.HostName] {
			continue
		}
		if _, cid, ifn, ok := epair.ParseOwnerKey(p.Owner); ok && held[agentapi.Key{ContainerID: cid, IfName: ifn}] {
			continue
		}
		unknown = append(unknown, fmt.Sprintf("%s (owner %s: no attachment record)", p.HostName, p.Owner))
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return n, fmt.Errorf("IPAM store %s was lost (new, empty or damaged) and the node still runs pods whose addresses "+
			"the agent cannot tell: %s; refusing to start rather than hand their addresses to new pods. Restore the file "+
			"from a backup, or delete those pods (or their host links: ip link del <link>), then restart the agent",
			strings.Join(files, ", "), strings.Join(unknown, "; "))
	}
	for _, name := range fresh {
		if err := a.stores[name].Rebuilt(); err != nil {
			return n, err
		}
	}
	if n > 0 {
		a.log.Warn("IPAM store lost: rebuilt the allocations of the running pods", "files", files, "pods", n)
	}
	return n, nil
}

func ipList(as []ipam.Address) string {
	s := make([]string, len(as))
	for i, ad := range as {
		s[i] = ad.Prefix.String()
	}
	return strings.Join(s, ",")
}

func (a *Agent) switchMTU(name string) int {
	if s, ok := a.cfg.Switch(name); ok {
		return s.MTU
	}
	return DefaultMTU
}

// reattach puts r's host link p back on its switch with r's policy (swMu held).
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
	nr := *r
	nr.policy = a.podPolicy(&nr)
	req := a.portRequest(&nr, p.HostName, p.HostIndex)
	req.Owner, req.PodMAC = p.Owner, mac
	if _, err := a.dp.AdoptPort(ctx, req); err != nil {
		return err
	}
	nr.HostIfName = p.HostName
	if err := a.serveAppPorts(&nr); err != nil {
		// The pod keeps its network; only its applications' netmap ports are missing.
		a.log.Warn("could not serve a pod's application ports again", "key", r.Key.String(), "err", err)
	}
	if r.HostIfName != p.HostName || r.HostIfIndex != p.HostIndex {
		nr.HostIfName, nr.HostIfIndex = p.HostName, p.HostIndex
		if err := a.recs.put(&nr); err != nil {
			return err
		}
	}
	a.set(&nr)
	a.portAttached(&nr)
	return nil
}

// Reconcile releases the attachments of pods that are gone: an attached one whose host link
// has disappeared (its pod's namespace was deleted without a DEL), and one allocated but
// never attached for longer than RecoverGrace with no link bearing its owner alias (an ADD
// that died half-way and was never cleaned up by the runtime). It returns the released keys.
//
// It also releases the attachments of a switch the agent has not run for RecoverGrace since
// it became ready (a VirtualSwitch deleted while the agent was down), destroying their host
// links (which removes the pods' interfaces) and the switch's IPAM store.
func (a *Agent) Reconcile(ctx context.Context) ([]agentapi.Key, error) {
	a.swMu.RLock()
	defer a.swMu.RUnlock()
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
	gone := map[string]bool{} // switches whose attachments were released
	graceOver := a.ready.Load() && time.Since(time.Unix(0, a.readyAt.Load())) > time.Duration(a.cfg.RecoverGrace)
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("reconcile: %w", err)
		}
		if _, ok := a.stores[r.Switch]; !ok {
			if !graceOver {
				continue
			}
			unlock := a.lock(r.Key)
			if _, err := a.release(r.Key); err != nil {
				unlock()
				return out, fmt.Errorf("reconcile: %w", err)
			}
			if _, ok := present[r.HostIfName]; ok {
				if err := a.links.Destroy(r.HostIfName); err != nil {
					a.log.Warn("reconcile: destroy the link of a removed switch's attachment", "link", r.HostIfName, "err", err)
				}
			}
			unlock()
			gone[r.Switch] = true
			out = append(out, r.Key)
			a.log.Info("released the attachment of a switch the agent no longer runs", "key", r.Key.String(), "switch", r.Switch, "link", r.HostIfName)
			continue
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
	for sw := range gone {
		if err := removeIfExists(a.ipamPath(sw)); err != nil {
			return out, fmt.Errorf("reconcile: remove the IPAM store of switch %s: %w", sw, err)
		}
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
	a.swMu.Lock()
	defer a.swMu.Unlock()
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
	a.swMu.Lock()
	defer a.swMu.Unlock()
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
	// Every switch's store, including those of switches removed while the agent was down.
	stores, err := filepath.Glob(filepath.Join(a.cfg.StateDir, "ipam-*.db"))
	errs = append(errs, err)
	for _, p := range stores {
		errs = append(errs, removeIfExists(p))
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
