#!/usr/bin/env bash
# conformance.sh: the Kubernetes [sig-network] [Conformance] specs (the e2e.test binary
# of k8s.io/kubernetes at the cluster's version) against a real single-node cluster with
# epair installed by Helm, as e2e/k8s/run.sh installs it.
#
#   1. builds what it needs, cached under ~/.cache/epair keyed by version:
#      Kubernetes + e2e.test + agnhost (hack/k8s/build-k8s.sh e2e), the specs' images
#      (hack/k8s/build-e2e-images.sh) and CoreDNS; the agent image (hack/k8s/build-image.sh)
#   2. starts the cluster (hack/k8s/cluster-up.sh) with kubelet's clusterDNS at $DNS_IP
#   3. imports the agent image and helm installs charts/epair with e2e/k8s/values-e2e.yaml
#      and e2e/k8s/values-conformance.yaml (portmap chained after epair-cni: hostPort)
#   4. installs CoreDNS as kube-dns, from the add-on manifest of the same module
#      (cluster/addons/dns/coredns/coredns.yaml.base), image built from source
#   5. runs the specs (hack/k8s/e2e-specs.sh: imports the images, runs e2e.test, prints
#      every spec's result and the pass/fail/skip counts)
#   6. tears the cluster down whatever happened and checks that nothing is left
# Exits non-zero when a spec failed (or none ran) or the teardown left something.
#
# Specs that cannot apply to a single-node cluster skip themselves at run time (the e2e
# framework checks the node count); their reasons are printed. e2e/k8s/README.md lists them.
#
# Needs root. Usage: hack/k8s/conformance.sh     (make conformance)
# Env: WORK (default /tmp/epair-k8s-conformance), FOCUS / SKIP (ginkgo regular
# expressions; default FOCUS '\[sig-network\].*\[Conformance\]', no SKIP), KEEP=1 (leave
# the cluster up; tear down with WORK=... hack/k8s/cluster-down.sh), DNS_IP (10.96.0.10).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HK=$ROOT/hack/k8s
export WORK=${WORK:-/tmp/epair-k8s-conformance}
FOCUS=${FOCUS:-'\[sig-network\].*\[Conformance\]'}
SKIP=${SKIP:-}
DNS_IP=${DNS_IP:-10.96.0.10}
K8S_VERSION=${K8S_VERSION:-1.36.3}
REL=epair
RELNS=epair-system
K="$WORK/bin/kubectl"
[ "$(id -u)" = 0 ] || { echo "conformance: needs root" >&2; exit 1; }
. "$ROOT/hack/ensure-go.sh"
. "$ROOT/hack/deps.sh"
epair_deps test

T0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
ok() { echo "    ok: $*"; }
fail() { echo "FAIL: $*" >&2; diagnostics >&2 || true; exit 1; }
diagnostics() {
	echo "--- diagnostics"
	$K get nodes -o wide 2>&1 | head
	$K get pods -A -o wide 2>&1 | head -30
	$K -n "$RELNS" logs ds/$REL-agent -c agent --tail=40 2>&1
	$K get events -A --sort-by=.lastTimestamp 2>&1 | tail -20
}
our_links() { # as e2e/k8s/run.sh: the chart network's host links (and the host port)
	ip -j link show 2>/dev/null | python3 -c '
import json, sys
for l in json.load(sys.stdin):
    if l.get("ifalias", "").startswith("epair-cni:epair/") or (len(sys.argv) > 1 and l.get("ifname") == "epvale0"):
        print(l["ifname"])' "$@"
}

step "build: Kubernetes, e2e.test, agnhost, helm (cached in ~/.cache/epair), the specs' images and the agent image"
t=$SECONDS
"$HK/build-k8s.sh" e2e >/dev/null
"$HK/build-e2e-images.sh" all >/dev/null
HELM=$("$HK/tools.sh" helm)
IMG=$(TAG=e2e "$HK/build-image.sh" "$WORK.image.tar")
ok "built in $((SECONDS - t)) s"

teardown() {
	local rc=$?
	if [ "${KEEP:-0}" = 1 ]; then
		echo "KEEP=1: cluster left up; tear down with WORK=$WORK $HK/cluster-down.sh"
		exit $rc
	fi
	step "teardown"
	EPAIR_LEFTOVERS=1 "$HK/cluster-down.sh" || true
	local left="" ns
	pgrep -f "$WORK/" >/dev/null 2>&1 && left="$left processes($(pgrep -f "$WORK/" | tr '\n' ' '))"
	pgrep -f '^(/[^ ]*/)?containerd-shim-runc-v2 ' >/dev/null 2>&1 && left="$left containerd-shims"
	if [ -f "$WORK/netns.ours" ]; then
		while read -r ns; do [ -e "$ns" ] && left="$left netns($ns)"; done <"$WORK/netns.ours"
	fi
	[ -n "$(our_links host-port)" ] && left="$left epair-links($(our_links host-port | tr '\n' ' '))"
	if [ -n "$left" ]; then
		echo "FAIL: teardown left:$left" >&2
		rc=1
	else
		ok "cluster torn down, nothing left"
	fi
	rm -f "$IMG"
	[ $rc = 0 ] && echo "CONFORMANCE-OK ($(( $(date +%s) - T0 ))s)"
	exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

step "cluster up (kubelet clusterDNS $DNS_IP)"
CLUSTER_DNS=$DNS_IP "$HK/cluster-up.sh" >"$WORK.up.log" 2>&1 || { cat "$WORK.up.log" >&2; fail "cluster-up.sh"; }
export KUBECONFIG=$WORK/run/admin.kubeconfig
NODE=$($K get nodes -o jsonpath='{.items[0].metadata.name}')
ok "node $NODE"

step "import the agent image and helm install epair"
ctr -n k8s.io images import "$IMG" >/dev/null
"$HELM" install $REL "$ROOT/charts/epair" -n $RELNS --create-namespace \
	-f "$ROOT/e2e/k8s/values-e2e.yaml" -f "$ROOT/e2e/k8s/values-conformance.yaml" >/dev/null
$K -n $RELNS rollout status ds/$REL-agent --timeout=180s >/dev/null || fail "agent DaemonSet not ready"
$K wait --for=condition=Ready node/"$NODE" --timeout=120s >/dev/null || fail "node not Ready"
for i in $(seq 60); do [ -z "$($K get node "$NODE" -o jsonpath='{.spec.taints}')" ] && break; sleep 1; done
ok "agent ready, node Ready: $(python3 -c 'import json; print(", ".join(p["type"] for p in json.load(open("/etc/cni/net.d/10-epair.conflist"))["plugins"]))') in the conflist"

step "CoreDNS as kube-dns at $DNS_IP (the add-on manifest of k8s.io/kubernetes@v$K8S_VERSION)"
SRC=$(cd "$ROOT" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
"$HK/build-e2e-images.sh" all | awk '$1 == "image_ref" && $3 ~ /coredns/ { print $2 }' | while read -r t; do
	ctr -n k8s.io images import "$t" >/dev/null
done
sed -e 's/__DNS__DOMAIN__/cluster.local/g' -e "s/__DNS__SERVER__/$DNS_IP/g" -e 's/__DNS__MEMORY__LIMIT__/170Mi/g' \
	"$SRC/cluster/addons/dns/coredns/coredns.yaml.base" | $K apply -f - >/dev/null
$K -n kube-system rollout status deploy/coredns --timeout=180s >/dev/null || fail "CoreDNS not ready"
ok "$($K -n kube-system get deploy coredns -o jsonpath='{.spec.template.spec.containers[0].image}') ready behind $($K -n kube-system get svc kube-dns -o jsonpath='{.spec.clusterIP}')"

step "Kubernetes e2e specs: focus '$FOCUS'${SKIP:+, skip '$SKIP'}"
REPORT=$WORK.e2e-report IMAGES=all "$HK/e2e-specs.sh" "$FOCUS" "$SKIP" || fail "e2e specs (log and JSON report: $WORK.e2e-report)"
