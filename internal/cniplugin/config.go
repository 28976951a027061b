package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/limits"
)

// Defaults.
const (
	DefaultAgentSocket  = "/run/epair/agent.sock"
	DefaultAddTimeout   = 20 * time.Second
	DefaultCheckTimeout = 10 * time.Second
	// DEL must not wait for an agent that is down: a short bound, then local cleanup.
	DefaultDelTimeout    = 3 * time.Second
	DefaultStatusTimeout = 2 * time.Second
	DefaultGCTimeout     = 30 * time.Second
	MaxTimeout           = 5 * time.Minute
)

// SupportedVersions are the CNI spec versions this plugin speaks.
var SupportedVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// VersionInfo is what the plugin reports for VERSION.
var VersionInfo = version.PluginSupports(SupportedVersions...)

// Duration is a time.Duration written in JSON as a Go duration string ("5s", "250ms").
type Duration time.Duration

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"5s\", got %s", truncate(string(b), 32))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration string such as \"5s\": %w", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Timeouts bound each verb's calls to the agent.
type Timeouts struct {
	Add    Duration `json:"add,omitzero"`
	Del    Duration `json:"del,omitzero"`
	Check  Duration `json:"check,omitzero"`
	Status Duration `json:"status,omitzero"`
	GC     Duration `json:"gc,omitzero"`
}

// IPAMConf is the plugin's "ipam" section. Addresses always come from the node agent (it owns
// IPAM and its persistent store); the section only adds pod-side routes.
type IPAMConf struct {
	// Type must be empty or "epair": delegating to another IPAM plugin is not supported.
	Type string `json:"type,omitempty"`
	// Routes are extra routes installed in the pod, after the agent's.
	Routes []*types.Route `json:"routes,omitempty"`
}

// PortMapping is one runtimeConfig.portMappings entry (passed through to portmap).
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// netmapPorts are the application ports the configuration and runtimeConfig ask for.
func (n *NetConf) netmapPorts() []string {
	out := slices.Clone(n.NetmapPorts)
	for _, p := range n.RuntimeConfig.NetmapPorts {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// RuntimeConfig holds the capabilities the runtime fills in.
type RuntimeConfig struct {
	// IPs requested for the pod (capability "ips"): addresses or CIDRs, one per family.
	IPs []string `json:"ips,omitempty"`
	// MAC requested for the pod interface (capability "mac").
	MAC string `json:"mac,omitempty"`
	// PortMappings is not used by this plugin; it is parsed so that a malformed value fails
	// here with a clear message, and chained portmap reads it from its own config.
	PortMappings []PortMapping `json:"portMappings,omitempty"`
	// NetmapPorts asks for netmap application ports (capability "netmapPorts"), added
	// to the configuration's own.
	NetmapPorts []string `json:"netmapPorts,omitempty"`
}

// NetConf is the plugin's configuration.
type NetConf struct {
	types.NetConf

	// AgentSocket is the node agent's unix socket (absolute path).
	AgentSocket string `json:"agentSocket,omitempty"`
	// Switch names the VALE switch to attach to ("vale" + [A-Za-z0-9_], ≤15 bytes); empty
	// means the agent's default switch.
	Switch string `json:"switch,omitempty"`
	// MTU of the pod interface; 0 means the switch's MTU.
	MTU int `json:"mtu,omitempty"`
	// LogFile, if set, receives the plugin's diagnostics (absolute path).
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is "error" (default), "info" or "debug".
	LogLevel string `json:"logLevel,omitempty"`
	// NetmapPorts names netmap application ports on the switch for the pod's
	// applications (at most 8, each 1-15 bytes of [A-Za-z0-9_.-]): the agent serves them
	// on the abstract socket @epair-netmap in the pod's network namespace.
	NetmapPorts []string `json:"netmapPorts,omitempty"`
	// Timeouts for the agent calls of each verb.
	Timeouts Timeouts `json:"timeouts,omitzero"`
	// IPAM shadows types.NetConf's ipam section.
	IPAM IPAMConf `json:"ipam,omitzero"`
	// RuntimeConfig is filled in by the runtime from the capabilities.
	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitzero"`
}

// Args is CNI_ARGS as Kubernetes runtimes set it.
type Args struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive // CNI_ARGS key
}

// Config is everything a verb needs from its input, parsed and validated once.
type Config struct {
	NetConf
	Args Args
	// PrevResult is the prevResult converted to the current result type; nil if absent.
	PrevResult *current.Result
	// RequestedIPs and RequestedMAC are runtimeConfig.ips / .mac, parsed.
	RequestedIPs []netip.Addr
	RequestedMAC net.HardwareAddr
}

// Load parses stdin and CNI_ARGS into a Config: defaults, then unmarshal, then Validate,
// then prevResult conversion. It is pure.
func Load(stdin []byte, cniArgs string) (*Config, error) {
	n, err := ParseNetConf(stdin)
	if err != nil {
		return nil, err
	}
	args, err := ParseArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	c := &Config{NetConf: *n, Args: args}
	if c.PrevResult, err = n.parsePrevResult(); err != nil {
		return nil, err
	}
	if c.RequestedIPs, err = parseIPs(n.RuntimeConfig.IPs); err != nil {
		return nil, err
	}
	if n.RuntimeConfig.MAC != "" {
		c.RequestedMAC, _ = net.ParseMAC(n.RuntimeConfig.MAC) // validated
	}
	return c, nil
}

// Defaults returns a NetConf with every default set.
func Defaults() NetConf {
	return NetConf{
		AgentSocket: DefaultAgentSocket,
		LogLevel:    "error",
		Timeouts: Timeouts{
			Add: Duration(DefaultAddTimeout), Del: Duration(DefaultDelTimeout), Check: Duration(DefaultCheckTimeout),
			Status: Duration(DefaultStatusTimeout), GC: Duration(DefaultGCTimeout),
		},
	}
}

// ParseNetConf decodes and validates the plugin config from stdin.
func ParseNetConf(stdin []byte) (*NetConf, error) {
	n := Defaults()
	dec := json.NewDecoder(bytes.NewReader(stdin))
	if err := dec.Decode(&n); err != nil {
		return nil, decodeError(err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrDecode)
	}
	// A zero timeout left by `"add": "0s"` means "default" rather than "no time at all".
	def := Defaults().Timeouts
	for _, p := range []struct{ v, d *Duration }{{&n.Timeouts.Add, &def.Add}, {&n.Timeouts.Del, &def.Del},
		{&n.Timeouts.Check, &def.Check}, {&n.Timeouts.Status, &def.Status}, {&n.Timeouts.GC, &def.GC}} {
		if *p.v == 0 {
			*p.v = *p.d
		}
	}
	if n.LogLevel == "" {
		n.LogLevel = "error"
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	return &n, nil
}

func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%w: field %s: got JSON %s, want %v", ErrDecode, te.Field, te.Value, te.Type)
	}
	return fmt.Errorf("%w: %w", ErrDecode, err)
}

// Validate checks every field and returns the first error, naming the field.
func (n *NetConf) Validate() error {
	if n.CNIVersion == "" {
		return fieldErr(ErrIncompatibleVersion, "cniVersion", "", "required", strings.Join(SupportedVersions, ", "))
	}
	if !slices.Contains(SupportedVersions, n.CNIVersion) {
		return fieldErr(ErrIncompatibleVersion, "cniVersion", n.CNIVersion, "not supported", strings.Join(SupportedVersions, ", "))
	}
	if n.Name == "" {
		return fieldErr(ErrInvalidConfig, "name", "", "required", "[A-Za-z0-9][A-Za-z0-9_.-]*")
	}
	if !validNetworkName(n.Name) {
		return fieldErr(ErrInvalidConfig, "name", n.Name, "invalid network name", "[A-Za-z0-9][A-Za-z0-9_.-]*")
	}
	if n.Type == "" {
		return fieldErr(ErrInvalidConfig, "type", "", "required", "the plugin binary's name, e.g. epair")
	}
	if n.AgentSocket == "" || !filepath.IsAbs(n.AgentSocket) || filepath.Clean(n.AgentSocket) != n.AgentSocket {
		return fieldErr(ErrInvalidConfig, "agentSocket", n.AgentSocket, "must be a clean absolute path", "e.g. "+DefaultAgentSocket)
	}
	if n.Switch != "" {
		if err := validateSwitchName(n.Switch); err != "" {
			return fieldErr(ErrInvalidConfig, "switch", n.Switch, err, `"vale" followed by [A-Za-z0-9_], at most 15 bytes, e.g. vale0`)
		}
	}
	if n.MTU != 0 && (n.MTU < limits.MinMTU || n.MTU > limits.MaxMTU) {
		return fieldErr(ErrInvalidConfig, "mtu", strconv.Itoa(n.MTU), "out of range", fmt.Sprintf("0 (the switch's MTU) or %d..%d", limits.MinMTU, limits.MaxMTU))
	}
	if n.LogFile != "" && (!filepath.IsAbs(n.LogFile) || strings.HasSuffix(n.LogFile, "/")) {
		return fieldErr(ErrInvalidConfig, "logFile", n.LogFile, "must be an absolute file path", "")
	}
	if !slices.Contains([]string{"error", "info", "debug"}, n.LogLevel) {
		return fieldErr(ErrInvalidConfig, "logLevel", n.LogLevel, "unknown level", "error, info, debug")
	}
	for _, t := range []struct {
		name string
		d    Duration
	}{{"timeouts.add", n.Timeouts.Add}, {"timeouts.del", n.Timeouts.Del}, {"timeouts.check", n.Timeouts.Check},
		{"timeouts.status", n.Timeouts.Status}, {"timeouts.gc", n.Timeouts.GC}} {
		if t.d < 0 || time.Duration(t.d) > MaxTimeout {
			return fieldErr(ErrInvalidConfig, t.name, time.Duration(t.d).String(), "out of range", "0 (default) up to "+MaxTimeout.String())
		}
	}
	if n.IPAM.Type != "" && n.IPAM.Type != "epair" {
		return fieldErr(ErrInvalidConfig, "ipam.type", n.IPAM.Type,
			"addresses come from the epair node agent; delegating to another IPAM plugin is not supported", `"" or "epair"`)
	}
	for i, r := range n.IPAM.Routes {
		f := fmt.Sprintf("ipam.routes[%d]", i)
		if r == nil || r.Dst.IP == nil || r.Dst.Mask == nil {
			return fieldErr(ErrInvalidConfig, f+".dst", "", "required", "a CIDR such as 10.0.0.0/8 or ::/0")
		}
		if r.GW != nil && (r.GW.To4() == nil) != (r.Dst.IP.To4() == nil) {
			return fieldErr(ErrInvalidConfig, f+".gw", r.GW.String(), "address family differs from dst "+r.Dst.String(), "")
		}
	}
	if err := agentapi.ValidateNetmapPorts(n.netmapPorts()); err != nil {
		var ae *agentapi.Error
		msg := err.Error()
		if errors.As(err, &ae) {
			msg = ae.Message
		}
		return fieldErr(ErrInvalidConfig, "netmapPorts", strings.Join(n.netmapPorts(), ","), msg, `e.g. "netmapPorts": ["rx", "tx"]`)
	}
	if _, err := parseIPs(n.RuntimeConfig.IPs); err != nil {
		return err
	}
	if m := n.RuntimeConfig.MAC; m != "" {
		hw, err := net.ParseMAC(m)
		switch {
		case err != nil || len(hw) != 6:
			return fieldErr(ErrInvalidConfig, "runtimeConfig.mac", m, "not a 48-bit MAC address", "e.g. 02:42:ac:11:00:02")
		case hw[0]&1 != 0:
			return fieldErr(ErrInvalidConfig, "runtimeConfig.mac", m, "multicast MAC address", "a unicast address (low bit of the first octet clear)")
		case hw.String() == "00:00:00:00:00:00":
			return fieldErr(ErrInvalidConfig, "runtimeConfig.mac", m, "all-zero MAC address", "a unicast address")
		}
	}
	for i, p := range n.RuntimeConfig.PortMappings {
		f := fmt.Sprintf("runtimeConfig.portMappings[%d]", i)
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return fieldErr(ErrInvalidConfig, f+".containerPort", strconv.Itoa(p.ContainerPort), "out of range", "1..65535")
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			return fieldErr(ErrInvalidConfig, f+".hostPort", strconv.Itoa(p.HostPort), "out of range", "0..65535")
		}
		if p.Protocol != "" && !slices.Contains([]string{"tcp", "udp", "sctp"}, strings.ToLower(p.Protocol)) {
			return fieldErr(ErrInvalidConfig, f+".protocol", p.Protocol, "unknown protocol", "tcp, udp, sctp")
		}
		if p.HostIP != "" {
			if _, err := netip.ParseAddr(p.HostIP); err != nil {
				return fieldErr(ErrInvalidConfig, f+".hostIP", p.HostIP, "not an IP address", "")
			}
		}
	}
	for i, a := range n.ValidAttachments {
		if a.ContainerID == "" || a.IfName == "" {
			return fieldErr(ErrInvalidConfig, fmt.Sprintf("cni.dev/valid-attachments[%d]", i), "", "containerID and ifname are required", "")
		}
	}
	return nil
}

// parsePrevResult converts the raw prevResult of any supported version to the current type.
func (n *NetConf) parsePrevResult() (*current.Result, error) {
	if n.RawPrevResult == nil {
		return nil, nil
	}
	nc := n.NetConf // version.ParsePrevResult mutates its argument
	if err := version.ParsePrevResult(&nc); err != nil {
		return nil, fieldErr(ErrInvalidConfig, "prevResult", "", err.Error(), "a result of the config's cniVersion "+n.CNIVersion)
	}
	res, err := current.NewResultFromResult(nc.PrevResult)
	if err != nil {
		return nil, fieldErr(ErrInvalidConfig, "prevResult", "", "convert to "+current.ImplementedSpecVersion+": "+err.Error(), "")
	}
	for i, ip := range res.IPs {
		if ip.Interface != nil && (*ip.Interface < 0 || *ip.Interface >= len(res.Interfaces)) {
			return nil, fieldErr(ErrInvalidConfig, fmt.Sprintf("prevResult.ips[%d].interface", i), strconv.Itoa(*ip.Interface),
				"index out of range", fmt.Sprintf("0..%d", len(res.Interfaces)-1))
		}
	}
	return res, nil
}

// ParseArgs parses CNI_ARGS ("K=V;K=V"). Unknown keys are an error unless IgnoreUnknown is
// set, as in every reference plugin.
func ParseArgs(s string) (Args, error) {
	var a Args
	if s == "" {
		return a, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return Args{}, fieldErr(ErrInvalidArgs, "CNI_ARGS", kv, "not a KEY=VALUE pair", "KEY=VALUE[;KEY=VALUE...]")
		}
	}
	if err := types.LoadArgs(s, &a); err != nil {
		return Args{}, fieldErr(ErrInvalidArgs, "CNI_ARGS", truncate(s, 128), err.Error(), "K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID, IgnoreUnknown")
	}
	return a, nil
}

// parseIPs parses runtimeConfig.ips: each an address or a CIDR (its address is used), at most
// one per family.
func parseIPs(in []string) ([]netip.Addr, error) {
	var out []netip.Addr
	var has4, has6 bool
	for i, s := range in {
		f := fmt.Sprintf("runtimeConfig.ips[%d]", i)
		a, err := netip.ParseAddr(s)
		if err != nil {
			p, perr := netip.ParsePrefix(s)
			if perr != nil {
				return nil, fieldErr(ErrInvalidConfig, f, s, "not an IP address or CIDR", "e.g. 10.22.0.5 or 10.22.0.5/24")
			}
			a = p.Addr()
		}
		a = a.Unmap()
		if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, fieldErr(ErrInvalidConfig, f, s, "not a unicast address", "")
		}
		if a.Is4() && has4 || a.Is6() && has6 {
			return nil, fieldErr(ErrInvalidConfig, f, s, "a second address of the same family", "at most one IPv4 and one IPv6 address")
		}
		has4, has6 = has4 || a.Is4(), has6 || a.Is6()
		out = append(out, a)
	}
	return out, nil
}

func validNetworkName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return s != ""
}

// validateSwitchName mirrors pkg/vale's switch naming rule (the plugin binary does not link
// the switch); it returns "" when valid.
func validateSwitchName(s string) string {
	const prefix = "vale"
	switch {
	case !strings.HasPrefix(s, prefix):
		return "does not start with " + prefix
	case len(s) == len(prefix):
		return "empty suffix after " + prefix
	case len(s) > 15:
		return "longer than 15 bytes"
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Sprintf("byte %q at %d not in [A-Za-z0-9_]", c, i)
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
