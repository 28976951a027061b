// Package netnsutil creates and removes the network namespaces and veth pairs that the
// kernel-facing tests (pkg/epair, pkg/netmap/afxdp, pkg/netmap/afpacket, pkg/hostport) run in.
//
// Every namespace is a named namespace (bind-mounted under /var/run/netns, so `ip netns exec`
// reaches it) whose removal is registered with t.Cleanup; links inside it die with it. Code
// that must run inside a namespace (creating a socket bound to an ifindex, attaching XDP) goes
// through NS.Do, which pins the goroutine to its thread, switches, and always switches back:
// the thread is never returned to the Go scheduler while it is in a foreign namespace.
//
// Tests that need root call RequireRoot first; it skips with a clear message otherwise.
package netnsutil
