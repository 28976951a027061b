package dataplane

import (
	"golang.org/x/sys/unix"

	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/epair-cni/epair/pkg/ifcore"
	"github.com/epair-cni/epair/pkg/limits"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

// Limits of the dataplane's own settings (the switch limits are vale's).
const (
	// DefaultMTU is the pod network MTU when a switch leaves it at 0.
	DefaultMTU = limits.DefaultMTU
	// MinMTU and MaxMTU bound SwitchConfig.MTU: the IPv4 minimum, and jumbo
	// frames on an offload switch; a plain switch takes up to MaxPlainMTU, the
	// largest MTU whose frames (plus an Ethernet header and a VLAN tag) fit in
	// one 4096-byte buffer of the AF_XDP/AF_PACKET ring backends.
	MinMTU      = limits.MinMTU
	MaxMTU      = limits.MaxMTU
	MaxPlainMTU = limits.MaxPlainMTU
	// DefaultQueueLen is the output queue length of a port when its policy
	// leaves it at 0 (DragonFly's IFQ_MAXLEN of 50 is far too short for a
	// software switch draining batches of 64).
	DefaultQueueLen = limits.DefaultQueueLen
	// MaxQueueLen bounds PortPolicy.QueueLen.
	MaxQueueLen = 65536
	// DefaultRxSpin is Config.RxSpin's default: sockperf ping-pong p50 through the switch
	// 73-111 µs -> 32 µs on 2 vCPUs (BENCHMARKS.md), with TCP and UDP throughput unchanged.
	DefaultRxSpin = 100 * time.Microsecond
	// MaxRxSpin bounds Config.RxSpin.
	MaxRxSpin = 10 * time.Millisecond
	// DefaultRingSlots is the slot count of every port's netmap rings and
	// DefaultXDPFrames the UMEM size of a pod link's AF_XDP socket when
	// Config leaves them at 0: pkg/limits', the agent's too. A generic
	// adapter holds four rings' worth of buffers (2 KiB each); a switch pass
	// takes at most a ring's worth of frames from one port before the next
	// port's turn anyway.
	DefaultRingSlots = limits.DefaultRingSlots
	DefaultXDPFrames = limits.DefaultXDPFrames
	// DefaultRingPool is Config.RingPool's default: enough for the pods a node
	// starts at once in the common case; a burst beyond it sets the rest up
	// in its ADDs.
	DefaultRingPool = 4
	// DefaultBurst is how much of its rate a token bucket holds when the
	// policy sets no burst. ifcore's own default (10 ms) loses tokens
	// whenever the goroutine that drains the queue waits longer than that
	// for a CPU, which on a loaded node it does (on the 2-vCPU test machine
	// at a load average of 10, 50 ms still lost a quarter of the rate):
	// 100 ms keeps the long-run rate exact there, at the cost of a burst of
	// that length after idle.
	DefaultBurst = 100 * time.Millisecond
	// MaxPriority is the lowest priority class (0 is served first).
	MaxPriority = ifcore.PrioClassBands - 1

	// MaxStormRate bounds PortPolicy.BroadcastRate and MulticastRate
	// (frames per second).
	MaxStormRate = limits.MaxStormRate

	etherVLANHeader = 14 + 4
)

// Config configures a Dataplane. Start from DefaultConfig, set the
// switches, and let New validate it.
type Config struct {
	// NetNS is the path of the network namespace the dataplane works in
	// (the host namespace of the pods' veths, where the TAP host ports and
	// the nft table go). Empty means the namespace of the calling thread.
	NetNS string
	// Switches are created by New; at least one. More can be added, and
	// any removed, at run time (Dataplane.AddSwitch, RemoveSwitch).
	Switches []SwitchConfig
	// Peers are the other nodes of the pod network: their pod CIDRs are routed to their
	// addresses and not masqueraded (Dataplane.SetPeers changes them at run time).
	Peers []Peer
	// PeerMode is how peers are reached: ModeAuto ("" too: routed to the peers on a subnet
	// of this node, VXLAN to the others), ModeRouted or ModeVXLAN.
	PeerMode string
	// VXLANPort, VXLANID and VXLANDevice are the VXLAN tunnel's UDP port, VNI and device
	// name (0, "": DefaultVXLANPort, DefaultVXLANID, DefaultVXLANDevice); VXLANMTU its MTU
	// (0: the kernel's, the underlay's minus the VXLAN overhead).
	VXLANPort   int
	VXLANID     int
	VXLANDevice string
	VXLANMTU    int
	// Backend selects how pod links are opened (linkport.Auto: AF_XDP with
	// fallback to AF_PACKET; XDP, Packet or Ringless force one).
	Backend linkport.Backend
	// DirectOpen opens a pod link with its AF_XDP socket inside AttachPort.
	// By default (false) a pod port with backend Auto or XDP starts on a
	// ring-less AF_PACKET socket, which opens in well under a millisecond,
	// and is moved to AF_XDP in the background without stopping traffic
	// (linkport.Options.FastStart): attaching AF_XDP to a veth costs 10–40 ms
	// under the kernel's RTNL lock, which would otherwise be part of every
	// pod's CNI ADD. The background upgrades run one at a time, in a quiet
	// moment (UpgradeQuiet without an attach or detach starting) or after
	// UpgradeMaxDelay at the latest.
	DirectOpen bool
	// UpgradeQuiet and UpgradeMaxDelay time the background upgrades (0:
	// DefaultUpgradeQuiet, DefaultUpgradeMaxDelay).
	UpgradeQuiet    time.Duration
	UpgradeMaxDelay time.Duration
	// RingPool is how many offload sockets, their receive rings set up, are
	// kept ready for pod ports (linkport.RingPool), so that setting a ring
	// up (an RCU grace period, 10–40 ms on a busy node) is not part of a
	// pod's CNI ADD: 0 means DefaultRingPool, negative none.
	RingPool int
	// FastPath moves the known-unicast frames between the pods of an offload switch
	// in the kernel (pkg/fastpath): a tc program on each pod port's host-side veth
	// hands a frame from the pod's own MAC and address to the destination pod's
	// interface, and the switch's socket never sees it. The rest (broadcast, ARP,
	// neighbour discovery, unknown destinations, spoofed sources, the host port, and
	// ports under a mirror, a capture or a shaping queue) crosses the switch as
	// without it. Needs tcx (Linux 6.6).
	FastPath bool
	// FastPathError, if set, makes the fast path optional: when it cannot start, New
	// tells it why and goes on without it (nil: New fails).
	FastPathError func(error) `json:"-"`
	// RingPoolError, if set, is told when the pool starts failing to prepare
	// sockets (the ports then set their rings up themselves).
	RingPoolError func(error) `json:"-"`
	// Link sizes the AF_XDP and AF_PACKET sockets of pod links (zero
	// fields take the backends' defaults; Link.Backend is ignored, Backend
	// decides).
	Link linkport.Options
	// Workers is the number of netisr workers of the output queues
	// (0: one per CPU).
	Workers int
	// RingSlots is the slot count of each port's netmap rings (0:
	// DefaultRingSlots); a power of two in [64, 8192].
	RingSlots int
	// RxSpin is how long a pod port or host port keeps looking for frames after
	// traffic before it sleeps in the poller (0: DefaultRxSpin; negative: never),
	// giving its CPU away between looks (sched_yield), so that the pods it shares the
	// CPUs with are not held up: a frame that follows the last one within it is
	// forwarded without a wake-up. At most MaxRxSpin. An idle port costs nothing.
	RxSpin time.Duration
	// DefaultPolicy is the output queue policy of a port attached without
	// one.
	DefaultPolicy PortPolicy
	// Masquerade installs an nftables table "epair" that masquerades
	// traffic from the switches' pod CIDRs leaving the pod network, and
	// hairpin traffic (a pod reaching itself through a DNATed service
	// address).
	Masquerade bool
	// NFTTable names the nftables table (default "epair").
	NFTTable string
}

// SwitchConfig describes one switch and its host port.
type SwitchConfig struct {
	// Name is the VALE switch name ("vale0").
	Name string
	// MTU of the pod network on this switch (0: DefaultMTU); the switch
	// forwards frames up to MTU plus an Ethernet header and a VLAN tag.
	MTU int
	// BatchSize, MaxPorts, FDBSize and Aging are the switch's VALE limits;
	// zero takes vale's defaults (1024, 254, 1024, 300 s).
	BatchSize int
	MaxPorts  int
	FDBSize   int
	Aging     time.Duration
	// HostPort connects the switch to the node's network stack.
	HostPort HostPortConfig
	// Offload makes every port of the switch carry the 10-byte virtio-net
	// header: pod links are opened as AF_PACKET with PACKET_VNET_HDR (no
	// rings, no XDP), the TAP host port with IFF_VNET_HDR, and the pods keep
	// TSO and checksum offload, so 64 KB TCP super-frames cross the switch
	// whole (as netmap slot chains) and partial checksums are completed by
	// the kernel only where a device needs it. Policies, anti-spoofing and
	// mirroring work as on a plain switch; the output queues keep
	// super-frames in 64 KiB buffers (at most OffloadBigBufs per port).
	// Frames up to 64 KB cross the switch; the pods' MTU is still MTU.
	Offload bool
}

// HostPortConfig describes a switch's TAP host port.
type HostPortConfig struct {
	// Name of the TAP device (default "ep" + switch name, when that fits
	// in 15 bytes).
	Name string
	// MAC of the TAP (nil: the kernel picks one).
	MAC net.HardwareAddr
	// Gateways are the pod gateway addresses with the pod CIDR's prefix
	// length (10.244.1.1/24, fd00:10:244:1::1/64): pods reach the node
	// through them.
	Gateways []netip.Prefix
	// PodCIDRs are routed to the TAP (a gateway's own prefix is already
	// routed by the kernel). They are also what masquerading treats as the
	// pod network.
	PodCIDRs []netip.Prefix
}

// Discipline is the queueing discipline of a port's output queue.
type Discipline = ifcore.DisciplineKind

// The disciplines (ifcore's).
const (
	DiscClassic   = ifcore.DiscClassic
	DiscPrioClass = ifcore.DiscPrioClass
	DiscFair      = ifcore.DiscFair
)

// PortPolicy is the output queueing and filtering of one port: what the
// Kubernetes PortPolicy resource sets. The zero value is a classic FIFO of
// DefaultQueueLen frames without rate limit.
type PortPolicy struct {
	// Discipline of the output queue (classic, priority classes, fair).
	Discipline Discipline
	// QueueLen is the output queue length in frames (0: DefaultQueueLen).
	QueueLen int
	// Priority is the class [0, MaxPriority] given to the frames this port
	// sends, used by the DiscPrioClass queues of the ports they go to
	// (0 is served first; the classic discipline treats 0 as its priority
	// FIFO only when Priority is explicitly marked with PriorityFIFO).
	Priority uint8
	// PriorityFIFO puts this port's frames on the classic discipline's
	// priority FIFO of the ports they go to.
	PriorityFIFO bool
	// RateBitsPerSec and RatePktsPerSec limit what leaves the queue toward
	// the pod (0: that dimension unlimited; both 0: no limit).
	RateBitsPerSec uint64
	RatePktsPerSec uint64
	// BurstBytes and BurstPkts size the token buckets (0: DefaultBurst
	// worth of the rate).
	BurstBytes int
	BurstPkts  int
	// AllowSpoofing turns anti-spoofing off for the port: by default (false)
	// the frames the pod sends with another source MAC or address than its
	// own (AttachRequest.PodMAC, PodIPs) are refused and counted in
	// PortInfo.Refused (see spoof.go for the exact rules). It is for pods
	// that legitimately send from other addresses; they still cannot take
	// another port's MAC (pod ports never learn, see spoof.go).
	AllowSpoofing bool
	// BroadcastRate and MulticastRate limit the broadcast and the other
	// group-addressed frames the pod sends, in frames per second (0: no
	// limit), with a burst of 100 ms worth (at least 16): storm control.
	// Frames over the limit are refused (PortInfo.Refused[RefusedStorm]).
	BroadcastRate uint32
	MulticastRate uint32
	// Mirror copies the port's frames to a monitor port (zero: none).
	Mirror Mirror
}

// Mirror names a monitor port and the directions copied to it.
//
// Monitor is a port of the pod's switch by its name in the switch (the part
// after ':'): "mon0" is "vale0:mon0" on switch vale0, for example a
// persistent VALE port made with valectl or an ephemeral one a capture tool
// opens through netmap, or another pod's host link. It must not be the port
// itself nor the switch's host port, and need not exist yet: copies for a
// monitor that is absent or not open are dropped and counted on the switch
// (no-destination), and a full monitor ring drops them too (queue-full on the
// monitor); the mirrored port is never slowed down.
//
// RX copies what the pod sends (every frame the switch receives from it,
// anti-spoofing drops included); TX copies what the switch hands to the pod's
// output queue (frames the queue accepted).
type Mirror struct {
	Monitor string
	RX, TX  bool
}

func (m Mirror) on() bool { return m.RX || m.TX }

func (m Mirror) vale() *vale.Mirror {
	if !m.on() {
		return nil
	}
	return &vale.Mirror{Monitor: m.Monitor, RX: m.RX, TX: m.TX}
}

// DefaultConfig returns a configuration without switches.
func DefaultConfig() Config {
	return Config{Backend: linkport.Auto, RingSlots: DefaultRingSlots, NFTTable: "epair"}
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if len(c.Switches) == 0 {
		return fmt.Errorf("validate config: switches: at least one is required: %w", ErrInvalid)
	}
	switch c.Backend {
	case linkport.Auto, linkport.XDP, linkport.Packet, linkport.Ringless:
	default:
		return fmt.Errorf("validate config: backend %d: want auto, xdp, packet or ringless: %w", c.Backend, ErrInvalid)
	}
	if c.RxSpin > MaxRxSpin {
		return fmt.Errorf("validate config: rxSpin %v: want at most %v (negative: off): %w", c.RxSpin, MaxRxSpin, ErrInvalid)
	}
	if c.UpgradeQuiet < 0 || c.UpgradeQuiet > time.Minute {
		return fmt.Errorf("validate config: upgradeQuiet %v: want 0 to 1m: %w", c.UpgradeQuiet, ErrInvalid)
	}
	if c.UpgradeMaxDelay < 0 || c.UpgradeMaxDelay > time.Hour {
		return fmt.Errorf("validate config: upgradeMaxDelay %v: want 0 to 1h: %w", c.UpgradeMaxDelay, ErrInvalid)
	}
	if c.Workers < 0 || c.Workers > 1024 {
		return fmt.Errorf("validate config: workers %d: want 0 (one per CPU) to 1024: %w", c.Workers, ErrInvalid)
	}
	if c.RingSlots != 0 && (c.RingSlots < 64 || c.RingSlots > 8192 || c.RingSlots&(c.RingSlots-1) != 0) {
		return fmt.Errorf("validate config: ringSlots %d: want 0 or a power of two in [64, 8192]: %w", c.RingSlots, ErrInvalid)
	}
	if c.RingPool > linkport.MaxRingPool {
		return fmt.Errorf("validate config: ringPool %d: want at most %d: %w", c.RingPool, linkport.MaxRingPool, ErrInvalid)
	}
	switch c.PeerMode {
	case "", ModeAuto, ModeRouted, ModeVXLAN:
	default:
		return fmt.Errorf("validate config: peerMode %q: want auto, routed or vxlan: %w", c.PeerMode, ErrInvalid)
	}
	if c.VXLANPort < 0 || c.VXLANPort > 65535 || c.VXLANID < 0 || c.VXLANID > 1<<24-1 || c.VXLANMTU < 0 || len(c.VXLANDevice) > 15 {
		return fmt.Errorf("validate config: vxlan port %d, VNI %d, MTU %d, device %q: want a port 0-65535, a VNI 0-16777215, an MTU ≥ 0 and a name of at most 15 bytes: %w",
			c.VXLANPort, c.VXLANID, c.VXLANMTU, c.VXLANDevice, ErrInvalid)
	}
	if c.NFTTable != "" && !validNFTName(c.NFTTable) {
		return fmt.Errorf("validate config: nftTable %q: want 1-32 letters, digits, '_' or '-': %w", c.NFTTable, ErrInvalid)
	}
	if err := c.DefaultPolicy.Validate(); err != nil {
		return fmt.Errorf("validate config: defaultPolicy: %w", err)
	}
	seenSw, seenTap := map[string]bool{}, map[string]bool{}
	for i := range c.Switches {
		s := &c.Switches[i]
		if err := c.validateSwitch(s); err != nil {
			return fmt.Errorf("validate config: switches[%d]: %w", i, err)
		}
		if seenSw[s.Name] {
			return fmt.Errorf("validate config: switches[%d]: name %q used twice: %w", i, s.Name, ErrInvalid)
		}
		seenSw[s.Name] = true
		tap := s.HostPort.tapName(s.Name)
		if seenTap[tap] {
			return fmt.Errorf("validate config: switches[%d]: hostPort.name %q used twice: %w", i, tap, ErrInvalid)
		}
		seenTap[tap] = true
	}
	return nil
}

// validateSwitch checks one switch for this configuration: its own fields
// (SwitchConfig.Validate) and what the backend allows. Validate runs it on
// every configured switch, AddSwitch on a switch added at run time; the
// checks against the other switches (name, host port name) are the
// callers'.
func (c *Config) validateSwitch(s *SwitchConfig) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Offload && c.Backend != linkport.Auto && c.Backend != linkport.Packet {
		return fmt.Errorf("switch %s: offload: its ports are AF_PACKET with virtio-net headers, and backend %s forces another: %w", s.Name, c.Backend, ErrInvalid)
	}
	return nil
}

func validNFTName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Validate checks a switch configuration.
func (s *SwitchConfig) Validate() error {
	if err := vale.ValidateSwitchName(s.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if s.MTU != 0 && (s.MTU < MinMTU || s.MTU > MaxMTU) {
		return fmt.Errorf("switch %s: mtu %d: want 0 (%d) or [%d, %d]: %w", s.Name, s.MTU, DefaultMTU, MinMTU, MaxMTU, ErrInvalid)
	}
	if !s.Offload && s.MTU > MaxPlainMTU {
		return fmt.Errorf("switch %s: mtu %d: a plain switch takes up to %d (its AF_XDP ports hold a frame in one 4 KiB buffer); an offload switch up to %d: %w", s.Name, s.MTU, MaxPlainMTU, MaxMTU, ErrInvalid)
	}
	if _, err := s.valeConfig(); err != nil {
		return fmt.Errorf("switch %s: %w", s.Name, err)
	}
	tap := s.HostPort.tapName(s.Name)
	if len(tap) == 0 || len(tap) > 15 {
		return fmt.Errorf("switch %s: hostPort.name %q: want 1-15 bytes (set it when \"ep\"+switch name is longer): %w", s.Name, tap, ErrInvalid)
	}
	if m := s.HostPort.MAC; m != nil && (len(m) != 6 || m[0]&1 != 0) {
		return fmt.Errorf("switch %s: hostPort.mac %v: want a 6-byte unicast address: %w", s.Name, m, ErrInvalid)
	}
	for i, g := range s.HostPort.Gateways {
		if !g.IsValid() || g.Addr().IsUnspecified() || g.Addr().IsMulticast() || g.Bits() == g.Addr().BitLen() {
			return fmt.Errorf("switch %s: hostPort.gateways[%d] %v: want a unicast address with the pod CIDR's prefix length: %w", s.Name, i, g, ErrInvalid)
		}
	}
	for i, p := range s.HostPort.PodCIDRs {
		if !p.IsValid() || p.Masked() != p {
			return fmt.Errorf("switch %s: hostPort.podCIDRs[%d] %v: want a network prefix (host bits zero): %w", s.Name, i, p, ErrInvalid)
		}
	}
	return nil
}

func (h HostPortConfig) tapName(sw string) string {
	if h.Name != "" {
		return h.Name
	}
	return "ep" + sw
}

func (s *SwitchConfig) mtu() int {
	if s.MTU == 0 {
		return DefaultMTU
	}
	return s.MTU
}

// valeConfig is the switch's VALE configuration.
func (s *SwitchConfig) valeConfig() (vale.Config, error) {
	vc := vale.DefaultConfig()
	if s.BatchSize != 0 {
		vc.BatchSize = s.BatchSize
	}
	if s.MaxPorts != 0 {
		vc.MaxPorts = s.MaxPorts
	}
	if s.FDBSize != 0 {
		vc.FDBSize = s.FDBSize
	}
	if s.Aging != 0 {
		vc.Aging = s.Aging
	}
	vc.MaxFrame = s.mtu() + etherVLANHeader
	// Pod ports never receive unknown unicast, from their attach on (the
	// host port's mark is cleared when it is attached).
	vc.KnownOnly = true
	if s.Offload {
		vc.VnetHdrLen = linkport.OffloadHdrLen
		vc.MaxFrame = vale.MaxFrameHi
	}
	if err := vc.Validate(); err != nil {
		return vc, err
	}
	return vc, nil
}

// Validate checks a port policy.
func (p PortPolicy) Validate() error {
	switch p.Discipline {
	case DiscClassic, DiscPrioClass, DiscFair:
	default:
		return fmt.Errorf("validate port policy: discipline %d: want classic, prioclass or fair: %w", p.Discipline, ErrInvalid)
	}
	if p.QueueLen < 0 || p.QueueLen > MaxQueueLen {
		return fmt.Errorf("validate port policy: queueLen %d: want 0 (%d) to %d: %w", p.QueueLen, DefaultQueueLen, MaxQueueLen, ErrInvalid)
	}
	if p.Priority > MaxPriority {
		return fmt.Errorf("validate port policy: priority %d: want 0 to %d: %w", p.Priority, MaxPriority, ErrInvalid)
	}
	if p.BurstBytes < 0 || p.BurstPkts < 0 {
		return fmt.Errorf("validate port policy: burst %d bytes / %d packets: must not be negative: %w", p.BurstBytes, p.BurstPkts, ErrInvalid)
	}
	if (p.BurstBytes != 0 && p.RateBitsPerSec == 0) || (p.BurstPkts != 0 && p.RatePktsPerSec == 0) {
		return fmt.Errorf("validate port policy: a burst is set without its rate: %w", ErrInvalid)
	}
	if p.BroadcastRate > MaxStormRate || p.MulticastRate > MaxStormRate {
		return fmt.Errorf("validate port policy: broadcastRate %d / multicastRate %d: want 0 (no limit) to %d frames/s: %w", p.BroadcastRate, p.MulticastRate, MaxStormRate, ErrInvalid)
	}
	if m := p.Mirror; m.on() || m.Monitor != "" {
		if !m.on() {
			return fmt.Errorf("validate port policy: mirror to %q: want rx, tx or both: %w", m.Monitor, ErrInvalid)
		}
		if m.Monitor == "" || len(m.Monitor) > 63 || strings.ContainsAny(m.Monitor, ":{}^ /") {
			return fmt.Errorf("validate port policy: mirror monitor %q: want a port name of the switch (1-63 bytes, no ':'): %w", m.Monitor, ErrInvalid)
		}
	}
	return nil
}

func (p PortPolicy) queueLen() int {
	if p.QueueLen == 0 {
		return DefaultQueueLen
	}
	return p.QueueLen
}

// rxSpin is the netmap generic adapters' RX spin and how they yield.
func (c *Config) rxSpin() (time.Duration, func()) {
	switch {
	case c.RxSpin < 0:
		return 0, nil
	case c.RxSpin == 0:
		return DefaultRxSpin, schedYield
	}
	return c.RxSpin, schedYield
}

// schedYield gives the calling thread's CPU to another runnable thread (EEVDF moves
// it behind them), so that polling does not hold up the thread it waits for.
func schedYield() { unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

// rate is the ifcore regulator setting, nil for none.
func (p PortPolicy) rate() *ifcore.Rate {
	if p.RateBitsPerSec == 0 && p.RatePktsPerSec == 0 {
		return nil
	}
	r := &ifcore.Rate{BitsPerSec: p.RateBitsPerSec, PktsPerSec: p.RatePktsPerSec, BurstBytes: p.BurstBytes, BurstPkts: p.BurstPkts}
	if r.BitsPerSec > 0 && r.BurstBytes == 0 {
		r.BurstBytes = int(max(float64(r.BitsPerSec)/8*DefaultBurst.Seconds(), 2*1518))
	}
	if r.PktsPerSec > 0 && r.BurstPkts == 0 {
		r.BurstPkts = int(max(float64(r.PktsPerSec)*DefaultBurst.Seconds(), 2))
	}
	return r
}
