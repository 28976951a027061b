package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of NodeState.status.conditions.
const (
	// ConditionReady: the agent's dataplane runs, the node's pod CIDRs are
	// known and the CNI configuration is installed.
	ConditionReady = "Ready"
	// ConditionPodCIDRs: the node's pod CIDRs were read from its Node object.
	ConditionPodCIDRs = "PodCIDRsAssigned"
	// ConditionSwitches: every VirtualSwitch selecting the node is applied.
	ConditionSwitches = "SwitchesApplied"
	// ConditionPolicies: every PortPolicy selecting a pod of the node is applied.
	ConditionPolicies = "PoliciesApplied"
	// ConditionCNIConfig: the conflist is written into the CNI config dir
	// and, when the agent writes them, every secondary switch's conflist into
	// its networks dir (reason NetworksNotInstalled when only those fail;
	// Ready follows the conflist alone).
	ConditionCNIConfig = "CNIConfigInstalled"
)

// NodeStateSpec names the node the object belongs to.
type NodeStateSpec struct {
	// NodeName is the node whose agent writes this object; it equals metadata.name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="nodeName is immutable"
	// +required
	NodeName string `json:"nodeName"`
}

// NodeStateStatus is what one node's agent reports.
type NodeStateStatus struct {
	// PodCIDRs the agent allocates pod addresses from.
	// +listType=atomic
	// +optional
	PodCIDRs []string `json:"podCIDRs,omitempty"`

	// Switches running on the node.
	// +listType=map
	// +listMapKey=name
	// +optional
	Switches []SwitchState `json:"switches,omitempty"`

	// Ports of the node's switches.
	// +listType=map
	// +listMapKey=name
	// +optional
	Ports []PortState `json:"ports,omitempty"`

	// Drops by reason, summed over every switch and port of the node.
	// +listType=map
	// +listMapKey=reason
	// +optional
	Drops []DropCount `json:"drops,omitempty"`

	// Peers are the other nodes of the pod network as this node reaches them.
	// +listType=map
	// +listMapKey=node
	// +optional
	Peers []PeerState `json:"peers,omitempty"`

	// UpdateTime is when the agent took this snapshot.
	// +optional
	UpdateTime *metav1.Time `json:"updateTime,omitempty"`

	// Conditions of the agent on this node.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// PeerState is another node as this node reaches its pods.
type PeerState struct {
	// Node is the peer's Node name.
	Node string `json:"node"`
	// Addresses are its underlay addresses (InternalIP).
	// +listType=atomic
	// +optional
	Addresses []string `json:"addresses,omitempty"`
	// PodCIDRs are its pod CIDRs.
	// +listType=atomic
	// +optional
	PodCIDRs []string `json:"podCIDRs,omitempty"`
	// Mode is how its pods are reached: routed (on a subnet of this node), vxlan, or
	// unreachable.
	Mode string `json:"mode"`
	// Routes is how many of its pod CIDRs are routed now.
	Routes int32 `json:"routes"`
	// State is why a pod CIDR is not routed, empty when all are.
	// +optional
	State string `json:"state,omitempty"`
}

// SwitchState is one switch on the node.
type SwitchState struct {
	// Name of the switch (the VirtualSwitch's name).
	Name string `json:"name"`
	// Generation of the VirtualSwitch the switch runs with.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Ports attached to the switch.
	Ports int32 `json:"ports"`
	// MTU the switch's ports and pods run with (the VirtualSwitch's, or detected).
	// +optional
	MTU int32 `json:"mtu,omitempty"`
}

// PortState is one switch port and its output queue.
type PortState struct {
	// Name of the port (the host end of the pod's veth, or the host port).
	Name string `json:"name"`
	// Switch the port is attached to.
	Switch string `json:"switch"`
	// Pod is "namespace/name" of the pod behind the port; empty for the host port.
	// +optional
	Pod string `json:"pod,omitempty"`
	// Policy is "namespace/name" of the PortPolicy applied; empty for the switch default.
	// +optional
	Policy string `json:"policy,omitempty"`
	// Counters of frames the port received from its pod and sent to it, through the switch
	// or the kernel fast path.
	RxPackets int64 `json:"rxPackets"`
	RxBytes   int64 `json:"rxBytes"`
	TxPackets int64 `json:"txPackets"`
	TxBytes   int64 `json:"txBytes"`
	// QueueDepth is the output queue's length in packets at UpdateTime.
	QueueDepth int32 `json:"queueDepth"`
	// QueueLength is the output queue's capacity in packets.
	QueueLength int32 `json:"queueLength"`
	// Drops of this port by reason.
	// +listType=map
	// +listMapKey=reason
	// +optional
	Drops []DropCount `json:"drops,omitempty"`
}

// DropCount is a number of dropped frames for one reason.
type DropCount struct {
	// Reason is the drop reason, named as in the agent API, valectl and the
	// metrics: "queue-full" (the destination's output queue or ring was full),
	// "no-destination", "too-long", "bad-frame", and port security's
	// "spoofed-mac", "spoofed-ip", "spoofed-arp-nd", "spoofed-ethertype" and
	// "storm".
	Reason string `json:"reason"`
	// Packets dropped for this reason since the agent started.
	Packets int64 `json:"packets"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ens,categories=epair
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Pod-CIDRs",type=string,JSONPath=`.status.podCIDRs`
// +kubebuilder:printcolumn:name="Switches",type=string,JSONPath=`.status.switches[*].name`,priority=1
// +kubebuilder:printcolumn:name="Updated",type=date,JSONPath=`.status.updateTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// NodeState is the per-node status object: written only by the agent of the
// node it is named after (the chart's ValidatingAdmissionPolicy enforces it for
// the agents' service account), owned by the Node so it goes with it.
// +kubebuilder:validation:XValidation:rule="self.metadata.name == self.spec.nodeName",message="metadata.name must equal spec.nodeName"
type NodeState struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec NodeStateSpec `json:"spec"`
	// +optional
	Status NodeStateStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// NodeStateList is a list of NodeState.
type NodeStateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeState `json:"items"`
}

func init() {
	register(&NodeState{}, &NodeStateList{})
}
