#!/usr/bin/env bash
# Benchmarks (separate from tests): the figures BENCHMARKS.md quotes, each next to the kernel
# alternative measured in the same run where there is one.
#   1. Go micro-benchmarks of the packet path (netmap, vale, ifcore, backends, the agent's
#      netmap application ports): pps, allocs.
#   2. hack/bench-dataplane.sh: pod to pod through the epair switch vs the Linux bridge.
#   3. hack/bench-cni.sh: CNI ADD/DEL latency vs the bridge plugin, 250-pod scale.
#   4. 1000 peers: a cluster-mode agent programming 1000 Node objects (e2e/cni TestPeerScale1000).
#   5. cross-node pod to pod, routed and VXLAN, vs the kernel setups (e2e/cni TestCrossNodeBench).
#   6. hack/bench-netmap.sh: application to application over netmap application ports through
#      the switch (64- and 1514-byte frames, ping-pong RTT) vs the kernel path (veth + bridge).
# BENCH=micro|dataplane|cni|peers|crossnode|netmap runs one part only.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps bench
part=${BENCH:-all}
if [ "$part" = all ] || [ "$part" = micro ]; then
	echo "== Go benchmarks (pkg/netmap, pkg/vale, pkg/ifcore, backends, internal/appport)"
	go test -run '^$' -bench . -benchmem -count=1 -benchtime 1s -p 1 \
		./pkg/netmap ./pkg/vale ./pkg/ifcore ./pkg/netmap/afxdp ./pkg/netmap/afpacket ./internal/appport
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: the dataplane and CNI comparisons need root; skipped" >&2
	exit 0
fi
if [ "$part" = all ] || [ "$part" = dataplane ]; then
	echo "== Pod to pod: epair switch vs kernel bridge"
	./hack/bench-dataplane.sh
fi
if [ "$part" = all ] || [ "$part" = cni ]; then
	echo "== CNI ADD/DEL latency vs the bridge plugin, 250 pods"
	./hack/bench-cni.sh
fi
if [ "$part" = all ] || [ "$part" = peers ]; then
	echo "== 1000 Node objects as peers (500 routed, 500 VXLAN): programming time, a change, RSS, idle CPU"
	KUBEBUILDER_ASSETS=$(hack/k8s/build-k8s.sh envtest | tail -n 1)
	export KUBEBUILDER_ASSETS
	EPAIR_BENCH=1 go test -count=1 -v -timeout 10m -run TestPeerScale1000 ./e2e/cni 2>&1 | grep -v '^=== \(RUN\|PAUSE\|CONT\)'
fi
if [ "$part" = all ] || [ "$part" = crossnode ]; then
	echo "== Cross-node pod to pod (routed, VXLAN) vs bridge + routes and bridge + kernel VXLAN"
	EPAIR_BENCH=1 go test -count=1 -v -timeout 10m -run TestCrossNodeBench ./e2e/cni 2>&1 | grep -v '^=== \(RUN\|PAUSE\|CONT\)'
fi
if [ "$part" = all ] || [ "$part" = netmap ]; then
	echo "== netmap application ports: application to application through the switch vs veth + bridge"
	./hack/bench-netmap.sh
fi
