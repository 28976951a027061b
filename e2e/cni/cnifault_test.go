package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// hostSnapshot is what an ADD must never change in the node's namespace: its links (with
// their addresses) and every route of both families in every table.
func (e *env) hostSnapshot() string {
	e.t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-o", "link", "show"},
		{"-o", "addr", "show"},
		{"-4", "route", "show", "table", "all"},
		{"-6", "route", "show", "table", "all"},
	} {
		out, err := e.host.Exec("ip", args...)
		if err != nil {
			e.t.Fatalf("ip %v in the host namespace: %v\n%s", args, err, out)
		}
		b.WriteString(out)
	}
	return b.String()
}

// noAttachments fails unless the agent has no attachment, hence no address allocated.
func (e *env) noAttachments(what string) {
	e.t.Helper()
	list, err := e.agent.client.List(context.Background())
	if err != nil {
		e.t.Fatalf("list attachments: %v", err)
	}
	if len(list.Items) != 0 {
		e.t.Fatalf("%s left attachments (with their addresses): %+v", what, list.Items)
	}
}

// TestAddRefusesHostNetNS: an ADD whose CNI_NETNS is the namespace the plugin runs in (the
// node's, here the harness's host namespace, from which libcni runs the plugin) is refused
// with code 4 naming the namespace, before anything is touched: the host namespace's links,
// addresses and routes are the same, and the agent has no attachment.
func TestAddRefusesHostNetNS(t *testing.T) {
	e := newEnv(t, envOpts{})
	l := e.conflist("1.1.0")
	// Give the host namespace a default route of its own, as a node has.
	if out, err := e.host.Exec("ip", "route", "add", "default", "dev", "lo"); err != nil {
		t.Fatalf("host default route: %v\n%s", err, out)
	}
	before := e.hostSnapshot()
	r := rt("wrong-netns", e.host)
	if !strings.HasPrefix(r.NetNS, "/var/run/netns/") || r.NetNS != e.host.Path() {
		t.Fatalf("refusing to run: CNI_NETNS %q is not the test's host namespace", r.NetNS)
	}
	_, err := e.add(l, r)
	code, msg := cniCode(err)
	if code != types.ErrInvalidEnvironmentVariables || !strings.Contains(msg, e.host.Path()) {
		t.Errorf("ADD into the host namespace: %v (code %d), want code 4 naming %s", err, code, e.host.Path())
	}
	if after := e.hostSnapshot(); after != before {
		t.Errorf("the ADD changed the host namespace:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	e.noAttachments("the refused ADD")
	if left := e.hostEpairs(); len(left) != 0 {
		t.Errorf("links left: %v", left)
	}
	// The runtime's DEL after the failed ADD touches nothing either. (skel itself answers a
	// DEL whose CNI_NETNS is the plugin's own namespace with code 8, after the plugin's Del
	// ran: that is the only error allowed.)
	if err := e.del(l, r); err != nil {
		if code, msg := cniCode(err); code != types.ErrInvalidNetNS || !strings.Contains(msg, "should not be the same") {
			t.Errorf("DEL after the refused ADD: %v", err)
		}
	}
	if after := e.hostSnapshot(); after != before {
		t.Errorf("the DEL changed the host namespace:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestErrorCodes: each failure the runtime can cause reaches it through libcni with the
// CNI code that says what happened and a message naming it, and leaves nothing behind.
func TestErrorCodes(t *testing.T) {
	// 10.62.0.0/29: the gateway .1 and five pod addresses .2-.6 (.0 and .7 not allocatable).
	e := newEnv(t, envOpts{subnet: "10.62.0.0/29"})
	l := e.conflist("1.1.0")
	withIPs := func(id string, ns *netnsutil.NS, ips ...string) *libcni.RuntimeConf {
		r := rt(id, ns)
		r.CapabilityArgs = map[string]any{"ips": ips}
		return r
	}

	t.Run("address conflict", func(t *testing.T) {
		pa, pb := netnsutil.New(t), netnsutil.New(t)
		ra := withIPs("ec-held", pa, "10.62.0.5/29")
		e.mustAdd(l, ra)
		defer e.del(l, ra)
		_, err := e.add(l, withIPs("ec-wants", pb, "10.62.0.5/29"))
		code, msg := cniCode(err)
		if code != 100 || !strings.Contains(msg, "10.62.0.5") || !strings.Contains(msg, "ec-held") {
			t.Errorf("ADD of a held address: %v (code %d), want code 100 naming 10.62.0.5 and its holder", err, code)
		}
		if names := pb.LinkNames(t); len(names) != 1 {
			t.Errorf("the refused pod has links %v", names)
		}
	})

	t.Run("the gateway's address", func(t *testing.T) {
		p := netnsutil.New(t)
		_, err := e.add(l, withIPs("ec-gw", p, "10.62.0.1/29"))
		code, msg := cniCode(err)
		if code == 0 || !strings.Contains(msg, "10.62.0.1 is the gateway of 10.62.0.0/29") || strings.Contains(msg, "outside every configured range") {
			t.Errorf("ADD asking for the gateway's address: %v (code %d), want a refusal saying it is the gateway", err, code)
		}
		if names := p.LinkNames(t); len(names) != 1 {
			t.Errorf("the refused pod has links %v", names)
		}
	})

	t.Run("duplicate ADD with other ips", func(t *testing.T) {
		p := netnsutil.New(t)
		r := withIPs("ec-dup", p, "10.62.0.4/29")
		res := e.mustAdd(l, r)
		defer e.del(l, r)
		if podIP(res) != "10.62.0.4" {
			t.Fatalf("first ADD got %s", podIP(res))
		}
		_, err := e.add(l, withIPs("ec-dup", p, "10.62.0.3/29"))
		code, msg := cniCode(err)
		if code != 100 || !strings.Contains(msg, "10.62.0.3") || !strings.Contains(msg, "10.62.0.4") {
			t.Errorf("repeated ADD asking for another address: %v (code %d), want code 100 naming 10.62.0.4 and 10.62.0.3", err, code)
		}
		// The first ADD's attachment and pod are untouched.
		att, err := e.agent.client.Check(context.Background(), &agentapi.CheckRequest{Key: agentapi.Key{ContainerID: "ec-dup", IfName: "eth0"}})
		if err != nil || len(att.IPs) != 1 || att.IPs[0].Address.Addr().String() != "10.62.0.4" {
			t.Errorf("attachment after the refused ADD: %+v, %v", att, err)
		}
		if err := ping(p, "10.62.0.1"); err != nil {
			t.Errorf("the pod lost its network: %v", err)
		}
	})

	t.Run("exhausted", func(t *testing.T) {
		// Fill the range: .2-.6 minus what the other subtests hold at this point (none).
		var last error
		for i := range 6 {
			p := netnsutil.New(t)
			r := rt("ec-fill-"+string(rune('a'+i)), p)
			_, err := e.add(l, r)
			if err != nil {
				last = err
				break
			}
			defer e.del(l, r)
		}
		code, msg := cniCode(last)
		if code != 101 || !strings.Contains(msg, "10.62.0.0/29") || !strings.Contains(msg, "no free") {
			t.Errorf("ADD with the range full: %v (code %d), want code 101 naming the range", last, code)
		}
	})

	t.Run("netns not a namespace", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "netns-file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{file, dir} {
			r := rt("ec-notns", e.host)
			r.NetNS = path
			_, err := e.add(l, r)
			code, msg := cniCode(err)
			if code != types.ErrInvalidNetNS || !strings.Contains(msg, path) || !strings.Contains(msg, "not a network namespace") {
				t.Errorf("ADD with CNI_NETNS=%s: %v (code %d), want code %d naming it", path, err, code, types.ErrInvalidNetNS)
			}
		}
	})
	if t.Failed() {
		return
	}
	e.noAttachments("the subtests")
	if left := e.hostEpairs(); len(left) != 0 {
		t.Errorf("links left: %v", left)
	}
}

// TestAgentRejectsNULKey: a NUL byte in a container ID (which a CNI_CONTAINERID cannot
// carry through exec, but a client of the agent API can send) is an invalid request naming
// the field, not an internal error.
func TestAgentRejectsNULKey(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, tc := range []struct {
		key   agentapi.Key
		field string
	}{
		{agentapi.Key{ContainerID: "nul\x00id", IfName: "eth0"}, "containerID"},
		{agentapi.Key{ContainerID: "nul-ifname", IfName: "eth\x000"}, "ifName"},
	} {
		_, err := e.agent.client.Allocate(context.Background(), &agentapi.AllocateRequest{Key: tc.key})
		var ae *agentapi.Error
		if !errors.As(err, &ae) || ae.Code != agentapi.CodeInvalidRequest || ae.Field != tc.field || !strings.Contains(ae.Message, "NUL") {
			t.Errorf("Allocate with a NUL byte in %s: %v, want InvalidRequest (HTTP %d) naming %s and the NUL byte",
				tc.field, err, agentapi.CodeInvalidRequest.HTTPStatus(), tc.field)
		}
	}
	e.noAttachments("the refused Allocates")
}

// TestMissingCNIVersion: a configuration without cniVersion is refused with code 1 and a
// message that says the field is missing (skel alone answered "config is 0.1.0"); one with
// a version goes on to the plugin as before (here: VERSION needs no config, and an ADD
// with a version but no agent fails on the agent, not on the version).
func TestMissingCNIVersion(t *testing.T) {
	bin := bins(t)
	run := func(cmd, conf string) (map[string]any, error) {
		c := exec.Command(filepath.Join(bin, "epair")) // the harness's name for epair-cni
		c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID=v", "CNI_NETNS=/proc/self/ns/net", "CNI_IFNAME=eth0", "CNI_PATH="+bin)
		c.Stdin = strings.NewReader(conf)
		out, err := c.Output()
		var res map[string]any
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			t.Fatalf("%s: output is not JSON: %v (%v)\n%s", cmd, jerr, err, out)
		}
		return res, err
	}
	for _, conf := range []string{`{"name":"podnet","type":"epair"}`, `{"cniVersion":"","name":"podnet","type":"epair"}`} {
		res, err := run("ADD", conf)
		if err == nil || res["code"] != float64(1) || !strings.Contains(fmt.Sprint(res["msg"]), "cniVersion: required") || strings.Contains(fmt.Sprint(res), "0.1.0") {
			t.Fatalf("ADD of %s: %v %v; want code 1 \"cniVersion: required\"", conf, err, res)
		}
	}
	res, err := run("ADD", `{"cniVersion":"1.1.0","name":"podnet","type":"epair","agentSocket":"/nonexistent/agent.sock"}`)
	if err == nil || strings.Contains(fmt.Sprint(res["msg"]), "cniVersion") {
		t.Fatalf("ADD with a version and no agent: %v %v; want an error about the agent, not the version", err, res)
	}
	if res, err := run("VERSION", ""); err != nil || res["supportedVersions"] == nil {
		t.Fatalf("VERSION: %v %v", err, res)
	}
}
