// Package v1alpha1 holds the epair.dev/v1alpha1 custom resources: the Go types
// with the kubebuilder markers from which controller-gen generates the CRDs
// (config/crd → charts/epair/crds), the deep-copy functions and the agent's RBAC.
//
// Model:
//
//   - VirtualSwitch (cluster-scoped) describes one VALE switch that every node
//     matching spec.nodeSelector runs: MTU, forwarding batch size, port limit,
//     forwarding table size and aging, and the output queue a port gets when no
//     PortPolicy selects its pod.
//   - PortPolicy (namespaced) selects pods of its namespace by label and sets
//     their port's output queue (discipline, priority class, queue length), rate
//     and packet-rate limits with bursts, a mirror to a monitor port, and
//     anti-spoofing. Node agents apply changes to running pods' ports live.
//   - NodeState (cluster-scoped, named after its node) is the per-node status
//     object: written only by that node's agent, so agents never contend on one
//     object. It lists the node's switches and ports, drops by reason, queue
//     depths and the agent's conditions.
//
// Validation lives in the schema (OpenAPI bounds, enums, patterns and CEL
// rules), so the API server rejects a bad object with a message that names the
// field; the agent validates again when it turns a spec into a dataplane
// configuration, because objects stored before a schema change are not
// re-validated.
//
// Units: rates are bits per second and bursts are bytes, as resource quantities
// ("100M", "1Gi" is not meaningful for a rate but is accepted as 1073741824);
// packet rates are packets per second and packet bursts are packets.
//
// +kubebuilder:object:generate=true
// +groupName=epair.dev
package v1alpha1
