#!/usr/bin/env bash
# The whole test suite, as the README's second command and CI run it. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps test

echo "== go vet"
go vet ./...
echo "== go test -race (unit and root-namespace tests)"
go test -race -count=1 -timeout 30m ./...
