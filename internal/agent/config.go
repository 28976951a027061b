package agent

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/limits"
)

// Defaults of the standalone agent.
const (
	DefaultSocket   = "/run/epair/agent.sock"
	DefaultStateDir = "/var/lib/epair"
	DefaultSwitch   = "vale0"
	DefaultMTU      = limits.DefaultMTU
	// DefaultRingSlots and DefaultXDPFrames size a port (pkg/limits; see Config.RingSlots).
	DefaultRingSlots = limits.DefaultRingSlots
	DefaultXDPFrames = limits.DefaultXDPFrames
	// MinMTU and MaxMTU bound a switch's MTU (pkg/limits).
	MinMTU = limits.MinMTU
	MaxMTU = limits.MaxMTU
	// DefaultBroadcastRate and DefaultMulticastRate are a pod port's storm control when a
	// switch sets none (pkg/limits).
	DefaultBroadcastRate = limits.DefaultBroadcastRate
	DefaultMulticastRate = limits.DefaultMulticastRate
)

// ErrInvalidConfig is wrapped by every configuration error; the message names the field.
var ErrInvalidConfig = errors.New("invalid agent config")

//go:embed default.json
var defaultConfig []byte

// DefaultConfigJSON is the embedded standalone configuration (one switch, default pod CIDR).
func DefaultConfigJSON() []byte { return bytes.Clone(defaultConfig) }

// Config is the agent's configuration (standalone mode reads it from a file or uses the
// embedded default; a cluster-mode caller fills Switches[i].Ranges from the node's pod CIDRs).
type Config struct {
	// Socket is the agent API's unix socket (root-only).
	Socket string `json:"socket"`
	// StateDir holds the IPAM and attachment stores.
	StateDir string `json:"stateDir"`
	// NodeID seeds the epair MAC scheme; empty means /etc/machine-id.
	NodeID string `json:"nodeID,omitempty"`
	// Backend is deprecated: every switch is an offload switch, whose pod links are
	// AF_PACKET sockets with virtio-net headers, chosen per port by the dataplane. "auto" and
	// "packet" are accepted as they are; "xdp" and "ringless" are accepted with a
	// deprecation warning (Deprecations) and act as "auto". Empty means "auto".
	Backend string `json:"backend,omitempty"`
	// DirectOpen attaches AF_XDP to a pod's link inside the CNI ADD. By default (false)
	// the pod's port starts on a ring-less AF_PACKET socket, which opens in well under a
	// millisecond, and moves to AF_XDP in the background without stopping traffic
	// (dataplane.Config.DirectOpen): the XDP attach (10–40 ms under the kernel's RTNL
	// lock) is then not part of the pod's start-up latency.
	DirectOpen bool `json:"directOpen,omitempty"`
	// Switches are the node's switches; the first is the default one.
	Switches []SwitchConfig `json:"switches"`
	// NetmapSocket, if set, serves netmap ports of the switches to applications on the
	// node (internal/appport, pkg/nmport): an absolute path (a root-only socket) or
	// "@name" for an abstract socket in the agent's network namespace. Empty: off.
	NetmapSocket string `json:"netmapSocket,omitempty"`
	// PodNetmapPorts says whether pods may ask for netmap application ports (the
	// plugin's netmapPorts, the pod annotation epair.dev/netmap-ports); the agent then
	// enters their network namespaces to serve them, which needs CAP_SYS_ADMIN and the
	// runtime's namespace paths. Absent: true. false refuses such a pod's ADD, naming
	// this setting.
	PodNetmapPorts *bool `json:"podNetmapPorts,omitempty"`
	// RxSpin is how long a port keeps looking for frames after traffic before it sleeps
	// ("100us"; absent: the dataplane's default, 100 µs; a negative duration: never).
	// It trades a little CPU after traffic for latency; an idle port costs nothing.
	RxSpin Duration `json:"rxSpin,omitempty"`
	// FastPath moves the known-unicast frames between pods of a switch in the kernel
	// (a tc program on each pod's host-side veth, pkg/fastpath) instead of through the
	// switch; everything else, and every port under a mirror, a capture or a shaping
	// queue, still crosses the switch. Absent: on where the kernel can (Linux 6.6, tcx,
	// and the BPF capability), with a warning in the log where it cannot; true: on, and
	// the agent does not start without it; false: off.
	FastPath *bool `json:"fastPath,omitempty"`
	// MetricsAddr, if set, serves /metrics (Prometheus text format) on this TCP address as
	// well as on the socket.
	MetricsAddr string `json:"metricsAddr,omitempty"`
	// RingSlots is the slot count of every port's netmap rings, a power of two in
	// [64, 8192]; 0 means DefaultRingSlots. With XDPFrames it is what a port costs in
	// memory (pkg/limits says what the defaults buy; BENCHMARKS.md has the figures).
	RingSlots int `json:"ringSlots,omitempty"`
	// XDPFrames is the UMEM frame count of every pod link's AF_XDP socket (half receive,
	// half transmit), a power of two in [64, 16384]; 0 means DefaultXDPFrames (a frame is
	// 2 KiB with MTU 1500, and the UMEM is populated up front).
	XDPFrames int `json:"xdpFrames,omitempty"`
	// Masquerade traffic from the pod ranges leaving the pod network (nftables), with
	// hairpin.
	Masquerade bool `json:"masquerade,omitempty"`
	// RecoverGrace is how long an attachment allocated but never attached survives a
	// restart before it is collected (an ADD that the crash interrupted).
	RecoverGrace Duration `json:"recoverGrace,omitempty"`
	// Peers are the other nodes of the pod network (standalone mode: several machines
	// without Kubernetes form one pod network). A peer on a subnet of this node gets its
	// pod CIDRs routed to its address; traffic to them is not masqueraded.
	Peers []PeerConfig `json:"peers,omitempty"`
	// PeerMode is how peers are reached: "auto" ("" too: routed to peers on a subnet of
	// this node, VXLAN to the others), "routed" or "vxlan".
	PeerMode string `json:"peerMode,omitempty"`
	// VXLANPort and VXLANID are the VXLAN tunnel's UDP port and VNI (0: 4789 and 1); every
	// node of the pod network must use the same.
	VXLANPort int `json:"vxlanPort,omitempty"`
	VXLANID   int `json:"vxlanID,omitempty"`
}

// PeerConfig is another node: its name, its underlay addresses (at most one per family)
// and its pod CIDRs.
type PeerConfig struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
	PodCIDRs  []string `json:"podCIDRs"`
}

// peers parses c.Peers (Validate checked them).
func (c *Config) peers() ([]dataplane.Peer, error) {
	var out []dataplane.Peer
	for i, p := range c.Peers {
		f := fmt.Sprintf("peers[%d]", i)
		dp := dataplane.Peer{Name: p.Name}
		for j, a := range p.Addresses {
			ad, err := netip.ParseAddr(a)
			if err != nil {
				return nil, fieldErr(fmt.Sprintf("%s.addresses[%d]", f, j), "%q is not an IP address", a)
			}
			dp.Addresses = append(dp.Addresses, ad)
		}
		for j, s := range p.PodCIDRs {
			pr, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fieldErr(fmt.Sprintf("%s.podCIDRs[%d]", f, j), "%q is not a CIDR", s)
			}
			dp.PodCIDRs = append(dp.PodCIDRs, pr)
		}
		out = append(out, dp)
	}
	return out, nil
}

// SwitchConfig is one switch, its address ranges and its host port.
type SwitchConfig struct {
	Name string `json:"name"`
	// MTU of the switch, its ports and its pods.
	MTU int `json:"mtu"`
	// Ranges are the pod address ranges (one or more per family: v4, v6 or dual-stack).
	Ranges []ipam.RangeConfig `json:"ranges"`
	// HostPort is the name of the TAP device that carries the gateways; empty means the
	// dataplane's default ("ep" + switch name).
	HostPort string `json:"hostPort,omitempty"`
	// Offload is deprecated: every switch is an offload switch (dataplane.SwitchConfig.
	// Offload): every port carries a virtio-net header, the pods keep TSO and checksum
	// offload and their 64 KB TCP super-frames cross the switch whole. A value (true or
	// false) is accepted with a deprecation warning (Deprecations) and ignored.
	Offload *bool `json:"offload,omitempty"`
	// AntiSpoofing refuses frames that pods send with another source MAC or address than
	// their own (dataplane.PortPolicy.AllowSpoofing is its opposite). Default true; false is
	// the opt-out for a switch whose pods legitimately send from other addresses.
	AntiSpoofing *bool `json:"antiSpoofing,omitempty"`
	// BroadcastRate and MulticastRate are the storm control of the switch's pod ports:
	// broadcast and other group-addressed frames a pod may send per second (0: no limit;
	// absent: DefaultBroadcastRate, DefaultMulticastRate).
	BroadcastRate *uint32 `json:"broadcastRate,omitempty"`
	MulticastRate *uint32 `json:"multicastRate,omitempty"`
	// BatchSize, MaxPorts, FDBSize and FDBAging are the switch's VALE limits (0: the
	// dataplane's defaults); cluster mode takes them from the VirtualSwitch.
	BatchSize int      `json:"batchSize,omitempty"`
	MaxPorts  int      `json:"maxPorts,omitempty"`
	FDBSize   int      `json:"fdbSize,omitempty"`
	FDBAging  Duration `json:"fdbAging,omitempty"`
	// Secondary makes it a second interface's network (as Multus adds one): its pods get
	// their addresses and on-link subnets through it but no default route, which stays
	// with their first interface.
	Secondary bool `json:"secondary,omitempty"`
}

// setDefaults fills in the MTU and the storm control limits a configuration left out.
func (s *SwitchConfig) setDefaults() {
	if s.MTU == 0 {
		s.MTU = DefaultMTU
	}
	if s.BroadcastRate == nil {
		s.BroadcastRate = ptr(uint32(DefaultBroadcastRate))
	}
	if s.MulticastRate == nil {
		s.MulticastRate = ptr(uint32(DefaultMulticastRate))
	}
}

// antiSpoofing is the switch's setting with its default (on).
func (s *SwitchConfig) antiSpoofing() bool { return s.AntiSpoofing == nil || *s.AntiSpoofing }

// Duration is a time.Duration in Go syntax ("30s") in JSON.
type Duration time.Duration

// UnmarshalJSON parses "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON prints "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadConfig reads the configuration at path, or the embedded default when path is "",
// applies defaults and validates it.
func LoadConfig(path string) (*Config, error) {
	data := defaultConfig
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
	}
	return ParseConfig(data)
}

// ParseConfig is LoadConfig without the file: defaults → unmarshal (unknown fields are
// errors) → Validate.
func ParseConfig(data []byte) (*Config, error) {
	c := &Config{Socket: DefaultSocket, StateDir: DefaultStateDir, Backend: "auto", RecoverGrace: Duration(2 * time.Minute)}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("parse config: %w: %w", ErrInvalidConfig, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("parse config: %w: trailing data after the JSON object", ErrInvalidConfig)
	}
	for i := range c.Switches {
		c.Switches[i].setDefaults()
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

var switchName = regexp.MustCompile(`^[a-z][a-z0-9]{0,14}$`)

func fieldErr(field, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, a...))
}

// Deprecations are the warnings about deprecated settings in c that it still accepts
// (the agent logs them at start): a backend other than auto or packet, a switch's offload.
func (c *Config) Deprecations() []string {
	var out []string
	switch c.Backend {
	case "xdp", "ringless":
		out = append(out, fmt.Sprintf("backend %q is deprecated and ignored: every switch is an offload switch whose pod links are AF_PACKET sockets with virtio-net headers (the dataplane chooses per port and reports why)", c.Backend))
	}
	for i, s := range c.Switches {
		if s.Offload != nil {
			out = append(out, fmt.Sprintf("switch %q (switches[%d]): offload (%v) is deprecated and ignored: every switch is an offload switch (virtio-net headers on every port, pods keep TSO and checksum offload)", s.Name, i, *s.Offload))
		}
	}
	return out
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if c.Socket == "" || !filepath.IsAbs(c.Socket) {
		return fieldErr("socket", "%q must be an absolute path", c.Socket)
	}
	if d := time.Duration(c.RxSpin); d > dataplane.MaxRxSpin {
		return fieldErr("rxSpin", "%v: want at most %v (a negative duration turns it off)", d, dataplane.MaxRxSpin)
	}
	if n := c.NetmapSocket; n != "" && !filepath.IsAbs(n) && (n[0] != '@' || len(n) < 2) {
		return fieldErr("netmapSocket", "%q must be an absolute path or @name", n)
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return fieldErr("stateDir", "%q must be an absolute path", c.StateDir)
	}
	switch c.Backend {
	case "", "auto", "xdp", "packet", "ringless":
	default:
		return fieldErr("backend", "%q, want one of auto, xdp, packet, ringless (deprecated: every switch is an offload switch; leave it out)", c.Backend)
	}
	if len(c.Switches) == 0 {
		return fieldErr("switches", "at least one switch is required")
	}
	if c.RingSlots != 0 && (c.RingSlots < 64 || c.RingSlots > 8192 || c.RingSlots&(c.RingSlots-1) != 0) {
		return fieldErr("ringSlots", "%d, want 0 (%d) or a power of two in [64, 8192]", c.RingSlots, DefaultRingSlots)
	}
	if c.XDPFrames != 0 && (c.XDPFrames < 64 || c.XDPFrames > 16384 || c.XDPFrames&(c.XDPFrames-1) != 0) {
		return fieldErr("xdpFrames", "%d, want 0 (%d) or a power of two in [64, 16384]", c.XDPFrames, DefaultXDPFrames)
	}
	if c.RecoverGrace < 0 {
		return fieldErr("recoverGrace", "must not be negative")
	}
	peers, err := c.peers()
	if err != nil {
		return err
	}
	switch c.PeerMode {
	case "", "auto", "routed", "vxlan":
	default:
		return fieldErr("peerMode", "%q, want auto, routed or vxlan", c.PeerMode)
	}
	if c.VXLANPort < 0 || c.VXLANPort > 65535 {
		return fieldErr("vxlanPort", "%d, want 0 (%d) to 65535", c.VXLANPort, dataplane.DefaultVXLANPort)
	}
	if c.VXLANID < 0 || c.VXLANID > 1<<24-1 {
		return fieldErr("vxlanID", "%d, want 0 (%d) to %d", c.VXLANID, dataplane.DefaultVXLANID, 1<<24-1)
	}
	seen := map[string]bool{}
	hosts := map[string]bool{}
	var subnets []struct {
		p  netip.Prefix
		sw string
	}
	for i, s := range c.Switches {
		f := fmt.Sprintf("switches[%d]", i)
		if !switchName.MatchString(s.Name) {
			return fieldErr(f+".name", "%q must match %s", s.Name, switchName)
		}
		if seen[s.Name] {
			return fieldErr(f+".name", "%q is used twice", s.Name)
		}
		seen[s.Name] = true
		if s.MTU < MinMTU || s.MTU > MaxMTU {
			return fieldErr(f+".mtu", "%d out of range %d..%d", s.MTU, MinMTU, MaxMTU)
		}
		if len(s.HostPort) > 15 {
			return fieldErr(f+".hostPort", "%q longer than 15 bytes", s.HostPort)
		}
		for _, r := range []struct {
			field string
			v     *uint32
		}{{".broadcastRate", s.BroadcastRate}, {".multicastRate", s.MulticastRate}} {
			if r.v != nil && *r.v > limits.MaxStormRate {
				return fieldErr(f+r.field, "%d frames/s, want 0 (no limit) to %d", *r.v, limits.MaxStormRate)
			}
		}
		if s.BatchSize < 0 || s.MaxPorts < 0 || s.FDBSize < 0 || s.FDBAging < 0 {
			return fieldErr(f, "batchSize, maxPorts, fdbSize and fdbAging must not be negative")
		}
		if s.HostPort != "" && hosts[s.HostPort] {
			return fieldErr(f+".hostPort", "%q is used twice", s.HostPort)
		}
		hosts[s.HostPort] = true
		rs, err := ipam.ParseRanges(s.Ranges)
		if err != nil {
			var fe *ipam.FieldError
			if errors.As(err, &fe) {
				return fieldErr(f+"."+fe.Field, "%q: %s", fe.Value, fe.Reason)
			}
			return fmt.Errorf("%w: %s.ranges: %w", ErrInvalidConfig, f, err)
		}
		// Each switch's host port routes its subnets: two switches cannot share addresses.
		for j, r := range rs {
			for _, o := range subnets {
				if r.Subnet.Overlaps(o.p) {
					return fieldErr(fmt.Sprintf("%s.ranges[%d].subnet", f, j), "%s overlaps %s of switch %s", r.Subnet, o.p, o.sw)
				}
			}
		}
		for _, r := range rs {
			subnets = append(subnets, struct {
				p  netip.Prefix
				sw string
			}{r.Subnet, s.Name})
		}
	}
	own := make([]netip.Prefix, 0, len(subnets))
	for _, s := range subnets {
		own = append(own, s.p)
	}
	if err := dataplane.ValidatePeers(peers, own); err != nil {
		return fmt.Errorf("%w: peers: %w", ErrInvalidConfig, err)
	}
	return nil
}

// switchRanges returns the parsed ranges of switch i (Validate has accepted them).
func (c *Config) switchRanges(i int) []ipam.Range {
	r, _ := ipam.ParseRanges(c.Switches[i].Ranges)
	return r
}

// Switch returns the configuration of the named switch ("" is the default one).
func (c *Config) Switch(name string) (*SwitchConfig, bool) {
	if name == "" {
		return &c.Switches[0], true
	}
	for i := range c.Switches {
		if c.Switches[i].Name == name {
			return &c.Switches[i], true
		}
	}
	return nil, false
}

func ptr[T any](v T) *T { return &v }

func netipPrefix(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }

// SetPodCIDRs makes the node's pod CIDRs (Node.spec.podCIDRs, one per family) the ranges
// of switch sw ("" is the default switch), as cluster mode does instead of configured
// ranges. Errors name "podCIDRs[i]".
func (c *Config) SetPodCIDRs(sw string, cidrs []string) error {
	s, ok := c.Switch(sw)
	if !ok {
		return fieldErr("switch", "unknown switch %q", sw)
	}
	if _, err := ipam.RangesFromPodCIDRs(cidrs); err != nil {
		var fe *ipam.FieldError
		if errors.As(err, &fe) {
			return fieldErr(fe.Field, "%q: %s", fe.Value, fe.Reason)
		}
		return fmt.Errorf("%w: podCIDRs: %w", ErrInvalidConfig, err)
	}
	s.Ranges = make([]ipam.RangeConfig, len(cidrs))
	for i, cidr := range cidrs {
		s.Ranges[i] = ipam.RangeConfig{Subnet: cidr}
	}
	return nil
}
