package agent

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
	"github.com/epair-cni/epair/pkg/vale"
)

// Version is the agent's build version (set by -ldflags in release builds).
var Version = "dev"

// Links is the host-side view of the pods' links; *epair.Cloner implements it.
type Links interface {
	List() ([]epair.Pair, error)
	Destroy(hostName string) error
	Close() error
}

var _ Links = (*epair.Cloner)(nil)

// Options are the agent's dependencies.
type Options struct {
	Config    *Config
	Dataplane Dataplane
	Links     Links
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Policies, if set, gives pods their PortPolicy at attach (cluster mode: the
	// controller).
	Policies PodPolicies
}

// Agent implements agentapi.Interface and agentapi.Inspector over the IPAM stores, the
// attachment store and the dataplane. Its attachment records are the one place that links
// a pod, its attachment, its port and the port's policy. It is safe for concurrent use.
type Agent struct {
	cfg   *Config
	dp    Dataplane
	links Links
	log   *slog.Logger
	recs  *recordStore
	pods  PodPolicies

	// swMu guards the switch set: cfg.Switches, stores and defaults. The API's calls hold
	// it for reading for their whole duration, so adding or removing a switch, or changing
	// a switch's default policy, waits for the calls in flight and is seen by every later
	// one. Lock order: swMu, then a key's lock, then mu.
	swMu     sync.RWMutex
	stores   map[string]*ipam.Store
	defaults map[string]dataplane.PortPolicy // a pod port's policy without a PortPolicy, by switch

	// locks serialise the calls on one key (striped): the agent's work for different pods
	// runs in parallel, two calls for one pod never interleave.
	locks [64]sync.Mutex

	mu   sync.RWMutex
	atts map[agentapi.Key]*record

	ready   atomic.Bool
	readyAt atomic.Int64 // unix nanoseconds of the end of Recover
	reason  atomic.Value // string
	closed  atomic.Bool
	metrics metrics
}

var (
	_ agentapi.Interface = (*Agent)(nil)
	_ agentapi.Inspector = (*Agent)(nil)
)

// New opens the stores under cfg.StateDir and loads the attachments. The agent is not
// ready until Recover has run.
func New(opts Options) (*Agent, error) {
	if opts.Config == nil || opts.Dataplane == nil || opts.Links == nil {
		return nil, fmt.Errorf("new agent: Config, Dataplane and Links are required")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	a := &Agent{cfg: opts.Config, dp: opts.Dataplane, links: opts.Links, log: opts.Logger, pods: opts.Policies,
		stores: map[string]*ipam.Store{}, defaults: map[string]dataplane.PortPolicy{}, atts: map[agentapi.Key]*record{}}
	if a.log == nil {
		a.log = slog.Default()
	}
	for _, w := range a.cfg.Deprecations() {
		a.log.Warn("deprecated configuration", "warning", w)
	}
	a.reason.Store("recovering state")
	ok := false
	defer func() {
		if !ok {
			a.closeStores()
		}
	}()
	for i, sw := range a.cfg.Switches {
		st, err := a.openIPAM(a.ipamPath(sw.Name), a.cfg.switchRanges(i))
		if err != nil {
			return nil, fmt.Errorf("new agent: switch %s: %w", sw.Name, err)
		}
		a.stores[sw.Name] = st
		a.defaults[sw.Name] = switchPolicy(&a.cfg.Switches[i])
	}
	var err error
	if a.recs, err = openRecords(filepath.Join(a.cfg.StateDir, "attachments.db")); err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	rs, bad, err := a.recs.all()
	if err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	for _, b := range bad {
		a.log.Error("attachment store: undecodable record skipped; Recover rebuilds it from IPAM and the link's alias", "record", b)
	}
	for _, r := range rs {
		a.atts[r.Key] = r
	}
	ok = true
	return a, nil
}

func (a *Agent) lock(k agentapi.Key) func() {
	h := fnv.New32a()
	h.Write([]byte(k.ContainerID))
	h.Write([]byte{0})
	h.Write([]byte(k.IfName))
	m := &a.locks[h.Sum32()%uint32(len(a.locks))]
	m.Lock()
	return m.Unlock
}

func (a *Agent) get(k agentapi.Key) (*record, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	r, ok := a.atts[k]
	return r, ok
}

func (a *Agent) set(r *record) {
	a.mu.Lock()
	a.atts[r.Key] = r
	a.mu.Unlock()
}

func (a *Agent) drop(k agentapi.Key) {
	a.mu.Lock()
	delete(a.atts, k)
	a.mu.Unlock()
}

func (a *Agent) notReady() error {
	if a.closed.Load() {
		return agentapi.NewError(agentapi.CodeNotReady, "agent is shutting down")
	}
	if !a.ready.Load() {
		return agentapi.NewError(agentapi.CodeNotReady, "agent not ready: "+a.reason.Load().(string))
	}
	return nil
}

func owner(k agentapi.Key) ipam.Owner {
	return ipam.Owner{ContainerID: k.ContainerID, IfName: k.IfName}
}

func ipamError(err error) error {
	switch {
	case errors.Is(err, ipam.ErrConflict):
		return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeConflict, Field: "ips", Message: "ips: " + err.Error()}}
	case errors.Is(err, ipam.ErrOutOfRange):
		return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeInvalidRequest, Field: "ips", Message: "ips: " + err.Error()}}
	case errors.Is(err, ipam.ErrExhausted):
		return agentapi.NewError(agentapi.CodeExhausted, err.Error())
	}
	return err
}

// Allocate implements agentapi.Interface.
func (a *Agent) Allocate(ctx context.Context, req *agentapi.AllocateRequest) (*agentapi.Attachment, error) {
	a.metrics.calls[opAllocate].Add(1)
	defer a.timed(opAllocate, req.Key, time.Now())
	if err := a.notReady(); err != nil {
		return nil, err
	}
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	defer a.lock(req.Key)()
	if r, ok := a.get(req.Key); ok {
		if req.Switch != "" && req.Switch != r.Switch {
			return nil, &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeConflict, Field: "switch",
				Message: fmt.Sprintf("attachment %s exists on switch %s, not %s", req.Key, r.Switch, req.Switch)}}
		}
		att, err := a.attachment(r)
		if att != nil {
			att.Existing = true
		}
		return att, err
	}
	sw, ok := a.cfg.Switch(req.Switch)
	if !ok {
		return nil, a.unknownSwitch(req.Switch)
	}
	mtu := sw.MTU
	if req.MTU != 0 {
		if req.MTU > sw.MTU || req.MTU < MinMTU {
			return nil, &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeInvalidRequest, Field: "mtu",
				Message: fmt.Sprintf("mtu: %d out of range %d..%d (switch %s's MTU)", req.MTU, MinMTU, sw.MTU, sw.Name)}}
		}
		mtu = req.MTU
	}
	st := a.stores[sw.Name]
	if st.Fresh() {
		// Its store was lost and the running pods' addresses are not restored (Recover
		// refused): allocating could hand one of them out again.
		return nil, agentapi.NewError(agentapi.CodeNotReady, fmt.Sprintf("switch %s: IPAM store %s lost and not rebuilt (see the agent's log)",
			sw.Name, a.ipamPath(sw.Name)))
	}
	al, err := st.Allocate(owner(req.Key), req.IPs)
	if err != nil {
		return nil, ipamError(fmt.Errorf("allocate addresses for %s: %w", req.Key, err))
	}
	r := &record{Key: req.Key, Network: req.Network, NetNS: req.NetNS, PodName: req.PodName,
		PodNamespace: req.PodNamespace, PodUID: req.PodUID, Switch: sw.Name, MAC: req.MAC, MTU: mtu,
		Created: time.Now().UTC(), IPs: al.Addrs, NetmapPorts: req.NetmapPorts}
	if err := a.recs.put(r); err != nil {
		if _, _, rerr := st.Release(owner(req.Key)); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, err
	}
	a.set(r)
	a.metrics.allocated.Add(1)
	return a.attachment(r)
}

// switchNames lists the switches (swMu held).
func (a *Agent) switchNames() []string {
	out := make([]string, len(a.cfg.Switches))
	for i, s := range a.cfg.Switches {
		out[i] = s.Name
	}
	return out
}

// attachment builds the API view of r: addresses from IPAM, a default route per family
// unless the switch is secondary, and the port if attached (swMu held).
func (a *Agent) attachment(r *record) (*agentapi.Attachment, error) {
	st, ok := a.stores[r.Switch]
	if !ok {
		return nil, fmt.Errorf("attachment %s: switch %s is not configured any more", r.Key, r.Switch)
	}
	al, ok, err := st.Get(owner(r.Key))
	if err != nil {
		return nil, fmt.Errorf("attachment %s: %w", r.Key, err)
	}
	if !ok {
		return nil, fmt.Errorf("attachment %s: no addresses in the store", r.Key)
	}
	at := &agentapi.Attachment{Key: r.Key, NetNS: r.NetNS, PodName: r.PodName, PodNamespace: r.PodNamespace,
		MTU: r.MTU, Switch: r.Switch, MAC: r.MAC}
	secondary := false
	if sw, ok := a.cfg.Switch(r.Switch); ok {
		at.Offload, secondary = true, sw.Secondary
	}
	var v4, v6 bool
	for _, ad := range al.Addrs {
		at.IPs = append(at.IPs, agentapi.IPConfig{Address: ad.Prefix, Gateway: ad.Gateway})
		if ad.Prefix.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	if v4 && !secondary {
		at.Routes = append(at.Routes, agentapi.Route{Dst: netip.MustParsePrefix("0.0.0.0/0")})
	}
	if v6 && !secondary {
		at.Routes = append(at.Routes, agentapi.Route{Dst: netip.MustParsePrefix("::/0")})
	}
	if r.HostIfName != "" {
		p := &agentapi.Port{Switch: r.Switch, HostIfName: r.HostIfName, HostIfIndex: r.HostIfIndex}
		if pi, ok := a.dp.Port(r.Switch, r.HostIfName); ok {
			p.Name, p.Up = pi.Name, pi.Active
		}
		at.Port = p
	}
	return at, nil
}

// Attach implements agentapi.Interface.
func (a *Agent) Attach(ctx context.Context, req *agentapi.AttachRequest) (*agentapi.Port, error) {
	a.metrics.calls[opAttach].Add(1)
	defer a.timed(opAttach, req.Key, time.Now())
	if err := a.notReady(); err != nil {
		return nil, err
	}
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	defer a.lock(req.Key)()
	r, ok := a.get(req.Key)
	if !ok {
		return nil, agentapi.NewError(agentapi.CodeNotFound, fmt.Sprintf("no attachment %s: allocate it first", req.Key))
	}
	if r.HostIfName != "" && (r.HostIfName != req.HostIfName || r.HostIfIndex != req.HostIfIndex) {
		// The plugin replaced the pair of an interrupted ADD: the old port goes.
		if err := a.dp.DetachPort(r.Switch, r.HostIfName); err != nil {
			return nil, fmt.Errorf("attach %s: detach previous port %s: %w", req.Key, r.HostIfName, err)
		}
	}
	nr := *r
	nr.HostIfName, nr.HostIfIndex = req.HostIfName, req.HostIfIndex
	if req.PodMAC != "" {
		nr.PodMAC = req.PodMAC
	}
	nr.policy = a.podPolicy(&nr)
	undoApps, err := a.ensureAppPorts(ctx, &nr)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", req.Key, err)
	}
	// AdoptPort, not AttachPort: the link must carry this attachment's owner alias, so a
	// wrong name or index can never put one of the node's own interfaces on the switch.
	pi, err := a.dp.AdoptPort(ctx, a.portRequest(&nr, req.HostIfName, req.HostIfIndex))
	if err != nil {
		undoApps()
		return nil, fmt.Errorf("attach %s to switch %s: %w", req.HostIfName, r.Switch, err)
	}
	if err := a.serveAppPorts(&nr); err != nil {
		undoApps()
		return nil, errors.Join(fmt.Errorf("attach %s: %w", req.Key, err), a.dp.DetachPort(r.Switch, req.HostIfName))
	}
	if err := a.recs.put(&nr); err != nil {
		undoApps()
		a.dp.DetachPort(r.Switch, req.HostIfName)
		return nil, err
	}
	a.set(&nr)
	a.portAttached(&nr)
	return &agentapi.Port{Switch: r.Switch, Name: pi.Name, HostIfName: req.HostIfName, HostIfIndex: req.HostIfIndex, Up: pi.Active}, nil
}

// Release implements agentapi.Interface. It works while the agent is not ready: DEL must
// never wait for readiness.
func (a *Agent) Release(ctx context.Context, req *agentapi.ReleaseRequest) (*agentapi.ReleaseResponse, error) {
	a.metrics.calls[opRelease].Add(1)
	defer a.timed(opRelease, req.Key, time.Now())
	if a.closed.Load() {
		return nil, agentapi.NewError(agentapi.CodeNotReady, "agent is shutting down")
	}
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	defer a.lock(req.Key)()
	released, err := a.release(req.Key)
	if err != nil {
		return nil, err
	}
	return &agentapi.ReleaseResponse{Released: released}, nil
}

// release detaches, frees the addresses and forgets the record (the caller holds swMu and
// the key's lock). Addresses go before the record: a crash in between leaves a record without
// addresses, which recovery drops.
func (a *Agent) release(k agentapi.Key) (bool, error) {
	r, ok := a.get(k)
	if ok && r.HostIfName != "" {
		t0 := time.Now()
		if err := a.dp.DetachPort(r.Switch, r.HostIfName); err != nil {
			return false, fmt.Errorf("release %s: detach %s: %w", k, r.HostIfName, err)
		}
		a.log.Debug("detached port", "key", k.String(), "link", r.HostIfName, "duration", time.Since(t0))
	}
	var rec *record
	if ok {
		rec = r
	}
	if err := a.releaseAppPorts(k, rec); err != nil {
		return false, fmt.Errorf("release %s: %w", k, err)
	}
	freed := false
	for _, st := range a.stores {
		_, had, err := st.Release(owner(k))
		if err != nil {
			return false, fmt.Errorf("release %s: %w", k, err)
		}
		freed = freed || had
	}
	if ok {
		if err := a.recs.delete(k); err != nil {
			return false, err
		}
		a.drop(k)
	}
	if ok || freed {
		a.metrics.released.Add(1)
	}
	return ok || freed, nil
}

// Check implements agentapi.Interface.
func (a *Agent) Check(ctx context.Context, req *agentapi.CheckRequest) (*agentapi.Attachment, error) {
	a.metrics.calls[opCheck].Add(1)
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	r, ok := a.get(req.Key)
	if !ok {
		return nil, agentapi.NewError(agentapi.CodeNotFound, fmt.Sprintf("no attachment %s", req.Key))
	}
	return a.attachment(r)
}

func (a *Agent) records() []*record {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]*record, 0, len(a.atts))
	for _, r := range a.atts {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.String() < out[j].Key.String() })
	return out
}

// List implements agentapi.Interface.
func (a *Agent) List(ctx context.Context) (*agentapi.AttachmentList, error) {
	a.metrics.calls[opList].Add(1)
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	l := &agentapi.AttachmentList{Items: []agentapi.Attachment{}}
	for _, r := range a.records() {
		at, err := a.attachment(r)
		if err != nil {
			return nil, err
		}
		l.Items = append(l.Items, *at)
	}
	return l, nil
}

// GC implements agentapi.Interface: every attachment of req.Network (records of unknown
// network, left by a crash, count as anyone's) that is not in req.Valid is released, and so
// is every address owner without a record.
func (a *Agent) GC(ctx context.Context, req *agentapi.GCRequest) (*agentapi.GCResponse, error) {
	a.metrics.calls[opGC].Add(1)
	if a.closed.Load() {
		return nil, agentapi.NewError(agentapi.CodeNotReady, "agent is shutting down")
	}
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	valid := make(map[agentapi.Key]bool, len(req.Valid))
	for _, k := range req.Valid {
		valid[k] = true
	}
	resp := &agentapi.GCResponse{Removed: []agentapi.Key{}}
	var errs []error
	for _, r := range a.records() {
		if valid[r.Key] || (req.Network != "" && r.Network != "" && r.Network != req.Network) {
			continue
		}
		if err := a.gcOne(r.Key, &resp.Removed); err != nil {
			errs = append(errs, err)
		}
	}
	for _, st := range a.stores {
		als, err := st.List()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, al := range als {
			k, _ := keyOfOwner(al.Owner)
			if _, ok := a.get(k); ok || valid[k] {
				continue
			}
			if err := a.gcOne(k, &resp.Removed); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("gc: %w", errors.Join(errs...))
	}
	return resp, nil
}

func (a *Agent) gcOne(k agentapi.Key, removed *[]agentapi.Key) error {
	defer a.lock(k)()
	ok, err := a.release(k)
	if ok && !slices.Contains(*removed, k) {
		*removed = append(*removed, k)
		a.log.Info("gc released attachment", "key", k.String())
	}
	return err
}

// Status implements agentapi.Interface.
func (a *Agent) Status(ctx context.Context) (*agentapi.Status, error) {
	a.metrics.calls[opStatus].Add(1)
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	st := &agentapi.Status{Ready: true, AgentVersion: Version, Switches: a.switchNames()}
	if err := a.notReady(); err != nil {
		st.Ready, st.Reason, st.Switches = false, strings.TrimPrefix(err.(*agentapi.Error).Message, "agent not ready: "), nil
	}
	return st, nil
}

// Switches implements agentapi.Inspector: the dataplane's switches and ports (with the
// pod behind each, as the attach named it), and the PortPolicy of each pod port from the
// attachment records.
func (a *Agent) Switches(ctx context.Context) (*agentapi.SwitchList, error) {
	sl, err := a.dp.Switches(ctx)
	if err != nil {
		return nil, err
	}
	policies := map[string]string{}
	for _, r := range a.records() {
		if r.HostIfName != "" && r.policy != nil {
			policies[vale.JoinName(r.Switch, r.HostIfName)] = r.policy.Policy
		}
	}
	for i := range sl.Items {
		for j := range sl.Items[i].Ports {
			p := &sl.Items[i].Ports[j]
			p.Policy = policies[p.Name]
		}
	}
	return sl, nil
}

// FDB implements agentapi.Inspector.
func (a *Agent) FDB(ctx context.Context, sw string) (*agentapi.FDB, error) {
	a.swMu.RLock()
	defer a.swMu.RUnlock()
	if _, ok := a.stores[sw]; !ok {
		return nil, agentapi.NewError(agentapi.CodeNotFound, fmt.Sprintf("no switch %q; this node has %s", sw, strings.Join(a.switchNames(), ", ")))
	}
	return a.dp.FDB(ctx, sw)
}

// ownerKey is the alias the plugin records on r's host link.
func ownerKey(r *record) string {
	return epair.OwnerKey(r.Network, r.Key.ContainerID, r.Key.IfName)
}

// timed records a call's latency (a histogram for /metrics) and logs it at debug level.
func (a *Agent) timed(op int, k agentapi.Key, start time.Time) {
	d := time.Since(start)
	a.metrics.observe(op, d)
	a.log.Debug("api call", "op", opNames[op], "key", k.String(), "duration", d)
}

// ipamPath is the IPAM store of switch sw.
func (a *Agent) ipamPath(sw string) string {
	return filepath.Join(a.cfg.StateDir, "ipam-"+sw+".db")
}

// portRequest asks for r's host link as a port with the pod's identity and its effective
// policy (swMu held).
func (a *Agent) portRequest(r *record, hostIfName string, hostIfIndex int) PortRequest {
	req := PortRequest{Switch: r.Switch, HostIfName: hostIfName, HostIfIndex: hostIfIndex,
		Owner: ownerKey(r), PodMAC: r.identityMAC(), PodIPs: a.podIPs(r), Policy: a.policyOf(r)}
	if r.PodName != "" {
		req.Pod = r.PodNamespace + "/" + r.PodName
	}
	return req
}

// podIPs are an attachment's addresses from IPAM (nil when they cannot be read: the port
// then has no identity for antiSpoofing).
func (a *Agent) podIPs(r *record) []netip.Addr {
	st, ok := a.stores[r.Switch]
	if !ok {
		return nil
	}
	al, ok, err := st.Get(owner(r.Key))
	if err != nil || !ok {
		return nil
	}
	out := make([]netip.Addr, 0, len(al.Addrs))
	for _, ad := range al.Addrs {
		out = append(out, ad.Prefix.Addr())
	}
	return out
}
