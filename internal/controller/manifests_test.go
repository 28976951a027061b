package controller

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/epair-cni/epair/internal/cniplugin"
)

// TestManifestsConflist checks the install the chart renders (manifests/epair.yaml,
// kept in sync by hack/verify-generated.sh): the conflist the agent installs is one
// CNIConfig accepts and whose epair-cni entry the plugin itself parses, and the
// DaemonSet keeps to the privileges the chart documents.
func renderedObjects(t *testing.T) (*corev1.ConfigMap, *appsv1.DaemonSet) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "manifests", "epair.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm *corev1.ConfigMap
	var ds *appsv1.DaemonSet
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var meta struct{ Kind string }
		if yaml.Unmarshal([]byte(doc), &meta) != nil {
			continue
		}
		switch meta.Kind {
		case "ConfigMap":
			cm = &corev1.ConfigMap{}
			if err := yaml.Unmarshal([]byte(doc), cm); err != nil {
				t.Fatal(err)
			}
		case "DaemonSet":
			ds = &appsv1.DaemonSet{}
			if err := yaml.Unmarshal([]byte(doc), ds); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cm == nil || ds == nil {
		t.Fatalf("manifests lack the ConfigMap or the DaemonSet")
	}
	return cm, ds
}

func renderedDaemonSet(t *testing.T) *appsv1.DaemonSet { _, ds := renderedObjects(t); return ds }

func renderedConflist(t *testing.T) []byte {
	cm, _ := renderedObjects(t)
	return []byte(cm.Data["10-epair.conflist"])
}

func TestManifestsConflist(t *testing.T) {
	cm, ds := renderedObjects(t)
	conf := []byte(cm.Data["10-epair.conflist"])
	c := CNIConfig{Dir: "/host/etc/cni/net.d", FileName: "10-epair.conflist", ConfList: conf, Switch: "vale0"}
	if err := c.Validate(); err != nil {
		t.Fatalf("chart conflist: %v\n%s", err, conf)
	}
	var l struct {
		CNIVersion string                   `json:"cniVersion"`
		Name       string                   `json:"name"`
		Plugins    []map[string]interface{} `json:"plugins"`
	}
	if err := json.Unmarshal(conf, &l); err != nil {
		t.Fatal(err)
	}
	// libcni hands each plugin its entry with the list's name and cniVersion.
	p := l.Plugins[0]
	p["name"], p["cniVersion"] = l.Name, l.CNIVersion
	b, _ := json.Marshal(p)
	nc, err := cniplugin.ParseNetConf(b)
	if err != nil {
		t.Fatalf("epair-cni rejects the chart's entry %s: %v", b, err)
	}
	if nc.Switch != "vale0" || nc.AgentSocket != "/run/epair/agent.sock" {
		t.Fatalf("parsed %+v", nc)
	}

	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("agent not on the host network")
	}
	for _, ctr := range append(spec.InitContainers, spec.Containers...) {
		sc := ctr.SecurityContext
		if sc == nil || sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: privileged or may escalate: %+v", ctr.Name, sc)
			continue
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("%s: does not drop all capabilities", ctr.Name)
		}
		for _, c := range sc.Capabilities.Add {
			switch {
			case c == "NET_ADMIN", c == "NET_RAW", c == "BPF", c == "DAC_OVERRIDE":
			case c == "SYS_ADMIN" && ctr.Name == "agent":
				// agent.netmapPorts: setns into a pod's network namespace, to serve its
				// netmap application ports there; it comes with the node's netns dir.
				checkNetnsMount(t, spec, ctr)
			default:
				t.Errorf("%s: capability %s beyond the documented set", ctr.Name, c)
			}
		}
	}
}

// checkNetnsMount: a container that enters pods' network namespaces (agent.netmapPorts)
// mounts the node's /run/netns read-only at the same path, with HostToContainer
// propagation (the runtime mounts each pod's namespace there after the agent started).
func checkNetnsMount(t *testing.T, spec corev1.PodSpec, ctr corev1.Container) {
	t.Helper()
	for _, m := range ctr.VolumeMounts {
		if m.MountPath != "/run/netns" {
			continue
		}
		if !m.ReadOnly || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
			t.Errorf("%s: %s mounted %+v, want read-only with HostToContainer propagation", ctr.Name, m.MountPath, m)
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && (v.HostPath == nil || v.HostPath.Path != "/run/netns") {
				t.Errorf("%s: %s is volume %+v, want the node's /run/netns", ctr.Name, m.MountPath, v)
			}
		}
		return
	}
	t.Errorf("%s: SYS_ADMIN without the node's /run/netns mounted (agent.netmapPorts)", ctr.Name)
}

// TestChartArgsParse: the agent's command line in the chart parses with the
// Flags cmd/node-agent registers (plus the agent's own flags) and makes valid
// Options, so chart and code cannot drift apart silently.
func TestChartArgsParse(t *testing.T) {
	ds := renderedDaemonSet(t)
	args := ds.Spec.Template.Spec.Containers[0].Command
	if args[0] != "/node-agent" {
		t.Fatalf("command %v", args)
	}
	dir := t.TempDir()
	fs := flag.NewFlagSet("node-agent", flag.ContinueOnError)
	var cf Flags
	cf.Register(fs)
	mode := fs.String("mode", "standalone", "agent's own")
	for _, n := range []string{"socket", "state-dir", "backend", "masquerade", "pod-netmap-ports", "fast-path", "log-level", "peer-mode", "vxlan-port"} {
		fs.String(n, "", "agent's own")
	}
	var parsed []string
	for _, a := range args[1:] {
		a = strings.ReplaceAll(a, "$(NODE_NAME)", "node-a")
		a = strings.ReplaceAll(a, "$(POD_NAMESPACE)", "epair-system")
		// The mounted conflist and host dirs are test files here.
		a = strings.Replace(a, "-cni-conflist=/etc/epair/", "-cni-conflist="+dir+"/", 1)
		a = strings.Replace(a, "-cni-conf-dir=/host/", "-cni-conf-dir="+dir+"/", 1)
		a = strings.Replace(a, "-cni-networks-dir=/host/", "-cni-networks-dir="+dir+"/networks/", 1)
		parsed = append(parsed, a)
	}
	cm := renderedConflist(t)
	if err := os.WriteFile(filepath.Join(dir, "10-epair.conflist"), cm, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse(parsed); err != nil {
		t.Fatalf("chart args %v: %v", parsed, err)
	}
	if *mode != "cluster" || fs.NArg() != 0 {
		t.Fatalf("mode %q, extra args %v", *mode, fs.Args())
	}
	o, err := cf.Options(newRecordingDataplane())
	if err != nil {
		t.Fatalf("options from the chart's args: %v", err)
	}
	if o.NodeName != "node-a" || o.DaemonSet.String() != "epair-system/epair-agent" || o.CNI.Switch != "vale0" ||
		o.CNI.PluginPath != "/host/opt/cni/bin/epair-cni" || o.StatusInterval != 10*time.Second || o.HealthAddr != ":9876" {
		t.Fatalf("options %+v", o)
	}
	if o.CNI.NetworksDir != dir+"/networks/etc/cni/multus/net.d" {
		t.Fatalf("CNI.NetworksDir %q: the chart passes no -cni-networks-dir for cni.networksDir", o.CNI.NetworksDir)
	}
	// The agent writes the secondary conflists into a host dir it mounts.
	spec := ds.Spec.Template.Spec
	var hostDir string
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/etc/cni/multus/net.d" && v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathDirectoryOrCreate {
			hostDir = v.Name
		}
	}
	mounted := false
	for _, m := range spec.Containers[0].VolumeMounts {
		mounted = mounted || (m.Name == hostDir && m.MountPath == "/host/etc/cni/multus/net.d" && !m.ReadOnly)
	}
	if hostDir == "" || !mounted {
		t.Fatalf("cni.networksDir: volume %q (hostPath /etc/cni/multus/net.d, DirectoryOrCreate) mounted writable at /host/etc/cni/multus/net.d: %v", hostDir, mounted)
	}
	bad := Flags{NodeName: "n", DaemonSet: "no-slash"}
	if _, err := bad.Options(nil); err == nil || !strings.Contains(err.Error(), "-daemonset") {
		t.Fatalf("bad -daemonset: %v", err)
	}
	if _, err := (&Flags{}).Options(nil); err == nil || !strings.Contains(err.Error(), "-node-name") {
		t.Fatalf("no node name: %v", err)
	}
	conf := filepath.Join(dir, "10-epair.conflist")
	for _, tc := range []struct {
		name  string
		f     Flags
		field string // "" : accepted
	}{
		{"networks dir without conf dir", Flags{NodeName: "n", CNINetworksDir: "/etc/cni/multus/net.d"}, "-cni-networks-dir"},
		{"relative networks dir", Flags{NodeName: "n", CNIConfDir: dir, CNIConflist: conf, CNINetworksDir: "multus"}, "-cni-networks-dir"},
		{"networks dir is the conf dir", Flags{NodeName: "n", CNIConfDir: dir, CNIConflist: conf, CNINetworksDir: dir + "/"}, "networksDir"},
		{"networks dir", Flags{NodeName: "n", CNIConfDir: dir, CNIConflist: conf, CNINetworksDir: "/etc/cni/multus/net.d"}, ""},
		{"no networks dir", Flags{NodeName: "n", CNIConfDir: dir, CNIConflist: conf}, ""},
	} {
		o, err := tc.f.Options(nil)
		var fe *FieldError
		switch {
		case tc.field == "" && (err != nil || o.CNI.NetworksDir != tc.f.CNINetworksDir):
			t.Errorf("%s: %v, NetworksDir %q", tc.name, err, o.CNI.NetworksDir)
		case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
			t.Errorf("%s: got %v, want a FieldError for %s", tc.name, err, tc.field)
		}
	}
}
