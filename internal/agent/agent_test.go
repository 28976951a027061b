package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
)

// memDataplane is a test double of the dataplane: it records ports and refuses links
// that the memLinks double does not have. The real dataplane is exercised by e2e/cni.
type memDataplane struct {
	links *memLinks

	mu     sync.Mutex
	ports  map[string]agentapi.PortInfo // switch/hostIfName
	podMAC map[string]string            // switch/hostIfName: the identity MAC of the last attach
	policy map[string]dataplane.PortPolicy
	added  []string // switches added at run time
	addErr error    // AddSwitch's error, when set
	closed bool

	announced atomic.Int32                   // AnnounceGateways calls
	appPorts  map[string][]dataplane.AppPort // switch/hostIfName: ServeAppPorts
}

func (d *memDataplane) AttachPort(_ context.Context, req PortRequest) (agentapi.PortInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.links.has(req.HostIfName, req.HostIfIndex) {
		return agentapi.PortInfo{}, fmt.Errorf("open %s: %w", req.HostIfName, syscall.ENXIO)
	}
	pi := agentapi.PortInfo{Name: req.Switch + ":" + req.HostIfName, Kind: "pod", HostIfName: req.HostIfName,
		HostIfIndex: req.HostIfIndex, Owner: req.Owner, Pod: req.Pod, Active: true}
	d.ports[req.Switch+"/"+req.HostIfName] = pi
	if d.podMAC == nil {
		d.podMAC = map[string]string{}
	}
	d.podMAC[req.Switch+"/"+req.HostIfName] = req.PodMAC
	if d.policy == nil {
		d.policy = map[string]dataplane.PortPolicy{}
	}
	d.policy[req.Switch+"/"+req.HostIfName] = req.Policy
	return pi, nil
}

func (d *memDataplane) Peers() []dataplane.PeerState { return nil }

func (d *memDataplane) TunnelStats() (dataplane.TunnelStats, bool) {
	return dataplane.TunnelStats{}, false
}

func (d *memDataplane) SetPeers(_ context.Context, peers []dataplane.Peer) ([]dataplane.PeerState, error) {
	if len(peers) > 0 {
		return nil, fmt.Errorf("set peers: the test double routes nothing: %w", dataplane.ErrInvalid)
	}
	return nil, nil
}

func (d *memDataplane) Trace(req dataplane.TraceRequest) (dataplane.TraceResult, error) {
	return dataplane.TraceResult{}, fmt.Errorf("trace %s: the test double traces nothing: %w", req.Port, dataplane.ErrNoPort)
}

func (d *memDataplane) Capture(port string, _ dataplane.CaptureOptions) (*dataplane.Capture, error) {
	return nil, fmt.Errorf("capture %s: the test double captures nothing: %w", port, dataplane.ErrNoPort)
}

func (d *memDataplane) SetPortPolicy(sw, host string, pol dataplane.PortPolicy) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ports[sw+"/"+host]; !ok {
		return fmt.Errorf("port %s:%s: %w", sw, host, dataplane.ErrNoPort)
	}
	d.policy[sw+"/"+host] = pol
	return nil
}

// portPolicy is the policy the port of a host link has now.
func (d *memDataplane) portPolicy(sw, host string) (dataplane.PortPolicy, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ports[sw+"/"+host]; !ok {
		return dataplane.PortPolicy{}, false
	}
	return d.policy[sw+"/"+host], true
}

func (d *memDataplane) AddSwitch(sc SwitchConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.addErr != nil {
		return d.addErr
	}
	d.added = append(d.added, sc.Name)
	return nil
}

func (d *memDataplane) RemoveSwitch(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.Index(d.added, name)
	if i < 0 {
		return fmt.Errorf("switch %q: %w", name, dataplane.ErrNoSwitch)
	}
	d.added = slices.Delete(d.added, i, i+1)
	for k := range d.ports {
		if strings.HasPrefix(k, name+"/") {
			delete(d.ports, k)
		}
	}
	return nil
}

// testPodMAC is the pod MAC the tests' plugin reports at Attach.
const testPodMAC = "02:00:00:00:00:0b"

func (d *memDataplane) AnnounceGateways() error {
	d.announced.Add(1)
	return nil
}

func (d *memDataplane) AdoptPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error) {
	d.links.mu.Lock()
	ok := false
	for _, p := range d.links.pairs {
		ok = ok || (p.HostName == req.HostIfName && p.Owner == req.Owner)
	}
	d.links.mu.Unlock()
	if !ok {
		return agentapi.PortInfo{}, fmt.Errorf("adopt %s for %s: %w", req.HostIfName, req.Owner, syscall.EPERM)
	}
	return d.AttachPort(ctx, req)
}

func (d *memDataplane) DetachPort(sw, host string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.ports, sw+"/"+host)
	return nil
}

func (d *memDataplane) Port(sw, host string) (agentapi.PortInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.ports[sw+"/"+host]
	return p, ok
}

func (d *memDataplane) Switches(context.Context) (*agentapi.SwitchList, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	sl := &agentapi.SwitchList{}
	for _, name := range append([]string{"vale0"}, d.added...) {
		s := agentapi.SwitchInfo{Name: name}
		for k, p := range d.ports {
			if strings.HasPrefix(k, name+"/") {
				s.Ports = append(s.Ports, p)
			}
		}
		sl.Items = append(sl.Items, s)
	}
	return sl, nil
}

func (d *memDataplane) FDB(_ context.Context, sw string) (*agentapi.FDB, error) {
	return &agentapi.FDB{Switch: sw, Entries: []agentapi.FDBEntry{}}, nil
}

func (d *memDataplane) Close(bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ports = map[string]agentapi.PortInfo{}
	d.closed = true
	return nil
}

type memLinks struct {
	mu    sync.Mutex
	pairs map[string]epair.Pair
	next  int
}

func (l *memLinks) add(owner string) epair.Pair {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	p := epair.Pair{Unit: l.next, HostName: epair.HostName(l.next), HostIndex: 100 + l.next, Owner: owner}
	l.pairs[p.HostName] = p
	return p
}

func (l *memLinks) has(name string, idx int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pairs[name]
	return ok && p.HostIndex == idx
}

func (l *memLinks) List() ([]epair.Pair, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []epair.Pair
	for _, p := range l.pairs {
		out = append(out, p)
	}
	return out, nil
}

func (l *memLinks) Destroy(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pairs, name)
	return nil
}

func (l *memLinks) Close() error { return nil }

type fixture struct {
	t     testing.TB
	dir   string
	cfg   *Config
	links *memLinks
	dp    *memDataplane
	a     *Agent
	c     *agentapi.Client
	srv   *agentapi.SocketServer
}

func testConfig(t testing.TB, dir string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`{"socket":%q,"stateDir":%q,"recoverGrace":"1h",
		"switches":[{"name":"vale0","mtu":1400,"ranges":[{"subnet":"10.50.0.0/24"},{"subnet":"fd50::/120"}]},
		            {"name":"vale1","ranges":[{"subnet":"10.51.0.0/29"}]}]}`,
		filepath.Join(dir, "run", "agent.sock"), filepath.Join(dir, "state"))))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, dir: t.TempDir(), links: &memLinks{pairs: map[string]epair.Pair{}}}
	f.cfg = testConfig(t, f.dir)
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fixture) start() {
	f.t.Helper()
	f.dp = &memDataplane{links: f.links, ports: map[string]agentapi.PortInfo{}}
	a, err := New(Options{Config: f.cfg, Dataplane: f.dp, Links: f.links, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.t.Fatal(err)
	}
	f.a = a
	if f.srv, err = agentapi.ListenAndServe(f.cfg.Socket, a.Handler()); err != nil {
		f.t.Fatal(err)
	}
	f.c = agentapi.NewClient(f.cfg.Socket, 5*time.Second)
}

func (f *fixture) stop() {
	if f.a == nil {
		return
	}
	f.c.Close()
	f.srv.Close()
	f.a.Close()
	f.a = nil
}

func key(id string) agentapi.Key { return agentapi.Key{ContainerID: id, IfName: "eth0"} }

// add does what the plugin's ADD does against the agent: allocate, create the link, attach.
func (f *fixture) add(id, network string) (*agentapi.Attachment, epair.Pair) {
	f.t.Helper()
	ctx := context.Background()
	at, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key(id), Network: network})
	if err != nil {
		f.t.Fatalf("allocate %s: %v", id, err)
	}
	p := f.links.add(network + "/" + id + "/eth0")
	if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key(id), HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: testPodMAC}); err != nil {
		f.t.Fatalf("attach %s: %v", id, err)
	}
	return at, p
}

func TestNotReadyUntilRecovered(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	st, err := f.c.Status(ctx)
	if err != nil || st.Ready || !strings.Contains(st.Reason, "recovering") {
		t.Fatalf("status before Recover: %+v %v", st, err)
	}
	_, err = f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("a")})
	if !errors.Is(err, agentapi.ErrNotReady) {
		t.Fatalf("allocate before Recover: %v, want NotReady", err)
	}
	// DEL must not wait for readiness.
	if _, err := f.c.Release(ctx, &agentapi.ReleaseRequest{Key: key("a")}); err != nil {
		t.Fatalf("release before Recover: %v", err)
	}
	if err := f.c.Ready(ctx); err == nil {
		t.Fatal("readyz before Recover: ok")
	}
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Ready(ctx); err != nil {
		t.Fatalf("readyz: %v", err)
	}
	// The gateways are announced once the running pods are attached again.
	if n := f.dp.announced.Load(); n != 1 {
		t.Fatalf("AnnounceGateways called %d times by Recover, want 1", n)
	}
}

func TestAllocateAttachCheckRelease(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	at, p := f.add("c1", "net1")
	if len(at.IPs) != 2 || at.MTU != 1400 || at.Switch != "vale0" || len(at.Routes) != 2 {
		t.Fatalf("attachment: %+v", at)
	}
	if at.IPs[0].Gateway != netip.MustParseAddr("10.50.0.1") || at.IPs[0].Address.Bits() != 24 {
		t.Fatalf("v4: %+v", at.IPs[0])
	}
	// Idempotent.
	again, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("c1")})
	if err != nil || again.IPs[0] != at.IPs[0] || again.IPs[1] != at.IPs[1] || !again.Existing || at.Existing {
		t.Fatalf("allocate again: %+v %v (first existing=%v; want false, then true)", again, err, at.Existing)
	}
	chk, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: key("c1")})
	if err != nil || chk.Port == nil || !chk.Port.Up || chk.Port.HostIfName != p.HostName || chk.Port.Name != "vale0:"+p.HostName {
		t.Fatalf("check: %+v %v", chk, err)
	}
	sl, err := f.c.Switches(ctx)
	if err != nil || len(sl.Items) != 1 || len(sl.Items[0].Ports) != 1 {
		t.Fatalf("switches: %+v %v", sl, err)
	}
	if _, err := f.c.FDB(ctx, "nope"); !errors.Is(err, agentapi.ErrNotFound) {
		t.Fatalf("fdb of unknown switch: %v", err)
	}
	for i := range 3 {
		r, err := f.c.Release(ctx, &agentapi.ReleaseRequest{Key: key("c1")})
		if err != nil || r.Released != (i == 0) {
			t.Fatalf("release #%d: %+v %v", i, r, err)
		}
	}
	if _, ok := f.dp.Port("vale0", p.HostName); ok {
		t.Fatal("release left the port")
	}
	if _, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: key("c1")}); !errors.Is(err, agentapi.ErrNotFound) {
		t.Fatalf("check after release: %v", err)
	}
}

func TestAllocateErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	cases := []struct {
		req   agentapi.AllocateRequest
		code  agentapi.Code
		field string
	}{
		{agentapi.AllocateRequest{Key: key("x"), Switch: "vale9"}, agentapi.CodeInvalidRequest, "switch"},
		{agentapi.AllocateRequest{Key: key("x"), MTU: 9000}, agentapi.CodeInvalidRequest, "mtu"},
		{agentapi.AllocateRequest{Key: key("x"), IPs: []netip.Addr{netip.MustParseAddr("192.168.1.1")}}, agentapi.CodeInvalidRequest, "ips"},
	}
	for _, c := range cases {
		_, err := f.c.Allocate(ctx, &c.req)
		var e *agentapi.Error
		if !errors.As(err, &e) || e.Code != c.code || e.Field != c.field || !strings.Contains(e.Message, c.field) {
			t.Errorf("%+v: %v, want %s naming %s", c.req, err, c.code, c.field)
		}
	}
	if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("y"), IPs: []netip.Addr{netip.MustParseAddr("10.50.0.9")}}); err != nil {
		t.Fatal(err)
	}
	_, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("z"), IPs: []netip.Addr{netip.MustParseAddr("10.50.0.9")}})
	if !errors.Is(err, agentapi.ErrConflict) {
		t.Errorf("requested address of another: %v, want Conflict", err)
	}
	// vale1 has a /29: 5 addresses besides the gateway.
	for i := range 5 {
		if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key(fmt.Sprint("s", i)), Switch: "vale1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("s5"), Switch: "vale1"}); !errors.Is(err, agentapi.ErrExhausted) {
		t.Errorf("full range: %v, want Exhausted", err)
	}
	if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key("nobody"), HostIfName: "epair9a", HostIfIndex: 9, PodMAC: testPodMAC}); !errors.Is(err, agentapi.ErrNotFound) {
		t.Errorf("attach unknown: %v", err)
	}
	if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key("y"), HostIfName: "epair9a", HostIfIndex: 9, PodMAC: testPodMAC}); agentapi.CodeOf(err) != agentapi.CodeInternal || !strings.Contains(err.Error(), "epair9a") {
		t.Errorf("attach missing link: %v", err)
	}
	// A link that exists but records another owner is refused.
	other := f.links.add("n/someone-else/eth0")
	if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key("y"), HostIfName: other.HostName, HostIfIndex: other.HostIndex, PodMAC: testPodMAC}); err == nil || !strings.Contains(err.Error(), other.HostName) {
		t.Errorf("attach another owner's link: %v", err)
	}
	if _, ok := f.dp.Port("vale0", other.HostName); ok {
		t.Error("another owner's link was attached")
	}
}

func TestGC(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	f.add("keep", "net1")
	f.add("stale", "net1")
	f.add("other", "net2")
	resp, err := f.c.GC(ctx, &agentapi.GCRequest{Network: "net1", Valid: []agentapi.Key{key("keep")}})
	if err != nil || len(resp.Removed) != 1 || resp.Removed[0] != key("stale") {
		t.Fatalf("gc: %+v %v", resp, err)
	}
	l, _ := f.c.List(ctx)
	if len(l.Items) != 2 {
		t.Fatalf("list after gc: %+v", l.Items)
	}
}

// TestRestartRecovery: the agent goes away (as after kill -9: nothing is closed in order),
// a pod is deleted meanwhile, and the new agent re-attaches the live pods with the same
// addresses and releases the gone one.
func TestRestartRecovery(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	a1, p1 := f.add("live", "net1")
	_, p2 := f.add("gone", "net1")
	// Allocated but never attached (ADD interrupted): kept within RecoverGrace.
	if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("pending"), Network: "net1"}); err != nil {
		t.Fatal(err)
	}
	f.stop()
	f.links.Destroy(p2.HostName)
	f.start()
	st, err := f.a.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reattached != 1 || st.Stale != 1 || st.Pending != 1 {
		t.Fatalf("recover: %+v", st)
	}
	chk, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: key("live")})
	if err != nil || chk.Port == nil || !chk.Port.Up || chk.IPs[0] != a1.IPs[0] || chk.Port.HostIfName != p1.HostName {
		t.Fatalf("check after restart: %+v %v", chk, err)
	}
	if _, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: key("gone")}); !errors.Is(err, agentapi.ErrNotFound) {
		t.Fatalf("gone pod after restart: %v", err)
	}
	// Reconcile while running releases a pod whose link vanishes.
	f.links.Destroy(p1.HostName)
	rel, err := f.a.Reconcile(ctx)
	if err != nil || len(rel) != 1 || rel[0] != key("live") {
		t.Fatalf("reconcile: %v %v", rel, err)
	}
}

func TestUninstall(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	f.add("a", "n")
	f.add("b", "n")
	f.srv.Close()
	if err := f.a.Uninstall(); err != nil {
		t.Fatal(err)
	}
	f.a = nil
	if l, _ := f.links.List(); len(l) != 0 {
		t.Fatalf("links left: %+v", l)
	}
	if !f.dp.closed {
		t.Fatal("dataplane not closed")
	}
	matches, _ := filepath.Glob(filepath.Join(f.cfg.StateDir, "*.db"))
	if len(matches) != 0 {
		t.Fatalf("state left: %v", matches)
	}
}

func TestConcurrentAllocate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	var wg sync.WaitGroup
	res := make([]netip.Prefix, 100)
	errs := make([]error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key(fmt.Sprint("p", i))})
			if err == nil {
				res[i] = at.IPs[0].Address
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for i, p := range res {
		if errs[i] != nil || seen[p] {
			t.Fatalf("#%d: %v %v (dup=%v)", i, p, errs[i], seen[p])
		}
		seen[p] = true
	}
}

// TestRecordsRebuiltFromIPAMAndAliases: the attachment store is unsynced by design; if it
// is unreadable after a power loss, the agent rebuilds the records from the IPAM store and
// the links' aliases (network included) and the pods keep their addresses.
func TestRecordsRebuiltFromIPAMAndAliases(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.a.Recover(ctx)
	at, _ := f.add("p1", "net1")
	f.stop()
	path := filepath.Join(f.cfg.StateDir, "attachments.db")
	if err := os.WriteFile(path, []byte("not a bbolt file, torn by a power loss"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.start()
	st, err := f.a.Recover(ctx)
	if err != nil || st.Orphans != 1 || st.Reattached != 1 {
		t.Fatalf("recover: %+v %v", st, err)
	}
	chk, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: key("p1")})
	if err != nil || chk.IPs[0] != at.IPs[0] || chk.Port == nil || !chk.Port.Up {
		t.Fatalf("check: %+v %v", chk, err)
	}
	// The network came back from the alias: another network's GC leaves it alone.
	if resp, err := f.c.GC(ctx, &agentapi.GCRequest{Network: "net2"}); err != nil || len(resp.Removed) != 0 {
		t.Fatalf("gc of another network: %+v %v", resp, err)
	}
	if _, err := os.Stat(path + ".corrupt"); err != nil {
		t.Fatalf("the unreadable store was not kept aside: %v", err)
	}
}

// TestRunnablesStop: the socket server and the reconcile loop serve until their context is
// cancelled and then return, leaving no goroutine (TestMain checks).
func TestRunnablesStop(t *testing.T) {
	f := newFixture(t)
	f.srv.Close() // the fixture's own server; the runnable serves a second socket
	f.a.Recover(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	sock := filepath.Join(f.dir, "run2", "agent.sock")
	errc := make(chan error, 2)
	go func() { errc <- (&SocketServer{Agent: f.a, Path: sock, Ready: ready}).Start(ctx) }()
	go func() { errc <- (&ReconcileLoop{Agent: f.a, Interval: 10 * time.Millisecond}).Start(ctx) }()
	<-ready
	c := agentapi.NewClient(sock, time.Second)
	defer c.Close()
	if err := c.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond) // a few reconcile rounds
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestReconcilePending: an attachment allocated but never attached is collected after
// RecoverGrace, unless its link exists (the plugin is between creating it and attaching).
func TestReconcilePending(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.cfg.RecoverGrace = Duration(time.Millisecond)
	f.a.Recover(ctx)
	for _, id := range []string{"dead", "creating"} {
		if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key(id), Network: "n"}); err != nil {
			t.Fatal(err)
		}
	}
	f.links.add("n/creating/eth0")
	f.add("live", "n")
	time.Sleep(5 * time.Millisecond)
	rel, err := f.a.Reconcile(ctx)
	if err != nil || len(rel) != 1 || rel[0] != key("dead") {
		t.Fatalf("reconcile: %v %v", rel, err)
	}
}

// TestAttachRecordsPodMAC: the pod MAC the plugin reports at Attach becomes the port's
// identity (what PortPolicy anti-spoofing needs), is checked, and survives a restart.
func TestAttachRecordsPodMAC(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("m1")}); err != nil {
		t.Fatal(err)
	}
	p := f.links.add("/m1/eth0")
	bad := &agentapi.AttachRequest{Key: key("m1"), HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: "03:00:00:00:00:01"}
	if _, err := f.c.Attach(ctx, bad); !errors.Is(err, agentapi.ErrInvalidRequest) || !strings.Contains(err.Error(), "podMAC") {
		t.Fatalf("attach with a multicast pod MAC = %v, want an invalid-request error naming podMAC", err)
	}
	const mac = "02:00:00:00:aa:01"
	if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: key("m1"), HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: mac}); err != nil {
		t.Fatal(err)
	}
	if got := f.dp.podMAC["vale0/"+p.HostName]; got != mac {
		t.Fatalf("port identity MAC %q, want %q", got, mac)
	}
	f.stop()
	f.start()
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.dp.podMAC["vale0/"+p.HostName]; got != mac {
		t.Fatalf("identity MAC after a restart %q, want %q", got, mac)
	}
}

func (d *memDataplane) ServeAppPorts(sw, host, _, _ string, ports []dataplane.AppPort) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ports[sw+"/"+host]; !ok {
		return fmt.Errorf("port %s:%s: %w", sw, host, dataplane.ErrNoPort)
	}
	if d.appPorts == nil {
		d.appPorts = map[string][]dataplane.AppPort{}
	}
	d.appPorts[sw+"/"+host] = ports
	return nil
}
