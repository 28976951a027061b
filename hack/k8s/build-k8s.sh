#!/usr/bin/env bash
# build-k8s.sh: build the Kubernetes binaries, etcd and helm that envtest and the
# e2e cluster need, from the Go module proxy only (no registry, no release
# downloads). Every artefact is cached outside the repository, keyed by version:
#
#   ~/.cache/epair/k8s-v$K8S_VERSION/bin/{kube-apiserver,kubectl,kubelet,
#                                          kube-controller-manager,kube-scheduler,kube-proxy}
#   ~/.cache/epair/etcd-v$ETCD_VERSION/bin/etcd
#   ~/.cache/epair/helm-v$HELM_VERSION/bin/helm
#   ~/.cache/epair/envtest-k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION/  (KUBEBUILDER_ASSETS)
#   ~/.cache/epair/k8s-v$K8S_VERSION/bin/{e2e.test,agnhost}  (target e2e only: the Kubernetes
#                                          e2e test binary, go test -c ./test/e2e, and the
#                                          agnhost binary of its test images)
#
# A binary is built only when it is missing; each is written to a temporary
# name and renamed into place, so an interrupted build never leaves a
# half-written binary in the cache.
#
# Usage: hack/k8s/build-k8s.sh [envtest|helm|cluster|all|e2e]   (default: all)
#   envtest: kube-apiserver, kubectl, etcd
#   helm:    envtest + helm (what hack/verify-generated.sh needs)
#   cluster: everything the e2e cluster needs (all of the above + kubelet,
#            kube-controller-manager, kube-scheduler, kube-proxy, helm)
#   e2e:     cluster + e2e.test and agnhost (the Kubernetes e2e specs, hack/k8s/conformance.sh;
#            cold: about 9 minutes more on 2 loaded cores once the cluster binaries are built)
# Prints the KUBEBUILDER_ASSETS directory on the last line of stdout.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-1.36.3}
ETCD_VERSION=${ETCD_VERSION:-3.6.8}
HELM_VERSION=${HELM_VERSION:-3.22.0}
CACHE=${EPAIR_CACHE:-$HOME/.cache/epair}
what=${1:-all}

K8S_DIR=$CACHE/k8s-v$K8S_VERSION
ETCD_DIR=$CACHE/etcd-v$ETCD_VERSION
HELM_DIR=$CACHE/helm-v$HELM_VERSION
ENVTEST_DIR=$CACHE/envtest-k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION

case $what in
envtest) k8s_bins="kube-apiserver kubectl"; want_helm=0 ;;
helm) k8s_bins="kube-apiserver kubectl"; want_helm=1 ;;
cluster | all) k8s_bins="kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy"; want_helm=1 ;;
e2e) k8s_bins="kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy e2e.test agnhost"; want_helm=1 ;;
*) echo "build-k8s.sh: unknown target $what (want envtest, helm, cluster, all or e2e)" >&2; exit 2 ;;
esac

log() { echo "build-k8s: $*" >&2; }

build_k8s() {
	local missing="" b
	for b in $k8s_bins; do [ -x "$K8S_DIR/bin/$b" ] || missing="$missing $b"; done
	[ -z "$missing" ] && return 0
	log "building Kubernetes v$K8S_VERSION:$missing (cold: about 5 minutes on 2 cores)"
	local minor staging src work
	minor=$(echo "$K8S_VERSION" | cut -d. -f2)
	staging=v0.${K8S_VERSION#1.} # k8s.io/api etc. are tagged v0.<minor>.<patch>
	mkdir -p "$K8S_DIR/bin"
	work=$(mktemp -d "$CACHE/.k8s-build.XXXXXX")
	TMPDIRS+=("$work")
	# k8s.io/kubernetes' go.mod replaces every k8s.io/<staging> module with
	# ./staging/src/..., which the module zip lacks: point them at the
	# published staging modules instead.
	src=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	[ -n "$src" ] || { log "cannot download k8s.io/kubernetes@v$K8S_VERSION"; return 1; }
	cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
	rm -rf "$work/src/go.work" "$work/src/go.work.sum" "$work/src/vendor"
	sed -i -E "/^replace \(/,/^\)/ s#=> \./staging/src/(k8s\.io/[a-z0-9-]+)#=> \1 $staging#" "$work/src/go.mod"
	local ldf="" p pkgs=""
	for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
		ldf="$ldf -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	# e2e.test is a test binary (go test -c); agnhost lives with the test images.
	local want_e2e=0
	for b in $missing; do
		case $b in
		e2e.test) want_e2e=1 ;;
		agnhost) pkgs="$pkgs ./test/images/agnhost" ;;
		*) pkgs="$pkgs ./cmd/$b" ;;
		esac
	done
	mkdir -p "$work/out"
	# shellcheck disable=SC2086
	[ -z "$pkgs" ] || (cd "$work/src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldf" -o "$work/out/" $pkgs)
	[ $want_e2e = 0 ] || (cd "$work/src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go test -c -vet=off -trimpath -ldflags "-s -w $ldf" -o "$work/out/e2e.test" ./test/e2e)
	for b in $missing; do mv -f "$work/out/$b" "$K8S_DIR/bin/$b"; done
	rm -rf "$work"
}

build_etcd() {
	[ -x "$ETCD_DIR/bin/etcd" ] && return 0
	log "building etcd v$ETCD_VERSION (about 30 s)"
	local work
	mkdir -p "$ETCD_DIR/bin"
	work=$(mktemp -d "$CACHE/.etcd-build.XXXXXX")
	TMPDIRS+=("$work")
	# go.etcd.io/etcd/server/v3 has replace directives too: wrap etcdmain.
	cat >"$work/main.go" <<'EOT'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOT
	(cd "$work" && go mod init etcdbuild >/dev/null 2>&1 &&
		go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null 2>&1 &&
		go mod tidy >/dev/null 2>&1 &&
		CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/etcd" .)
	mv -f "$work/etcd" "$ETCD_DIR/bin/etcd"
	rm -rf "$work"
}

build_helm() {
	[ -x "$HELM_DIR/bin/helm" ] && return 0
	log "building helm v$HELM_VERSION (about 1.5 minutes)"
	local work
	mkdir -p "$HELM_DIR/bin"
	work=$(mktemp -d "$CACHE/.helm-build.XXXXXX")
	TMPDIRS+=("$work")
	GOBIN=$work CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
	mv -f "$work/helm" "$HELM_DIR/bin/helm"
	rm -rf "$work"
}

mkdir -p "$CACHE"
# Remove this run's temporary build directories on exit, whatever happened
# (another build running at the same time keeps its own).
TMPDIRS=()
trap 'rm -rf "${TMPDIRS[@]}" 2>/dev/null' EXIT
build_etcd
build_k8s
[ "$want_helm" = 1 ] && build_helm
mkdir -p "$ENVTEST_DIR"
ln -sfn "$K8S_DIR/bin/kube-apiserver" "$ENVTEST_DIR/kube-apiserver"
ln -sfn "$K8S_DIR/bin/kubectl" "$ENVTEST_DIR/kubectl"
ln -sfn "$ETCD_DIR/bin/etcd" "$ENVTEST_DIR/etcd"
log "ok: $("$K8S_DIR/bin/kube-apiserver" --version), etcd $("$ETCD_DIR/bin/etcd" --version | head -1 | awk '{print $NF}')"
echo "$ENVTEST_DIR"
