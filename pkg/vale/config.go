package vale

import (
	"fmt"
	"time"
)

// VALE's compile-time limits, kept as the defaults (netmap_kern.h of the
// 2016 era; SEEDS-SPEC §4.2).
const (
	// DefaultMaxPorts is NM_BDG_MAXPORTS.
	DefaultMaxPorts = 254
	// DefaultBatchSize is NM_BDG_BATCH: slots pulled from a source per pass.
	DefaultBatchSize = 1024
	// DefaultMaxFrame is the largest Ethernet frame without FCS at MTU 1500.
	DefaultMaxFrame = 1514
	// DefaultFDBSize is NM_BDG_HASH: entries in the forwarding table.
	DefaultFDBSize = 1024
	// DefaultAging is how long a learned address stays valid without
	// traffic (the Linux bridge default; VALE itself never ages).
	DefaultAging = 300 * time.Second
	// DefaultMaxSwitches is NM_BRIDGES.
	DefaultMaxSwitches = 8
)

// Allowed ranges. The upper bounds are what the data structures support:
// port indexes are uint16 with four values reserved (DstRefused, DstUnknown,
// DstBroadcast, DstDrop).
const (
	MinPorts      = 2
	MaxPortsHi    = 4096
	MinBatch      = 1
	MaxBatch      = 8192
	MinFrame      = 60 // ETHER_MIN_LEN without FCS
	MaxFrameHi    = 65535
	MinFDBSize    = 16
	MaxFDBSize    = 1 << 20
	MinAging      = time.Second
	MaxAging      = 24 * time.Hour
	MaxSwitchesHi = 1024
)

// Virtio-net header lengths a switch accepts (NETMAP_BDG_VNET_HDR): none,
// struct virtio_net_hdr, and struct virtio_net_hdr_mrg_rxbuf (the TAP's and
// AF_PACKET's choices).
const (
	VnetHdrNone   = 0
	VnetHdrLen    = 10
	VnetHdrMrgLen = 12
)

// Config is the per-switch configuration. Start from DefaultConfig, change
// fields, and let NewSwitch/CreateSwitch validate it.
type Config struct {
	// MaxPorts bounds the number of ports (VALE: 254). [2, 4096].
	MaxPorts int
	// BatchSize bounds the slots one forwarding pass pulls from a source
	// ring (VALE: 1024). [1, 8192].
	BatchSize int
	// MaxFrame is the largest frame forwarded, in bytes over all of its
	// fragments; longer frames are dropped and counted. [60, 65535].
	// Frames longer than one buffer travel as NS_MOREFRAG slot chains.
	MaxFrame int
	// FDBSize is the number of forwarding-table entries of the default
	// learning lookup; a power of two in [16, 1048576].
	FDBSize int
	// Aging is how long a learned entry lives without being refreshed.
	// 0 disables aging; otherwise [1s, 24h].
	Aging time.Duration
	// VnetHdrLen is the virtio-net header every frame of every port of
	// this switch starts with (0, 10 or 12): the switch forwards the header
	// and the frame as one unit (the lookup reads the Ethernet header after
	// it), so ports exchange GSO super-frames and partial checksums with
	// the kernel untouched. All ports must use this length; the switch
	// converts nothing. MaxFrame counts the header.
	VnetHdrLen int
	// KnownOnly makes every port known-only from the moment it is attached
	// (Switch.SetKnownOnly clears the mark of the ports that should get
	// unknown unicast), so no port of a switch whose ports are untrusted
	// receives unknown unicast between its attach and its owner's
	// SetKnownOnly. False is VALE's behaviour.
	KnownOnly bool
}

// DefaultConfig returns VALE's defaults.
func DefaultConfig() Config {
	return Config{
		MaxPorts:  DefaultMaxPorts,
		BatchSize: DefaultBatchSize,
		MaxFrame:  DefaultMaxFrame,
		FDBSize:   DefaultFDBSize,
		Aging:     DefaultAging,
	}
}

// Validate checks every field and names the first bad one with its
// allowed values. The error wraps ErrInvalid (EINVAL).
func (c Config) Validate() error {
	switch {
	case c.MaxPorts < MinPorts || c.MaxPorts > MaxPortsHi:
		return fmt.Errorf("validate config: max ports %d not in [%d, %d]: %w", c.MaxPorts, MinPorts, MaxPortsHi, ErrInvalid)
	case c.BatchSize < MinBatch || c.BatchSize > MaxBatch:
		return fmt.Errorf("validate config: batch size %d not in [%d, %d]: %w", c.BatchSize, MinBatch, MaxBatch, ErrInvalid)
	case c.MaxFrame < MinFrame || c.MaxFrame > MaxFrameHi:
		return fmt.Errorf("validate config: max frame %d not in [%d, %d]: %w", c.MaxFrame, MinFrame, MaxFrameHi, ErrInvalid)
	case c.FDBSize < MinFDBSize || c.FDBSize > MaxFDBSize || c.FDBSize&(c.FDBSize-1) != 0:
		return fmt.Errorf("validate config: fdb size %d is not a power of two in [%d, %d]: %w", c.FDBSize, MinFDBSize, MaxFDBSize, ErrInvalid)
	case c.VnetHdrLen != VnetHdrNone && c.VnetHdrLen != VnetHdrLen && c.VnetHdrLen != VnetHdrMrgLen:
		return fmt.Errorf("validate config: vnet header length %d is not %d, %d or %d: %w", c.VnetHdrLen, VnetHdrNone, VnetHdrLen, VnetHdrMrgLen, ErrInvalid)
	case c.Aging != 0 && (c.Aging < MinAging || c.Aging > MaxAging):
		return fmt.Errorf("validate config: aging %v is neither 0 (off) nor in [%v, %v]: %w", c.Aging, MinAging, MaxAging, ErrInvalid)
	}
	return nil
}
