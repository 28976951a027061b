package agent

import (
	"context"
	"net/netip"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// Dataplane is what the agent needs from the switches: the single owner of switches and
// ports (internal/dataplane). The agent decides which link goes on which switch and records
// it; the dataplane opens, forwards and closes.
type Dataplane interface {
	// AttachPort opens the host link as a port of the switch and returns its state. Attaching
	// a link that is already a port of that switch returns the existing port.
	AttachPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error)
	// AdoptPort re-attaches a running pod's host link after a restart, checking that the
	// link's alias records req.Owner; the link is not touched.
	AdoptPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error)
	// DetachPort closes the port of the host link; detaching an unknown link succeeds.
	DetachPort(sw, hostIfName string) error
	// SetPortPolicy changes the live port's policy (output queue, port security, mirror).
	SetPortPolicy(sw, hostIfName string, pol dataplane.PortPolicy) error
	// AddSwitch creates a switch and its host port while running; RemoveSwitch detaches
	// its ports (pod links are not touched) and removes it with its host port.
	AddSwitch(sc SwitchConfig) error
	RemoveSwitch(ctx context.Context, name string) error
	// Capture starts a capture of a switch port ("<switch>:<port>").
	Capture(port string, o dataplane.CaptureOptions) (*dataplane.Capture, error)
	// Trace says what the switch would do with a described frame from a port, without
	// sending it (dataplane.Dataplane.Trace).
	Trace(req dataplane.TraceRequest) (dataplane.TraceResult, error)
	// Peers is the peers' state (dataplane.Dataplane.Peers); SetPeers replaces them.
	Peers() []dataplane.PeerState
	SetPeers(ctx context.Context, peers []dataplane.Peer) ([]dataplane.PeerState, error)
	// TunnelStats are the VXLAN device's counters (false: no device).
	TunnelStats() (dataplane.TunnelStats, bool)
	// Port returns the port of a host link, if attached.
	Port(sw, hostIfName string) (agentapi.PortInfo, bool)
	// AnnounceGateways has the host ports announce the pods' gateways (gratuitous ARP,
	// unsolicited neighbor advertisement), after a restart's adoptions.
	AnnounceGateways() error
	// ServeAppPorts serves the netmap application ports of the pod whose port is host
	// link hostIfName on switch sw, in the pod's network namespace netns (ifName: the
	// pod's interface, which it may monitor); they go with the port.
	ServeAppPorts(sw, hostIfName, netns, ifName string, ports []dataplane.AppPort) error
	agentapi.Inspector
	// Close detaches every port and removes the host ports; with uninstall it also removes
	// the nftables rules (kept across restarts for established masqueraded flows). Pod links
	// are not touched.
	Close(uninstall bool) error
}

// PortRequest asks for a pod's host link on a switch.
type PortRequest struct {
	Switch      string
	HostIfName  string
	HostIfIndex int
	// Owner is the owner recorded in the link's alias (epair.OwnerKey: network,
	// container, ifname); the dataplane keys ports by it and valectl shows it.
	Owner string
	// PodMAC is the pod end's MAC: the dataplane pins it in the switch's FDB (pod ports are
	// never learned from) and anti-spoofing holds the pod to it.
	PodMAC string
	// PodIPs are the attachment's addresses. With PodMAC they are the pod's identity
	// that anti-spoofing enforces.
	PodIPs []netip.Addr
	// Pod is "namespace/name" of the pod behind the port ("" when the runtime did not
	// name it), shown with the port.
	Pod string
	// Policy is the port's effective policy: the switch's default, with the pod's
	// PortPolicy over it in cluster mode (Agent.policyOf).
	Policy dataplane.PortPolicy
}
