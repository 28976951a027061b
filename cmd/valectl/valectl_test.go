package main

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epair-cni/epair/pkg/agentapi"
)

// fakeAgent serves fixed data through the real agentapi server, so that valectl's client
// side, routing and printing are what is tested.
type fakeAgent struct{ agentapi.Interface }

func (fakeAgent) List(context.Context) (*agentapi.AttachmentList, error) {
	return &agentapi.AttachmentList{Items: []agentapi.Attachment{{
		Key: agentapi.Key{ContainerID: "c1", IfName: "eth0"}, Switch: "vale0",
		IPs:  []agentapi.IPConfig{{Address: netip.MustParsePrefix("10.89.0.2/24")}},
		Port: &agentapi.Port{HostIfName: "epair0a", Up: true},
	}}}, nil
}

func (fakeAgent) Status(context.Context) (*agentapi.Status, error) {
	return &agentapi.Status{Ready: true, AgentVersion: "test", Switches: []string{"vale0"}}, nil
}

func (fakeAgent) Switches(context.Context) (*agentapi.SwitchList, error) {
	return &agentapi.SwitchList{Items: []agentapi.SwitchInfo{{Name: "vale0", MTU: 1500, Offload: true, Ports: []agentapi.PortInfo{
		{Name: "vale0:epvale0", Kind: "host", Backend: "tap", Active: true, Stats: agentapi.Counters{InFrames: 3}},
		{Name: "vale0:epair0a", Kind: "pod", Backend: "af_xdp", Owner: "podnet/c1/eth0", Pod: "default/web", Active: true,
			Stats:    agentapi.Counters{InFrames: 42, InBytes: 4200, OutFrames: 7, OutBytes: 700, Dropped: 20, Drops: map[string]uint64{"no-destination": 4, "spoofed-mac": 3, "spoofed-ip": 2, "storm": 3, "socket-full": 8}},
			FastPath: &agentapi.FastPathInfo{Source: true, Dest: true, InFrames: 90, InBytes: 9000, OutFrames: 80, OutBytes: 8000}},
	}}}}, nil
}

func (fakeAgent) FDB(_ context.Context, sw string) (*agentapi.FDB, error) {
	if sw != "vale0" {
		return nil, agentapi.NewError(agentapi.CodeNotFound, "no switch "+sw)
	}
	return &agentapi.FDB{Switch: sw, Entries: []agentapi.FDBEntry{{MAC: "02:00:00:00:00:0b", Port: "vale0:epair0a", AgeSeconds: 1.5}}}, nil
}

func (fakeAgent) Peers(context.Context) (*agentapi.PeerList, error) {
	return &agentapi.PeerList{Items: []agentapi.PeerInfo{
		{Name: "node-b", Addresses: []string{"192.168.1.2"}, PodCIDRs: []string{"10.89.1.0/24"}, Mode: "vxlan", Routes: 1,
			Counters: &agentapi.PeerCounters{TxFrames: 12, TxBytes: 1200, RxFrames: 34, RxBytes: 3400}},
		{Name: "node-c", Addresses: []string{"203.0.113.9"}, PodCIDRs: []string{"10.89.2.0/24"}, Mode: "unreachable", Reason: "no route"},
	}}, nil
}

func serve(t *testing.T) string {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "agent.sock")
	srv, err := agentapi.ListenAndServe(sock, agentapi.NewAgentServer(fakeAgent{}, fakeAgent{}, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestCommands(t *testing.T) {
	sock := serve(t)
	for _, tc := range []struct {
		args []string
		out  string
		want []string
	}{
		{[]string{"status"}, "table", []string{"ready (agent test, switches vale0)"}},
		{[]string{"switches"}, "table", []string{"vale0", "KIND", "offload", "1500"}},
		{[]string{"ports"}, "table", []string{"vale0:epair0a", "af_xdp", "podnet/c1/eth0", "default/web", "42", "4200", "SPOOFED", "STORM", "SOCKET-FULL"}},
		{[]string{"drops"}, "table", []string{"vale0:epair0a  no-destination  4\n", "vale0:epair0a  socket-full     8\n", "vale0:epair0a  spoofed-ip      2\n", "vale0:epair0a  storm           3\n"}},
		{[]string{"ports", "vale0"}, "json", []string{`"inFrames": 42`}},
		{[]string{"fdb", "vale0"}, "table", []string{"02:00:00:00:00:0b", "vale0:epair0a", "1.5s"}},
		{[]string{"attachments"}, "table", []string{"c1", "10.89.0.2/24", "epair0a", "true"}},
	} {
		var b bytes.Buffer
		if err := run(context.Background(), &b, options{socket: sock, output: tc.out}, tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, b.String())
			}
		}
	}
}

// TestPortsDropColumns: valectl ports has a port's total drops and, in columns of their
// own, the parts port security refused (SPOOFED, STORM) and the kernel dropped before the
// switch saw them (SOCKET-FULL); FAST-IN and FAST-OUT are what the kernel fast path moved.
func TestPortsDropColumns(t *testing.T) {
	sock := serve(t)
	var b bytes.Buffer
	if err := run(context.Background(), &b, options{socket: sock, output: "table"}, []string{"ports"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := [][]string{
		{"PORT", "KIND", "BACKEND", "OWNER", "POD", "ACTIVE", "CAPTURES", "IN-FRAMES", "IN-BYTES", "OUT-FRAMES", "OUT-BYTES", "DROPPED", "SPOOFED", "STORM", "SOCKET-FULL", "FAST-IN", "FAST-OUT"},
		{"vale0:epvale0", "host", "tap", "-", "-", "true", "0", "3", "0", "0", "0", "0", "0", "0", "0", "-", "-"},
		{"vale0:epair0a", "pod", "af_xdp", "podnet/c1/eth0", "default/web", "true", "0", "42", "4200", "7", "700", "20", "5", "3", "8", "90", "80"},
	}
	if len(lines) != len(want) {
		t.Fatalf("valectl ports:\n%s", b.String())
	}
	for i, l := range lines {
		if got := strings.Fields(l); strings.Join(got, " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d: %q, want the fields %q", i, l, want[i])
		}
	}
}

// TestPeersCommand: valectl peers shows each peer's counters in columns of their own
// ("-" for a peer the agent does not count), and -o json has them as the API does.
func TestPeersCommand(t *testing.T) {
	sock := serve(t)
	var b bytes.Buffer
	if err := run(context.Background(), &b, options{socket: sock, output: "table"}, []string{"peers"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := [][]string{
		{"NAME", "ADDRESSES", "POD", "CIDRS", "MODE", "ROUTES", "TX", "FRAMES", "TX", "BYTES", "RX", "FRAMES", "RX", "BYTES", "REASON"},
		{"node-b", "192.168.1.2", "10.89.1.0/24", "vxlan", "1", "12", "1200", "34", "3400"},
		{"node-c", "203.0.113.9", "10.89.2.0/24", "unreachable", "0", "-", "-", "-", "-", "no", "route"},
	}
	if len(lines) != len(want) {
		t.Fatalf("valectl peers:\n%s", b.String())
	}
	for i, l := range lines {
		if got := strings.Fields(l); strings.Join(got, " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d: %q, want the fields %q", i, l, want[i])
		}
	}
	b.Reset()
	if err := run(context.Background(), &b, options{socket: sock, output: "json"}, []string{"peers"}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"txFrames": 12`, `"txBytes": 1200`, `"rxFrames": 34`, `"rxBytes": 3400`} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("valectl -o json peers lacks %q:\n%s", w, b.String())
		}
	}
	if strings.Count(b.String(), `"counters"`) != 1 {
		t.Errorf("valectl -o json peers: want counters for node-b only:\n%s", b.String())
	}
}

func TestErrors(t *testing.T) {
	sock := serve(t)
	for _, tc := range []struct {
		args    []string
		output  string
		mention string
	}{
		{nil, "table", "missing command"},
		{[]string{"frobnicate"}, "table", "frobnicate"},
		{[]string{"fdb"}, "table", "one switch"},
		{[]string{"fdb", "vale7"}, "table", "vale7"},
		{[]string{"ports", "vale7"}, "table", "vale7"},
		{[]string{"status"}, "yaml", "yaml"},
	} {
		err := run(context.Background(), &bytes.Buffer{}, options{socket: sock, output: tc.output}, tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%v: %v, want an error naming %q", tc.args, err, tc.mention)
		}
	}
	err := run(context.Background(), &bytes.Buffer{}, options{socket: filepath.Join(t.TempDir(), "none.sock"), output: "table"}, []string{"status"})
	if !errors.Is(err, agentapi.ErrUnavailable) {
		t.Errorf("no agent: %v, want Unavailable", err)
	}
}
