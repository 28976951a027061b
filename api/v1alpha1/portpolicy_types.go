package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PriorityClass is a port's priority. With the prioclass discipline the four
// classes are four strictly ordered bands; with classic, critical and high use
// the priority FIFO and normal and low the normal one; fair ignores it.
// +kubebuilder:validation:Enum=critical;high;normal;low
type PriorityClass string

const (
	PriorityCritical PriorityClass = "critical"
	PriorityHigh     PriorityClass = "high"
	PriorityNormal   PriorityClass = "normal"
	PriorityLow      PriorityClass = "low"
)

// Band returns the class number (0 is served first) or -1 for an unknown class.
func (p PriorityClass) Band() int {
	switch p {
	case PriorityCritical:
		return 0
	case PriorityHigh:
		return 1
	case PriorityNormal, "":
		return 2
	case PriorityLow:
		return 3
	}
	return -1
}

// MirrorDirection says which of a port's frames a mirror copies.
// +kubebuilder:validation:Enum=rx;tx;both
type MirrorDirection string

const (
	MirrorRX   MirrorDirection = "rx"
	MirrorTX   MirrorDirection = "tx"
	MirrorBoth MirrorDirection = "both"
)

// PortPolicySpec sets the switch port of every selected pod on every node.
// +kubebuilder:validation:XValidation:rule="!has(self.burst) || has(self.rate)",message="burst needs rate"
// +kubebuilder:validation:XValidation:rule="!has(self.packetBurst) || has(self.packetRate)",message="packetBurst needs packetRate"
type PortPolicySpec struct {
	// PodSelector selects pods of the policy's namespace. An empty selector
	// selects every pod of the namespace. When several policies select a pod,
	// the oldest wins (then the lowest name) and the others are reported as
	// conflicting.
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	// +required
	PodSelector metav1.LabelSelector `json:"podSelector"`

	// PriorityClass of the pod's port.
	// +kubebuilder:default=normal
	// +optional
	PriorityClass PriorityClass `json:"priorityClass,omitempty"`

	// Discipline of the port's output queue; absent keeps the switch's default.
	// +optional
	Discipline Discipline `json:"discipline,omitempty"`

	// Rate limits the port's output in bits per second (token bucket).
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="rate must be positive (omit it for no limit)"
	// +kubebuilder:validation:XValidation:rule="!quantity(string(self)).isGreaterThan(quantity('400G'))",message="rate must be at most 400G bits/s"
	// +optional
	Rate *resource.Quantity `json:"rate,omitempty"`

	// Burst is the token bucket's depth in bytes; default: 10 ms at Rate,
	// at least one 64 KiB frame.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('1499'))",message="burst must be at least 1500 bytes"
	// +kubebuilder:validation:XValidation:rule="!quantity(string(self)).isGreaterThan(quantity('1Gi'))",message="burst must be at most 1Gi bytes"
	// +optional
	Burst *resource.Quantity `json:"burst,omitempty"`

	// PacketRate limits the port's output in packets per second.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000000
	// +optional
	PacketRate *int64 `json:"packetRate,omitempty"`

	// PacketBurst is the packet bucket's depth; default: PacketRate/100, at least 1.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	PacketBurst *int64 `json:"packetBurst,omitempty"`

	// QueueLength is the port's output queue capacity in packets; absent
	// keeps the switch's default.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	// +optional
	QueueLength *int32 `json:"queueLength,omitempty"`

	// Mirror copies the port's frames to a monitor port of the pod's switch
	// (named without the switch, e.g. "mon0" for vale0:mon0). Copies for a
	// monitor that is absent, not open or full are dropped and counted;
	// mirroring never slows the pod down.
	// +optional
	Mirror *MirrorSpec `json:"mirror,omitempty"`

	// AntiSpoofing overrides the switch's spec.portSecurity.antiSpoofing
	// (on by default) for the selected pods: false lets them send from other
	// addresses than their own (a second IP, a VIP); they still cannot take
	// another pod's MAC or receive its traffic. Absent keeps the switch's.
	// +optional
	AntiSpoofing *bool `json:"antiSpoofing,omitempty"`

	// BroadcastRate overrides the switch's storm control for broadcast
	// frames the selected pods send (frames per second, 0 is no limit).
	// Absent keeps the switch's.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000000
	// +optional
	BroadcastRate *int64 `json:"broadcastRate,omitempty"`

	// MulticastRate is the same for the other group-addressed frames.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000000
	// +optional
	MulticastRate *int64 `json:"multicastRate,omitempty"`
}

// MirrorSpec names a monitor port that receives copies of a port's frames.
type MirrorSpec struct {
	// Monitor is the name of the monitor port on the pod's switch.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.-]+$`
	// +required
	Monitor string `json:"monitor"`

	// Direction is which frames are copied.
	// +kubebuilder:default=both
	// +optional
	Direction MirrorDirection `json:"direction,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=pp,categories=epair
// +kubebuilder:printcolumn:name="Priority",type=string,JSONPath=`.spec.priorityClass`
// +kubebuilder:printcolumn:name="Rate",type=string,JSONPath=`.spec.rate`
// +kubebuilder:printcolumn:name="Packet-Rate",type=integer,JSONPath=`.spec.packetRate`
// +kubebuilder:printcolumn:name="Queue",type=integer,JSONPath=`.spec.queueLength`
// +kubebuilder:printcolumn:name="Anti-Spoofing",type=boolean,JSONPath=`.spec.antiSpoofing`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// PortPolicy sets the switch port of the pods it selects. Node agents apply a
// change to running pods within a second, without restarting them.
type PortPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec PortPolicySpec `json:"spec"`
}

// +kubebuilder:object:root=true

// PortPolicyList is a list of PortPolicy.
type PortPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PortPolicy `json:"items"`
}

func init() {
	register(&PortPolicy{}, &PortPolicyList{})
}
