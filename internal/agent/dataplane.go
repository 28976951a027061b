package agent

import (
	"context"

	"github.com/epair-cni/epair/pkg/agentapi"
)

// Dataplane is what the agent needs from the switches: the single owner of switches and
// ports (internal/dataplane). The agent decides which link goes on which switch and records
// it; the dataplane opens, forwards and closes.
type Dataplane interface {
	// AttachPort opens the host link as a port of the switch and returns its state. Attaching
	// a link that is already a port of that switch returns the existing port.
	AttachPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error)
	// DetachPort closes the port of the host link; detaching an unknown link succeeds.
	DetachPort(sw, hostIfName string) error
	// Port returns the port of a host link, if attached.
	Port(sw, hostIfName string) (agentapi.PortInfo, bool)
	agentapi.Inspector
	// Close detaches every port and removes what the dataplane put on the node (host ports,
	// nftables rules). Pod links are not touched.
	Close() error
}

// PortRequest asks for a pod's host link on a switch.
type PortRequest struct {
	Switch      string
	HostIfName  string
	HostIfIndex int
	// Owner is "containerID/ifName", shown by valectl.
	Owner string
	// PodMAC is the pod end's MAC (may be empty): a dataplane may pin it in the FDB.
	PodMAC string
}
