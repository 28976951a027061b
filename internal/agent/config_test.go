package agent

import (
	"errors"
	"github.com/epair-cni/epair/pkg/linkport"
	"os"
	"strings"
	"testing"
)

func TestDefaultConfig(t *testing.T) {
	c, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != DefaultSocket || c.StateDir != DefaultStateDir || len(c.Switches) != 1 || c.Switches[0].Name != DefaultSwitch {
		t.Fatalf("default: %+v", c)
	}
	// Port security is on by default, in the embedded file and for a switch that says
	// nothing about it.
	for _, in := range [][]byte{DefaultConfigJSON(), []byte(`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`)} {
		c, err := ParseConfig(in)
		if err != nil {
			t.Fatal(err)
		}
		pol := switchPolicy(&c.Switches[0])
		if pol.AllowSpoofing || pol.BroadcastRate != DefaultBroadcastRate || pol.MulticastRate != DefaultMulticastRate {
			t.Fatalf("%s: default port policy %+v, want anti-spoofing and storm control %d/%d", in, pol, DefaultBroadcastRate, DefaultMulticastRate)
		}
	}
	// The opt-outs.
	c, err = ParseConfig([]byte(`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}],"antiSpoofing":false,"broadcastRate":0,"multicastRate":7}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if pol := switchPolicy(&c.Switches[0]); !pol.AllowSpoofing || pol.BroadcastRate != 0 || pol.MulticastRate != 7 {
		t.Fatalf("opt-out: port policy %+v", pol)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ in, field string }{
		{`{"switches":[]}`, "switches"},
		{`{"socket":"rel","switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "socket"},
		{`{"backend":"dpdk","switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "backend"},
		{`{"switches":[{"name":"Vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "switches[0].name"},
		{`{"switches":[{"name":"vale0","mtu":100,"ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "switches[0].mtu"},
		{`{"switches":[{"name":"vale0","mtu":9001,"ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "9001 out of range 576..9000"},
		{`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/33"}]}]}`, "switches[0].ranges[0].subnet"},
		{`{"switches":[{"name":"vale0","ranges":[]}]}`, "switches[0]"},
		{`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]},{"name":"vale0","ranges":[{"subnet":"10.1.0.0/24"}]}]}`, "switches[1].name"},
		{`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/16"}]},{"name":"vale1","ranges":[{"subnet":"fd00::/64"},{"subnet":"10.0.5.0/24"}]}]}`, "switches[1].ranges[1].subnet"},
		{`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]},{"name":"vale1","fdbSize":-1,"ranges":[{"subnet":"10.1.0.0/24"}]}]}`, "switches[1]"},
		{`{"bogus":1}`, "bogus"},
		{`{"ringSlots":100,"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "ringSlots"},
		{`{"switches":[{"name":"vale0","broadcastRate":100000001,"ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "switches[0].broadcastRate"},
		{`{"switches":[{"name":"vale0","multicastRate":-1,"ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "multicastRate"},
		{`{"recoverGrace":"soon","switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "soon"},
		{`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}],"peers":[{"name":"b","addresses":["192.168.1.300"],"podCIDRs":["10.1.0.0/24"]}]}`, "peers[0].addresses[0]"},
		{`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}],"peers":[{"name":"b","addresses":["192.168.1.2"],"podCIDRs":["10.1.0/24"]}]}`, "peers[0].podCIDRs[0]"},
		{`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/16"}]}],"peers":[{"name":"b","addresses":["192.168.1.2"],"podCIDRs":["10.0.1.0/24"]}]}`, "overlaps this node's 10.0.0.0/16"},
		{`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}],"peers":[{"name":"b","addresses":["192.168.1.2"],"podCIDRs":["10.1.0.0/24"]},{"name":"b","addresses":["192.168.1.3"],"podCIDRs":["10.2.0.0/24"]}]}`, "peer b: named twice"},
		{`{"peerMode":"gre","switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "peerMode"},
		{`{"vxlanPort":70000,"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`, "vxlanPort"},
	} {
		_, err := ParseConfig([]byte(tc.in))
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v, want an invalid-config error naming %s", tc.in, err, tc.field)
		}
	}
}

// TestConfigDeprecations: a backend other than auto or packet and a switch's offload (true
// or false) are accepted with a warning that names them; the default configuration has none.
func TestConfigDeprecations(t *testing.T) {
	c, err := ParseConfig([]byte(`{"backend":"xdp","switches":[{"name":"vale0","offload":false,"ranges":[{"subnet":"10.0.0.0/24"}]},{"name":"vale1","offload":true,"ranges":[{"subnet":"10.1.0.0/24"}]}]}`))
	if err != nil {
		t.Fatalf("deprecated settings refused: %v", err)
	}
	w := c.Deprecations()
	if len(w) != 3 || !strings.Contains(w[0], `backend "xdp"`) || !strings.Contains(w[1], `switch "vale0"`) || !strings.Contains(w[2], `switch "vale1"`) {
		t.Fatalf("deprecations = %q, want the backend and both switches' offload", w)
	}
	dc, err := DataplaneConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range dc.Switches {
		if !s.Offload {
			t.Fatalf("switch %s is not an offload switch", s.Name)
		}
	}
	if dc.Backend != linkport.Auto {
		t.Fatalf("backend %v, want auto (xdp is ignored)", dc.Backend)
	}
	d, err := ParseConfig(DefaultConfigJSON())
	if err != nil {
		t.Fatal(err)
	}
	if w := d.Deprecations(); len(w) != 0 {
		t.Fatalf("default configuration: deprecations %q", w)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add(DefaultConfigJSON())
	f.Add([]byte(`{"switches":[{"name":"vale0","ranges":[{"subnet":"fd00::/64"},{"subnet":"10.0.0.0/24"}]}]}`))
	f.Add([]byte(`{"switches":[{"name":"v","mtu":-1}]}`))
	f.Add([]byte(`{"backend":"packet","switches":[{"name":"vale0","offload":true,"ranges":[{"subnet":"10.0.0.0/24"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
	})
}

func TestSetPodCIDRs(t *testing.T) {
	c, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetPodCIDRs("", []string{"10.244.1.0/24", "fd00:10:244:1::/64"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || len(c.switchRanges(0)) != 2 {
		t.Fatalf("dual-stack pod CIDRs: %v %+v", err, c.Switches[0].Ranges)
	}
	if err := c.SetPodCIDRs("", []string{"10.244.1.0/33"}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "podCIDRs[0]") {
		t.Fatalf("bad pod CIDR: %v", err)
	}
	if err := c.SetPodCIDRs("vale7", []string{"10.244.1.0/24"}); err == nil || !strings.Contains(err.Error(), "vale7") {
		t.Fatalf("unknown switch: %v", err)
	}
}

func TestEnableForwarding(t *testing.T) {
	dir := t.TempDir()
	old := procSys
	procSys = dir
	defer func() { procSys = old }()
	for _, p := range []string{"/net/ipv4", "/net/ipv6/conf/all"} {
		if err := os.MkdirAll(dir+p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := ParseConfig([]byte(`{"switches":[{"name":"vale0","ranges":[{"subnet":"10.0.0.0/24"}]}]}`))
	if err := enableForwarding(c); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dir + "/net/ipv4/ip_forward"); string(b) != "1\n" {
		t.Fatalf("ip_forward: %q", b)
	}
	if _, err := os.Stat(dir + "/net/ipv6/conf/all/forwarding"); err == nil {
		t.Fatal("IPv6 forwarding touched without an IPv6 range")
	}
	c, _ = ParseConfig([]byte(`{"switches":[{"name":"vale0","ranges":[{"subnet":"fd00::/64"}]}]}`))
	if err := enableForwarding(c); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dir + "/net/ipv6/conf/all/forwarding"); string(b) != "1\n" {
		t.Fatalf("ipv6 forwarding: %q", b)
	}
}
