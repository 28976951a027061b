#!/usr/bin/env bash
# deadcode.sh: functions no binary of the project can reach (golang.org/x/tools/cmd/deadcode
# over the binaries: node-agent, epair-cni, valectl, the install-cni init step and dpbench).
# What remains is listed, with the reason it stays, in hack/deadcode.allow; the check fails
# on unreachable code the list does not name, and on list entries that are no longer
# unreachable (so the list stays true). Usage: hack/deadcode.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^DEADCODE_VERSION ?= //p' Makefile)
found=$(mktemp)
allowed=$(mktemp)
trap 'rm -f "$found" "$allowed"' EXIT
go run "golang.org/x/tools/cmd/deadcode@$version" ./cmd/... ./internal/controller/cmd/... ./internal/dataplane/dpbench |
	sed -E 's/^([^:]+):[0-9]+:[0-9]+: unreachable func: (.*)$/\1 \2/' | sort -u >"$found"
grep -vE '^\s*(#|$)' hack/deadcode.allow | awk '{print $1, $2}' | sort -u >"$allowed"
new=$(comm -23 "$found" "$allowed")
stale=$(comm -13 "$found" "$allowed")
if [ -n "$new" ] || [ -n "$stale" ]; then
	[ -n "$new" ] && { echo "deadcode: unreachable from every binary and not in hack/deadcode.allow (remove it, or list it with the reason it stays):"; echo "$new"; }
	[ -n "$stale" ] && { echo "deadcode: listed in hack/deadcode.allow but reachable or gone now (remove the entry):"; echo "$stale"; }
	exit 1
fi
echo "deadcode: ok ($(wc -l <"$found") unreachable functions, each listed with its reason in hack/deadcode.allow)"
