package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
	"github.com/epair-cni/epair/pkg/vale"
)

// ErrRestartRequired is wrapped by the cluster dataplane's errors for changes the running
// dataplane cannot make live (pod CIDRs, a switch's MTU or VALE limits, a new or deleted
// switch): the agent keeps serving the old configuration and reports the error in the
// NodeState's conditions until it is restarted.
var ErrRestartRequired = errors.New("needs an agent restart")

// ErrUnsupported is wrapped for configuration the dataplane does not implement (a second
// switch per node): it is rejected, not silently half-applied.
var ErrUnsupported = errors.New("not implemented by the epair dataplane")

// ClusterOptions wire the cluster-mode agent.
type ClusterOptions struct {
	// Config is the agent's configuration; its first switch is renamed to the conflist's
	// switch (Flags.CNISwitch) and gets the node's pod CIDRs as ranges.
	Config *Config
	// Flags are the controller's cluster-mode flags.
	Flags controller.Flags
	// RestConfig reaches the API server.
	RestConfig *rest.Config
	Logger     *slog.Logger
	// ReconcileInterval is the period of the stale-link sweep (default 30s).
	ReconcileInterval time.Duration
}

// RunCluster is the agent's cluster mode: the controller (internal/controller) runs from the
// start; the agent (stores, dataplane, plugin socket) starts once the Node's pod CIDRs are
// known and the conflist's VirtualSwitch has been applied, because the dataplane creates its
// switches and IPAM its ranges at start. On ctx done the controller stops first; if it
// reports an uninstall (its DaemonSet is gone) the agent removes everything from the node,
// otherwise it leaves the pods running for the next agent.
func RunCluster(ctx context.Context, o ClusterOptions) (err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.Config == nil || o.RestConfig == nil {
		return fmt.Errorf("run cluster agent: Config and RestConfig are required")
	}
	swName := o.Flags.CNISwitch
	if swName == "" {
		swName = o.Config.Switches[0].Name
	}
	o.Config.Switches[0].Name = swName
	if o.Config.NodeID == "" {
		// The MAC scheme's seed: the node's name is unique in the cluster and stable, and
		// a container image has no /etc/machine-id.
		o.Config.NodeID = "k8s-node/" + o.Flags.NodeName
	}
	cd := newClusterDataplane(o.Config, swName, log)
	opts, err := o.Flags.Options(cd)
	if err != nil {
		return fmt.Errorf("run cluster agent: %w", err)
	}
	c, err := controller.New(o.RestConfig, opts)
	if err != nil {
		return fmt.Errorf("run cluster agent: %w", err)
	}
	cd.ctrl = c

	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- c.Start(mctx) }()
	// stopController stops the manager and waits for it (the conflist writer decides about
	// the uninstall while stopping).
	var mgrErr error
	mgrStopped := false
	stopController := func() {
		if mgrStopped {
			return
		}
		mcancel()
		mgrErr = <-mgrDone
		mgrStopped = true
	}
	defer func() {
		stopController()
		if mgrErr != nil && !errors.Is(mgrErr, context.Canceled) {
			err = errors.Join(err, fmt.Errorf("controller: %w", mgrErr))
		}
	}()

	log.Info("waiting for the node's pod CIDRs and VirtualSwitch", "node", o.Flags.NodeName, "switch", swName)
	select {
	case <-cd.startable:
	case <-ctx.Done():
		return nil
	case mgrErr = <-mgrDone:
		mgrStopped = true
		return fmt.Errorf("run cluster agent: controller stopped before the agent started: %w", mgrErr)
	}
	if err := cd.prepareConfig(); err != nil {
		return fmt.Errorf("run cluster agent: %w", err)
	}
	if err := clusterForwarding(o.Config); err != nil {
		return fmt.Errorf("run cluster agent: %w", err)
	}
	links, err := epair.New(epair.Options{NodeID: o.Config.NodeID})
	if err != nil {
		return fmt.Errorf("run cluster agent: %w", err)
	}
	dp, err := cd.newDataplane()
	if err != nil {
		links.Close()
		return fmt.Errorf("run cluster agent: %w", err)
	}
	a, err := New(Options{Config: o.Config, Dataplane: dp, Links: links, Logger: log})
	if err != nil {
		return errors.Join(fmt.Errorf("run cluster agent: %w", err), dp.Close(false), links.Close())
	}
	cd.setAgent(a)
	defer func() {
		// The controller first: its conflist writer tells an uninstall from a restart.
		stopController()
		var cerr error
		if c.Uninstalling() {
			log.Info("uninstall: removing the pods' links, ports, rules and stores")
			cerr = a.Uninstall()
		} else {
			cerr = a.Close()
		}
		err = errors.Join(err, cerr)
	}()

	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, 3)
	start := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(actx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	// The chart's hostPath volume creates the socket's directory 0755; it is the agent's
	// own (a dedicated hostPath), so it is narrowed to root-only as the server requires.
	if err := os.Chmod(filepath.Dir(o.Config.Socket), 0o700); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("run cluster agent: socket directory: %w", err)
	}
	ready := make(chan struct{})
	start("socket server", (&SocketServer{Agent: a, Ready: ready}).Start)
	select {
	case <-ready:
	case <-actx.Done():
		wg.Wait()
		return firstErr(errc)
	}
	if o.Config.MetricsAddr != "" {
		start("metrics server", (&MetricsServer{Agent: a, Addr: o.Config.MetricsAddr}).Start)
	}
	if _, err := a.Recover(actx); err != nil {
		cancel()
		wg.Wait()
		return errors.Join(err, firstErr(errc))
	}
	start("reconcile loop", (&ReconcileLoop{Agent: a, Interval: o.ReconcileInterval}).Start)
	log.Info("agent ready (cluster mode)", "socket", o.Config.Socket, "switch", swName, "podCIDRs", o.Config.Switches[0].Ranges, "version", Version)
	select {
	case <-actx.Done():
	case mgrErr = <-mgrDone:
		mgrStopped = true
		cancel()
	}
	wg.Wait()
	return firstErr(errc)
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

// clusterDataplane implements controller.Dataplane over the agent (attachments: which pod
// is behind which port) and internal/dataplane (switches, ports, SetPortPolicy). Before the
// agent starts it records the pod CIDRs and the switch configuration the agent starts with.
type clusterDataplane struct {
	cfg    *Config
	swName string
	log    *slog.Logger
	ctrl   *controller.Controller

	startable chan struct{} // closed once pod CIDRs and the switch are known

	mu        sync.Mutex
	cidrs     []netip.Prefix
	sw        *controller.SwitchConfig // desired (before start) / running (after)
	started   bool
	a         *Agent
	d         *dataplane.Dataplane
	defPolicy dataplane.PortPolicy
	policies  map[string]controller.PolicyConfig // port name → the PortPolicy applied to it
	podPorts  map[string]string                  // pod "namespace/name" → port name
	portPods  map[string]string                  // port name → pod
}

var (
	_ controller.Dataplane = (*clusterDataplane)(nil)
	_ Dataplane            = (*clusterPorts)(nil)
)

func newClusterDataplane(cfg *Config, sw string, log *slog.Logger) *clusterDataplane {
	return &clusterDataplane{cfg: cfg, swName: sw, log: log, startable: make(chan struct{}),
		policies: map[string]controller.PolicyConfig{}, podPorts: map[string]string{}, portPods: map[string]string{}}
}

// checkStartable closes startable once both the pod CIDRs and the switch are known. mu held.
func (c *clusterDataplane) checkStartableLocked() {
	if !c.started && len(c.cidrs) > 0 && c.sw != nil {
		c.started = true
		close(c.startable)
	}
}

// prepareConfig puts the pod CIDRs and the switch's MTU into the agent's configuration.
func (c *clusterDataplane) prepareConfig() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cidrs := make([]string, len(c.cidrs))
	for i, p := range c.cidrs {
		cidrs[i] = p.String()
	}
	if err := c.cfg.SetPodCIDRs(c.swName, cidrs); err != nil {
		return err
	}
	if c.sw.MTU != 0 {
		c.cfg.Switches[0].MTU = c.sw.MTU
	}
	c.cfg.Switches[0].Offload = c.sw.Offload
	c.defPolicy = switchDefaultPolicy(*c.sw)
	return c.cfg.Validate()
}

// newDataplane builds internal/dataplane from the prepared configuration, with the
// VirtualSwitch's VALE limits and default queue.
func (c *clusterDataplane) newDataplane() (Dataplane, error) {
	dc, err := DataplaneConfig(c.cfg)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	sw := *c.sw
	dc.DefaultPolicy = c.defPolicy
	c.mu.Unlock()
	dc.Switches[0].BatchSize = sw.BatchSize
	dc.Switches[0].MaxPorts = sw.MaxPorts
	dc.Switches[0].FDBSize = sw.FDBSize
	dc.Switches[0].Aging = sw.FDBAging
	d, err := dataplane.New(dc)
	if err != nil {
		return nil, fmt.Errorf("start dataplane: %w", err)
	}
	c.mu.Lock()
	c.d = d
	c.mu.Unlock()
	return &clusterPorts{realDataplane: newRealDataplane(c.cfg, d), c: c}, nil
}

func (c *clusterDataplane) setAgent(a *Agent) {
	c.mu.Lock()
	c.a = a
	c.mu.Unlock()
}

func (c *clusterDataplane) running() (*Agent, *dataplane.Dataplane) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.a, c.d
}

// SetPodCIDRs records the node's pod CIDRs before the agent starts; afterwards a change
// needs a restart (IPAM's ranges and the host port's gateways are set at start).
func (c *clusterDataplane) SetPodCIDRs(_ context.Context, cidrs []netip.Prefix) error {
	if len(cidrs) == 0 {
		return fmt.Errorf("set pod CIDRs: the node has no pod CIDR")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.d != nil || c.started {
		if !slices.Equal(c.cidrs, cidrs) {
			return fmt.Errorf("set pod CIDRs: the node's pod CIDRs changed from %v to %v; the agent serves %v: %w", c.cidrs, cidrs, c.cidrs, ErrRestartRequired)
		}
		return nil
	}
	c.cidrs = slices.Clone(cidrs)
	c.checkStartableLocked()
	return nil
}

// ApplySwitch records the conflist's switch before the agent starts (the dataplane creates
// it at start). On the running switch it applies the default queue and port security live
// (a port without a PortPolicy gets them; a port with one keeps its policy's fields over
// them) and rejects changes of the MTU and the VALE limits, which
// need a restart. Switches other than the conflist's are rejected: the dataplane cannot
// create a switch at run time, and no conflist would attach pods to it.
func (c *clusterDataplane) ApplySwitch(_ context.Context, sc controller.SwitchConfig) error {
	if sc.Name != c.swName {
		return fmt.Errorf("apply switch %s: the agent serves only the conflist's switch %s; more switches per node need run-time switch creation in the dataplane: %w", sc.Name, c.swName, ErrUnsupported)
	}
	pol := switchDefaultPolicy(sc)
	if err := pol.Validate(); err != nil {
		return fmt.Errorf("apply switch %s: default queue: %w", sc.Name, err)
	}
	c.mu.Lock()
	if c.d == nil && !c.started {
		s := sc
		c.sw = &s
		c.checkStartableLocked()
		c.mu.Unlock()
		return nil
	}
	if c.d == nil { // starting: the configuration is being used right now
		c.mu.Unlock()
		return fmt.Errorf("apply switch %s: the agent is starting with generation %d: %w", sc.Name, c.sw.Generation, ErrRestartRequired)
	}
	var fixed []string
	if sc.MTU != c.sw.MTU {
		fixed = append(fixed, fmt.Sprintf("mtu %d→%d", c.sw.MTU, sc.MTU))
	}
	if sc.BatchSize != c.sw.BatchSize {
		fixed = append(fixed, fmt.Sprintf("batchSize %d→%d", c.sw.BatchSize, sc.BatchSize))
	}
	if sc.MaxPorts != c.sw.MaxPorts {
		fixed = append(fixed, fmt.Sprintf("maxPorts %d→%d", c.sw.MaxPorts, sc.MaxPorts))
	}
	if sc.FDBSize != c.sw.FDBSize {
		fixed = append(fixed, fmt.Sprintf("fdbSize %d→%d", c.sw.FDBSize, sc.FDBSize))
	}
	if sc.FDBAging != c.sw.FDBAging {
		fixed = append(fixed, fmt.Sprintf("fdbAging %v→%v", c.sw.FDBAging, sc.FDBAging))
	}
	if sc.Offload != c.sw.Offload {
		fixed = append(fixed, fmt.Sprintf("offload %v→%v", c.sw.Offload, sc.Offload))
	}
	d := c.d
	old := c.defPolicy
	c.defPolicy = pol
	// The default queue is live: the generation is recorded as applied only if nothing
	// else changed.
	q := *c.sw
	q.DefaultQueue = sc.DefaultQueue
	q.PortSecurity = sc.PortSecurity
	if len(fixed) == 0 {
		q.Generation = sc.Generation
	}
	c.sw = &q
	// Every port follows the new default: the ones without a PortPolicy take it, and the
	// others keep their policy's fields over it (what the policy leaves unset, such as its
	// port security or queue length, is the switch's).
	type update struct {
		name string
		pol  dataplane.PortPolicy
	}
	var ups []update
	if pol != old {
		for _, p := range d.Ports() {
			if p.Kind != dataplane.KindPod || p.Switch != sc.Name {
				continue
			}
			if pc, ok := c.policies[p.Name]; ok {
				ups = append(ups, update{p.Name, portPolicy(pc, pol)})
			} else {
				ups = append(ups, update{p.Name, pol})
			}
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, u := range ups {
		if err := d.SetPortPolicy(u.name, u.pol); err != nil && !errors.Is(err, dataplane.ErrNoPort) {
			errs = append(errs, err)
		}
	}
	if len(fixed) > 0 {
		errs = append(errs, fmt.Errorf("%s changed: %w (the default queue was applied live)", strings.Join(fixed, ", "), ErrRestartRequired))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply switch %s: %w", sc.Name, err)
	}
	return nil
}

// DeleteSwitch forgets a switch that is not running yet; the running switch cannot be
// removed at run time (its pods keep their ports until the agent restarts).
func (c *clusterDataplane) DeleteSwitch(_ context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name != c.swName {
		return nil
	}
	if c.d == nil && !c.started {
		c.sw = nil
		return nil
	}
	return fmt.Errorf("delete switch %s: the running switch keeps its ports: %w", name, ErrRestartRequired)
}

// portOf returns the name of pod's port ("<switch>:<hostIfName>").
func (c *clusterDataplane) portOf(pod controller.PodRef) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name, ok := c.podPorts[pod.String()]
	return name, ok
}

// ApplyPortPolicy sets pod's port's output queue from p.
func (c *clusterDataplane) ApplyPortPolicy(_ context.Context, pod controller.PodRef, p controller.PolicyConfig) error {
	name, ok := c.portOf(pod)
	if !ok {
		return fmt.Errorf("apply policy %s to %s: %w", p.Policy, pod, controller.ErrNoPort)
	}
	return c.setPolicy(name, pod, &p)
}

// ClearPortPolicy gives pod's port the switch's default queue.
func (c *clusterDataplane) ClearPortPolicy(_ context.Context, pod controller.PodRef) error {
	name, ok := c.portOf(pod)
	if !ok {
		return nil
	}
	return c.setPolicy(name, pod, nil)
}

func (c *clusterDataplane) setPolicy(name string, pod controller.PodRef, p *controller.PolicyConfig) error {
	c.mu.Lock()
	d, def := c.d, c.defPolicy
	c.mu.Unlock()
	if d == nil {
		return fmt.Errorf("set policy of %s: %w", pod, controller.ErrNoPort)
	}
	pol := def
	if p != nil {
		pol = portPolicy(*p, def)
	}
	if err := d.SetPortPolicy(name, pol); err != nil {
		if errors.Is(err, dataplane.ErrNoPort) {
			return fmt.Errorf("set policy of %s: %w: %w", pod, controller.ErrNoPort, err)
		}
		return fmt.Errorf("set policy of %s: %w", pod, err)
	}
	c.mu.Lock()
	if p != nil {
		c.policies[name] = *p
	} else {
		delete(c.policies, name)
	}
	c.mu.Unlock()
	return nil
}

// portPolicy maps a PortPolicy onto the dataplane's; zero fields keep def's.
func portPolicy(p controller.PolicyConfig, def dataplane.PortPolicy) dataplane.PortPolicy {
	pol := dataplane.PortPolicy{
		Discipline:     def.Discipline,
		QueueLen:       def.QueueLen,
		Priority:       uint8(p.Priority),
		PriorityFIFO:   p.Priority <= 1,
		RateBitsPerSec: uint64(max(p.RateBPS, 0)),
		BurstBytes:     int(max(p.BurstBytes, 0)),
		RatePktsPerSec: uint64(max(p.PacketRate, 0)),
		BurstPkts:      int(max(p.PacketBurst, 0)),
		AllowSpoofing:  def.AllowSpoofing,
		BroadcastRate:  def.BroadcastRate,
		MulticastRate:  def.MulticastRate,
	}
	if p.AntiSpoofing != nil {
		pol.AllowSpoofing = !*p.AntiSpoofing
	}
	if p.BroadcastRate != nil {
		pol.BroadcastRate = uint32(*p.BroadcastRate)
	}
	if p.MulticastRate != nil {
		pol.MulticastRate = uint32(*p.MulticastRate)
	}
	if m := p.Mirror; m != nil {
		pol.Mirror = dataplane.Mirror{Monitor: m.Monitor, RX: m.RX, TX: m.TX}
	}
	if p.Discipline != "" {
		pol.Discipline = discipline(p.Discipline)
	}
	if p.QueueLength > 0 {
		pol.QueueLen = p.QueueLength
	}
	return pol
}

// switchDefaultPolicy is the policy of a port whose pod no PortPolicy selects: the
// switch's default queue and port security.
func switchDefaultPolicy(sc controller.SwitchConfig) dataplane.PortPolicy {
	q, ps := sc.DefaultQueue, sc.PortSecurity
	return dataplane.PortPolicy{Discipline: discipline(q.Discipline), QueueLen: q.Length, RateBitsPerSec: uint64(max(q.RateBPS, 0)),
		AllowSpoofing: !ps.AntiSpoofing, BroadcastRate: uint32(max(ps.BroadcastRate, 0)), MulticastRate: uint32(max(ps.MulticastRate, 0))}
}

func discipline(d epairv1.Discipline) dataplane.Discipline {
	switch strings.ToLower(string(d)) {
	case "prioclass":
		return dataplane.DiscPrioClass
	case "fair":
		return dataplane.DiscFair
	}
	return dataplane.DiscClassic
}

// Status reads the switches and ports: per-port counters, queue depth and drops, the pod
// behind each port and the policy applied.
func (c *clusterDataplane) Status(context.Context) (controller.Snapshot, error) {
	_, d := c.running()
	if d == nil {
		return controller.Snapshot{}, nil
	}
	c.mu.Lock()
	gen := c.sw.Generation
	pols := map[string]string{}
	for name, pc := range c.policies {
		pols[name] = pc.Policy
	}
	pods := maps.Clone(c.portPods)
	c.mu.Unlock()
	var snap controller.Snapshot
	drops := map[string]int64{}
	for _, s := range d.Switches() {
		st := epairv1.SwitchState{Name: s.Name, ObservedGeneration: gen}
		for _, p := range s.Ports {
			if p.Kind == dataplane.KindPod {
				st.Ports++
			}
			ps := portState(s.Name, p, pods[p.Name], pols[p.Name])
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
	return snap, nil
}

// portState is a port's NodeState entry: its counters, queue and drops by reason, each
// frame counted once. The switch's no_space of a pod port is what its full output queue
// (or a lack of buffers) refused; the queue's own drops add only the frames it had queued
// and then dropped (evicted for a higher priority, lost in a discipline change).
func portState(sw string, p dataplane.PortInfo, pod, policy string) epairv1.PortState {
	ps := epairv1.PortState{Name: p.HostIfName, Switch: sw, Pod: pod, Policy: policy,
		RxPackets: int64(p.Counters.InFrames), RxBytes: int64(p.Counters.InBytes),
		TxPackets: int64(p.Queue.TxFrames), TxBytes: int64(p.Queue.TxBytes),
		QueueDepth: int32(p.Queue.Len), QueueLength: int32(p.Queue.MaxLen)}
	if p.Kind == dataplane.KindHost {
		ps.TxPackets, ps.TxBytes = int64(p.Counters.OutFrames), int64(p.Counters.OutBytes)
	}
	for r, n := range dropsByReason(p.Counters, &p.Refused) {
		ps.Drops = mergeDrop(ps.Drops, dropReason(r), int64(n))
	}
	if p.Queue.Evicted != 0 {
		ps.Drops = mergeDrop(ps.Drops, "queue-full", int64(p.Queue.Evicted))
	}
	sort.Slice(ps.Drops, func(i, j int) bool { return ps.Drops[i].Reason < ps.Drops[j].Reason })
	return ps
}

// dropReason is NodeState's name of a drop reason of the agent API ("no_space" is the
// output queue's "queue-full", "spoofed_mac" is "spoofed-mac").
func dropReason(r string) string {
	if r == vale.DropNoSpace.String() {
		return "queue-full"
	}
	return strings.ReplaceAll(r, "_", "-")
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
	a, _ := c.running()
	return a != nil && a.ready.Load()
}

// clusterPorts is the agent's Dataplane in cluster mode: the real dataplane, plus the
// pod's PortPolicy at attach (Controller.PolicyFor) and a notice to the policy reconciler
// (Controller.PortAttached) after each attach or adoption.
type clusterPorts struct {
	realDataplane
	c *clusterDataplane
}

func (p *clusterPorts) AttachPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error) {
	return p.attach(ctx, req, p.d.AttachPort)
}

// AdoptPort is what the agent's Attach and Recover use (the link must carry the owner).
func (p *clusterPorts) AdoptPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error) {
	return p.attach(ctx, req, p.d.Adopt)
}

func (p *clusterPorts) attach(ctx context.Context, req PortRequest, f func(context.Context, dataplane.AttachRequest) (dataplane.PortInfo, error)) (agentapi.PortInfo, error) {
	pod, havePod := p.podFor(req.Owner)
	ar := dataplane.AttachRequest{Switch: req.Switch, Owner: req.Owner, HostIfName: req.HostIfName, HostIfIndex: req.HostIfIndex,
		PodMAC: podMAC(req.PodMAC), PodIPs: req.PodIPs}
	var polCfg *controller.PolicyConfig
	// Without a PortPolicy the port gets the switch's default as it is now (a live change
	// of the VirtualSwitch included), not the dataplane's start-up default.
	p.c.mu.Lock()
	pol := p.c.defPolicy
	p.c.mu.Unlock()
	if havePod && p.c.ctrl != nil {
		if pc, ok := p.c.ctrl.PolicyFor(pod.Namespace, pod.Name); ok {
			p.c.mu.Lock()
			pol = portPolicy(pc, p.c.defPolicy)
			p.c.mu.Unlock()
			polCfg = &pc
		}
	}
	ar.Policy = &pol
	pi, err := f(ctx, ar)
	if err != nil {
		return agentapi.PortInfo{}, dpError(err)
	}
	p.c.mu.Lock()
	if polCfg != nil {
		p.c.policies[pi.Name] = *polCfg
	} else {
		delete(p.c.policies, pi.Name)
	}
	if havePod {
		p.c.podPorts[pod.String()] = pi.Name
		p.c.portPods[pi.Name] = pod.String()
	}
	p.c.mu.Unlock()
	if havePod && p.c.ctrl != nil {
		p.c.ctrl.PortAttached(pod)
	}
	return portInfo(pi), nil
}

func (p *clusterPorts) DetachPort(sw, hostIfName string) error {
	err := p.realDataplane.DetachPort(sw, hostIfName)
	name := vale.JoinName(sw, hostIfName)
	p.c.mu.Lock()
	delete(p.c.policies, name)
	if pod, ok := p.c.portPods[name]; ok {
		delete(p.c.portPods, name)
		if p.c.podPorts[pod] == name {
			delete(p.c.podPorts, pod)
		}
	}
	p.c.mu.Unlock()
	return err
}

// podFor finds the pod of an attachment from the owner recorded on its link
// ("<network>/<containerID>/<ifname>") and the attachment's CNI_ARGS.
func (p *clusterPorts) podFor(owner string) (controller.PodRef, bool) {
	a, _ := p.c.running()
	if a == nil {
		return controller.PodRef{}, false
	}
	r, ok := a.recordOf(owner)
	if !ok || r.PodName == "" || r.PodNamespace == "" {
		return controller.PodRef{}, false
	}
	return controller.PodRef{Namespace: r.PodNamespace, Name: r.PodName, UID: types.UID(r.PodUID)}, true
}
