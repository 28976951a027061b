// Package cni holds the end-to-end tests of epair through libcni, the client container
// runtimes use: the real node-agent binary (in a network namespace the test creates, with
// the real dataplane) and the real epair-cni binary executed by libcni with a conflist, pods
// as network namespaces. They need root and skip without it; `go test -short` skips them.
//
// EPAIR_BENCH=1 adds the ADD/DEL latency comparison with the reference bridge plugin and the
// 250-pod scale run (hack/bench-cni.sh style; too slow for the default suite).
package cni
