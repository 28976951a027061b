#!/usr/bin/env bash
# Benchmarks (separate from tests): prints the figures BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps bench
go test -run '^$' -bench . -benchmem -count=1 ./pkg/...
