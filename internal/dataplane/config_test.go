package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Switches = []SwitchConfig{{Name: "vale0", HostPort: HostPortConfig{
		Gateways: []netip.Prefix{netip.MustParsePrefix("10.244.1.1/24")},
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
	}}}
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := func() *Config { c := validConfig(); return &c }().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := []struct {
		name  string
		mod   func(*Config)
		field string
	}{
		{"no switches", func(c *Config) { c.Switches = nil }, "switches"},
		{"bad backend", func(c *Config) { c.Backend = linkport.Backend(9) }, "backend"},
		{"negative upgradeQuiet", func(c *Config) { c.UpgradeQuiet = -1 }, "upgradeQuiet"},
		{"huge upgradeMaxDelay", func(c *Config) { c.UpgradeMaxDelay = 2 * time.Hour }, "upgradeMaxDelay"},
		{"negative workers", func(c *Config) { c.Workers = -1 }, "workers"},
		{"ring slots", func(c *Config) { c.RingSlots = 100 }, "ringSlots"},
		{"nft table", func(c *Config) { c.NFTTable = "a b" }, "nftTable"},
		{"switch name", func(c *Config) { c.Switches[0].Name = "sw0" }, "name"},
		{"duplicate switch", func(c *Config) {
			c.Switches = append(c.Switches, c.Switches[0])
			c.Switches[1].HostPort.Name = "other"
		}, "used twice"},
		{"duplicate tap", func(c *Config) {
			c.Switches = append(c.Switches, SwitchConfig{Name: "vale1", HostPort: HostPortConfig{Name: "epvale0"}})
		}, "hostPort.name"},
		{"mtu", func(c *Config) { c.Switches[0].MTU = 100 }, "mtu"},
		{"jumbo mtu above 9000", func(c *Config) { c.Switches[0].MTU, c.Switches[0].Offload = 9001, true }, "mtu 9001"},
		{"jumbo mtu on a plain switch", func(c *Config) { c.Switches[0].MTU = 9000 }, "a plain switch takes up to 4078"},
		{"max ports", func(c *Config) { c.Switches[0].MaxPorts = 1 }, "max ports"},
		{"fdb size", func(c *Config) { c.Switches[0].FDBSize = 1000 }, "fdb size"},
		{"aging", func(c *Config) { c.Switches[0].Aging = time.Millisecond }, "aging"},
		{"tap name", func(c *Config) { c.Switches[0].Name = "vale0123456789a" }, "hostPort.name"},
		{"mac", func(c *Config) { c.Switches[0].HostPort.MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1} }, "hostPort.mac"},
		{"gateway without prefix", func(c *Config) {
			c.Switches[0].HostPort.Gateways = []netip.Prefix{netip.MustParsePrefix("10.244.1.1/32")}
		}, "hostPort.gateways[0]"},
		{"pod cidr host bits", func(c *Config) {
			c.Switches[0].HostPort.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.1.1/24")}
		}, "hostPort.podCIDRs[0]"},
		{"policy discipline", func(c *Config) { c.DefaultPolicy.Discipline = 7 }, "discipline"},
		{"policy queue", func(c *Config) { c.DefaultPolicy.QueueLen = -1 }, "queueLen"},
		{"policy priority", func(c *Config) { c.DefaultPolicy.Priority = 4 }, "priority"},
		{"policy burst without rate", func(c *Config) { c.DefaultPolicy.BurstBytes = 10 }, "burst"},
	}
	for _, tc := range cases {
		c := validConfig()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !errors.Is(err, ErrInvalid) && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: %v, want EINVAL", tc.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %q does not name %q", tc.name, err, tc.field)
		}
	}
	jumbo := validConfig()
	jumbo.Switches[0].MTU, jumbo.Switches[0].Offload = 9000, true
	if err := jumbo.Validate(); err != nil {
		t.Errorf("an offload switch with a 9000-byte MTU: %v", err)
	}
	if _, err := New(Config{}); Errno(err) != syscall.EINVAL {
		t.Errorf("New with an empty config: %v", err)
	}
}

func TestPolicyRate(t *testing.T) {
	if (PortPolicy{}).rate() != nil {
		t.Error("zero policy has a rate")
	}
	r := PortPolicy{RateBitsPerSec: 8e6}.rate()
	if r == nil || r.BurstBytes != int(1e6*DefaultBurst.Seconds()) || r.BurstPkts != 0 {
		t.Errorf("rate %+v", r)
	}
	r = PortPolicy{RatePktsPerSec: 10, BurstPkts: 5}.rate()
	if r.BurstPkts != 5 || r.BurstBytes != 0 {
		t.Errorf("rate %+v", r)
	}
}

func TestFlowHash(t *testing.T) {
	f := make([]byte, 60)
	f[12], f[13] = 0x08, 0x00
	h1 := flowHash(f)
	f[30] = 1 // destination address
	if flowHash(f) == h1 {
		t.Error("IPv4 destination does not change the hash")
	}
	f[50] = 7 // payload
	h2 := flowHash(f)
	f[50] = 8
	if flowHash(f) != h2 {
		t.Error("payload changes the hash")
	}
	_ = flowHash(nil)
	_ = flowHash(f[:5])
}

// FuzzPortPolicy checks that Validate never panics and that whatever it
// accepts makes a valid ifcore regulator setting.
func FuzzPortPolicy(f *testing.F) {
	f.Add(0, 0, uint8(0), uint64(0), uint64(0), 0, 0)
	f.Add(2, 64, uint8(3), uint64(1e9), uint64(1000), 1500, 10)
	f.Add(1, -1, uint8(9), uint64(0), uint64(0), 5, 0)
	f.Fuzz(func(t *testing.T, disc, qlen int, prio uint8, bps, pps uint64, bb, bp int) {
		p := PortPolicy{Discipline: Discipline(disc), QueueLen: qlen, Priority: prio, RateBitsPerSec: bps, RatePktsPerSec: pps, BurstBytes: bb, BurstPkts: bp}
		if err := p.Validate(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if r := p.rate(); r != nil {
			if err := r.Validate(); err != nil {
				t.Fatalf("accepted policy %+v gives an invalid rate: %v", p, err)
			}
		}
		if p.queueLen() <= 0 || p.queueLen() > MaxQueueLen {
			t.Fatalf("queue length %d", p.queueLen())
		}
	})
}
