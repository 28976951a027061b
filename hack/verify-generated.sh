#!/usr/bin/env bash
# verify-generated.sh: fail when generated files drift from their sources.
# Regenerates (hack/k8s/generate.sh) and compares with the files in the tree:
#   api/v1alpha1/zz_generated.deepcopy.go, charts/epair/crds/, charts/epair/files/rbac/,
#   manifests/epair.yaml
# The tree is left as it was; on drift the diff is printed and the exit status is 1.
# Usage: hack/verify-generated.sh [code|manifests|all]   (default: all; manifests
# need helm, which hack/k8s/build-k8s.sh builds into ~/.cache/epair once, ~1.5 min)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case $what in
code) paths="api/v1alpha1/zz_generated.deepcopy.go charts/epair/crds charts/epair/files/rbac" ;;
manifests) paths="manifests" ;;
all) paths="api/v1alpha1/zz_generated.deepcopy.go charts/epair/crds charts/epair/files/rbac manifests" ;;
*) echo "verify-generated.sh: unknown target $what" >&2; exit 2 ;;
esac
saved=$(mktemp -d)
trap 'rm -rf "$saved"' EXIT
for p in $paths; do
	mkdir -p "$saved/before/$(dirname "$p")"
	[ -e "$p" ] && cp -a "$p" "$saved/before/$p"
done
restore() {
	for p in $paths; do
		mkdir -p "$saved/after/$(dirname "$p")"
		[ -e "$p" ] && cp -a "$p" "$saved/after/$p"
		rm -rf "$p"
		[ -e "$saved/before/$p" ] && cp -a "$saved/before/$p" "$p"
	done
	return 0
}
if ! hack/k8s/generate.sh "$what"; then
	restore
	echo "verify-generated: generation failed" >&2
	exit 1
fi
restore
if ! diff -ruN "$saved/before" "$saved/after"; then
	echo "verify-generated: generated files are out of date; run hack/k8s/generate.sh and commit the result" >&2
	exit 1
fi
echo "verify-generated: ok ($paths)"
