// Package agent is the node agent's composition root: the agentapi backend over the IPAM
// stores and the dataplane, the standalone configuration, restart recovery, graceful
// shutdown and uninstall, and the metrics.
//
// Model:
//
//   - One IPAM store per switch (internal/ipam, bbolt, fsync'd per allocation) holds the
//     addresses: the source of truth. One attachment store (bbolt, attachments.db, not
//     fsync'd) holds the rest of each attachment: network, netns, pod identity, switch, MTU,
//     MAC and, once attached, the host link. Both are under Config.StateDir and survive
//     kill -9 and clean reboots; after a power loss that tears the attachment store, it is
//     rebuilt from IPAM and the links' aliases (only netns and pod name are lost).
//   - Allocate writes the addresses, then the record; Release detaches, frees the addresses,
//     then deletes the record. A crash between two steps leaves an address without a record
//     (Recover records it as an orphan of unknown network, which any GC collects) or a record
//     without an address (Recover drops it): never a lost or a duplicated address.
//   - Calls on one key are serialised by a striped lock; calls on different keys run in
//     parallel. Allocate and Attach are refused until Recover has run (CodeNotReady, CNI
//     code 11); Release and GC are served at once: DEL never waits for readiness.
//   - Recover finds every pod's host link by the owner alias the plugin records
//     ("<network>/<containerID>/<ifname>", epair.OwnerKey) and re-attaches it: the pods
//     are not touched. An attachment whose link is gone (its netns was deleted while the
//     agent was down) is released; one never attached is kept for RecoverGrace so that the
//     runtime's retry of an interrupted ADD finds it. Reconcile (every 30s) repeats both
//     sweeps while running: attached with the link gone, or never attached past
//     RecoverGrace with no link bearing the owner alias.
//   - Close detaches every port and closes the dataplane, keeping pods and state for the next
//     agent; Uninstall also destroys every epair link and the stores.
//   - The attachment records are the one place that links a pod, its attachment, its port
//     and the port's policy. A port's policy is its switch's default (SetSwitchDefault, live)
//     with the pod's PortPolicy over it (PodPolicies, asked at attach; SetPodPolicy, live);
//     every request to the dataplane carries that effective policy. Agent.Switches projects
//     the ports with their pod and policy for the agent API, valectl, metrics and NodeState.
//   - Switches can be added and removed while running (AddSwitch, RemoveSwitch; the first,
//     default switch stays). A secondary switch gives its pods addresses and on-link subnets
//     but no default route: it is a second interface's network. Removing a switch releases
//     its attachments and destroys their links (the pods lose that interface, nothing else).
//     Records of a switch the agent does not run at start are kept: AddSwitch re-attaches
//     them, Reconcile releases them once RecoverGrace has passed without the switch.
//
// Cluster mode (RunCluster) adds controller.Controller in front: clusterDataplane is the
// controller's Dataplane, turning the Node's pod CIDRs and the conflist's VirtualSwitch into
// the agent's first switch, the other VirtualSwitches into secondary switches, PortPolicies
// into SetPodPolicy, and the agent's switches into NodeState. The controller gives the agent
// pods' PortPolicies through the PodPolicies interface.
//
// The dataplane is behind the small Dataplane interface (the single owner of switches and
// ports). SocketServer, MetricsServer and ReconcileLoop have controller-runtime's Runnable
// shape (Start(ctx) error) so that a manager can own them in cluster mode; Run wires them for
// standalone mode.
package agent
