// Package controller is the node agent's cluster mode: controller-runtime
// reconcilers that turn the epair.dev custom resources and the node's own
// Node object into calls on a small Dataplane interface, and report back in
// the node's NodeState.
//
// Model:
//
//   - One Controller per node (a DaemonSet pod): a manager without leader
//     election whose cache holds every Node (the others are the peers), this
//     node's pods (field selector spec.nodeName) and NodeState, plus every
//     VirtualSwitch and PortPolicy.
//   - Node → Dataplane.SetPodCIDRs (IPAM); the conflist waits for it.
//   - Every other Node → Dataplane.SetPeers: any Node creation, deletion or
//     change of pod CIDRs or addresses rebuilds the whole peer set (name,
//     InternalIPs, pod CIDRs; a node without either is skipped), so a node
//     deleted while the agent was down is gone from its first set.
//   - VirtualSwitch → ApplySwitch when its nodeSelector matches the node's
//     labels, DeleteSwitch when it stops matching or is deleted. Node label
//     changes re-evaluate every VirtualSwitch. A node runs several switches:
//     the conflist's (CNIConfig.Switch, -cni-switch) is the primary network,
//     whose pod range is the node's spec.podCIDRs; every other one is a
//     secondary network for a second pod interface, with its own range in
//     spec.podCIDRs (SwitchConfig.PodCIDRs: at most one IPv4 and one IPv6
//     canonical CIDR, node-local, the same on every node). The conversion
//     checks their syntax; which switch may or must have them is the
//     Dataplane's to check.
//   - PortPolicy: the reconciler is keyed by pod, not by policy, because what
//     the dataplane holds is one configuration per port. A policy change
//     enqueues the namespace's pods of this node; a pod's label change
//     enqueues the pod; Controller.PortAttached enqueues a pod whose port
//     just appeared. The oldest selecting policy wins (then the lowest name);
//     the others are reported as a PortPolicyConflict event. A change reaches
//     the live port within one watch round-trip (tens to hundreds of
//     milliseconds); pods are never restarted.
//   - Status: NodeState (created owned by the Node) gets the dataplane's
//     Snapshot (switches, ports, drops by reason, queue depths) every
//     StatusInterval and the conditions Ready, PodCIDRsAssigned,
//     SwitchesApplied, PoliciesApplied and CNIConfigInstalled at once when
//     they change.
//   - CNI config: the conflist is written (temporary file + rename) only when
//     the dataplane is Ready, the pod CIDRs are set and the conflist's switch
//     is applied, so kubelet never sends pods to an agent that cannot serve
//     them. On stop it is removed only on uninstall (DaemonSetGone: the
//     agent's DaemonSet is gone or its credentials were revoked), not on a
//     rolling restart, so running pods' DEL and new pods' ADD keep working
//     across an upgrade.
//   - Secondary networks: with CNIConfig.NetworksDir (-cni-networks-dir, the
//     chart's cni.networksDir, Multus' /etc/cni/multus/net.d by default) the
//     same writer, once ready, keeps <network>-<switch>.conflist there for
//     every switch applied on the node other than the conflist's: <network>
//     is the conflist's name, the file a conflist of that name-switch with
//     the conflist's cniVersion and one plugin, a copy of its epair-cni entry
//     with "switch" set (chained plugins are not copied), written atomically
//     and only when changed. Multus NetworkAttachmentDefinitions name the
//     network. The writer owns the dir's <network>-<switch name>.conflist
//     files: those of switches no longer applied go at the next poll (within
//     a second), all of them on uninstall, none on a restart. A failed write
//     turns CNIConfigInstalled false (reason NetworksNotInstalled) but not
//     Ready: the primary network still serves pods.
//   - InstallFile is the chart's init step: epair-cni copied into the
//     node's CNI bin dir atomically (cmd/epair-install-cni).
//   - Flags are the agent's cluster-mode flags as the chart passes them;
//     TestChartArgsParse parses the rendered DaemonSet's command line with
//     them, so the chart and the code cannot drift apart.
//
// The package never imports internal/agent or internal/dataplane: the agent
// implements Dataplane over them. Errors from converting a spec are
// *FieldError (wrapping ErrInvalidSpec) naming the field and the allowed
// values; the API server's schema (api/v1alpha1) rejects the same specs first.
package controller
