package cniplugin

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// hostState is the test host namespace's links (with aliases), addresses and routes of
// both families.
func hostState(t *testing.T, ns *netnsutil.NS) (map[string]string, string) {
	t.Helper()
	var routes strings.Builder
	for _, args := range [][]string{{"-o", "addr", "show"}, {"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}} {
		out, err := ns.Exec("ip", args...)
		if err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		routes.WriteString(out)
	}
	return hostLinks(t, ns), routes.String()
}

// TestAddFaults: ADDs the runtime gets wrong are refused with the CNI code that says what
// is wrong and a message naming it, before any side effect: the host namespace is as it
// was and no address stays allocated. The plugin runs with its thread in the test's host
// namespace, as the binary runs in the node's.
func TestAddFaults(t *testing.T) {
	e := newEnv(t)
	pod := netnsutil.New(t)
	// An attachment that holds 10.44.0.20: the address the conflict asks for.
	held := netnsutil.New(t)
	e.add(cmd("holder", held.Path(), "eth0", e.conf("1.1.0", "podnet", `"runtimeConfig":{"ips":["10.44.0.20/24"]}`)), "1.1.0")
	dir := t.TempDir()
	file := filepath.Join(dir, "netns-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := e.host.Exec("ip", "route", "add", "default", "dev", "lo"); err != nil {
		t.Fatalf("host default route: %v\n%s", err, out)
	}
	ips := func(ip string) []byte {
		return e.conf("1.1.0", "podnet", `"runtimeConfig":{"ips":["`+ip+`"]}`)
	}
	// The holder's host link gets its IPv6 link-local address tentatively; when duplicate
	// address detection ends, the kernel adds a local route for it. Let that happen before
	// the namespace is compared with itself.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := e.host.Exec("ip", "-6", "-o", "addr", "show", "tentative")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) == "" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("IPv6 addresses still tentative after 5s:\n%s", out)
		}
	}
	for _, tc := range []struct {
		name string
		a    *skel.CmdArgs
		code uint
		want []string
	}{
		{"host netns", cmd("c", e.host.Path(), "eth0", e.conf("1.1.0", "podnet", "")),
			types.ErrInvalidEnvironmentVariables, []string{"CNI_NETNS", e.host.Path(), "own"}},
		{"netns is a regular file", cmd("c", file, "eth0", e.conf("1.1.0", "podnet", "")),
			types.ErrInvalidNetNS, []string{file, "not a network namespace (a regular file)"}},
		{"netns is a directory", cmd("c", dir, "eth0", e.conf("1.1.0", "podnet", "")),
			types.ErrInvalidNetNS, []string{dir, "not a network namespace (a directory)"}},
		{"netns is another kind of namespace", cmd("c", "/proc/self/ns/uts", "eth0", e.conf("1.1.0", "podnet", "")),
			types.ErrInvalidNetNS, []string{"/proc/self/ns/uts", "not a network namespace"}},
		{"NUL in the container ID", cmd("nul\x00id", pod.Path(), "eth0", e.conf("1.1.0", "podnet", "")),
			types.ErrInvalidEnvironmentVariables, []string{"CNI_CONTAINERID", "NUL"}},
		{"address held by another attachment", cmd("c", pod.Path(), "eth0", ips("10.44.0.20/24")),
			CodeAddressConflict, []string{"10.44.0.20", "holder"}},
		{"repeated ADD asking for another address", cmd("holder", held.Path(), "eth0", ips("10.44.0.21/24")),
			CodeAddressConflict, []string{"holder/eth0", "10.44.0.20/24", "10.44.0.21", "runtimeConfig.ips"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			links, routes := hostState(t, e.host)
			addrs, err := e.agent.ipam.List()
			if err != nil {
				t.Fatal(err)
			}
			err = e.host.Do(func() error { return e.plugin.Add(tc.a) })
			ce := CNIError(err)
			if ce == nil || ce.Code != tc.code {
				t.Fatalf("ADD: %v (CNI %+v), want code %d", err, ce, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(ce.Msg, w) {
					t.Errorf("message %q does not name %q", ce.Msg, w)
				}
			}
			l2, r2 := hostState(t, e.host)
			if !maps.Equal(links, l2) || routes != r2 {
				t.Errorf("the refused ADD changed the host namespace:\n%v\n%s\nnow:\n%v\n%s", links, routes, l2, r2)
			}
			if a2, _ := e.agent.ipam.List(); len(a2) != len(addrs) {
				t.Errorf("the refused ADD changed the allocations: %+v, before %+v", a2, addrs)
			}
		})
	}
	// The holder's attachment is as the first ADD made it, and its pod still has eth0.
	att, err := e.agent.Check(context.Background(), &agentapi.CheckRequest{Key: agentapi.Key{ContainerID: "holder", IfName: "eth0"}})
	if err != nil || len(att.IPs) != 2 || att.IPs[0].Address.String() != "10.44.0.20/24" {
		t.Errorf("holder after the refused ADDs: %+v, %v", att, err)
	}
	if _, err := held.NL.LinkByName("eth0"); err != nil {
		t.Errorf("holder's eth0: %v", err)
	}
}
