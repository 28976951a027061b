package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/epair-cni/epair/pkg/limits"
)

// Discipline names an output-queue discipline (pkg/ifcore's DisciplineKind).
// +kubebuilder:validation:Enum=classic;prioclass;fair
type Discipline string

const (
	// DisciplineClassic is DragonFly's classic ifq: a priority FIFO and a normal FIFO.
	DisciplineClassic Discipline = "classic"
	// DisciplinePrioClass is strict priority over four classes.
	DisciplinePrioClass Discipline = "prioclass"
	// DisciplineFair is deficit round robin over flow-hash buckets.
	DisciplineFair Discipline = "fair"
)

// Bounds shared by the schema markers and the agent's own validation. They are
// the limits pkg/vale and pkg/ifcore enforce; the MTU's are pkg/limits' (the markers
// repeat them as literals, and a test compares the generated schema with them).
const (
	MinMTU         = limits.MinMTU
	MaxMTU         = limits.MaxMTU
	MinBatchSize   = 1
	MaxBatchSize   = 8192
	MinMaxPorts    = 2
	MaxMaxPorts    = 4096
	MinFDBSize     = 16
	MaxFDBSize     = 1 << 20
	MinQueueLength = 1
	MaxQueueLength = 65536
)

// VirtualSwitchSpec is the desired configuration of one switch on every node
// that matches NodeSelector.
type VirtualSwitchSpec struct {
	// NodeSelector selects the nodes that run this switch. An empty or
	// absent selector selects every node.
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// MTU of the switch's ports and of the pods' interfaces, in bytes. Absent: detected on
	// each node, for the primary network (the conflist's switch), from the interface that
	// holds the node's address (its InternalIP), minus the VXLAN overhead (50 bytes over
	// IPv4, 70 over IPv6) unless the agent's peer mode is routed; 1500 for a secondary
	// network. The chosen MTU is in NodeState.
	// +kubebuilder:validation:Minimum=576
	// +kubebuilder:validation:Maximum=9000
	// +optional
	MTU int32 `json:"mtu,omitempty"`

	// BatchSize bounds the frames one forwarding pass takes from a source port.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8192
	// +kubebuilder:default=1024
	// +optional
	BatchSize int32 `json:"batchSize,omitempty"`

	// MaxPorts bounds the number of ports (pods plus the host port).
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=4096
	// +kubebuilder:default=254
	// +optional
	MaxPorts int32 `json:"maxPorts,omitempty"`

	// FDB configures the learning forwarding table.
	// +kubebuilder:default={}
	// +optional
	FDB FDBSpec `json:"fdb,omitzero"`

	// DefaultQueue is the output queue of ports whose pod no PortPolicy selects.
	// +kubebuilder:default={}
	// +optional
	DefaultQueue QueueSpec `json:"defaultQueue,omitzero"`

	// PortSecurity is the default port security of the switch's pod ports; a
	// PortPolicy may override each field for the pods it selects. Whatever it
	// says, pod ports are never learned from: each pod's MAC and the gateway's
	// are static entries of the forwarding table, so no pod can take another's
	// address or receive another's unicast traffic.
	// +kubebuilder:default={}
	// +optional
	PortSecurity PortSecuritySpec `json:"portSecurity,omitzero"`

	// Offload is deprecated and ignored: every switch is an offload switch,
	// whose ports all carry a virtio-net header, so the pods keep TSO and
	// checksum offload and their 64 KB TCP super-frames cross the switch
	// whole. A value is accepted, and the agent logs a deprecation warning.
	// +optional
	Offload *bool `json:"offload,omitempty"`

	// PodCIDRs are the switch's pod address ranges on every node it runs on:
	// at most one IPv4 and one IPv6 CIDR, each in canonical form (no bits set
	// after the prefix length, e.g. 10.100.0.0/24 and fd00:100::/64). They are
	// required for every switch other than the conflist's (the agent's
	// -cni-switch, the chart's defaultSwitch), whose range is the node's
	// spec.podCIDRs: that switch must leave this empty. Every other switch is
	// a secondary network: pods get a second interface on it through its own
	// conflist, <network>-<switch>.conflist in the agent's -cni-networks-dir
	// (for Multus NetworkAttachmentDefinitions that name it). A secondary
	// switch is node-local: its range is reused on every node and its pods
	// are reachable from their own node only (multi-node routing is planned).
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="podCIDRs: each entry must be an IPv4 or IPv6 CIDR such as 10.100.0.0/24 or fd00:100::/64"
	// +kubebuilder:validation:items:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",message="podCIDRs: each entry must be canonical, with no bits set after the prefix length (10.100.0.0/24, not 10.100.0.1/24)"
	// +kubebuilder:validation:XValidation:rule="self.filter(c, isCIDR(c) && cidr(c).ip().family() == 4).size() <= 1",message="podCIDRs: at most one IPv4 CIDR"
	// +kubebuilder:validation:XValidation:rule="self.filter(c, isCIDR(c) && cidr(c).ip().family() == 6).size() <= 1",message="podCIDRs: at most one IPv6 CIDR"
	// +listType=atomic
	// +optional
	PodCIDRs []string `json:"podCIDRs,omitempty"`
}

// PortSecuritySpec is what a pod may send through its port.
type PortSecuritySpec struct {
	// AntiSpoofing refuses frames from a pod whose source MAC or IP is not the
	// pod's own (its MAC and IPAM addresses): the Ethernet source, the
	// IPv4/IPv6 source (besides the pod's addresses, its EUI-64 IPv6
	// link-local address and :: pass), the ARP sender, and Neighbor Discovery
	// link-layer options and advertised targets; router advertisements,
	// redirects and other EtherTypes than IPv4, ARP and IPv6 are refused too.
	// Refused frames show in the node's status by reason (spoofed-mac,
	// spoofed-ip, spoofed-arp-nd, spoofed-ethertype). false is the opt-out for
	// pods that legitimately send from other addresses.
	// +kubebuilder:default=true
	// +optional
	AntiSpoofing *bool `json:"antiSpoofing,omitempty"`

	// BroadcastRate is how many broadcast frames per second a pod may send
	// (storm control; the burst is 100 ms worth, at least 16); 0 is no limit.
	// Frames over it are refused and counted as "storm".
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000000
	// +kubebuilder:default=1000
	// +optional
	BroadcastRate *int64 `json:"broadcastRate,omitempty"`

	// MulticastRate is the same for the other group-addressed frames
	// (IPv6 neighbor discovery, MLD, mDNS, ...).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000000
	// +kubebuilder:default=5000
	// +optional
	MulticastRate *int64 `json:"multicastRate,omitempty"`
}

// FDBSpec configures the forwarding table.
type FDBSpec struct {
	// Size is the number of entries: a power of two in [16, 1048576].
	// +kubebuilder:validation:Minimum=16
	// +kubebuilder:validation:Maximum=1048576
	// +kubebuilder:validation:XValidation:rule="[16,32,64,128,256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576].exists(p, p == self)",message="fdb.size must be a power of two in [16, 1048576]"
	// +kubebuilder:default=4096
	// +optional
	Size int32 `json:"size,omitempty"`

	// Aging is how long a learned address lives without traffic: "0s"
	// disables aging, otherwise between 1s and 24h.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))",message="fdb.aging must be 0s (off) or between 1s and 24h"
	// +kubebuilder:default="5m"
	// +optional
	Aging metav1.Duration `json:"aging,omitzero"`
}

// QueueSpec is a port's output queue.
type QueueSpec struct {
	// Length is the queue's capacity in packets.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	// +kubebuilder:default=1024
	// +optional
	Length int32 `json:"length,omitempty"`

	// Discipline is the queueing discipline.
	// +kubebuilder:default=classic
	// +optional
	Discipline Discipline `json:"discipline,omitempty"`

	// Rate limits the port's output in bits per second; absent or 0 is
	// unlimited.
	// +kubebuilder:validation:XValidation:rule="!quantity(string(self)).isLessThan(quantity('0'))",message="rate must not be negative"
	// +kubebuilder:validation:XValidation:rule="!quantity(string(self)).isGreaterThan(quantity('400G'))",message="rate must be at most 400G bits/s"
	// +optional
	Rate *resource.Quantity `json:"rate,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=vsw,categories=epair
// +kubebuilder:printcolumn:name="MTU",type=integer,JSONPath=`.spec.mtu`
// +kubebuilder:printcolumn:name="Max-Ports",type=integer,JSONPath=`.spec.maxPorts`
// +kubebuilder:printcolumn:name="Discipline",type=string,JSONPath=`.spec.defaultQueue.discipline`
// +kubebuilder:printcolumn:name="Rate",type=string,JSONPath=`.spec.defaultQueue.rate`
// +kubebuilder:printcolumn:name="Pod-CIDRs",type=string,JSONPath=`.spec.podCIDRs`,description="The pod ranges of a secondary switch; empty for the conflist's switch (the nodes' spec.podCIDRs)"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// VirtualSwitch is a VALE switch run by the node agents of the selected nodes.
// Its name is the switch's name on the node: "vale" followed by at most 11
// lower-case letters or digits (VALE names are at most 15 bytes).
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^vale[a-z0-9]{0,11}$')",message="metadata.name must be 'vale' followed by at most 11 lower-case letters or digits (a switch name of at most 15 bytes)"
type VirtualSwitch struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec VirtualSwitchSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// VirtualSwitchList is a list of VirtualSwitch.
type VirtualSwitchList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualSwitch `json:"items"`
}

func init() {
	register(&VirtualSwitch{}, &VirtualSwitchList{})
}
