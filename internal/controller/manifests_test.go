package controller

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/epair-cni/epair/internal/cniplugin"
)

// TestManifestsConflist checks the install the chart renders (manifests/epair.yaml,
// kept in sync by hack/verify-generated.sh): the conflist the agent installs is one
// CNIConfig accepts and whose epair-cni entry the plugin itself parses, and the
// DaemonSet keeps to the privileges the chart documents.
func TestManifestsConflist(t *testing.T) {
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
			switch c {
			case "NET_ADMIN", "NET_RAW", "BPF", "DAC_OVERRIDE":
			default:
				t.Errorf("%s: capability %s beyond the documented set", ctr.Name, c)
			}
		}
	}
}
