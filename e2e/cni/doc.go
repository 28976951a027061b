// Package cni holds the end-to-end tests of epair through libcni, the client container
// runtimes use: the real node-agent binary (in a network namespace the test creates, with
// the real dataplane) and the real epair-cni binary executed by libcni with a conflist, pods
// as network namespaces. They need root and skip without it; `go test -short` skips them.
//
// EPAIR_BENCH=1 adds the runs too slow or too load-sensitive for the default suite: ADD/DEL
// latency against the reference bridge plugin (TestLatencyVsBridge), 250 pods with agent RSS
// and idle CPU (TestScale250), and pod-to-pod TCP throughput (TestThroughput):
//
//	EPAIR_BENCH=1 go test -count=1 -v -run 'TestLatencyVsBridge|TestScale250|TestThroughput' -timeout 20m ./e2e/cni
//
// EPAIR_RING_SLOTS and EPAIR_XDP_FRAMES override the agent's port sizing for the scale and
// throughput runs; EPAIR_BENCH_OUT / EPAIR_SCALE_OUT write their Markdown tables to files.
package cni
