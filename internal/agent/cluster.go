package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/rest"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
	"github.com/epair-cni/epair/pkg/vale"
)

// ErrRestartRequired is wrapped by the cluster dataplane's errors for changes the running
// dataplane cannot make live (pod CIDRs, a switch's MTU, VALE limits or ranges): the agent
// keeps serving the old configuration and reports the error in the NodeState's conditions
// until it is restarted.
var ErrRestartRequired = errors.New("needs an agent restart")

// errNotStarted is wrapped by ApplySwitch of a secondary switch before the agent runs: the
// switch reconciler retries it (with backoff) until the agent has started.
var errNotStarted = errors.New("the agent has not started yet")

// ClusterOptions wire the cluster-mode agent.
type ClusterOptions struct {
	// Config is the agent's configuration; its first switch is renamed to the conflist's
	// switch (Flags.CNISwitch) and gets the node's pod CIDRs as ranges. Its other switches
	// are dropped: in cluster mode the VirtualSwitches say which switches run.
	Config *Config
	// Flags are the controller's cluster-mode flags.
	Flags controller.Flags
	// RestConfig reaches the API server.
	RestConfig *rest.Config
	Logger     *slog.Logger
	// ReconcileInterval is the period of the stale-link sweep (default 30s).
	ReconcileInterval time.Duration
}

// RunCluster is the agent's cluster mode, in four steps:
//  1. the controller (internal/controller) starts and reconciles the Node and the
//     VirtualSwitches into clusterDataplane;
//  2. once the Node's pod CIDRs and the conflist's VirtualSwitch are known, the agent starts
//     with that switch (the dataplane creates it and IPAM its ranges at start);
//  3. the agent serves as in standalone mode (serve); the controller adds and removes the
//     other VirtualSwitches selecting the node live, as secondary networks;
//  4. on ctx done the controller stops first; if it reports an uninstall (its DaemonSet is
//     gone) the agent removes everything from the node, otherwise it leaves the pods
//     running for the next agent.
func RunCluster(ctx context.Context, o ClusterOptions) (err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.Config == nil || o.RestConfig == nil {
		return fmt.Errorf("run cluster agent: Config and RestConfig are required")
	}
	primary := o.Flags.CNISwitch
	if primary == "" {
		primary = o.Config.Switches[0].Name
	}
	o.Config.Switches = o.Config.Switches[:1]
	o.Config.Switches[0].Name = primary
	if o.Config.NodeID == "" {
		// The MAC scheme's seed: the node's name is unique in the cluster and stable, and
		// a container image has no /etc/machine-id.
		o.Config.NodeID = "k8s-node/" + o.Flags.NodeName
	}
	cd := newClusterDataplane(o.Config, primary, log)
	opts, err := o.Flags.Options(cd)
	if err != nil {
		return fmt.Errorf("run cluster agent: %w", err)
	}
	c, err := controller.New(o.RestConfig, opts)
	if err != nil {
		return fmt.Errorf("run cluster agent: %w", err)
	}

	// 1. The controller.
	mgr := startManager(ctx, c)
	defer func() { err = errors.Join(err, mgr.stop()) }()
	log.Info("waiting for the node's pod CIDRs and VirtualSwitch", "node", o.Flags.NodeName, "switch", primary)
	select {
	case <-cd.startable:
	case <-ctx.Done():
		return nil
	case <-mgr.done:
		return fmt.Errorf("run cluster agent: controller stopped before the agent started: %w", mgr.stop())
	}

	// 2. The agent, with the conflist's switch.
	a, err := cd.start(c)
	if err != nil {
		return fmt.Errorf("run cluster agent: %w", err)
	}
	cd.mu.Lock()
	log.Info("pod network MTU", "switch", primary, "mtu", o.Config.Switches[0].MTU, "from", cd.mtu)
	cd.mu.Unlock()
	defer func() {
		// The controller first: its conflist writer tells an uninstall from a restart.
		err = errors.Join(err, mgr.stop())
		if c.Uninstalling() {
			log.Info("uninstall: removing the pods' links, ports, rules and stores")
			err = errors.Join(err, a.Uninstall())
		} else {
			err = errors.Join(err, a.Close())
		}
	}()
	// The chart's hostPath volume creates the socket's directory 0755; it is the agent's
	// own (a dedicated hostPath), so it is narrowed to root-only as the server requires.
	if err := os.Chmod(filepath.Dir(o.Config.Socket), 0o700); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("run cluster agent: socket directory: %w", err)
	}

	// 3. Serve until ctx is done or the controller stops.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-mgr.done:
			cancel()
		case <-sctx.Done():
		}
	}()
	return serve(sctx, a, serveOptions{reconcileInterval: o.ReconcileInterval})
}

// managerRun is the controller running in the background.
type managerRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the manager returned
	err    error         // its error, once done is closed
	once   sync.Once
}

func startManager(ctx context.Context, c *controller.Controller) *managerRun {
	mctx, cancel := context.WithCancel(ctx)
	m := &managerRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		m.err = c.Start(mctx)
		close(m.done)
	}()
	return m
}

// stop stops the manager and waits for it (the conflist writer decides about the uninstall
// while stopping); it returns the manager's error the first time, unless it is the
// cancellation's.
func (m *managerRun) stop() error {
	var err error
	m.once.Do(func() {
		m.cancel()
		<-m.done
		if m.err != nil && !errors.Is(m.err, context.Canceled) {
			err = fmt.Errorf("controller: %w", m.err)
		}
	})
	return err
}

// clusterForwarding makes sure IP forwarding is on for the switches' families. A
// DaemonSet pod sees /proc/sys read-only unless privileged: forwarding that is already
// on (kube-proxy and most node setups turn it on) is enough, and when it is off and
// cannot be turned on the error says what to do.
func clusterForwarding(c *Config) error {
	err := enableForwarding(c)
	if err == nil {
		return nil
	}
	var v4, v6 bool
	for i := range c.Switches {
		for _, r := range c.switchRanges(i) {
			v4, v6 = v4 || r.Is4(), v6 || !r.Is4()
		}
	}
	on := func(path string) bool {
		b, rerr := os.ReadFile(procSys + path)
		return rerr == nil && strings.TrimSpace(string(b)) == "1"
	}
	if (!v4 || on("/net/ipv4/ip_forward")) && (!v6 || on("/net/ipv6/conf/all/forwarding")) {
		return nil
	}
	return fmt.Errorf("%w (IP forwarding is off on the node and the agent cannot turn it on: set net.ipv4.ip_forward=1, and net.ipv6.conf.all.forwarding=1 for IPv6, on the node)", err)
}

// clusterDataplane is the controller's Dataplane (controller.Dataplane) on the node: it
// turns the Node and the VirtualSwitches into the agent's switches and the PortPolicies into
// Agent.SetPodPolicy, and projects the agent's switches and records into NodeState. The
// agent's records are the only pod ↔ port ↔ policy map; this type keeps only what the
// controller told it (pod CIDRs, switch configurations).
//
// The conflist's switch is the primary network: its ranges are the node's pod CIDRs, it is
// created when the agent starts, and changes other than its default queue and port
// security need a restart. Every other VirtualSwitch selecting the node is a secondary
// network with its own spec.podCIDRs, added and removed live.
type clusterDataplane struct {
	cfg     *Config
	primary string
	log     *slog.Logger

	startable chan struct{} // closed once pod CIDRs and the primary switch are known

	mu       sync.Mutex
	cidrs    []netip.Prefix
	switches map[string]controller.SwitchConfig // as applied (the primary's as recorded before start)
	peers    []dataplane.Peer                   // the other nodes, as last set (applied at start too)
	addrs    []netip.Addr                       // the node's own addresses (InternalIPs)
	mtu      string                             // how the primary switch's MTU was chosen (for the log)
	started  bool
	a        *Agent
}

var _ controller.Dataplane = (*clusterDataplane)(nil)

func newClusterDataplane(cfg *Config, primary string, log *slog.Logger) *clusterDataplane {
	return &clusterDataplane{cfg: cfg, primary: primary, log: log, startable: make(chan struct{}),
		switches: map[string]controller.SwitchConfig{}}
}

// checkStartableLocked closes startable once both the pod CIDRs and the primary switch are
// known. mu held.
func (c *clusterDataplane) checkStartableLocked() {
	_, ok := c.switches[c.primary]
	if !c.started && len(c.cidrs) > 0 && ok {
		c.started = true
		close(c.startable)
	}
}

// prepareConfig makes the agent's configuration the primary switch's: the node's pod CIDRs
// as ranges, and the VirtualSwitch's MTU, offload and VALE limits.
func (c *clusterDataplane) prepareConfig() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cidrs := make([]string, len(c.cidrs))
	for i, p := range c.cidrs {
		cidrs[i] = p.String()
	}
	if err := c.cfg.SetPodCIDRs(c.primary, cidrs); err != nil {
		return err
	}
	sc := c.switches[c.primary]
	if sc.MTU == 0 {
		sc.MTU, c.mtu = detectMTU(c.addrs, c.cfg.PeerMode)
	} else {
		c.mtu = "the VirtualSwitch's"
	}
	applySwitchSpec(&c.cfg.Switches[0], sc)
	return c.cfg.Validate()
}

// SetNodeAddresses implements controller.Dataplane: the node's own addresses, for the MTU
// detection at start.
func (c *clusterDataplane) SetNodeAddresses(_ context.Context, addrs []netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addrs = slices.Clone(addrs)
	return nil
}

// detectMTU is the pods' MTU on a node whose addresses are addrs: the MTU of the interface
// holding the first of them that one holds (its default route's when none does), less the
// VXLAN overhead (over that address's family) unless peers are only ever routed. It
// returns how it chose, for the log.
func detectMTU(addrs []netip.Addr, peerMode string) (int, string) {
	mtu, how, v6 := 0, "", false
	links, _ := netlink.LinkList()
	for _, a := range addrs {
		for _, l := range links {
			las, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				continue
			}
			for _, la := range las {
				if x, ok := netip.AddrFromSlice(la.IP); ok && x.Unmap() == a {
					mtu, how, v6 = l.Attrs().MTU, fmt.Sprintf("%s's (it holds %v)", l.Attrs().Name, a), a.Is6()
				}
			}
		}
		if mtu != 0 {
			break
		}
	}
	if mtu == 0 {
		if rs, err := netlink.RouteGet(net.IPv4(1, 1, 1, 1)); err == nil && len(rs) > 0 {
			if l, err := netlink.LinkByIndex(rs[0].LinkIndex); err == nil {
				mtu, how = l.Attrs().MTU, fmt.Sprintf("%s's (the default route's; no interface holds the node's addresses %v)", l.Attrs().Name, addrs)
			}
		}
	}
	if mtu == 0 {
		mtu, how = DefaultMTU, fmt.Sprintf("the default %d (no interface holds the node's addresses %v and there is no default route)", DefaultMTU, addrs)
	}
	if peerMode != dataplane.ModeRouted {
		over := dataplane.VXLANOverhead
		if v6 {
			over = dataplane.VXLANOverhead6
		}
		mtu -= over
		how += fmt.Sprintf(" less %d for VXLAN", over)
	}
	return max(min(mtu, MaxMTU), MinMTU), how
}

// applySwitchSpec puts a VirtualSwitch's node settings into the agent's switch config.
func applySwitchSpec(s *SwitchConfig, sc controller.SwitchConfig) {
	if sc.MTU != 0 {
		s.MTU = sc.MTU
	}
	s.BatchSize, s.MaxPorts, s.FDBSize, s.FDBAging = sc.BatchSize, sc.MaxPorts, sc.FDBSize, Duration(sc.FDBAging)
	s.Offload = sc.Offload // deprecated: only for the warning (Config.Deprecations)
	ps := sc.PortSecurity
	s.AntiSpoofing = ptr(ps.AntiSpoofing)
	s.BroadcastRate, s.MulticastRate = ptr(uint32(max(ps.BroadcastRate, 0))), ptr(uint32(max(ps.MulticastRate, 0)))
}

// start starts the agent with the primary switch: IP forwarding, the links, the dataplane,
// the stores, and the VirtualSwitch's default queue; the controller gives pods their
// PortPolicies.
func (c *clusterDataplane) start(ctrl *controller.Controller) (*Agent, error) {
	if err := c.prepareConfig(); err != nil {
		return nil, err
	}
	if err := clusterForwarding(c.cfg); err != nil {
		return nil, err
	}
	links, err := epair.New(epair.Options{NodeID: c.cfg.NodeID})
	if err != nil {
		return nil, err
	}
	dp, err := NewDataplane(c.cfg, c.log)
	if err != nil {
		return nil, errors.Join(err, links.Close())
	}
	opts := Options{Config: c.cfg, Dataplane: dp, Links: links, Logger: c.log}
	if ctrl != nil {
		opts.Policies = ctrl
	}
	a, err := New(opts)
	if err != nil {
		return nil, errors.Join(err, dp.Close(false), links.Close())
	}
	c.mu.Lock()
	def := switchDefaultPolicy(c.switches[c.primary])
	c.mu.Unlock()
	if err := a.SetSwitchDefault(c.primary, def); err != nil {
		return nil, errors.Join(err, a.Close())
	}
	c.mu.Lock()
	c.a = a
	peers := c.peers
	c.mu.Unlock()
	if _, err := a.dp.SetPeers(context.Background(), peers); err != nil {
		return nil, errors.Join(err, a.Close())
	}
	return a, nil
}

// SetPeers implements controller.Dataplane: the other nodes become the dataplane's peers
// (routes to their pod CIDRs), now or when the agent starts. A peer that conflicts with this
// node's pod network or an earlier peer (overlapping pod CIDRs, bad addresses) is left out
// and logged, so one bad Node does not cut the others off.
func (c *clusterDataplane) SetPeers(ctx context.Context, in []controller.PeerConfig) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	own := slices.Clone(c.cidrs)
	for _, sc := range c.switches {
		own = append(own, sc.PodCIDRs...)
	}
	peers := make([]dataplane.Peer, 0, len(in))
	check := dataplane.NewPeerChecker(own)
	for _, p := range in {
		dp := dataplane.Peer{Name: p.Name, Addresses: p.Addresses, PodCIDRs: p.PodCIDRs}
		if err := check.Add(dp); err != nil {
			c.log.Warn("node left out of the peers", "node", p.Name, "err", err)
			continue
		}
		peers = append(peers, dp)
	}
	c.peers = peers
	if c.a == nil {
		return nil
	}
	_, err := c.a.dp.SetPeers(ctx, peers)
	return err
}

func (c *clusterDataplane) agent() *Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.a
}

// SetPodCIDRs records the node's pod CIDRs before the agent starts; afterwards a change
// needs a restart (IPAM's ranges and the host port's gateways are set at start).
func (c *clusterDataplane) SetPodCIDRs(_ context.Context, cidrs []netip.Prefix) error {
	if len(cidrs) == 0 {
		return fmt.Errorf("set pod CIDRs: the node has no pod CIDR")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		if !slices.Equal(c.cidrs, cidrs) {
			return fmt.Errorf("set pod CIDRs: the node's pod CIDRs changed from %v to %v; the agent serves %v: %w", c.cidrs, cidrs, c.cidrs, ErrRestartRequired)
		}
		return nil
	}
	c.cidrs = slices.Clone(cidrs)
	c.checkStartableLocked()
	return nil
}

// ApplySwitch runs a VirtualSwitch on the node: the primary one is recorded before the
// agent starts and changed live afterwards (default queue and port security; other
// changes need a restart); a secondary one is added to the running agent, or changed live
// in the same way.
func (c *clusterDataplane) ApplySwitch(ctx context.Context, sc controller.SwitchConfig) error {
	if sc.Name == c.primary {
		if len(sc.PodCIDRs) > 0 {
			return fmt.Errorf("apply switch %s: %w", sc.Name, &controller.FieldError{Field: "podCIDRs", Value: fmt.Sprint(sc.PodCIDRs),
				Allowed: "empty for the conflist's switch, whose pods take the node's spec.podCIDRs"})
		}
	} else if len(sc.PodCIDRs) == 0 {
		return fmt.Errorf("apply switch %s: %w", sc.Name, &controller.FieldError{Field: "podCIDRs", Value: "",
			Allowed: fmt.Sprintf("the pod ranges of this secondary network (only the conflist's switch %s takes the node's spec.podCIDRs)", c.primary)})
	}
	pol := switchDefaultPolicy(sc)
	if err := pol.Validate(); err != nil {
		return fmt.Errorf("apply switch %s: default queue: %w", sc.Name, err)
	}
	c.mu.Lock()
	a := c.a
	old, running := c.switches[sc.Name]
	switch {
	case sc.Name == c.primary && !c.started:
		c.switches[sc.Name] = sc
		c.checkStartableLocked()
		c.mu.Unlock()
		return nil
	case sc.Name == c.primary && a == nil:
		c.mu.Unlock()
		return fmt.Errorf("apply switch %s: the agent is starting with generation %d: %w", sc.Name, old.Generation, ErrRestartRequired)
	case a == nil:
		c.mu.Unlock()
		return fmt.Errorf("apply switch %s: %w", sc.Name, errNotStarted)
	}
	c.mu.Unlock()

	if !running {
		s, err := secondarySwitch(c.cfg, sc)
		if err == nil {
			_, err = a.AddSwitch(ctx, s, &pol)
		}
		if err != nil {
			return fmt.Errorf("apply switch %s: %w", sc.Name, err)
		}
		c.mu.Lock()
		c.switches[sc.Name] = sc
		c.mu.Unlock()
		return nil
	}
	fixed := fixedChanges(old, sc)
	if err := a.SetSwitchDefault(sc.Name, pol); err != nil {
		return fmt.Errorf("apply switch %s: %w", sc.Name, err)
	}
	// The default queue and port security are live: the generation is recorded as applied
	// only if nothing else changed.
	q := old
	q.DefaultQueue, q.PortSecurity = sc.DefaultQueue, sc.PortSecurity
	if len(fixed) == 0 {
		q.Generation = sc.Generation
	}
	c.mu.Lock()
	c.switches[sc.Name] = q
	c.mu.Unlock()
	if len(fixed) > 0 {
		return fmt.Errorf("apply switch %s: %s changed: %w (the default queue and port security were applied live)", sc.Name, strings.Join(fixed, ", "), ErrRestartRequired)
	}
	return nil
}

// secondarySwitch is the agent's configuration of a secondary VirtualSwitch: its own pod
// ranges, no default route for its pods, the primary's host port naming.
func secondarySwitch(cfg *Config, sc controller.SwitchConfig) (SwitchConfig, error) {
	s := SwitchConfig{Name: sc.Name, Secondary: true}
	for _, p := range sc.PodCIDRs {
		s.Ranges = append(s.Ranges, ipam.RangeConfig{Subnet: p.String()})
	}
	applySwitchSpec(&s, sc)
	s.setDefaults()
	cand := *cfg
	cand.Switches = []SwitchConfig{s}
	if err := cand.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// fixedChanges lists what changed between two configurations of a running switch that the
// dataplane cannot change live.
func fixedChanges(old, sc controller.SwitchConfig) []string {
	var fixed []string
	add := func(changed bool, format string, a ...any) {
		if changed {
			fixed = append(fixed, fmt.Sprintf(format, a...))
		}
	}
	add(sc.MTU != old.MTU, "mtu %d→%d", old.MTU, sc.MTU)
	add(sc.BatchSize != old.BatchSize, "batchSize %d→%d", old.BatchSize, sc.BatchSize)
	add(sc.MaxPorts != old.MaxPorts, "maxPorts %d→%d", old.MaxPorts, sc.MaxPorts)
	add(sc.FDBSize != old.FDBSize, "fdbSize %d→%d", old.FDBSize, sc.FDBSize)
	add(sc.FDBAging != old.FDBAging, "fdbAging %v→%v", old.FDBAging, sc.FDBAging)
	add(!slices.Equal(sc.PodCIDRs, old.PodCIDRs), "podCIDRs %v→%v", old.PodCIDRs, sc.PodCIDRs)
	return fixed
}

// DeleteSwitch removes a secondary switch live: its pods lose their interface on it (link,
// port, addresses), nothing else. The primary switch is forgotten before the agent starts;
// the running one keeps its ports until the agent restarts.
func (c *clusterDataplane) DeleteSwitch(ctx context.Context, name string) error {
	c.mu.Lock()
	_, known := c.switches[name]
	a, started := c.a, c.started
	switch {
	case !known:
		c.mu.Unlock()
		return nil
	case name == c.primary && !started:
		delete(c.switches, name)
		c.mu.Unlock()
		return nil
	case name == c.primary:
		c.mu.Unlock()
		return fmt.Errorf("delete switch %s: the running switch keeps its ports: %w", name, ErrRestartRequired)
	}
	c.mu.Unlock()
	if err := a.RemoveSwitch(ctx, name); err != nil && !errors.Is(err, ErrNoSwitch) {
		return fmt.Errorf("delete switch %s: %w", name, err)
	}
	c.mu.Lock()
	delete(c.switches, name)
	c.mu.Unlock()
	return nil
}

// ApplyPortPolicy sets the ports of pod (one per interface) from p.
func (c *clusterDataplane) ApplyPortPolicy(ctx context.Context, pod controller.PodRef, p controller.PolicyConfig) error {
	a := c.agent()
	if a == nil {
		return fmt.Errorf("apply policy %s to %s: %w", p.Policy, pod, controller.ErrNoPort)
	}
	return a.SetPodPolicy(ctx, pod, &p)
}

// ClearPortPolicy gives pod's ports their switch's default.
func (c *clusterDataplane) ClearPortPolicy(ctx context.Context, pod controller.PodRef) error {
	a := c.agent()
	if a == nil {
		return nil
	}
	return a.SetPodPolicy(ctx, pod, nil)
}

// Status projects the agent's switches (Agent.Switches: counters, queues, and the pod and
// PortPolicy behind each port) into NodeState.
func (c *clusterDataplane) Status(ctx context.Context) (controller.Snapshot, error) {
	a := c.agent()
	if a == nil {
		return controller.Snapshot{}, nil
	}
	sl, err := a.Switches(ctx)
	if err != nil {
		return controller.Snapshot{}, err
	}
	c.mu.Lock()
	gens := make(map[string]int64, len(c.switches))
	for name, sc := range c.switches {
		gens[name] = sc.Generation
	}
	c.mu.Unlock()
	var snap controller.Snapshot
	drops := map[string]int64{}
	for _, s := range sl.Items {
		st := epairv1.SwitchState{Name: s.Name, ObservedGeneration: gens[s.Name], MTU: int32(a.SwitchMTU(s.Name))}
		for _, p := range s.Ports {
			if p.Kind == string(dataplane.KindPod) {
				st.Ports++
			}
			ps := portState(s.Name, p)
			for _, d := range ps.Drops {
				drops[d.Reason] += d.Packets
			}
			snap.Ports = append(snap.Ports, ps)
		}
		snap.Switches = append(snap.Switches, st)
	}
	for r, n := range drops {
		snap.Drops = append(snap.Drops, epairv1.DropCount{Reason: r, Packets: n})
	}
	sort.Slice(snap.Drops, func(i, j int) bool { return snap.Drops[i].Reason < snap.Drops[j].Reason })
	if pl, err := a.Peers(ctx); err == nil {
		for _, p := range pl.Items {
			snap.Peers = append(snap.Peers, epairv1.PeerState{Node: p.Name, Addresses: p.Addresses, PodCIDRs: p.PodCIDRs,
				Mode: p.Mode, Routes: int32(p.Routes), State: p.Reason})
		}
	}
	return snap, nil
}

// portState is a port's NodeState entry, from the agent API's view of it (portInfo): its
// counters (the switch's and the fast path's together), queue and drops by reason (the reasons' names are the switch's and the
// dataplane's, as everywhere), each frame counted once. The port's queue-full is what its
// full output queue (or a lack of buffers) refused; the queue adds only the frames it had
// queued and then evicted.
func portState(sw string, p agentapi.PortInfo) epairv1.PortState {
	ps := epairv1.PortState{Name: p.HostIfName, Switch: sw, Pod: p.Pod, Policy: p.Policy,
		RxPackets: int64(p.Stats.InFrames), RxBytes: int64(p.Stats.InBytes),
		TxPackets: int64(p.Stats.OutFrames), TxBytes: int64(p.Stats.OutBytes)}
	if ps.Name == "" {
		ps.Name = p.Name // an application port: no link, its switch port's name
	}
	if q := p.Queue; q != nil {
		ps.TxPackets, ps.TxBytes = int64(q.TxFrames), int64(q.TxBytes)
		ps.QueueDepth, ps.QueueLength = int32(q.Len), int32(q.MaxLen)
		if q.Evicted != 0 {
			ps.Drops = mergeDrop(ps.Drops, vale.DropNoSpace.String(), int64(q.Evicted))
		}
	}
	if f := p.FastPath; f != nil { // the port's traffic the switch did not see
		ps.RxPackets, ps.RxBytes = ps.RxPackets+int64(f.InFrames), ps.RxBytes+int64(f.InBytes)
		ps.TxPackets, ps.TxBytes = ps.TxPackets+int64(f.OutFrames), ps.TxBytes+int64(f.OutBytes)
	}
	for r, n := range p.Stats.Drops {
		ps.Drops = mergeDrop(ps.Drops, r, int64(n))
	}
	sort.Slice(ps.Drops, func(i, j int) bool { return ps.Drops[i].Reason < ps.Drops[j].Reason })
	return ps
}

func mergeDrop(ds []epairv1.DropCount, reason string, n int64) []epairv1.DropCount {
	for i := range ds {
		if ds[i].Reason == reason {
			ds[i].Packets += n
			return ds
		}
	}
	return append(ds, epairv1.DropCount{Reason: reason, Packets: n})
}

// Ready reports whether the agent serves CNI requests.
func (c *clusterDataplane) Ready() bool {
	a := c.agent()
	return a != nil && a.ready.Load()
}
