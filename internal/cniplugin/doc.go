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
// Errors: handlers wrap the sentinels of errors.go ("verb noun: %w") and agentapi errors;
// CNIError alone decides the CNI code:
//
//	ErrIncompatibleVersion → 1     ErrInvalidArgs → 4     ErrDecode → 6
//	ErrInvalidConfig → 7           ErrInvalidNetNS → 8    ErrNotAvailable → 50
//	agent InvalidRequest → 7       agent NotFound → 3 (unknown container)
//	agent NotReady/Unavailable/Timeout → 11 (try again later)
//	anything else → 999
package cniplugin
