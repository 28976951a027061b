package vale

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDefaultConfigIsVALE(t *testing.T) {
	c := DefaultConfig()
	if c.MaxPorts != 254 || c.BatchSize != 1024 || c.MaxFrame != 1514 || c.FDBSize != 1024 {
		t.Fatalf("defaults %+v differ from VALE's NM_BDG_MAXPORTS/NM_BDG_BATCH/1514/NM_BDG_HASH", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("default config rejected: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		mod   func(*Config)
		field string // substring the error must contain; "" = valid
	}{
		{"1024 ports", func(c *Config) { c.MaxPorts = 1024 }, ""},
		{"max ports hi", func(c *Config) { c.MaxPorts = MaxPortsHi }, ""},
		{"1 port", func(c *Config) { c.MaxPorts = 1 }, "max ports"},
		{"too many ports", func(c *Config) { c.MaxPorts = MaxPortsHi + 1 }, "max ports"},
		{"zero batch", func(c *Config) { c.BatchSize = 0 }, "batch size"},
		{"huge batch", func(c *Config) { c.BatchSize = MaxBatch + 1 }, "batch size"},
		{"batch 1", func(c *Config) { c.BatchSize = 1 }, ""},
		{"tiny frame", func(c *Config) { c.MaxFrame = 59 }, "max frame"},
		{"jumbo", func(c *Config) { c.MaxFrame = 9014 }, ""},
		{"frame too big", func(c *Config) { c.MaxFrame = 65536 }, "max frame"},
		{"fdb not pow2", func(c *Config) { c.FDBSize = 1000 }, "fdb size"},
		{"fdb small", func(c *Config) { c.FDBSize = 8 }, "fdb size"},
		{"fdb big", func(c *Config) { c.FDBSize = 1 << 21 }, "fdb size"},
		{"aging off", func(c *Config) { c.Aging = 0 }, ""},
		{"aging short", func(c *Config) { c.Aging = time.Millisecond }, "aging"},
		{"aging negative", func(c *Config) { c.Aging = -time.Second }, "aging"},
		{"aging long", func(c *Config) { c.Aging = 48 * time.Hour }, "aging"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %+v", c)
			}
			if !errors.Is(err, syscall.EINVAL) || !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v is not EINVAL", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
		})
	}
}

func TestParseName(t *testing.T) {
	good := []struct{ in, sw, port string }{
		{"vale0:p1", "vale0", "p1"},
		{"valeA_b:epair12a", "valeA_b", "epair12a"},
		{"vale1:veth-x.1", "vale1", "veth-x.1"},
	}
	for _, g := range good {
		sw, p, err := ParseName(g.in)
		if err != nil || sw != g.sw || p != g.port {
			t.Errorf("ParseName(%q) = %q, %q, %v; want %q, %q", g.in, sw, p, err, g.sw, g.port)
		}
		if JoinName(sw, p) != g.in {
			t.Errorf("JoinName round trip of %q", g.in)
		}
	}
	bad := []struct{ in, why string }{
		{"vale0", "missing ':'"},
		{"", "missing ':'"},
		{"eth0:p1", "does not start with"},
		{"vale:p1", "empty suffix"},
		{"vale0:", "port name is empty"},
		{"vale-0:p1", "not in [A-Za-z0-9_]"},
		{"vale0:p 1", "not in [A-Za-z0-9_.-]"},
		{"vale0:p:1", "not in [A-Za-z0-9_.-]"},
		{"vale0123456789ab:p", "longer than"},
		{"vale0:0123456789abcdef", "longer than"},
	}
	for _, b := range bad {
		_, _, err := ParseName(b.in)
		if err == nil {
			t.Errorf("ParseName(%q) accepted", b.in)
			continue
		}
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("ParseName(%q): %v is not EINVAL", b.in, err)
		}
		if !strings.Contains(err.Error(), b.why) || !strings.Contains(err.Error(), b.in) {
			t.Errorf("ParseName(%q): error %q should name the input and say %q", b.in, err, b.why)
		}
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"vale0:p1", "vale:x", "vale0:", ":", "valeX_1:a.b-c", "vale0:p:1", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sw, p, err := ParseName(s)
		if err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("non-EINVAL error %v", err)
			}
			return
		}
		if JoinName(sw, p) != s {
			t.Fatalf("round trip %q -> %q %q", s, sw, p)
		}
		if ValidateSwitchName(sw) != nil || len(p) == 0 || len(p) > MaxNameLen {
			t.Fatalf("accepted invalid parts %q %q", sw, p)
		}
	})
}

func TestErrno(t *testing.T) {
	if Errno(nil) != 0 {
		t.Fatal("Errno(nil)")
	}
	if e := Errno(ErrPortBusy); e != syscall.EBUSY {
		t.Fatalf("Errno(ErrPortBusy) = %v", e)
	}
	if !errors.Is(ErrNoSwitch, syscall.ENXIO) || errors.Is(ErrNoSwitch, ErrNoPort) {
		t.Fatal("sentinels must match their errno and only themselves")
	}
	if Errno(errors.New("x")) != syscall.EIO {
		t.Fatal("foreign error should map to EIO")
	}
}
