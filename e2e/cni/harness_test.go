package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
)

func TestMain(m *testing.M) { netnsutil.Main(m) }

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// bins builds node-agent, the plugin (as CNI type "epair"), valectl and the reference
// plugins once per test binary.
func bins(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: end-to-end test builds binaries (-short)")
	}
	netnsutil.RequireRoot(t)
	buildOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("go tool not found on PATH: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "epair-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		for out, pkg := range map[string]string{
			"node-agent": "github.com/epair-cni/epair/cmd/node-agent",
			"epair":      "github.com/epair-cni/epair/cmd/epair-cni",
			"valectl":    "github.com/epair-cni/epair/cmd/valectl",
			"nm-pktgen":  "github.com/epair-cni/epair/cmd/nm-pktgen",
			"portmap":    "github.com/containernetworking/plugins/plugins/meta/portmap",
			"bridge":     "github.com/containernetworking/plugins/plugins/main/bridge",
			"host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
		} {
			// Static and stripped, as hack/k8s/build-image.sh ships ours and as
			// containernetworking/plugins releases theirs: a dynamically linked Go binary
			// spends about 0.7 ms more in the dynamic loader at every exec.
			cmd := exec.Command(gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, out), pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// agentProc is a node-agent process in the test's host namespace.
type agentProc struct {
	t      testing.TB
	host   *netnsutil.NS
	bin    string
	dir    string
	cfg    string
	socket string
	cmd    *exec.Cmd
	done   chan error
	log    *os.File
	client *agentapi.Client
}

type envOpts struct {
	subnet     string   // default 10.60.0.0/16
	subnets    []string // several ranges (dual-stack); overrides subnet
	masquerade bool
	ringSlots  int              // 0: the agent's default
	xdpFrames  int              // 0: the agent's default
	backend    string           // "": auto
	directOpen bool             // AF_XDP attached inside ADD instead of in the background
	offload    bool             // an offload switch (virtio-net headers, pods keep TSO)
	secondary  string           // if set, the subnet of a second switch "vale1", a secondary network
	peers      []map[string]any // the agent's "peers" (other nodes)
	hostPort   string           // the switch's TAP name ("": the default)
	netmap     bool             // serve netmap ports to applications on <dir>/run/netmap.sock
	mtu        int              // the switch's MTU (0: 1500)
	fastPath   bool             // the agent's fastPath (the kernel fast path between pods)
	noFastPath bool             // fastPath: false (every frame through the switch)
}

// env is one test's world: a host namespace with a running agent, and libcni.
type env struct {
	t     testing.TB
	bin   string
	host  *netnsutil.NS
	agent *agentProc
	cni   *libcni.CNIConfig
	cache string
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	bin := bins(t)
	host := netnsutil.New(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	if o.subnet == "" {
		o.subnet = "10.60.0.0/16"
	}
	a := &agentProc{t: t, host: host, bin: bin, dir: dir, socket: filepath.Join(dir, "run", "agent.sock"),
		cfg: filepath.Join(dir, "agent.json")}
	if o.subnets == nil {
		o.subnets = []string{o.subnet}
	}
	var ranges []map[string]string
	for _, s := range o.subnets {
		ranges = append(ranges, map[string]string{"subnet": s})
	}
	if o.backend == "" {
		o.backend = "auto"
	}
	if o.mtu == 0 {
		o.mtu = 1500
	}
	switches := []map[string]any{{"name": "vale0", "mtu": o.mtu, "ranges": ranges, "hostPort": o.hostPort}}
	if o.offload { // deprecated (every switch is an offload switch): accepted with a warning
		switches[0]["offload"] = true
	}
	if o.secondary != "" {
		switches = append(switches, map[string]any{"name": "vale1", "mtu": 1400, "secondary": true,
			"ranges": []map[string]string{{"subnet": o.secondary}}})
	}
	cfg := map[string]any{
		"backend": o.backend, "directOpen": o.directOpen,
		"socket": a.socket, "stateDir": filepath.Join(dir, "state"), "masquerade": o.masquerade, "ringSlots": o.ringSlots, "xdpFrames": o.xdpFrames,
		"switches": switches, "peers": o.peers,
	}
	if o.fastPath {
		cfg["fastPath"] = true
	}
	if o.noFastPath {
		cfg["fastPath"] = false
	}
	if o.netmap {
		cfg["netmapSocket"] = filepath.Join(dir, "run", "netmap.sock")
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(a.cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	a.client = agentapi.NewClient(a.socket, 5*time.Second)
	e := &env{t: t, bin: bin, host: host, agent: a, cache: t.TempDir()}
	e.cni = newCNIConfig(bin, e.cache)
	a.start()
	t.Cleanup(func() {
		a.client.Close()
		if a.cmd != nil {
			a.stop(true)
		}
	})
	return e
}

// newCNIConfig is libcni over the plugins in bin, with an explicit Exec: libcni creates its
// default one lazily without a lock, which races when a runtime (or a test) runs ADDs
// concurrently on one CNIConfig.
func newCNIConfig(bin, cache string) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{bin}, cache,
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}})
}

func (a *agentProc) start(extra ...string) {
	a.t.Helper()
	lf, err := os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	args := append([]string{"netns", "exec", a.host.Name, filepath.Join(a.bin, "node-agent"), "-config", a.cfg, "-log-level", "debug"}, extra...)
	a.cmd = exec.Command("ip", args...)
	a.cmd.Stdout, a.cmd.Stderr = lf, lf
	a.log = lf
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan error, 1)
	go func(c *exec.Cmd, d chan error) { d <- c.Wait() }(a.cmd, a.done)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := a.client.Ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case werr := <-a.done:
			a.cmd = nil
			a.t.Fatalf("node-agent exited: %v\n%s", werr, a.logText())
		default:
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("node-agent not ready after 20s: %v\n%s", err, a.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logText is the agent's log (debug level: every API call with its duration).
func (a *agentProc) logText() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	return string(b)
}

// stop sends SIGTERM (graceful) and waits; uninstall restarts nothing and is used by the
// test cleanup, which must leave nothing behind.
func (a *agentProc) stop(uninstall bool) {
	a.t.Helper()
	if a.cmd == nil {
		return
	}
	if uninstall {
		// The running agent was not started with -uninstall: stop it, then run one that
		// uninstalls at once.
		a.signal(syscall.SIGTERM)
		a.start("-uninstall")
	}
	a.signal(syscall.SIGTERM)
}

func (a *agentProc) signal(sig syscall.Signal) {
	a.t.Helper()
	a.cmd.Process.Signal(sig)
	select {
	case err := <-a.done:
		if sig == syscall.SIGTERM && err != nil {
			a.t.Errorf("node-agent exit after SIGTERM: %v\n%s", err, a.logText())
		}
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		a.t.Errorf("node-agent did not stop within 20s of %v", sig)
	}
	a.cmd = nil
	a.log.Close()
}

func (a *agentProc) kill9() { a.signal(syscall.SIGKILL) }

func (a *agentProc) pid() int { return a.cmd.Process.Pid }

// conflist is the epair network in cniVersion v, with extra plugins chained after it.
func (e *env) conflist(v string, extra ...string) *libcni.NetworkConfigList {
	e.t.Helper()
	plugins := []string{fmt.Sprintf(`{"type":"epair","agentSocket":%q,"timeouts":{"del":"2s","status":"2s"},"capabilities":{"ips":true,"mac":true,"netmapPorts":true}}`, e.agent.socket)}
	if f := os.Getenv("EPAIR_CNI_LOG"); f != "" { // the plugin's debug log, with each step's time
		plugins[0] = fmt.Sprintf(`{"type":"epair","agentSocket":%q,"timeouts":{"del":"2s","status":"2s"},"capabilities":{"ips":true,"mac":true,"netmapPorts":true},"logFile":%q,"logLevel":"debug"}`, e.agent.socket, f)
	}
	plugins = append(plugins, extra...)
	src := fmt.Sprintf(`{"cniVersion":%q,"name":"podnet","plugins":[%s]}`, v, strings.Join(plugins, ","))
	l, err := libcni.ConfListFromBytes([]byte(src))
	if err != nil {
		e.t.Fatalf("conflist: %v\n%s", err, src)
	}
	return l
}

func rt(id string, ns *netnsutil.NS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: ns.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", id}}}
}

// inHost runs f with the calling thread in the host namespace: libcni forks the plugins
// from it, so they see the host namespace as theirs, as on a node.
func (e *env) inHost(f func() error) error { return e.host.Do(f) }

func (e *env) add(l *libcni.NetworkConfigList, r *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := e.inHost(func() (err error) {
		res, err = e.cni.AddNetworkList(context.Background(), l, r)
		return
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (e *env) del(l *libcni.NetworkConfigList, r *libcni.RuntimeConf) error {
	return e.inHost(func() error { return e.cni.DelNetworkList(context.Background(), l, r) })
}

func (e *env) check(l *libcni.NetworkConfigList, r *libcni.RuntimeConf) error {
	return e.inHost(func() error { return e.cni.CheckNetworkList(context.Background(), l, r) })
}

func (e *env) mustAdd(l *libcni.NetworkConfigList, r *libcni.RuntimeConf) *current.Result {
	e.t.Helper()
	res, err := e.add(l, r)
	if err != nil {
		e.t.Fatalf("ADD %s: %v\nagent log:\n%s", r.ContainerID, err, e.agent.logText())
	}
	return res
}

// podIP is the pod's first address.
func podIP(r *current.Result) string { return r.IPs[0].Address.IP.String() }

// ping pings dst from ns (3 tries, 1s each).
func ping(ns *netnsutil.NS, dst string) error {
	out, err := ns.Exec("ping", "-c", "1", "-W", "1", "-w", "3", dst)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", dst, ns.Name, err, out)
	}
	return nil
}

// hostEpairs lists the epair host ends left in the host namespace.
func (e *env) hostEpairs() []string {
	var out []string
	for _, n := range e.host.LinkNames(e.t) {
		if strings.HasPrefix(n, "epair") {
			out = append(out, n)
		}
	}
	return out
}

// agentFDs counts the agent's sockets and BPF object descriptors (AF_XDP, AF_PACKET,
// netlink, XDP programs and maps).
// settledFDs is agentFDs once the counts have not changed for 500 ms (at most 10 s).
func (a *agentProc) settledFDs(t *testing.T) (sockets, bpf int) {
	t.Helper()
	sockets, bpf = a.agentFDs()
	since := time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Since(since) < 500*time.Millisecond; time.Sleep(50 * time.Millisecond) {
		if s, b := a.agentFDs(); s != sockets || b != bpf {
			sockets, bpf, since = s, b, time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's descriptors did not settle in 10 s: %d sockets, %d bpf", sockets, bpf)
		}
	}
	return sockets, bpf
}

func (a *agentProc) agentFDs() (sockets, bpf int) {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", a.pid()))
	for _, en := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", a.pid(), en.Name()))
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(l, "socket:"):
			sockets++
		case strings.Contains(l, "bpf"):
			bpf++
		}
	}
	return
}

func cniCode(err error) (uint, string) {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code, te.Msg + " " + te.Details
	}
	return 0, fmt.Sprint(err)
}

// metrics returns the agent's /metrics text.
func (a *agentProc) metrics() string { return a.get("/metrics") }

// get returns the body of a GET on the agent socket.
func (a *agentProc) get(path string) string {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", a.socket)
	}}}
	resp, err := hc.Get("http://agent" + path)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
