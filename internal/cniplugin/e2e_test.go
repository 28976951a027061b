package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// buildPlugins builds the plugin binary and the reference meta plugins it is chained with
// into one CNI bin dir. The reference plugins are pinned as go.mod tools.
func buildPlugins(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: builds plugin binaries")
	}
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Skip("skipping: go tool not found to build the plugin binaries")
		}
	}
	dir := t.TempDir()
	build := func(out, pkg string) {
		cmd := exec.Command(gobin, "build", "-o", filepath.Join(dir, out), pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	build("epair", "./testdata/epair-cni")
	for _, p := range []string{"tuning", "bandwidth", "portmap"} {
		build(p, "github.com/containernetworking/plugins/plugins/meta/"+p)
	}
	return dir
}

func haveNetfilterTool() bool {
	for _, tool := range []string{"iptables", "nft"} {
		if _, err := exec.LookPath(tool); err == nil {
			return true
		}
	}
	return false
}

// TestConflistThroughLibcni runs the plugin binary through libcni as the first plugin of a
// conflist chained with the reference tuning, bandwidth and (when iptables or nft is
// installed) portmap plugins: ADD, CHECK, STATUS, GC, DEL and VERSION, with the host side in
// a namespace the test creates.
func TestConflistThroughLibcni(t *testing.T) {
	netnsutil.RequireRoot(t)
	bin := buildPlugins(t)
	e := newEnv(t)
	pod := netnsutil.New(t)
	stalePod := netnsutil.New(t)

	portmap := ""
	if haveNetfilterTool() {
		portmap = `,{"type":"portmap","capabilities":{"portMappings":true}}`
	} else {
		t.Log("iptables/nft not installed: portmap left out of the chain")
	}
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{
		"cniVersion":"1.1.0","cniVersions":["0.4.0","1.0.0","1.1.0"],"name":"podnet",
		"plugins":[
			{"type":"epair","agentSocket":%q,"timeouts":{"del":"1s","status":"1s"},"capabilities":{"ips":true,"mac":true}},
			{"type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.arp_notify":"1"}},
			{"type":"bandwidth","capabilities":{"bandwidth":true}}%s
		]}`, e.socket, portmap)))
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{bin}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: "e2e-pod", NetNS: pod.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "e2e"}},
		CapabilityArgs: map[string]any{
			"ips":          []string{"10.44.0.77/24"},
			"mac":          "02:e2:e2:00:00:01",
			"bandwidth":    map[string]any{"ingressRate": 8_000_000, "ingressBurst": 1_000_000},
			"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}},
		},
	}
	ctx := context.Background()
	// Every plugin runs with the host side in e.host: exec forks from the locked thread.
	inHost := func(f func() error) error { return e.host.Do(f) }

	info, err := cni.GetVersionInfo(ctx, "epair")
	if err != nil || !strings.Contains(strings.Join(info.SupportedVersions(), ","), "1.1.0") {
		t.Fatalf("VERSION: %v %v", info, err)
	}
	if err := inHost(func() error { return cni.GetStatusNetworkList(ctx, list) }); err != nil {
		t.Fatalf("STATUS: %v", err)
	}

	var res types.Result
	if err := inHost(func() (err error) { res, err = cni.AddNetworkList(ctx, list, rt); return }); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if r.CNIVersion != "1.1.0" || len(r.Interfaces) != 2 || r.Interfaces[1].Mac != "02:e2:e2:00:00:01" ||
		r.IPs[0].Address.String() != "10.44.0.77/24" {
		t.Fatalf("ADD result: %+v", r)
	}
	host := r.Interfaces[0].Name
	// tuning ran after us, on our interface.
	if out, err := pod.Exec("cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("tuning sysctl: %q %v", out, err)
	}
	// bandwidth found our host end through the result and put its qdisc there (the chain
	// works; the limit does not hold on a switched port, as the README says).
	hl, err := e.host.NL.LinkByName(host)
	if err != nil {
		t.Fatal(err)
	}
	qd, err := e.host.NL.QdiscList(hl)
	if err != nil {
		t.Fatal(err)
	}
	shaped := false
	for _, q := range qd {
		shaped = shaped || q.Type() == "tbf"
	}
	if !shaped {
		t.Errorf("bandwidth: no tbf qdisc on %s: %v", host, qd)
	}

	// portmap found our pod address in the result and mapped 8080 to it.
	if portmap != "" {
		if out, err := e.host.Exec("nft", "list", "ruleset"); err != nil || !strings.Contains(out, "8080") || !strings.Contains(out, "10.44.0.77") {
			t.Errorf("portmap: no 8080 -> 10.44.0.77 rule in the host namespace: %v\n%s", err, out)
		}
	}

	if err := inHost(func() error { return cni.CheckNetworkList(ctx, list, rt) }); err != nil {
		t.Fatalf("CHECK: %v", err)
	}

	// A stale attachment that the runtime forgot (its own cache dir, gone afterwards): GC
	// must remove it through the plugin, not through libcni's cached DEL.
	staleCNI := libcni.NewCNIConfigWithCacheDir([]string{bin}, t.TempDir(), nil)
	staleRT := &libcni.RuntimeConf{ContainerID: "e2e-stale", NetNS: stalePod.Path(), IfName: "eth0"}
	var staleRes types.Result
	if err := inHost(func() (err error) { staleRes, err = staleCNI.AddNetworkList(ctx, list, staleRT); return }); err != nil {
		t.Fatalf("ADD stale: %v", err)
	}
	sr, _ := current.NewResultFromResult(staleRes)
	staleHost := sr.Interfaces[0].Name
	gcArgs := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "e2e-pod", IfName: "eth0"}}}
	if err := inHost(func() error { return cni.GCNetworkList(ctx, list, gcArgs) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	links := hostLinks(t, e.host)
	if _, ok := links[staleHost]; ok {
		t.Errorf("GC left the stale %s", staleHost)
	}
	if _, ok := links[host]; !ok {
		t.Errorf("GC removed the valid %s", host)
	}
	if _, ok, _ := e.agent.ipam.Get(ipamOwner("e2e-stale")); ok {
		t.Error("GC left the stale attachment's address")
	}

	// STATUS with the agent not ready is code 50 through the binary.
	e.agent.mu.Lock()
	e.agent.notReady = "switch vale0 starting"
	e.agent.mu.Unlock()
	err = inHost(func() error { return cni.GetStatusNetworkList(ctx, list) })
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS not ready: %v, want code 50", err)
	}
	e.agent.mu.Lock()
	e.agent.notReady = ""
	e.agent.mu.Unlock()

	for i := range 2 {
		if err := inHost(func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if _, ok := hostLinks(t, e.host)[host]; ok {
		t.Error("DEL left the host end")
	}
	if _, err := pod.NL.LinkByName("eth0"); err == nil {
		t.Error("DEL left the pod end")
	}
	if l, _ := e.agent.ipam.List(); len(l) != 0 {
		t.Errorf("DEL left addresses: %+v", l)
	}
}
