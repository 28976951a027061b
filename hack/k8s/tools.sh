#!/usr/bin/env bash
# tools.sh <tool>: print the path of a cached tool, building it first when
# missing (hack/k8s/build-k8s.sh). Tools: helm, kubectl, envtest (the
# KUBEBUILDER_ASSETS directory), k8s (the Kubernetes bin dir), etcd.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-1.36.3}
ETCD_VERSION=${ETCD_VERSION:-3.6.8}
HELM_VERSION=${HELM_VERSION:-3.22.0}
CACHE=${EPAIR_CACHE:-$HOME/.cache/epair}
case ${1:-} in
helm)
	p=$CACHE/helm-v$HELM_VERSION/bin/helm
	[ -x "$p" ] || "$HERE/build-k8s.sh" helm >&2
	echo "$p" ;;
kubectl)
	p=$CACHE/k8s-v$K8S_VERSION/bin/kubectl
	[ -x "$p" ] || "$HERE/build-k8s.sh" envtest >&2
	echo "$p" ;;
envtest)
	"$HERE/build-k8s.sh" envtest | tail -1 ;;
k8s)
	[ -x "$CACHE/k8s-v$K8S_VERSION/bin/kubelet" ] || "$HERE/build-k8s.sh" cluster >&2
	echo "$CACHE/k8s-v$K8S_VERSION/bin" ;;
etcd)
	[ -x "$CACHE/etcd-v$ETCD_VERSION/bin/etcd" ] || "$HERE/build-k8s.sh" envtest >&2
	echo "$CACHE/etcd-v$ETCD_VERSION/bin/etcd" ;;
*) echo "usage: tools.sh helm|kubectl|envtest|k8s|etcd" >&2; exit 2 ;;
esac
