package controller

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/internal/cniplugin"
)

// primaryConfList is a conflist as the chart renders it: epair-cni on vale0
// and a chained plugin.
const primaryConfList = `{
  "cniVersion": "1.0.0",
  "name": "epair",
  "plugins": [
    {"type": "epair-cni", "agentSocket": "/run/epair/agent.sock", "switch": "vale0", "mtu": 1400, "logFile": "/var/log/epair-cni.log"},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`

// wantVale1 is the secondary conflist of vale1 made from primaryConfList.
const wantVale1 = `{
  "cniVersion": "1.0.0",
  "name": "epair-vale1",
  "plugins": [
    {
      "agentSocket": "/run/epair/agent.sock",
      "logFile": "/var/log/epair-cni.log",
      "mtu": 1400,
      "switch": "vale1",
      "type": "epair-cni"
    }
  ]
}
`

// secondaryWriter runs a cniConfWriter with NetworksDir until stop, which
// returns Start's error; uninstall makes the stop an uninstall.
type secondaryWriter struct {
	w       *cniConfWriter
	ready   atomic.Bool
	uninst  atomic.Bool
	stopped atomic.Bool
	cancel  context.CancelFunc
	done    chan error
}

func startSecondaryWriter(t *testing.T, st *nodeStatus, dir, netDir string) *secondaryWriter {
	t.Helper()
	sw := &secondaryWriter{done: make(chan error, 1)}
	sw.w = &cniConfWriter{
		cfg: CNIConfig{Dir: dir, FileName: "10-epair.conflist", ConfList: []byte(primaryConfList), Switch: "vale0", NetworksDir: netDir,
			RemoveOnStop: func(context.Context) bool { return sw.uninst.Load() }},
		uninstall: new(atomic.Bool),
		ready:     sw.ready.Load,
		status:    st,
		poll:      20 * time.Millisecond,
	}
	if err := sw.w.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sw.cancel = cancel
	go func() { sw.done <- sw.w.Start(ctx) }()
	t.Cleanup(func() { sw.stop() })
	return sw
}

func (sw *secondaryWriter) stop() error {
	if sw.stopped.Swap(true) {
		return nil
	}
	sw.cancel()
	return <-sw.done
}

func readDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestCNIConfWriterSecondaryNetworks: once ready, every applied switch but
// the conflist's gets <network>-<switch>.conflist in NetworksDir (created),
// a one-plugin copy of the primary's epair-cni entry; unchanged files are not
// rewritten, changed ones are; files of switches no longer applied go at the
// next poll, files the writer does not own stay; a plain stop keeps them all,
// an uninstall removes the writer's own.
func TestCNIConfWriterSecondaryNetworks(t *testing.T) {
	dir := t.TempDir()
	netDir := filepath.Join(t.TempDir(), "multus", "net.d")
	st := newNodeStatus()
	for _, s := range []string{"vale0", "vale1", "vale2"} {
		st.setSwitch(s, 1, true, nil)
	}
	sw := startSecondaryWriter(t, st, dir, netDir)
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(netDir); !os.IsNotExist(err) {
		t.Fatalf("networks dir touched before ready: %v", err)
	}
	sw.ready.Store(true)
	p1, p2 := filepath.Join(netDir, "epair-vale1.conflist"), filepath.Join(netDir, "epair-vale2.conflist")
	if _, ok := waitFor(2*time.Second, func() bool { _, e1 := os.Stat(p1); _, e2 := os.Stat(p2); return e1 == nil && e2 == nil }); !ok {
		t.Fatalf("secondary conflists not written: %v", readDir(t, netDir))
	}
	if got := readDir(t, netDir); !slices.Equal(got, []string{"epair-vale1.conflist", "epair-vale2.conflist"}) {
		t.Fatalf("networks dir holds %v; want the conflists of vale1 and vale2 only (not vale0's, the primary)", got)
	}
	if fi, err := os.Stat(netDir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("networks dir created as %v, %v; want 0755", fi.Mode(), err)
	}
	b, _ := os.ReadFile(p1)
	if string(b) != wantVale1 {
		t.Fatalf("vale1's conflist:\n%s\nwant:\n%s", b, wantVale1)
	}
	if fi, _ := os.Stat(p1); fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// epair-cni parses the entry, as libcni hands it over.
	var l struct {
		CNIVersion string                   `json:"cniVersion"`
		Name       string                   `json:"name"`
		Plugins    []map[string]interface{} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &l); err != nil || len(l.Plugins) != 1 {
		t.Fatalf("%v, %d plugins", err, len(l.Plugins))
	}
	l.Plugins[0]["name"], l.Plugins[0]["cniVersion"] = l.Name, l.CNIVersion
	entry, _ := json.Marshal(l.Plugins[0])
	if nc, err := cniplugin.ParseNetConf(entry); err != nil || nc.Switch != "vale1" || nc.MTU != 1400 {
		t.Fatalf("epair-cni parses %s as %+v, %v", entry, nc, err)
	}
	// The status follows the files (the writer records it once the pass is done).
	statusOK := func() bool {
		v := st.view()
		return slices.Equal(v.cniNets, []string{"vale1", "vale2"}) && v.cniNetsErr == "" && v.cniConf
	}
	if _, ok := waitFor(2*time.Second, statusOK); !ok {
		v := st.view()
		t.Fatalf("status: nets %v err %q conf %v", v.cniNets, v.cniNetsErr, v.cniConf)
	}

	// Unchanged: not rewritten (a rewrite renames a new file over it).
	before, _ := os.Stat(p1)
	time.Sleep(100 * time.Millisecond)
	if after, err := os.Stat(p1); err != nil || !os.SameFile(before, after) {
		t.Fatalf("unchanged conflist rewritten (%v)", err)
	}
	// Changed behind the writer's back: rewritten.
	if err := os.WriteFile(p1, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitFor(2*time.Second, func() bool { b, _ := os.ReadFile(p1); return string(b) == wantVale1 }); !ok {
		t.Fatal("changed conflist not restored")
	}

	// Files the writer owns are <network>-<switch name>.conflist; it removes
	// those of switches no longer applied and leaves every other file alone.
	foreign := []string{"other-vale1.conflist", "epair-notaswitch.conflist", "epair-vale9.conf", "epair-vale9.conflist.bak", "epairvale9.conflist", "00-multus.conf"}
	for _, f := range append([]string{"epair-vale7.conflist"}, foreign...) {
		if err := os.WriteFile(filepath.Join(netDir, f), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st.setSwitch("vale2", 0, false, nil) // deleted, or the node no longer selected
	if _, ok := waitFor(2*time.Second, func() bool {
		_, e2 := os.Stat(p2)
		_, e7 := os.Stat(filepath.Join(netDir, "epair-vale7.conflist"))
		return os.IsNotExist(e2) && os.IsNotExist(e7)
	}); !ok {
		t.Fatalf("stale secondary conflists not removed: %v", readDir(t, netDir))
	}
	want := append([]string{"epair-vale1.conflist"}, foreign...)
	slices.Sort(want)
	if got := readDir(t, netDir); !slices.Equal(got, want) {
		t.Fatalf("networks dir holds %v; want %v", got, want)
	}
	if _, ok := waitFor(time.Second, func() bool { return slices.Equal(st.view().cniNets, []string{"vale1"}) }); !ok {
		t.Fatalf("status nets %v", st.view().cniNets)
	}

	// A plain stop (agent restart) keeps every file.
	if err := sw.stop(); err != nil {
		t.Fatal(err)
	}
	if got := readDir(t, netDir); !slices.Equal(got, want) {
		t.Fatalf("after a restart the networks dir holds %v; want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "10-epair.conflist")); err != nil {
		t.Fatal(err)
	}
	// An uninstall removes the primary and the writer's secondaries, nothing else.
	sw = startSecondaryWriter(t, st, dir, netDir)
	sw.ready.Store(true)
	time.Sleep(100 * time.Millisecond)
	sw.uninst.Store(true)
	if err := sw.stop(); err != nil {
		t.Fatal(err)
	}
	if got := readDir(t, dir); len(got) != 0 {
		t.Fatalf("CNI config dir holds %v after uninstall", got)
	}
	slices.Sort(foreign)
	if got := readDir(t, netDir); !slices.Equal(got, foreign) {
		t.Fatalf("after uninstall the networks dir holds %v; want the foreign files %v", got, foreign)
	}
}

// TestCNIConfWriterSecondaryFailure: a secondary conflist that cannot be
// written turns CNIConfigInstalled false with the reason, not Ready (the
// primary network serves pods); once written, the condition lists it.
func TestCNIConfWriterSecondaryFailure(t *testing.T) {
	dir, netDir := t.TempDir(), t.TempDir()
	st := newNodeStatus()
	st.setCIDRs([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, nil)
	st.setSwitch("vale0", 1, true, nil)
	// A directory in the way: the rename over it fails, even for root.
	blocker := filepath.Join(netDir, "epair-vale3.conflist")
	if err := os.Mkdir(blocker, 0o755); err != nil {
		t.Fatal(err)
	}
	st.setSwitch("vale3", 1, true, nil)
	sw := startSecondaryWriter(t, st, dir, netDir)
	sw.ready.Store(true)
	if _, ok := waitFor(2*time.Second, func() bool { return strings.Contains(st.view().cniNetsErr, "switch vale3") }); !ok {
		t.Fatalf("write failure not reported: %+v", st.view())
	}
	status := func() (cni, ready *metav1.Condition) {
		w := &statusWriter{status: st, dp: newRecordingDataplane(), cniGate: func() bool { return true }, now: time.Now}
		s := w.build(nil, 1, Snapshot{}, nil)
		return meta.FindStatusCondition(s.Conditions, epairv1.ConditionCNIConfig), meta.FindStatusCondition(s.Conditions, epairv1.ConditionReady)
	}
	cni, ready := status()
	if cni.Status != metav1.ConditionFalse || cni.Reason != "NetworksNotInstalled" || !strings.Contains(cni.Message, "epair-vale3.conflist") {
		t.Fatalf("CNIConfigInstalled %+v; want False, NetworksNotInstalled, naming the file", cni)
	}
	if ready.Status != metav1.ConditionTrue {
		t.Fatalf("Ready %+v; a secondary network's failure must not make the node unready", ready)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitFor(2*time.Second, func() bool { v := st.view(); return v.cniNetsErr == "" && slices.Equal(v.cniNets, []string{"vale3"}) }); !ok {
		t.Fatalf("not recovered: %+v", st.view())
	}
	if cni, _ := status(); cni.Status != metav1.ConditionTrue || !strings.Contains(cni.Message, "vale3") {
		t.Fatalf("CNIConfigInstalled %+v; want True naming vale3", cni)
	}
}

func TestCNIConfigValidateNetworksDir(t *testing.T) {
	ok := CNIConfig{Dir: "/etc/cni/net.d", FileName: "10-epair.conflist", ConfList: []byte(primaryConfList), NetworksDir: "/etc/cni/multus/net.d"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, field string
		mod         func(*CNIConfig)
	}{
		{"relative", "networksDir", func(c *CNIConfig) { c.NetworksDir = "multus" }},
		{"the conf dir", "networksDir", func(c *CNIConfig) { c.NetworksDir = "/etc/cni/net.d/" }},
		{"no epair-cni plugin", "confList plugins", func(c *CNIConfig) {
			c.ConfList = []byte(`{"cniVersion":"1.0.0","name":"epair","plugins":[{"type":"bridge"},"x"]}`)
		}},
		{"name not a file name", "confList name", func(c *CNIConfig) {
			c.ConfList = []byte(`{"cniVersion":"1.0.0","name":"../epair","plugins":[{"type":"epair-cni"}]}`)
		}},
	} {
		c := ok
		tc.mod(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: got %v, want a FieldError for %s", tc.name, err, tc.field)
		}
		// Without NetworksDir the primary alone is checked, as before.
		c.NetworksDir = ""
		if tc.field != "networksDir" {
			if err := c.Validate(); err != nil {
				t.Errorf("%s without networksDir: %v", tc.name, err)
			}
		}
	}
	// New refuses a NetworksDir without the conflist it derives from.
	if _, err := New(&rest.Config{}, Options{NodeName: "n", Dataplane: newRecordingDataplane(), CNI: CNIConfig{NetworksDir: "/etc/cni/multus/net.d"}}); err == nil ||
		!strings.Contains(err.Error(), "CNI.NetworksDir") {
		t.Errorf("New with NetworksDir and no Dir: %v", err)
	}
	// The chained plugins are skipped; the first epair-cni entry is the one.
	tpl, err := parseNetworkTemplate([]byte(`{"cniVersion":"0.4.0","name":"n.1","plugins":[{"type":"portmap"},{"type":"epair-cni","switch":"vale0","a":1},{"type":"epair-cni","b":2}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := tpl.confList("valex")
	if err != nil || string(b) != "{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"n.1-valex\",\n  \"plugins\": [\n    {\n      \"a\": 1,\n      \"switch\": \"valex\",\n      \"type\": \"epair-cni\"\n    }\n  ]\n}\n" {
		t.Fatalf("%s %v", b, err)
	}
}
