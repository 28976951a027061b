package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/types"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
)

// Dataplane is what the controllers drive on their node. The node agent
// implements it over internal/dataplane (switches, ports, SetPortPolicy) and
// internal/ipam; tests use a recording double. Every method is idempotent:
// applying the same configuration twice is not an error, and deleting or
// clearing what does not exist succeeds.
type Dataplane interface {
	// SetPodCIDRs gives IPAM the node's pod CIDRs (from Node.spec.podCIDRs).
	SetPodCIDRs(ctx context.Context, cidrs []netip.Prefix) error
	// SetNodeAddresses gives the node's own addresses (its InternalIPs), before
	// SetPodCIDRs: the interface holding them sets a detected MTU.
	SetNodeAddresses(ctx context.Context, addrs []netip.Addr) error
	// ApplySwitch creates the switch cfg.Name or changes a running one to cfg.
	ApplySwitch(ctx context.Context, cfg SwitchConfig) error
	// DeleteSwitch removes the switch (and detaches its ports).
	DeleteSwitch(ctx context.Context, name string) error
	// ApplyPortPolicy changes the live port of pod to p without restarting
	// the pod. It returns an error wrapping ErrNoPort when the pod has no
	// port on this node (yet); the agent then calls Controller.PortAttached
	// when the port appears, or asks Controller.PolicyFor at attach time.
	ApplyPortPolicy(ctx context.Context, pod PodRef, p PolicyConfig) error
	// ClearPortPolicy returns pod's port to its switch's default queue.
	ClearPortPolicy(ctx context.Context, pod PodRef) error
	// Status reads the switches, ports, drops by reason and queue depths.
	Status(ctx context.Context) (Snapshot, error)
	// Ready reports whether the dataplane can serve CNI requests
	// (plugin socket listening, IPAM open).
	Ready() bool
	// SetPeers makes peers (every other node, from the Node objects) the node's whole
	// set of peers: routes to the new ones, none to the ones gone.
	SetPeers(ctx context.Context, peers []PeerConfig) error
}

// ErrNoPort is returned (wrapped) by Dataplane.ApplyPortPolicy when the pod
// has no port on this node.
var ErrNoPort = errors.New("pod has no port on this node")

// PodRef names a pod. UID tells a re-created pod of the same name apart.
type PodRef struct {
	Namespace string
	Name      string
	UID       types.UID
}

func (p PodRef) String() string { return p.Namespace + "/" + p.Name }

// SwitchConfig is a VirtualSwitch resolved for one node: defaults applied,
// quantities converted, validated.
type SwitchConfig struct {
	Name string
	// Generation of the VirtualSwitch this was made from.
	Generation int64
	// MTU of the switch's ports and pods; 0: detected by the node (see VirtualSwitch).
	MTU       int
	BatchSize int
	MaxPorts  int
	FDBSize   int
	// FDBAging is 0 when aging is off.
	FDBAging     time.Duration
	DefaultQueue QueueConfig
	// Offload is the VirtualSwitch's deprecated spec.offload (nil: not set); every switch
	// is an offload switch whatever it says.
	Offload *bool
	// PortSecurity is the pod ports' default port security.
	PortSecurity PortSecurityConfig
	// PodCIDRs are the switch's own pod ranges (VirtualSwitch spec.podCIDRs),
	// parsed and canonical, at most one IPv4 and one IPv6 prefix in the
	// spec's order; nil when the spec has none. The conflist's switch has none
	// (its range is the node's, Dataplane.SetPodCIDRs); every other switch is
	// a secondary network that needs them. Which switch may or must have them
	// is the Dataplane's to check.
	PodCIDRs []netip.Prefix
}

// PortSecurityConfig is what pods may send: anti-spoofing on or off, and the storm
// control limits in frames per second (0: no limit).
type PortSecurityConfig struct {
	AntiSpoofing  bool
	BroadcastRate int64
	MulticastRate int64
}

// QueueConfig is an output queue.
type QueueConfig struct {
	// Length in packets.
	Length     int
	Discipline epairv1.Discipline
	// RateBPS is in bits per second; 0 is unlimited.
	RateBPS int64
}

// PolicyConfig is a PortPolicy resolved for one port.
type PolicyConfig struct {
	// Policy is "namespace/name" of the PortPolicy, for status and events.
	Policy string
	// Priority is the class, 0 (critical) … 3 (low).
	Priority int
	// Discipline is "" to keep the switch's default discipline.
	Discipline epairv1.Discipline
	// RateBPS (bits/s) and BurstBytes: 0 is unlimited.
	RateBPS    int64
	BurstBytes int64
	// PacketRate (packets/s) and PacketBurst: 0 is unlimited.
	PacketRate  int64
	PacketBurst int64
	// QueueLength in packets; 0 keeps the switch's default.
	QueueLength int
	// Mirror is nil when frames are not mirrored.
	Mirror *MirrorConfig
	// AntiSpoofing, BroadcastRate and MulticastRate override the switch's port security;
	// nil keeps the switch's.
	AntiSpoofing  *bool
	BroadcastRate *int64
	MulticastRate *int64
}

// MirrorConfig copies a port's frames to a monitor port.
type MirrorConfig struct {
	Monitor string
	RX, TX  bool
}

// Snapshot is the dataplane's state as the per-node status object reports it.
type Snapshot struct {
	Switches []epairv1.SwitchState
	Ports    []epairv1.PortState
	// Drops by reason over the whole node (switch-level drops such as
	// "no-destination" and the sum of the ports' drops).
	Drops []epairv1.DropCount
	// Peers are the other nodes as the dataplane reaches them.
	Peers []epairv1.PeerState
}

// FieldError is a rejected field of a spec, with the allowed values.
type FieldError struct {
	Field   string
	Value   string
	Allowed string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid %s %q: want %s", e.Field, e.Value, e.Allowed)
}

// ErrInvalidSpec is wrapped by every conversion error.
var ErrInvalidSpec = errors.New("invalid spec")

func (e *FieldError) Unwrap() error { return ErrInvalidSpec }
