package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/epair"
	"github.com/epair-cni/epair/pkg/linkport"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	netnsutil.Main(m)
}

const (
	testGW   = "10.78.0.1"
	testCIDR = "10.78.0.0/24"
	testTap  = "eptest0"
	testGW6  = "fd00:78::1"
)

// env is a host namespace with a Dataplane in it and pods (namespaces
// with an epair pair each, the host end in the host namespace).
type env struct {
	t    testing.TB
	host *netnsutil.NS
	cl   *epair.Cloner
	cfg  Config
	dp   *Dataplane
	pods []*pod
}

type pod struct {
	ns    *netnsutil.NS
	pair  *epair.Pair
	ip    string
	ip6   string
	owner string
}

func nsPath(n *netnsutil.NS) string { return "/var/run/netns/" + n.Name }

func testConfig(host *netnsutil.NS, be linkport.Backend) Config {
	cfg := DefaultConfig()
	cfg.NetNS = nsPath(host)
	cfg.Backend = be
	cfg.Workers = 2
	// The no-loss tests send bursts of hundreds of datagrams: a pod link's AF_XDP socket
	// needs 512 receive frames for them. The default (limits.DefaultXDPFrames, 128: the
	// agent's, bounded by memory per pod) lets the kernel drop about 0.2 % of such a burst
	// before the switch runs.
	cfg.Link.XDP.FrameCount = 1024
	cfg.Switches = []SwitchConfig{{
		Name: "vale0",
		HostPort: HostPortConfig{
			Name:     testTap,
			MAC:      net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1},
			Gateways: []netip.Prefix{netip.MustParsePrefix(testGW + "/24"), netip.MustParsePrefix(testGW6 + "/64")},
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix(testCIDR), netip.MustParsePrefix("10.79.0.0/24")},
		},
	}}
	return cfg
}

// newEnv makes the host namespace and n pods, and starts a dataplane with
// cfg adjusted by mod (nil for the defaults) and the pods attached.
func newEnv(t *testing.T, n int, be linkport.Backend, mod func(*Config)) *env {
	return newEnvTB(t, n, be, mod)
}

// newBenchEnv is two pods over be with larger AF_XDP sockets.
func newBenchEnv(b *testing.B, be linkport.Backend) *env {
	return newEnvTB(b, 2, be, func(c *Config) { c.Link.XDP.FrameCount = 4096 })
}

func newEnvTB(t testing.TB, n int, be linkport.Backend, mod func(*Config)) *env {
	t.Helper()
	netnsutil.RequireRoot(t)
	e := &env{t: t, host: netnsutil.New(t)}
	var err error
	e.cl, err = epair.New(epair.Options{HostNetNS: nsPath(e.host), NodeID: "dataplane-test"})
	if err != nil {
		t.Fatalf("epair cloner: %v", err)
	}
	t.Cleanup(func() { e.cl.Close() })
	e.cfg = testConfig(e.host, be)
	if mod != nil {
		mod(&e.cfg)
	}
	if n < 0 { // no dataplane yet
		return e
	}
	e.start()
	for i := 0; i < n; i++ {
		e.addPod()
	}
	return e
}

func (e *env) start() {
	e.t.Helper()
	dp, err := New(e.cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.dp = dp
	e.t.Cleanup(func() { _ = dp.Close(CloseOptions{Uninstall: true}) })
}

// addPod creates a pod namespace with an epair pair, addresses it and
// attaches its host end.
func (e *env) addPod() *pod {
	p := e.makePod()
	e.attach(p)
	return p
}

// makePod creates a pod namespace with an epair pair and addresses it.
func (e *env) makePod() *pod {
	// On an offload switch the pods keep TSO and checksum offload.
	return e.makePodIn("10.78.0", "fd00:78", testGW, e.cfg.Switches[0].Offload)
}

// makePodIn creates a pod namespace with an epair pair, addresses it in net4.0/24 and
// net6::/64 (the next free host number of each), and routes its default through gw.
func (e *env) makePodIn(net4, net6, gw string, keepTxChecksum bool) *pod {
	t := e.t
	t.Helper()
	i := len(e.pods)
	p := &pod{ns: netnsutil.New(t), ip: fmt.Sprintf("%s.%d", net4, 10+i), ip6: fmt.Sprintf("%s::%x", net6, 0x10+i), owner: fmt.Sprintf("ctr%d/eth0", i)}
	var err error
	p.pair, err = e.cl.Create(epair.Request{PodNetNS: nsPath(p.ns), IfName: "eth0", Owner: p.owner, KeepTxChecksum: keepTxChecksum})
	if err != nil {
		t.Fatalf("create epair for pod %d: %v", i, err)
	}
	l, err := p.ns.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr(p.ip + "/24")
	if err := p.ns.NL.AddrAdd(l, a); err != nil {
		t.Fatalf("address pod %d: %v", i, err)
	}
	a6, _ := netlink.ParseAddr(p.ip6 + "/64")
	a6.Flags = unix.IFA_F_NODAD
	if err := p.ns.NL.AddrAdd(l, a6); err != nil {
		t.Fatalf("address pod %d: %v", i, err)
	}
	if err := p.ns.NL.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw), LinkIndex: l.Attrs().Index}); err != nil {
		t.Fatalf("default route in pod %d: %v", i, err)
	}
	e.pods = append(e.pods, p)
	return p
}

func (e *env) attach(p *pod) PortInfo {
	e.t.Helper()
	pi, err := e.dp.AttachPort(context.Background(), p.req())
	if err != nil {
		e.t.Fatalf("AttachPort %s: %v", p.pair.HostName, err)
	}
	return pi
}

func (p *pod) portName() string { return "vale0:" + p.pair.HostName }

// reqAs is req with another owner.
func (p *pod) reqAs(owner string) AttachRequest {
	r := p.req()
	r.Owner = owner
	return r
}

// req is the pod's attach request: its link, owner and identity (MAC and both
// addresses), with the default policy.
func (p *pod) req() AttachRequest {
	return AttachRequest{Owner: p.owner, HostIfName: p.pair.HostName, HostIfIndex: p.pair.HostIndex,
		PodMAC: p.pair.PodMAC, PodIPs: []netip.Addr{netip.MustParseAddr(p.ip), netip.MustParseAddr(p.ip6)}}
}

func (e *env) ping(from *pod, to string) {
	e.t.Helper()
	if out, err := from.ns.Exec("ping", "-c", "2", "-i", "0.2", "-W", "2", to); err != nil {
		e.t.Fatalf("ping %s → %s: %v\n%s", from.ip, to, err, out)
	}
}

// pair is the two-pod view porttest.UDPStream wants.
func pairOf(a, b *pod) *netnsutil.Pods {
	return &netnsutil.Pods{A: a.ns, B: b.ns, IPA: a.ip, IPB: b.ip}
}

// staticNeighbors pins the pods' ARP entries so a burst does not lose
// frames to address resolution.
func (e *env) staticNeighbors() {
	for _, p := range e.pods {
		l, err := p.ns.NL.LinkByName("eth0")
		if err != nil {
			e.t.Fatal(err)
		}
		for _, q := range e.pods {
			if q == p {
				continue
			}
			err := p.ns.NL.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT,
				Family: netlink.FAMILY_V4, IP: net.ParseIP(q.ip), HardwareAddr: q.pair.PodMAC})
			if err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// xdpProgs lists the XDP programs attached to the host namespace's links.
func (e *env) xdpProgs() []string {
	links, err := e.host.NL.LinkList()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			out = append(out, fmt.Sprintf("%s:%d", l.Attrs().Name, x.ProgId))
		}
	}
	return out
}

func (e *env) nftTables() string {
	out, err := e.host.Exec("nft", "list", "tables")
	if err != nil {
		e.t.Fatalf("nft list tables: %v", err)
	}
	return out
}

func (e *env) hasLink(name string) bool {
	_, err := e.host.NL.LinkByName(name)
	return err == nil
}

func requireTool(t testing.TB, tool string) {
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not installed", tool)
	}
}

func waitFor(t testing.TB, what string, d time.Duration, f func() bool) {
	t.Helper()
	dl := time.Now().Add(d)
	for !f() {
		if time.Now().After(dl) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var _ = strings.Contains

// settle waits for the background AF_XDP upgrades of FastStart ports.
func settle(tb testing.TB, dp *Dataplane) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := dp.SettleUpgrades(ctx); err != nil {
		tb.Fatalf("FastStart upgrades: %v", err)
	}
}
