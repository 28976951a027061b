#!/usr/bin/env bash
# Benchmarks (separate from tests): the figures BENCHMARKS.md quotes, each next to the kernel
# alternative measured in the same run where there is one.
#   1. Go micro-benchmarks of the packet path (netmap, vale, ifcore, backends): pps, allocs.
#   2. hack/bench-dataplane.sh: pod to pod through the epair switch vs the Linux bridge.
#   3. hack/bench-cni.sh: CNI ADD/DEL latency vs the bridge plugin, 250-pod scale.
# BENCH=micro|dataplane|cni runs one part only.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps bench
part=${BENCH:-all}
if [ "$part" = all ] || [ "$part" = micro ]; then
	echo "== Go benchmarks (pkg/netmap, pkg/vale, pkg/ifcore, backends)"
	go test -run '^$' -bench . -benchmem -count=1 -benchtime 1s -p 1 \
		./pkg/netmap ./pkg/vale ./pkg/ifcore ./pkg/netmap/afxdp ./pkg/netmap/afpacket
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
