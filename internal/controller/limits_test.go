package controller

import (
	"os"
	"strconv"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/epair-cni/epair/pkg/limits"
)

func num(p *float64) string {
	if p == nil {
		return "none"
	}
	return strconv.FormatFloat(*p, 'f', -1, 64)
}

// The CRD markers repeat pkg/limits' bounds and defaults as literals (markers cannot name a
// constant): the generated schema must say what the agent and the dataplane accept.
func TestSchemaMatchesLimits(t *testing.T) {
	props := func(file string) map[string]apiextensionsv1.JSONSchemaProps {
		b, err := os.ReadFile("../../charts/epair/crds/" + file)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties
	}
	bounds := func(what string, p apiextensionsv1.JSONSchemaProps, lo, hi float64) {
		t.Helper()
		if p.Minimum == nil || *p.Minimum != lo || p.Maximum == nil || *p.Maximum != hi {
			t.Errorf("%s: schema bounds %s..%s, want %v..%v (pkg/limits)", what, num(p.Minimum), num(p.Maximum), lo, hi)
		}
	}
	def := func(what string, p apiextensionsv1.JSONSchemaProps, want string) {
		t.Helper()
		if p.Default == nil || string(p.Default.Raw) != want {
			t.Errorf("%s: schema default %v, want %s (pkg/limits)", what, p.Default, want)
		}
	}
	vs := props("epair.dev_virtualswitches.yaml")
	bounds("virtualswitch spec.mtu", vs["mtu"], limits.MinMTU, limits.MaxMTU)
	if vs["mtu"].Default != nil {
		t.Errorf("virtualswitch spec.mtu: schema default %s, want none (absent: detected on the node)", vs["mtu"].Default.Raw)
	}
	def("virtualswitch spec.defaultQueue.length", vs["defaultQueue"].Properties["length"], strconv.Itoa(limits.DefaultQueueLen))
	ps := vs["portSecurity"].Properties
	bounds("virtualswitch spec.portSecurity.broadcastRate", ps["broadcastRate"], 0, limits.MaxStormRate)
	bounds("virtualswitch spec.portSecurity.multicastRate", ps["multicastRate"], 0, limits.MaxStormRate)
	def("virtualswitch spec.portSecurity.broadcastRate", ps["broadcastRate"], "1000")
	def("virtualswitch spec.portSecurity.multicastRate", ps["multicastRate"], "5000")
	if limits.DefaultBroadcastRate != 1000 || limits.DefaultMulticastRate != 5000 {
		t.Errorf("limits' storm defaults %d/%d: the schema defaults say 1000/5000", limits.DefaultBroadcastRate, limits.DefaultMulticastRate)
	}
	pp := props("epair.dev_portpolicies.yaml")
	bounds("portpolicy spec.broadcastRate", pp["broadcastRate"], 0, limits.MaxStormRate)
	bounds("portpolicy spec.multicastRate", pp["multicastRate"], 0, limits.MaxStormRate)
}
