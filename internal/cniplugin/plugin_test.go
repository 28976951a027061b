package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
)

// testAgent is a test double of the node agent built from real parts: addresses come from
// a real ipam.Store, and Attach checks that the host link really exists and is up in the
// test's host namespace. It has no switch: the port is a record.
type testAgent struct {
	host *netnsutil.NS
	ipam *ipam.Store

	mu         sync.Mutex
	atts       map[agentapi.Key]*agentapi.Attachment
	network    map[agentapi.Key]string
	notReady   string
	failAttach error
	releases   int
	offload    bool                    // the attachments are on an offload switch
	podMACs    map[agentapi.Key]string // the pod MAC each Attach reported
	// hang, when set, makes Allocate and Release wait for the caller's deadline: an agent
	// that accepts connections but does not answer.
	hang bool
}

func (a *testAgent) hung(ctx context.Context) error {
	a.mu.Lock()
	h := a.hang
	a.mu.Unlock()
	if !h {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

var _ agentapi.Interface = (*testAgent)(nil)

func (a *testAgent) Allocate(ctx context.Context, req *agentapi.AllocateRequest) (*agentapi.Attachment, error) {
	if err := a.hung(ctx); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if at, ok := a.atts[req.Key]; ok {
		c := *at
		c.Existing = true
		return &c, nil
	}
	al, err := a.ipam.Allocate(ipam.Owner{ContainerID: req.ContainerID, IfName: req.IfName}, req.IPs)
	switch {
	case errors.Is(err, ipam.ErrConflict):
		return nil, agentapi.NewError(agentapi.CodeConflict, err.Error())
	case errors.Is(err, ipam.ErrOutOfRange):
		return nil, agentapi.NewError(agentapi.CodeInvalidRequest, err.Error())
	case err != nil:
		return nil, err
	}
	at := &agentapi.Attachment{Key: req.Key, NetNS: req.NetNS, PodName: req.PodName, PodNamespace: req.PodNamespace,
		MTU: 1400, Switch: "vale0", MAC: req.MAC, Offload: a.offload,
		Routes: []agentapi.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0")}, {Dst: netip.MustParsePrefix("::/0")}}}
	if req.MTU != 0 {
		at.MTU = req.MTU
	}
	for _, ad := range al.Addrs {
		at.IPs = append(at.IPs, agentapi.IPConfig{Address: ad.Prefix, Gateway: ad.Gateway})
	}
	a.atts[req.Key] = at
	a.network[req.Key] = req.Network
	return at, nil
}

func (a *testAgent) Attach(_ context.Context, req *agentapi.AttachRequest) (*agentapi.Port, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failAttach != nil {
		return nil, a.failAttach
	}
	at, ok := a.atts[req.Key]
	if !ok {
		return nil, agentapi.NewError(agentapi.CodeNotFound, req.Key.String())
	}
	l, err := a.host.NL.LinkByIndex(req.HostIfIndex)
	if err != nil || l.Attrs().Name != req.HostIfName {
		return nil, agentapi.NewError(agentapi.CodeInvalidRequest, fmt.Sprintf("host link %s/%d: %v", req.HostIfName, req.HostIfIndex, err))
	}
	if a.podMACs == nil {
		a.podMACs = map[agentapi.Key]string{}
	}
	a.podMACs[req.Key] = req.PodMAC
	at.Port = &agentapi.Port{Switch: at.Switch, Name: at.Switch + ":" + req.HostIfName, HostIfName: req.HostIfName,
		HostIfIndex: req.HostIfIndex, Up: l.Attrs().Flags&net.FlagUp != 0}
	return at.Port, nil
}

func (a *testAgent) Release(ctx context.Context, req *agentapi.ReleaseRequest) (*agentapi.ReleaseResponse, error) {
	if err := a.hung(ctx); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.releases++
	_, ok := a.atts[req.Key]
	delete(a.atts, req.Key)
	delete(a.network, req.Key)
	if _, _, err := a.ipam.Release(ipam.Owner{ContainerID: req.ContainerID, IfName: req.IfName}); err != nil {
		return nil, err
	}
	return &agentapi.ReleaseResponse{Released: ok}, nil
}

func (a *testAgent) Check(_ context.Context, req *agentapi.CheckRequest) (*agentapi.Attachment, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.atts[req.Key]
	if !ok {
		return nil, agentapi.NewError(agentapi.CodeNotFound, req.Key.String())
	}
	return at, nil
}

func (a *testAgent) List(context.Context) (*agentapi.AttachmentList, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := &agentapi.AttachmentList{}
	for _, at := range a.atts {
		l.Items = append(l.Items, *at)
	}
	return l, nil
}

func (a *testAgent) GC(_ context.Context, req *agentapi.GCRequest) (*agentapi.GCResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	valid := map[agentapi.Key]bool{}
	for _, k := range req.Valid {
		valid[k] = true
	}
	var keep []ipam.Owner
	resp := &agentapi.GCResponse{}
	for k := range a.atts {
		if valid[k] || a.network[k] != req.Network {
			keep = append(keep, ipam.Owner{ContainerID: k.ContainerID, IfName: k.IfName})
			continue
		}
		delete(a.atts, k)
		resp.Removed = append(resp.Removed, k)
	}
	if _, err := a.ipam.GC(keep); err != nil {
		return nil, err
	}
	return resp, nil
}

func (a *testAgent) Status(context.Context) (*agentapi.Status, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.notReady != "" {
		return &agentapi.Status{Ready: false, Reason: a.notReady}, nil
	}
	return &agentapi.Status{Ready: true, Switches: []string{"vale0"}}, nil
}

type env struct {
	t      testing.TB
	host   *netnsutil.NS
	agent  *testAgent
	srv    *agentapi.SocketServer
	socket string
	plugin *Plugin
	out    *bytes.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvTB(t)
}

func newEnvTB(t testing.TB) *env {
	t.Helper()
	netnsutil.RequireRoot(t)
	host := netnsutil.New(t)
	dir := t.TempDir()
	ranges, err := ipam.ParseRanges([]ipam.RangeConfig{{Subnet: "10.44.0.0/24"}, {Subnet: "fd00:44::/64"}})
	if err != nil {
		t.Fatal(err)
	}
	store, err := ipam.Open(filepath.Join(dir, "ipam.db"), ranges)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ag := &testAgent{host: host, ipam: store, atts: map[agentapi.Key]*agentapi.Attachment{}, network: map[agentapi.Key]string{}}
	e := &env{t: t, host: host, agent: ag, socket: filepath.Join(dir, "run", "agent.sock"), out: &bytes.Buffer{}}
	e.startAgent()
	e.plugin = &Plugin{
		Stdout:    e.out,
		DialAgent: func(c *Config) Agent { return agentapi.NewClient(c.AgentSocket, time.Duration(c.Timeouts.Add)) },
		OpenLinks: func() (Links, error) {
			return epair.New(epair.Options{HostNetNS: host.Path(), NodeID: "cniplugin-test"})
		},
	}
	t.Cleanup(func() {
		if e.srv != nil {
			e.srv.Close()
		}
	})
	return e
}

func (e *env) startAgent() {
	srv, err := agentapi.ListenAndServe(e.socket, agentapi.NewServer(e.agent))
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = srv
}

func (e *env) stopAgent() {
	if err := e.srv.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.srv = nil
}

func (e *env) conf(version, network, extra string) []byte {
	if extra != "" {
		extra = "," + extra
	}
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"type":"epair","agentSocket":%q,"timeouts":{"del":"1s","status":"1s"}%s}`,
		version, network, e.socket, extra))
}

func cmd(cid, netns, ifname string, stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: cid, Netns: netns, IfName: ifname, StdinData: stdin,
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"}
}

// add runs ADD and returns its printed result converted to the current type.
func (e *env) add(a *skel.CmdArgs, version string) *current.Result {
	e.t.Helper()
	e.out.Reset()
	if err := e.plugin.Add(a); err != nil {
		e.t.Fatalf("ADD: %v (CNI %+v)", err, CNIError(err))
	}
	raw := append([]byte(nil), e.out.Bytes()...)
	r, err := create.Create(version, raw)
	if err != nil {
		e.t.Fatalf("parse ADD result %s: %v", raw, err)
	}
	if r.Version() != version {
		e.t.Fatalf("result version %s, want %s", r.Version(), version)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// withPrev returns stdin with prevResult set to the raw output of the last ADD.
func (e *env) withPrev(version, network, extra string) []byte {
	var prev map[string]any
	if err := json.Unmarshal(e.out.Bytes(), &prev); err != nil {
		e.t.Fatal(err)
	}
	b, _ := json.Marshal(prev)
	if extra != "" {
		extra += ","
	}
	return e.conf(version, network, extra+`"prevResult":`+string(b))
}

func hostLinks(t *testing.T, ns *netnsutil.NS) map[string]string {
	t.Helper()
	ls, err := ns.NL.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range ls {
		m[l.Attrs().Name] = l.Attrs().Alias
	}
	return m
}

func TestAddCheckDelEveryVersion(t *testing.T) {
	e := newEnv(t)
	for _, v := range SupportedVersions {
		t.Run(v, func(t *testing.T) {
			e.t = t
			pod := netnsutil.New(t)
			cid := "ctr-" + strings.ReplaceAll(v, ".", "")
			a := cmd(cid, pod.Path(), "eth0", e.conf(v, "podnet", `"runtimeConfig":{"mac":"02:aa:bb:cc:dd:01"}`))
			res := e.add(a, v)

			if len(res.Interfaces) != 2 || res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != pod.Path() ||
				!strings.HasPrefix(res.Interfaces[0].Name, "epair") || res.Interfaces[0].Sandbox != "" {
				t.Fatalf("interfaces: %+v %+v", res.Interfaces[0], res.Interfaces)
			}
			if len(res.IPs) != 2 || *res.IPs[0].Interface != 1 || res.IPs[0].Address.IP.To4() == nil ||
				res.IPs[0].Gateway.String() != "10.44.0.1" || res.IPs[1].Gateway.String() != "fd00:44::1" {
				t.Fatalf("ips: %+v", res.IPs)
			}
			e.agent.mu.Lock()
			at := e.agent.atts[agentapi.Key{ContainerID: cid, IfName: "eth0"}]
			e.agent.mu.Unlock()
			if at == nil || at.PodName != "web-0" || at.PodNamespace != "default" || at.NetNS != pod.Path() {
				t.Errorf("CNI_ARGS/netns not passed to the agent: %+v", at)
			}
			if res.Interfaces[1].Mac != "02:aa:bb:cc:dd:01" {
				t.Errorf("runtimeConfig.mac not applied: %s", res.Interfaces[1].Mac)
			}
			// The pod side, as the kernel sees it.
			st, err := inspectPod(pod.Path(), "eth0")
			if err != nil {
				t.Fatal(err)
			}
			if !st.up || st.mtu != 1400 || st.mac.String() != "02:aa:bb:cc:dd:01" {
				t.Errorf("pod link: up=%v mtu=%d mac=%s", st.up, st.mtu, st.mac)
			}
			e.agent.mu.Lock()
			reported := e.agent.podMACs[agentapi.Key{ContainerID: cid, IfName: "eth0"}]
			e.agent.mu.Unlock()
			if reported != st.mac.String() {
				t.Errorf("Attach reported pod MAC %q, the pod has %s", reported, st.mac)
			}
			// The link-local address follows the runtime's MAC (EUI-64), as anti-spoofing
			// expects: fe80:: + 00:aa:bb:ff:fe:cc:dd:01.
			waitLinkLocal(t, pod.Path(), "eth0", netip.MustParseAddr("fe80::aa:bbff:fecc:dd01"))
			// The agent's MTU (1400) reached the host end too (the pair is cloned with the
			// kernel's default while the agent allocates).
			if hl, err := e.host.NL.LinkByName(res.Interfaces[0].Name); err != nil || hl.Attrs().MTU != 1400 {
				t.Errorf("host end %s: %v, MTU %v; want 1400", res.Interfaces[0].Name, err, hl)
			}
			for _, ip := range res.IPs {
				p, _ := ipNetToPrefix(&ip.Address)
				found := false
				for _, x := range st.addrs {
					found = found || x == p
				}
				if !found {
					t.Errorf("address %s not on eth0 (%v)", p, st.addrs)
				}
			}
			link, _ := pod.NL.LinkByName("eth0")
			v6, _ := pod.NL.AddrList(link, netlink.FAMILY_V6)
			for _, ad := range v6 {
				if ad.IP.IsGlobalUnicast() && (ad.Flags&unix.IFA_F_TENTATIVE != 0 || ad.Flags&unix.IFA_F_NODAD == 0) {
					t.Errorf("IPv6 %s is tentative / subject to DAD: flags %#x", ad.IP, ad.Flags)
				}
			}
			for _, want := range []podRoute{{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.44.0.1")},
				{netip.MustParsePrefix("::/0"), netip.MustParseAddr("fd00:44::1")}} {
				found := false
				for _, r := range st.routes {
					found = found || r == want
				}
				if !found {
					t.Errorf("route %v missing: %v", want, st.routes)
				}
			}
			hl := hostLinks(t, e.host)
			if alias := hl[res.Interfaces[0].Name]; alias != epair.AliasPrefix+epair.OwnerKey("podnet", cid, "eth0") {
				t.Errorf("host alias %q", alias)
			}
			// CHECK passes on the fresh attachment...
			chk := cmd(cid, pod.Path(), "eth0", e.withPrev(v, "podnet", ""))
			if err := e.plugin.Check(chk); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			// ...and fails, naming the address, once it is removed from the pod.
			p0, _ := ipNetToPrefix(&res.IPs[0].Address)
			if err := pod.NL.AddrDel(link, &netlink.Addr{IPNet: prefixToIPNet(p0)}); err != nil {
				t.Fatal(err)
			}
			err = e.plugin.Check(chk)
			if !errors.Is(err, ErrCheckFailed) || !strings.Contains(err.Error(), p0.String()) {
				t.Fatalf("CHECK after removing %s: %v", p0, err)
			}
			// DEL removes everything, and again succeeds.
			del := cmd(cid, pod.Path(), "eth0", e.withPrev(v, "podnet", ""))
			for i := range 2 {
				if err := e.plugin.Del(del); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if _, ok := hostLinks(t, e.host)[res.Interfaces[0].Name]; ok {
				t.Error("host end left after DEL")
			}
			if _, err := pod.NL.LinkByName("eth0"); err == nil {
				t.Error("pod end left after DEL")
			}
			if l, _ := e.agent.ipam.List(); len(l) != 0 {
				t.Errorf("addresses left after DEL: %+v", l)
			}
			if err := e.plugin.Check(chk); CNIError(err).Code != types.ErrUnknownContainer {
				t.Errorf("CHECK after DEL: %v, want code 3", err)
			}
		})
	}
}

func TestDelWhenNetnsGoneOrAgentDown(t *testing.T) {
	e := newEnv(t)
	pod := netnsutil.New(t)
	res := e.add(cmd("c-gone", pod.Path(), "eth0", e.conf("1.1.0", "podnet", "")), "1.1.0")
	host := res.Interfaces[0].Name
	if err := pod.Remove(); err != nil {
		t.Fatal(err)
	}
	// Deleting the namespace takes the veth with it; make sure DEL copes either way.
	if err := e.plugin.Del(cmd("c-gone", pod.Path(), "eth0", e.conf("1.1.0", "podnet", ""))); err != nil {
		t.Fatalf("DEL with netns gone: %v", err)
	}
	if _, ok := hostLinks(t, e.host)[host]; ok {
		t.Error("host end left")
	}

	// Agent down: DEL removes the links locally, succeeds, and does not wait.
	pod2 := netnsutil.New(t)
	res = e.add(cmd("c-down", pod2.Path(), "eth0", e.conf("1.1.0", "podnet", "")), "1.1.0")
	e.stopAgent()
	start := time.Now()
	if err := e.plugin.Del(cmd("c-down", pod2.Path(), "eth0", e.conf("1.1.0", "podnet", ""))); err != nil {
		t.Fatalf("DEL with agent down: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("DEL waited %v for a dead agent", d)
	}
	if _, ok := hostLinks(t, e.host)[res.Interfaces[0].Name]; ok {
		t.Error("host end left with agent down")
	}
	if _, err := pod2.NL.LinkByName("eth0"); err == nil {
		t.Error("pod end left with agent down")
	}
	// Only the agent's state remains, for it to reconcile when back.
	if _, ok, _ := e.agent.ipam.Get(ipam.Owner{ContainerID: "c-down", IfName: "eth0"}); !ok {
		t.Error("the agent's record vanished without the agent")
	}
	// DEL with no netns at all (the runtime lost it) and the agent down also succeeds.
	if err := e.plugin.Del(cmd("c-down", "", "eth0", e.conf("1.1.0", "podnet", ""))); err != nil {
		t.Fatalf("DEL without netns: %v", err)
	}
	e.startAgent()
}

// TestHungAgent: an agent that accepts but never answers bounds ADD by timeouts.add (code
// 11, nothing left behind) and DEL by timeouts.del (success, links removed locally).
func TestHungAgent(t *testing.T) {
	e := newEnv(t)
	pod := netnsutil.New(t)
	conf := e.conf("1.1.0", "podnet", `"timeouts":{"add":"300ms","del":"300ms"}`)
	res := e.add(cmd("c-hung", pod.Path(), "eth0", conf), "1.1.0")
	e.agent.mu.Lock()
	e.agent.hang = true
	e.agent.mu.Unlock()
	defer func() {
		e.agent.mu.Lock()
		e.agent.hang = false
		e.agent.mu.Unlock()
	}()
	start := time.Now()
	if err := e.plugin.Del(cmd("c-hung", pod.Path(), "eth0", conf)); err != nil {
		t.Fatalf("DEL with a hung agent: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("DEL took %v with timeouts.del 300ms", d)
	}
	if _, ok := hostLinks(t, e.host)[res.Interfaces[0].Name]; ok {
		t.Error("host end left")
	}
	pod2 := netnsutil.New(t)
	start = time.Now()
	err := e.plugin.Add(cmd("c-hung2", pod2.Path(), "eth0", conf))
	if CNIError(err).Code != types.ErrTryAgainLater {
		t.Errorf("ADD with a hung agent: %v, want code 11", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ADD took %v with timeouts.add 300ms", d)
	}
	if _, err := pod2.NL.LinkByName("eth0"); err == nil {
		t.Error("ADD with a hung agent left a link")
	}
}

// TestAddOffload: a pod on an offload switch keeps transmit checksum offload (and TSO);
// on a plain switch it computes checksums itself.
func TestAddOffload(t *testing.T) {
	e := newEnv(t)
	for _, offload := range []bool{false, true} {
		e.agent.mu.Lock()
		e.agent.offload = offload
		e.agent.mu.Unlock()
		pod := netnsutil.New(t)
		cid := fmt.Sprintf("offload-%v", offload)
		e.add(cmd(cid, pod.Path(), "eth0", e.conf("1.1.0", "podnet", "")), "1.1.0")
		on := netnsutil.TxChecksumOn(t, pod, "eth0")
		if on != offload {
			t.Fatalf("offload switch %v: pod eth0 transmit checksum offload %v", offload, on)
		}
	}
}

// TestAddRetried: a second ADD of the same attachment (a runtime retrying after a
// failure it did not see the end of) replaces the first one's pair; so does an ADD
// whose attachment the agent no longer knows while the pod interface is still there.
// Either way one pair with the owner's alias is left.
func TestAddRetried(t *testing.T) {
	e := newEnv(t)
	pod := netnsutil.New(t)
	args := cmd("retried", pod.Path(), "eth0", e.conf("1.1.0", "podnet", ""))
	owned := func() []string {
		var out []string
		for name, alias := range hostLinks(t, e.host) {
			if alias == epair.AliasPrefix+epair.OwnerKey("podnet", "retried", "eth0") {
				out = append(out, name)
			}
		}
		return out
	}
	first := e.add(args, "1.1.0")
	second := e.add(args, "1.1.0")
	if got := owned(); len(got) != 1 || got[0] != second.Interfaces[0].Name {
		t.Fatalf("after a retried ADD: owned links %v, want only %s", got, second.Interfaces[0].Name)
	}
	if first.IPs[0].Address.String() != second.IPs[0].Address.String() {
		t.Fatalf("retried ADD changed the address: %v → %v", first.IPs[0].Address, second.IPs[0].Address)
	}
	// The agent forgets the attachment; the pod's eth0 is still there.
	if _, err := e.agent.Release(context.Background(), &agentapi.ReleaseRequest{Key: agentapi.Key{ContainerID: "retried", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	third := e.add(args, "1.1.0")
	if got := owned(); len(got) != 1 || got[0] != third.Interfaces[0].Name {
		t.Fatalf("after an ADD the agent did not know: owned links %v, want only %s", got, third.Interfaces[0].Name)
	}
	if err := e.plugin.Del(args); err != nil {
		t.Fatal(err)
	}
	if got := owned(); len(got) != 0 {
		t.Fatalf("after DEL: owned links %v", got)
	}
}

func TestAddRollsBack(t *testing.T) {
	e := newEnv(t)
	pod := netnsutil.New(t)
	before := hostLinks(t, e.host)
	e.agent.mu.Lock()
	e.agent.failAttach = agentapi.NewError(agentapi.CodeNotReady, "switch vale0 not up")
	e.agent.mu.Unlock()
	err := e.plugin.Add(cmd("c-rb", pod.Path(), "eth0", e.conf("1.0.0", "podnet", "")))
	if CNIError(err).Code != types.ErrTryAgainLater || !strings.Contains(err.Error(), "vale0 not up") {
		t.Fatalf("ADD with failing attach: %v", err)
	}
	if after := hostLinks(t, e.host); len(after) != len(before) {
		t.Errorf("host links leaked: %v -> %v", before, after)
	}
	if _, err := pod.NL.LinkByName("eth0"); err == nil {
		t.Error("pod end leaked")
	}
	if l, _ := e.agent.ipam.List(); len(l) != 0 {
		t.Errorf("addresses leaked: %+v", l)
	}
	e.agent.mu.Lock()
	e.agent.failAttach = nil
	e.agent.mu.Unlock()
	// The same ADD now succeeds, and a repeated ADD is idempotent (same addresses).
	r1 := e.add(cmd("c-rb", pod.Path(), "eth0", e.conf("1.0.0", "podnet", "")), "1.0.0")
	r2 := e.add(cmd("c-rb", pod.Path(), "eth0", e.conf("1.0.0", "podnet", "")), "1.0.0")
	if r1.IPs[0].Address.String() != r2.IPs[0].Address.String() {
		t.Errorf("repeated ADD changed the address: %s -> %s", r1.IPs[0].Address.String(), r2.IPs[0].Address.String())
	}
	if n := len(hostLinks(t, e.host)); n != len(before)+1 {
		t.Errorf("repeated ADD left %d links, want %d", n, len(before)+1)
	}
}

func TestAddErrors(t *testing.T) {
	e := newEnv(t)
	pod := netnsutil.New(t)
	for _, tc := range []struct {
		name string
		a    *skel.CmdArgs
		code uint
		want string
	}{
		{"no ifname", cmd("c", pod.Path(), "", e.conf("1.0.0", "podnet", "")), types.ErrInvalidEnvironmentVariables, "CNI_IFNAME"},
		{"no netns", cmd("c", "", "eth0", e.conf("1.0.0", "podnet", "")), types.ErrInvalidEnvironmentVariables, "CNI_NETNS"},
		{"missing netns", cmd("c", "/var/run/netns/does-not-exist", "eth0", e.conf("1.0.0", "podnet", "")), types.ErrInvalidNetNS, "does-not-exist"},
		{"bad mtu", cmd("c", pod.Path(), "eth0", e.conf("1.0.0", "podnet", `"mtu":20`)), types.ErrInvalidNetworkConfig, "mtu"},
		{"ip out of range", cmd("c", pod.Path(), "eth0", e.conf("1.0.0", "podnet", `"runtimeConfig":{"ips":["10.45.0.9"]}`)), types.ErrInvalidNetworkConfig, "10.45.0.9"},
		{"bad version", cmd("c", pod.Path(), "eth0", e.conf("0.2.0", "podnet", "")), types.ErrIncompatibleCNIVersion, "cniVersion"},
	} {
		err := e.plugin.Add(tc.a)
		ce := CNIError(err)
		if ce == nil || ce.Code != tc.code || !strings.Contains(ce.Msg, tc.want) {
			t.Errorf("%s: %v (code %v), want code %d naming %s", tc.name, err, ce, tc.code, tc.want)
		}
	}
	if l, _ := e.agent.ipam.List(); len(l) != 0 {
		t.Errorf("failed ADDs leaked addresses: %+v", l)
	}
	// Requested IP honoured.
	res := e.add(cmd("c-ip", pod.Path(), "eth0", e.conf("0.4.0", "podnet", `"runtimeConfig":{"ips":["10.44.0.200/24"]}`)), "0.4.0")
	if res.IPs[0].Address.String() != "10.44.0.200/24" {
		t.Errorf("requested ip: %s", res.IPs[0].Address.String())
	}
	// Agent down: ADD says try again later.
	e.stopAgent()
	pod2 := netnsutil.New(t)
	err := e.plugin.Add(cmd("c-x", pod2.Path(), "eth0", e.conf("1.0.0", "podnet", "")))
	if CNIError(err).Code != types.ErrTryAgainLater {
		t.Errorf("ADD with agent down: %v, want code 11", err)
	}
	if _, err := pod2.NL.LinkByName("eth0"); err == nil {
		t.Error("ADD with agent down created a link")
	}
	e.startAgent()
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	st := &skel.CmdArgs{StdinData: e.conf("1.1.0", "podnet", "")}
	if err := e.plugin.Status(st); err != nil {
		t.Fatalf("ready agent: %v", err)
	}
	e.agent.mu.Lock()
	e.agent.notReady = "ipam store not open"
	e.agent.mu.Unlock()
	err := e.plugin.Status(st)
	if ce := CNIError(err); ce.Code != types.ErrPluginNotAvailable || !strings.Contains(ce.Msg, "ipam store not open") {
		t.Errorf("not ready: %v, want code 50 with the reason", err)
	}
	e.stopAgent()
	if ce := CNIError(e.plugin.Status(st)); ce == nil || ce.Code != types.ErrPluginNotAvailable {
		t.Errorf("agent down: %v, want code 50", ce)
	}
	e.startAgent()
}

func TestGC(t *testing.T) {
	e := newEnv(t)
	pods := map[string]*netnsutil.NS{}
	hosts := map[string]string{}
	for _, c := range []struct{ cid, network string }{{"keep", "podnet"}, {"stale1", "podnet"}, {"stale2", "podnet"}, {"other", "othernet"}} {
		pods[c.cid] = netnsutil.New(t)
		res := e.add(cmd(c.cid, pods[c.cid].Path(), "eth0", e.conf("1.1.0", c.network, "")), "1.1.0")
		hosts[c.cid] = res.Interfaces[0].Name
	}
	// A veth that is not ours, with a name that looks like ours, and one with a plain name.
	for _, name := range []string{"epair900a", "foreign0"} {
		if err := e.host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
	}
	gc := &skel.CmdArgs{StdinData: e.conf("1.1.0", "podnet", `"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]`)}
	if err := e.plugin.GC(gc); err != nil {
		t.Fatalf("GC: %v", err)
	}
	hl := hostLinks(t, e.host)
	for cid, want := range map[string]bool{"keep": true, "stale1": false, "stale2": false, "other": true} {
		if _, ok := hl[hosts[cid]]; ok != want {
			t.Errorf("%s (%s): present=%v, want %v", cid, hosts[cid], ok, want)
		}
	}
	for _, name := range []string{"epair900a", "foreign0"} {
		if _, ok := hl[name]; !ok {
			t.Errorf("GC removed %s, which it does not own", name)
		}
	}
	var owners []string
	l, _ := e.agent.ipam.List()
	for _, a := range l {
		owners = append(owners, a.Owner.ContainerID)
	}
	if strings.Join(owners, ",") != "keep,other" {
		t.Errorf("addresses after GC: %v", owners)
	}
	// GC is idempotent.
	if err := e.plugin.GC(gc); err != nil {
		t.Fatalf("GC again: %v", err)
	}
}

func TestChainedAfterPrevResult(t *testing.T) {
	e := newEnv(t)
	pod := netnsutil.New(t)
	prev := `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"net1","sandbox":"/x"}],"ips":[{"address":"192.168.9.2/24","interface":0}],"dns":{"nameservers":["10.96.0.10"]}}`
	res := e.add(cmd("c-ch", pod.Path(), "eth0", e.conf("1.0.0", "podnet", prev)), "1.0.0")
	if len(res.Interfaces) != 3 || res.Interfaces[0].Name != "net1" || res.Interfaces[2].Name != "eth0" ||
		len(res.IPs) != 3 || *res.IPs[0].Interface != 0 || *res.IPs[1].Interface != 2 || len(res.DNS.Nameservers) != 1 {
		t.Fatalf("merged result: %+v", res)
	}
}

// waitLinkLocal waits for ifName's IPv6 link-local address in nsPath and checks it.
func waitLinkLocal(t *testing.T, nsPath, ifName string, want netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, err := inspectPod(nsPath, ifName)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.addrs {
			if p.Addr().IsLinkLocalUnicast() {
				if p.Addr() != want {
					t.Fatalf("%s link-local %s, want %s", ifName, p.Addr(), want)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no link-local address on %s (%v)", ifName, st.addrs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ipamOwner(cid string) ipam.Owner { return ipam.Owner{ContainerID: cid, IfName: "eth0"} }

// BenchmarkAddDel measures a full ADD + DEL (agent round trips over the socket, veth
// creation across namespaces, pod configuration, teardown) in one pod namespace.
func BenchmarkAddDel(b *testing.B) {
	netnsutil.RequireRoot(b)
	e := newEnvTB(b)
	pod := netnsutil.New(b)
	stdin := e.conf("1.1.0", "podnet", "")
	b.ReportAllocs()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		a := cmd(fmt.Sprintf("bench-%d", i), pod.Path(), "eth0", stdin)
		e.out.Reset()
		if err := e.plugin.Add(a); err != nil {
			b.Fatal(err)
		}
		if err := e.plugin.Del(a); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "add+del/s")
}

func TestLogFile(t *testing.T) {
	e := newEnv(t)
	logf := filepath.Join(t.TempDir(), "epair.log")
	conf := e.conf("1.0.0", "podnet", fmt.Sprintf(`"logFile":%q,"logLevel":"debug"`, logf))
	err := e.plugin.Add(cmd("c-log", "/var/run/netns/no-such-ns", "eth0", conf))
	if CNIError(err).Code != types.ErrInvalidNetNS {
		t.Fatalf("ADD: %v, want code 8", err)
	}
	b, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, "epair-cni add c-log") || !strings.Contains(s, "failed:") || !strings.Contains(s, "no-such-ns") {
		t.Errorf("log file: %q", s)
	}
	if fi, _ := os.Stat(logf); fi.Mode().Perm() != 0o600 {
		t.Errorf("log file mode %v", fi.Mode())
	}
}
