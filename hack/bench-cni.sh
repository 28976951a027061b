#!/usr/bin/env bash
# CNI figures through libcni, in one run: ADD/DEL latency p50/p99 of epair-cni against the
# reference bridge + host-local plugins (50 sequential pods, a burst of 20), then 250 pods on
# the node (pairwise reachability on a sample, agent RSS and idle CPU) and pod-to-pod TCP.
# Needs root. The tables are printed; EPAIR_BENCH_OUT=FILE also writes them to FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps bench
EPAIR_BENCH=1 go test -count=1 -v -timeout 30m \
	-run 'TestLatencyVsBridge|TestScale250|TestThroughput' ./e2e/cni 2>&1 |
	grep -v '^=== \(RUN\|PAUSE\|CONT\)'
