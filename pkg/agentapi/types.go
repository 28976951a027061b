package agentapi

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/epair-cni/epair/pkg/limits"
)

// Version is the API version; every endpoint lives under "/" + Version.
const Version = "v1"

// Endpoint paths.
const (
	PathAllocate    = "/v1/attachments/allocate"
	PathAttach      = "/v1/attachments/attach"
	PathRelease     = "/v1/attachments/release"
	PathCheck       = "/v1/attachments/check"
	PathAttachments = "/v1/attachments"
	PathGC          = "/v1/gc"
	PathStatus      = "/v1/status"
	PathHealthz     = "/healthz"
	PathReadyz      = "/readyz"
)

// Interface is what the node agent implements and NewServer dispatches to. Requests reaching
// a method have passed their Validate. Methods return *Error (or anything wrapping one) to
// choose the code the plugin sees; any other error is reported as CodeInternal.
type Interface interface {
	// Allocate returns the attachment for req.Key, creating it (addresses, MAC) if needed.
	// The same key always yields the same attachment.
	Allocate(ctx context.Context, req *AllocateRequest) (*Attachment, error)
	// Attach opens the host end of the pod's link as a switch port.
	Attach(ctx context.Context, req *AttachRequest) (*Port, error)
	// Release detaches the port and frees the addresses. Releasing an unknown key succeeds.
	Release(ctx context.Context, req *ReleaseRequest) (*ReleaseResponse, error)
	// Check returns the attachment with its port state; ErrNotFound if the key is unknown.
	Check(ctx context.Context, req *CheckRequest) (*Attachment, error)
	// List returns every attachment the agent knows.
	List(ctx context.Context) (*AttachmentList, error)
	// GC removes every attachment not in req.Valid.
	GC(ctx context.Context, req *GCRequest) (*GCResponse, error)
	// Status reports readiness. It must be cheap: the plugin calls it for CNI STATUS.
	Status(ctx context.Context) (*Status, error)
}

// Key identifies an attachment, as CNI does: a container and an interface name in it.
type Key struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

func (k Key) String() string { return k.ContainerID + "/" + k.IfName }

// Validate checks that both fields are set and plausible (the same limits CNI imposes).
func (k Key) Validate() error {
	if k.ContainerID == "" {
		return invalid("containerID", "must not be empty")
	}
	if len(k.ContainerID) > 1024 {
		return invalid("containerID", "longer than 1024 bytes")
	}
	if strings.IndexByte(k.ContainerID, 0) >= 0 {
		return invalid("containerID", fmt.Sprintf("%q contains a NUL byte", k.ContainerID))
	}
	if k.IfName == "" {
		return invalid("ifName", "must not be empty")
	}
	if len(k.IfName) > 15 {
		return invalid("ifName", fmt.Sprintf("%q longer than 15 bytes (IFNAMSIZ-1)", k.IfName))
	}
	if strings.IndexByte(k.IfName, 0) >= 0 {
		return invalid("ifName", fmt.Sprintf("%q contains a NUL byte", k.IfName))
	}
	return nil
}

// AllocateRequest asks for the attachment of Key, creating it if needed.
type AllocateRequest struct {
	Key
	// NetNS is the pod's network namespace path, recorded for diagnostics and GC.
	NetNS string `json:"netns,omitempty"`
	// Network is the CNI network name from the config.
	Network string `json:"network,omitempty"`
	// Switch is the switch the config asks for; empty means the agent's default.
	Switch string `json:"switch,omitempty"`
	// Pod identity from CNI_ARGS (empty outside Kubernetes).
	PodName      string `json:"podName,omitempty"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
	// IPs requested through runtimeConfig.ips: at most one per address family.
	IPs []netip.Addr `json:"ips,omitempty"`
	// MAC requested through runtimeConfig.mac (pod side), canonical form.
	MAC string `json:"mac,omitempty"`
	// MTU the config asks for; 0 means the switch's MTU.
	MTU int `json:"mtu,omitempty"`
	// NetmapPorts names the netmap application ports the pod asks for (netmapPorts in
	// the network configuration or runtimeConfig); see ValidateNetmapPorts.
	NetmapPorts []string `json:"netmapPorts,omitempty"`
}

// MaxNetmapPorts is the most application ports one pod interface may have.
const MaxNetmapPorts = limits.MaxNetmapPorts

// ValidateNetmapPorts checks a pod's application port names: each 1-15 bytes of
// [A-Za-z0-9_.-], no name twice, at most MaxNetmapPorts.
func ValidateNetmapPorts(names []string) error {
	if len(names) > MaxNetmapPorts {
		return invalid("netmapPorts", fmt.Sprintf("%d ports, at most %d", len(names), MaxNetmapPorts))
	}
	for i, n := range names {
		if !portName(n) {
			return invalid(fmt.Sprintf("netmapPorts[%d]", i), fmt.Sprintf("%q: want 1-15 bytes of [A-Za-z0-9_.-]", n))
		}
		if slices.Contains(names[:i], n) {
			return invalid(fmt.Sprintf("netmapPorts[%d]", i), fmt.Sprintf("%q named twice", n))
		}
	}
	return nil
}

// Validate checks the request.
func (r *AllocateRequest) Validate() error {
	if err := r.Key.Validate(); err != nil {
		return err
	}
	var v4, v6 int
	for i, ip := range r.IPs {
		switch {
		case !ip.IsValid():
			return invalid(fmt.Sprintf("ips[%d]", i), "not an IP address")
		case ip.Is4() || ip.Is4In6():
			v4++
		default:
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		return invalid("ips", "at most one IPv4 and one IPv6 address may be requested")
	}
	if r.MAC != "" {
		if _, err := net.ParseMAC(r.MAC); err != nil {
			return invalid("mac", fmt.Sprintf("%q is not a MAC address", r.MAC))
		}
	}
	if r.MTU < 0 || r.MTU > 65535 {
		return invalid("mtu", fmt.Sprintf("%d out of range 0..65535", r.MTU))
	}
	return ValidateNetmapPorts(r.NetmapPorts)
}

// portName reports whether n is a switch port name an application may have (pkg/vale's
// rule without host ports).
func portName(n string) bool {
	if n == "" || len(n) > 15 {
		return false
	}
	for _, c := range []byte(n) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// IPConfig is one address of an attachment.
type IPConfig struct {
	// Address is the pod's address with the subnet's prefix length, e.g. 10.22.0.5/24.
	Address netip.Prefix `json:"address"`
	// Gateway is the subnet's gateway (carried by the switch's host port); may be invalid
	// (zero) when the range has none.
	Gateway netip.Addr `json:"gateway,omitzero"`
}

// Route is a route to install in the pod; a zero GW means "via this IPConfig's gateway of the
// same family".
type Route struct {
	Dst netip.Prefix `json:"dst"`
	GW  netip.Addr   `json:"gw,omitzero"`
}

// Attachment is the agent's record of one pod interface.
type Attachment struct {
	Key
	NetNS        string     `json:"netns,omitempty"`
	PodName      string     `json:"podName,omitempty"`
	PodNamespace string     `json:"podNamespace,omitempty"`
	IPs          []IPConfig `json:"ips"`
	Routes       []Route    `json:"routes,omitempty"`
	MTU          int        `json:"mtu"`
	Switch       string     `json:"switch"`
	// MAC is the pod-side MAC, canonical lower-case form.
	MAC string `json:"mac"`
	// Port is set once the host end is attached (Check and List fill it).
	Port *Port `json:"port,omitempty"`
	// Existing is set by Allocate when the attachment was made by an earlier call (a
	// retried ADD): links of that earlier ADD may be left over.
	Existing bool `json:"existing,omitempty"`
	// Offload says the switch is an offload switch: the pod keeps transmit checksum
	// offload and TSO (its super-frames cross the switch whole).
	Offload bool `json:"offload,omitempty"`
}

// AttachRequest asks the agent to open the host link as a port of the attachment's switch.
type AttachRequest struct {
	Key
	HostIfName  string `json:"hostIfName"`
	HostIfIndex int    `json:"hostIfIndex"`
	// PodMAC is the pod end's MAC as the plugin set it (required): the switch pins it as
	// the port's forwarding entry, and with the attachment's addresses it is the pod's
	// identity that anti-spoofing checks.
	PodMAC string `json:"podMAC"`
}

// Validate checks the request.
func (r *AttachRequest) Validate() error {
	if err := r.Key.Validate(); err != nil {
		return err
	}
	if r.HostIfName == "" {
		return invalid("hostIfName", "must not be empty")
	}
	if len(r.HostIfName) > 15 {
		return invalid("hostIfName", fmt.Sprintf("%q longer than 15 bytes", r.HostIfName))
	}
	if r.HostIfIndex <= 0 {
		return invalid("hostIfIndex", fmt.Sprintf("%d, must be > 0", r.HostIfIndex))
	}
	if m, err := net.ParseMAC(r.PodMAC); err != nil || len(m) != 6 || m[0]&1 != 0 {
		return invalid("podMAC", fmt.Sprintf("%q, want the pod's 6-byte unicast MAC", r.PodMAC))
	}
	return nil
}

// Port is the switch side of an attachment.
type Port struct {
	Switch      string `json:"switch"`
	Name        string `json:"name"`
	HostIfName  string `json:"hostIfName"`
	HostIfIndex int    `json:"hostIfIndex"`
	// Up is true when the port is attached and the host link is operationally up.
	Up bool `json:"up"`
}

// ReleaseRequest detaches and frees an attachment. Idempotent.
type ReleaseRequest struct {
	Key
}

// Validate checks the request.
func (r *ReleaseRequest) Validate() error { return r.Key.Validate() }

// ReleaseResponse says whether anything was there to release.
type ReleaseResponse struct {
	Released bool `json:"released"`
}

// CheckRequest asks for the attachment and its port state.
type CheckRequest struct {
	Key
}

// Validate checks the request.
func (r *CheckRequest) Validate() error { return r.Key.Validate() }

// AttachmentList is every attachment the agent holds.
type AttachmentList struct {
	Items []Attachment `json:"items"`
}

// GCRequest carries CNI GC's cni.dev/valid-attachments.
type GCRequest struct {
	// Network restricts GC to attachments of this CNI network ("" = all).
	Network string `json:"network,omitempty"`
	Valid   []Key  `json:"valid"`
}

// Validate checks the request.
func (r *GCRequest) Validate() error {
	for i, k := range r.Valid {
		if err := k.Validate(); err != nil {
			var e *Error
			if ok := asError(err, &e); ok {
				return invalid(fmt.Sprintf("valid[%d].%s", i, e.Field), e.Message)
			}
			return err
		}
	}
	return nil
}

// GCResponse lists what GC removed.
type GCResponse struct {
	Removed []Key `json:"removed"`
}

// Status is the agent's readiness.
type Status struct {
	Ready bool `json:"ready"`
	// Reason explains a false Ready.
	Reason string `json:"reason,omitempty"`
	// AgentVersion is the agent's build version.
	AgentVersion string `json:"agentVersion,omitempty"`
	// Switches names the switches that accept ports.
	Switches []string `json:"switches,omitempty"`
}
