// Package cniplugin is the epair CNI plugin: configuration parsing and validation, the one
// mapping from errors to CNI error codes, and the verb handlers (ADD, DEL, CHECK, STATUS, GC,
// VERSION) that cmd/epair-cni wires into skel.PluginMainFuncs.
//
// Configuration model (follows the CNI reference plugins):
//
//   - NetConf embeds types.NetConf and adds agentSocket, switch, mtu, logFile, logLevel,
//     timeouts (per verb), ipam (only "routes": extra pod routes — addresses always come from
//     the node agent, which owns IPAM) and runtimeConfig (ips, mac, portMappings).
//   - Parsing is defaults → unmarshal → Validate → prevResult conversion, all in Load, which
//     is pure (no I/O, no globals) and fuzzed. Every rejection is a *FieldError naming the
//     field, the value and the allowed values.
//   - cniVersion 0.3.1, 0.4.0, 1.0.0 and 1.1.0 are accepted; prevResult of any of them is
//     converted once to the 1.0.0 result type the handlers work on, and the handlers print
//     their result converted back to the config's version.
//   - CNI_ARGS: K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID and
//     IgnoreUnknown; other keys are an error unless IgnoreUnknown is set.
//
// Verbs (Plugin's methods; Plugin.Funcs adapts them to skel, mapping errors with CNIError):
//
//   - ADD: CNI_NETNS must be a network namespace other than the plugin's own (a file, a
//     directory or another namespace kind: code 8; the node's own namespace: code 4 naming
//     it; both before any side effect) → Allocate (idempotent per containerID/ifname; a
//     repeated ADD whose runtimeConfig.ips the existing attachment does not hold is refused
//     with code 100, the attachment left as it was) → remove a stale pair of the same
//     owner left by an interrupted ADD → pkg/epair Create (host epair<n>a, pod end renamed to
//     CNI_IFNAME, owner alias) → pod MAC (agent's, else runtimeConfig.mac, else the epair
//     scheme), addresses (IPv6 with IFA_F_NODAD: no DAD delay), routes (agent's, then
//     ipam.routes; no gateway means the family's gateway) through netlink handles bound to
//     the pod netns → Attach → result printed in the config's cniVersion, appended to a
//     prevResult if there is one. Each side effect is pushed on an internal/cleanup stack.
//   - DEL: Release with timeouts.del (transport failures are logged, not returned: the agent
//     reconciles when back) → destroy through the pod end if the netns exists → destroy the
//     host end found by its owner alias. A missing netns, link or agent is success; a link
//     under CNI_IFNAME that is not ours is left alone.
//   - CHECK: prevResult is required; the agent must know the attachment with its port
//     attached and up on the pair's host end; the pod interface must be up with the MAC, MTU,
//     addresses and routes of prevResult.
//   - STATUS: the agent's /v1/status within timeouts.status; unreachable or not ready is
//     ErrNotAvailable (CNI code 50).
//   - GC: destroy every host link whose alias owner is this network's and not in
//     cni.dev/valid-attachments, then have the agent drop the attachments (ports, addresses)
//     not in the set. Links without our alias, and other networks' links, are never touched.
//
// Owner key: "<network>/<containerID>/<ifname>" (epair.OwnerKey), hashed when it would not fit
// the 255-byte alias. Including the network keeps two epair networks on one node from
// collecting each other's links.
//
// Errors: handlers wrap the sentinels of errors.go ("verb noun: %w") and agentapi errors;
// CNIError alone decides the CNI code:
//
//	ErrIncompatibleVersion → 1     ErrInvalidArgs → 4     ErrDecode → 6
//	ErrInvalidConfig → 7           ErrInvalidNetNS → 8    ErrNotAvailable → 50
//	agent InvalidRequest → 7       agent NotFound → 3 (unknown container)
//	agent NotReady/Unavailable/Timeout → 11 (try again later)
//	agent Conflict, ErrAddressConflict → 100 (CodeAddressConflict, plugin-specific)
//	agent Exhausted → 101 (CodeRangeExhausted, plugin-specific)
//	anything else → 999
//
// The spec reserves codes below 100 and has none for IPAM; the reference host-local plugin
// answers 999 for a taken or exhausted range, which a runtime cannot tell from a crash.
package cniplugin
