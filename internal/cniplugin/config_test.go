package cniplugin

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/epair-cni/epair/pkg/agentapi"

	"github.com/epair-cni/epair/pkg/limits"
)

func conf(version, extra string) []byte {
	if extra != "" {
		extra = "," + extra
	}
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"podnet","type":"epair"%s}`, version, extra))
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(conf("1.1.0", ""), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.AgentSocket != DefaultAgentSocket || c.LogLevel != "error" || c.MTU != 0 || c.Switch != "" ||
		time.Duration(c.Timeouts.Add) != DefaultAddTimeout || time.Duration(c.Timeouts.Del) != DefaultDelTimeout ||
		time.Duration(c.Timeouts.Status) != DefaultStatusTimeout || c.PrevResult != nil {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestLoadFull(t *testing.T) {
	stdin := conf("1.0.0", `"agentSocket":"/var/run/epair/a.sock","switch":"vale_pods1","mtu":4000,
		"logFile":"/var/log/epair.log","logLevel":"debug","timeouts":{"add":"5s","del":"750ms"},
		"ipam":{"type":"epair","routes":[{"dst":"10.96.0.0/12"},{"dst":"fd00:96::/108","gw":"fd00:22::1"}]},
		"capabilities":{"ips":true,"mac":true,"portMappings":true},
		"runtimeConfig":{"ips":["10.22.0.9/24","fd00:22::9"],"mac":"02:42:AC:11:00:02",
			"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"TCP"}]}`)
	c, err := Load(stdin, "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=abc;FOO=bar")
	if err != nil {
		t.Fatal(err)
	}
	if c.AgentSocket != "/var/run/epair/a.sock" || c.Switch != "vale_pods1" || c.MTU != 4000 || c.LogLevel != "debug" ||
		time.Duration(c.Timeouts.Add) != 5*time.Second || time.Duration(c.Timeouts.Del) != 750*time.Millisecond ||
		time.Duration(c.Timeouts.GC) != DefaultGCTimeout || len(c.IPAM.Routes) != 2 {
		t.Fatalf("fields: %+v", c.NetConf)
	}
	if len(c.RequestedIPs) != 2 || c.RequestedIPs[0] != netip.MustParseAddr("10.22.0.9") || c.RequestedIPs[1] != netip.MustParseAddr("fd00:22::9") {
		t.Fatalf("ips: %v", c.RequestedIPs)
	}
	if c.RequestedMAC.String() != "02:42:ac:11:00:02" || len(c.RuntimeConfig.PortMappings) != 1 {
		t.Fatalf("mac/ports: %v %+v", c.RequestedMAC, c.RuntimeConfig)
	}
	if c.Args.K8S_POD_NAME != "web-0" || c.Args.K8S_POD_NAMESPACE != "default" || c.Args.K8S_POD_UID != "u-1" || !bool(c.Args.IgnoreUnknown) {
		t.Fatalf("args: %+v", c.Args)
	}
	if c.NetConf.NetConf.IPAM.Type != "" {
		t.Error("the embedded ipam section must be shadowed by ours")
	}
}

func TestValidateNamesField(t *testing.T) {
	for _, tc := range []struct {
		stdin []byte
		field string
		kind  error
	}{
		{[]byte(`{"name":"n","type":"epair"}`), "cniVersion", ErrIncompatibleVersion},
		{conf("0.2.0", ""), "cniVersion", ErrIncompatibleVersion},
		{conf("2.0.0", ""), "cniVersion", ErrIncompatibleVersion},
		{[]byte(`{"cniVersion":"1.0.0","type":"epair"}`), "name", ErrInvalidConfig},
		{[]byte(`{"cniVersion":"1.0.0","name":"-bad","type":"epair"}`), "name", ErrInvalidConfig},
		{[]byte(`{"cniVersion":"1.0.0","name":"n"}`), "type", ErrInvalidConfig},
		{conf("1.0.0", `"agentSocket":"relative.sock"`), "agentSocket", ErrInvalidConfig},
		{conf("1.0.0", `"agentSocket":"/run/../x.sock"`), "agentSocket", ErrInvalidConfig},
		{conf("1.0.0", `"switch":"br0"`), "switch", ErrInvalidConfig},
		{conf("1.0.0", `"switch":"vale"`), "switch", ErrInvalidConfig},
		{conf("1.0.0", `"switch":"vale-x"`), "switch", ErrInvalidConfig},
		{conf("1.0.0", `"switch":"vale0123456789ab"`), "switch", ErrInvalidConfig},
		{conf("1.0.0", `"mtu":575`), "mtu", ErrInvalidConfig},
		{conf("1.0.0", `"mtu":9001`), "mtu", ErrInvalidConfig},
		{conf("1.0.0", `"mtu":65536`), "mtu", ErrInvalidConfig},
		{conf("1.0.0", `"mtu":-1`), "mtu", ErrInvalidConfig},
		{conf("1.0.0", `"logFile":"epair.log"`), "logFile", ErrInvalidConfig},
		{conf("1.0.0", `"logLevel":"trace"`), "logLevel", ErrInvalidConfig},
		{conf("1.0.0", `"timeouts":{"del":"-1s"}`), "timeouts.del", ErrInvalidConfig},
		{conf("1.0.0", `"timeouts":{"gc":"1h"}`), "timeouts.gc", ErrInvalidConfig},
		{conf("1.0.0", `"ipam":{"type":"host-local"}`), "ipam.type", ErrInvalidConfig},
		{conf("1.0.0", `"ipam":{"routes":[{"gw":"10.0.0.1"}]}`), "ipam.routes[0].dst", ErrInvalidConfig},
		{conf("1.0.0", `"ipam":{"routes":[{"dst":"0.0.0.0/0","gw":"fd00::1"}]}`), "ipam.routes[0].gw", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"ips":["10.0.0.300"]}`), "runtimeConfig.ips[0]", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"ips":["10.0.0.3","10.0.0.4/24"]}`), "runtimeConfig.ips[1]", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"ips":["224.0.0.1"]}`), "runtimeConfig.ips[0]", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"mac":"nope"}`), "runtimeConfig.mac", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"mac":"01:00:5e:00:00:01"}`), "runtimeConfig.mac", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"mac":"00:00:00:00:00:00"}`), "runtimeConfig.mac", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"mac":"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}`), "runtimeConfig.mac", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":0}]}`), "runtimeConfig.portMappings[0].containerPort", ErrInvalidConfig},
		{conf("1.0.0", `"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}`), "runtimeConfig.portMappings[0].protocol", ErrInvalidConfig},
		{conf("1.0.0", `"cni.dev/valid-attachments":[{"containerID":"c"}]`), "cni.dev/valid-attachments[0]", ErrInvalidConfig},
		{conf("1.0.0", `"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24","interface":3}]}`), "prevResult.ips[0].interface", ErrInvalidConfig},
	} {
		_, err := Load(tc.stdin, "")
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want %v naming %s", tc.stdin, err, tc.kind, tc.field)
		}
		if err != nil && fe != nil && fe.Allowed == "" && fe.Reason == "" {
			t.Errorf("%s: error %v says neither why nor what is allowed", tc.stdin, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{"cniVersion":1}`, `{"cniVersion":"1.0.0","name":"n","type":"epair","mtu":"1500"}`,
		`{"cniVersion":"1.0.0","name":"n","type":"epair","timeouts":{"add":5}}`, `{"cniVersion":"1.0.0","name":"n","type":"epair"} x`} {
		_, err := Load([]byte(in), "")
		if !errors.Is(err, ErrDecode) || CNIError(err).Code != types.ErrDecodingFailure {
			t.Errorf("%q: %v, want a decode error", in, err)
		}
	}
	_, err := Load([]byte(`{"cniVersion":"1.0.0","name":"n","type":"epair","mtu":"1500"}`), "")
	if !strings.Contains(err.Error(), "mtu") {
		t.Errorf("type error must name the field: %v", err)
	}
}

func TestParseArgs(t *testing.T) {
	a, err := ParseArgs("K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns")
	if err != nil || a.K8S_POD_NAME != "p" || a.K8S_POD_NAMESPACE != "ns" {
		t.Fatalf("%+v %v", a, err)
	}
	for _, bad := range []string{"FOO=bar", "K8S_POD_NAME", "=x", "IgnoreUnknown=maybe;FOO=1", "K8S_POD_NAME=a;;"} {
		_, err := ParseArgs(bad)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "CNI_ARGS" || CNIError(err).Code != types.ErrInvalidEnvironmentVariables {
			t.Errorf("%q: %v, want CNI_ARGS error with code 4", bad, err)
		}
	}
	if _, err := ParseArgs("IgnoreUnknown=true;FOO=bar;K8S_POD_UID=x"); err != nil {
		t.Errorf("IgnoreUnknown=true: %v", err)
	}
}

// prevResults holds one result per supported version, each in that version's own format.
var prevResults = map[string]string{
	"0.3.1": `{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/var/run/netns/p"}],
		"ips":[{"version":"4","address":"10.22.0.5/24","gateway":"10.22.0.1","interface":0},
		       {"version":"6","address":"fd00:22::5/64","gateway":"fd00:22::1","interface":0}],
		"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}`,
	"0.4.0": `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/var/run/netns/p"}],
		"ips":[{"version":"4","address":"10.22.0.5/24","gateway":"10.22.0.1","interface":0},
		       {"version":"6","address":"fd00:22::5/64","gateway":"fd00:22::1","interface":0}],
		"routes":[{"dst":"0.0.0.0/0"}]}`,
	"1.0.0": `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","mtu":1500,"sandbox":"/var/run/netns/p"}],
		"ips":[{"address":"10.22.0.5/24","gateway":"10.22.0.1","interface":0},{"address":"fd00:22::5/64","gateway":"fd00:22::1","interface":0}],
		"routes":[{"dst":"0.0.0.0/0"}]}`,
	"1.1.0": `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","mtu":1500,"sandbox":"/var/run/netns/p"}],
		"ips":[{"address":"10.22.0.5/24","gateway":"10.22.0.1","interface":0},{"address":"fd00:22::5/64","gateway":"fd00:22::1","interface":0}],
		"routes":[{"dst":"0.0.0.0/0","mtu":1400}]}`,
}

func TestPrevResultEveryVersion(t *testing.T) {
	for _, v := range SupportedVersions {
		t.Run(v, func(t *testing.T) {
			c, err := Load(conf(v, `"prevResult":`+prevResults[v]), "")
			if err != nil {
				t.Fatal(err)
			}
			r := c.PrevResult
			if r == nil || len(r.Interfaces) != 1 || r.Interfaces[0].Name != "eth0" || r.Interfaces[0].Sandbox != "/var/run/netns/p" ||
				len(r.IPs) != 2 || r.IPs[0].Address.String() != "10.22.0.5/24" || r.IPs[1].Gateway.String() != "fd00:22::1" ||
				*r.IPs[0].Interface != 0 || len(r.Routes) != 1 {
				t.Fatalf("converted: %+v", r)
			}
			// Converting back to the config's version must work (the handlers print in it).
			if _, err := r.GetAsVersion(v); err != nil {
				t.Fatal(err)
			}
		})
	}
	_, err := Load(conf("1.0.0", `"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}`), "")
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "prevResult" {
		t.Fatalf("bad prevResult: %v", err)
	}
}

func TestCNIErrorMapping(t *testing.T) {
	te := types.NewError(types.ErrUnknownContainer, "x", "")
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{fmt.Errorf("add: %w", te), types.ErrUnknownContainer},
		{fieldErr(ErrIncompatibleVersion, "cniVersion", "9", "", ""), types.ErrIncompatibleCNIVersion},
		{fieldErr(ErrInvalidArgs, "CNI_ARGS", "", "", ""), types.ErrInvalidEnvironmentVariables},
		{fmt.Errorf("%w: eof", ErrDecode), types.ErrDecodingFailure},
		{fieldErr(ErrInvalidConfig, "mtu", "1", "", ""), types.ErrInvalidNetworkConfig},
		{fmt.Errorf("open netns: %w", ErrInvalidNetNS), types.ErrInvalidNetNS},
		{fmt.Errorf("status: %w: %w", ErrNotAvailable, agentapi.ErrNotReady), types.ErrPluginNotAvailable},
		{fmt.Errorf("allocate: %w", agentapi.NewError(agentapi.CodeInvalidRequest, "ips")), types.ErrInvalidNetworkConfig},
		{fmt.Errorf("check: %w", agentapi.ErrNotFound), types.ErrUnknownContainer},
		{fmt.Errorf("allocate: %w", agentapi.ErrNotReady), types.ErrTryAgainLater},
		{fmt.Errorf("allocate: %w", agentapi.ErrUnavailable), types.ErrTryAgainLater},
		{fmt.Errorf("allocate: %w", agentapi.ErrTimeout), types.ErrTryAgainLater},
		{fmt.Errorf("allocate: %w", agentapi.ErrExhausted), CodeRangeExhausted},
		{fmt.Errorf("allocate: %w", agentapi.NewError(agentapi.CodeConflict, "ips: 10.0.0.5 is held by x/eth0")), CodeAddressConflict},
		{fmt.Errorf("add: %w: attachment x/eth0 already exists with 10.0.0.4/24", ErrAddressConflict), CodeAddressConflict},
		{fmt.Errorf("add: %w", fieldErr(ErrInvalidArgs, "CNI_NETNS", "/proc/1/ns/net", "the plugin's own", "")), types.ErrInvalidEnvironmentVariables},
		{fmt.Errorf("check: %w: no address", ErrCheckFailed), types.ErrInternal},
		{errors.New("boom"), types.ErrInternal},
	} {
		got := CNIError(tc.err)
		if got.Code != tc.code || got.Msg == "" {
			t.Errorf("%v: code %d, want %d", tc.err, got.Code, tc.code)
		}
	}
	if CNIError(nil) != nil {
		t.Error("nil must map to nil")
	}
}

func FuzzLoad(f *testing.F) {
	for _, v := range SupportedVersions {
		f.Add(string(conf(v, `"prevResult":`+prevResults[v])), "K8S_POD_NAME=p;K8S_POD_NAMESPACE=n")
		f.Add(string(conf(v, "")), "")
	}
	f.Add(`{"cniVersion":"1.1.0","name":"n","type":"epair","mtu":1500,"switch":"vale0","timeouts":{"add":"1s"},
		"runtimeConfig":{"ips":["10.0.0.1/8"],"mac":"02:00:00:00:00:01","portMappings":[{"hostPort":1,"containerPort":2}]},
		"ipam":{"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}]},"cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`,
		"IgnoreUnknown=1;X=y")
	f.Add(`{"cniVersion":"0.3.1","name":"n","type":"epair","prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"1.2.3.4/32","interface":-1}]}}`, "")
	f.Fuzz(func(t *testing.T, stdin, args string) {
		c, err := Load([]byte(stdin), args)
		if err != nil {
			ce := CNIError(err)
			if ce.Code == types.ErrInternal {
				t.Fatalf("parse error mapped to 999: %v", err)
			}
			var fe *FieldError
			if errors.As(err, &fe) && fe.Field == "" {
				t.Fatalf("field error without a field: %v", err)
			}
			return
		}
		// Whatever was accepted is valid and stays valid.
		if err := c.NetConf.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		if c.MTU != 0 && (c.MTU < limits.MinMTU || c.MTU > limits.MaxMTU) {
			t.Fatalf("mtu %d accepted", c.MTU)
		}
		if c.Timeouts.Add <= 0 || c.Timeouts.Del <= 0 || c.Timeouts.Check <= 0 || c.Timeouts.Status <= 0 || c.Timeouts.GC <= 0 {
			t.Fatalf("zero timeout after defaults: %+v", c.Timeouts)
		}
		if len(c.RequestedIPs) > 2 || (c.RuntimeConfig.MAC != "" && len(c.RequestedMAC) != 6) {
			t.Fatalf("runtime config: %v %v", c.RequestedIPs, c.RequestedMAC)
		}
		if c.PrevResult != nil {
			if _, err := c.PrevResult.GetAsVersion(c.CNIVersion); err != nil && c.CNIVersion != "0.3.1" && c.CNIVersion != "0.4.0" {
				t.Fatalf("prevResult cannot be printed in %s: %v", c.CNIVersion, err)
			}
		}
	})
}

func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{"", "K8S_POD_NAME=a;K8S_POD_NAMESPACE=b", "IgnoreUnknown=1;A=B", "=;", "K8S_POD_UID==x", "IgnoreUnknown=true;K8S_POD_NAME=\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseArgs(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgs) || CNIError(err).Code != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("%q: %v is not an args error", s, err)
			}
			return
		}
		if a.K8S_POD_NAME != "" && !strings.Contains(s, "K8S_POD_NAME="+string(a.K8S_POD_NAME)) {
			t.Fatalf("%q: pod name %q not from the input", s, a.K8S_POD_NAME)
		}
	})
}
