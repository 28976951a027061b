#!/usr/bin/env bash
# The whole test suite, as the README's second command and CI run it. Installs what it needs:
# Go (hack/ensure-go.sh), Debian packages (hack/deps.sh), and the Kubernetes binaries that
# envtest and the e2e cluster use, built once from the Go module proxy and cached under
# ~/.cache/epair. The Kubernetes e2e alone: e2e/k8s/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps test
start=$SECONDS

echo "== gofmt, go vet"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
echo "== staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@"$(sed -n 's/^STATICCHECK_VERSION ?= //p' Makefile)" ./...

echo "== deadcode (what no binary reaches is listed with its reason in hack/deadcode.allow)"
hack/deadcode.sh

echo "== Kubernetes binaries for envtest and helm (cached: $HOME/.cache/epair)"
KUBEBUILDER_ASSETS=$(hack/k8s/build-k8s.sh helm | tail -n 1)
export KUBEBUILDER_ASSETS

echo "== generated files (CRDs, deepcopy, RBAC, manifests) match their sources"
hack/verify-generated.sh

echo "== go test -race (unit, fuzz seeds, envtest, root-namespace and libcni end-to-end tests)"
go test -race -count=1 -timeout 40m ./...

echo "== Kubernetes end to end: a real single-node cluster, helm install, pods through epair-cni"
if [ "$(id -u)" -eq 0 ]; then
	e2e/k8s/run.sh
else
	echo "skipped: e2e/k8s/run.sh needs root"
fi

echo "== test suite passed in $((SECONDS - start)) s"
