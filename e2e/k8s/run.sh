#!/usr/bin/env bash
# e2e/k8s/run.sh: epair on a real single-node Kubernetes cluster.
#
# Builds what it needs (Kubernetes, etcd and helm cached in ~/.cache/epair by
# hack/k8s/build-k8s.sh; the agent image by hack/k8s/build-image.sh), starts a
# cluster with containerd + kubelet (hack/k8s/cluster-up.sh), installs epair with
# helm install, and checks, in order:
#   1. the API server rejects an invalid VirtualSwitch and PortPolicy with a clear message
#   2. the agent's RBAC is least-privilege, and the admission policy pins each agent
#      to its own node's NodeState
#   3. the init step installed epair-cni atomically (identical to the image's binary)
#   4. the agents roll out; the node turns Ready only once the agent wrote the
#      conflist; NodeState reports Ready with the node's pod CIDR
#   5. pods scheduled by kubelet get addresses from the node's pod CIDR through
#      epair-cni, on epair links
#   6. pod-to-pod traffic is counted on the pods' ports (switch and fast path): their counters in
#      NodeState grow with the traffic
#   7. a ClusterIP Service reaches its pods through kube-proxy, hairpin included
#   8. kubectl apply of a PortPolicy limits a running pod's throughput to the
#      configured rate (measured, within 10%); deleting it lifts the limit
#  8b. anti-spoofing without any PortPolicy: a NET_ADMIN pod's second address is dropped
#      (counted as spoofed-ip in NodeState); a PortPolicy with antiSpoofing: false lets it
#      through, live
#  8c. a second VirtualSwitch (a secondary network with its own pod range) runs without an
#      agent restart and the agent writes its conflist; two pods get a second interface on
#      it through a second CNI invocation with that conflist (as Multus makes it) and ping
#      each other over it; deleting the VirtualSwitch removes the interfaces, ports and
#      conflist and leaves the first network's pods connected; a live change of the
#      default queue reaches a pod attached afterwards
#  8d. kubectl epair capture of a pod while it serves HTTP, from the admin's kubeconfig through
#      the API server: the pcap, read with tshark, holds the pod's TCP segments on port 8080
#      both ways
#  8e. kubectl epair trace from one pod to another (named as a pod): delivered to the other
#      pod's port; from a spoofed address: dropped as spoofed-ip
#  8f. a second node joins (e2e/k8s/node2.sh): a network namespace on a subnet of its own
#      behind the host, with its own agent in cluster mode (the chart's ServiceAccount, through
#      a token bound to its Node), its own Node object and a pod made through epair-cni; both
#      agents take the other node as a VXLAN peer; a kubelet pod and the second node's pod
#      reach each other (ping, HTTP) through the VXLAN device; a ClusterIP Service whose only
#      endpoint (an EndpointSlice made by the test) is that pod answers through kube-proxy;
#      deleting the Node removes the peer, its route, the VXLAN device and its NodeState
#  8g. netmap application ports: two pods with the annotation epair.dev/netmap-ports: "pg"
#      run the image's nm-pktgen on <switch>:pg through @epair-netmap in their own network
#      namespace, pong and ping (200 of 200 replies); a pod without the annotation finds no
#      socket (connection refused); a pod with ports of its own may not open the pong pod's
#      port by its switch name (permission denied); the ports go with the pods
#  8h. the Kubernetes e2e "[sig-network] Networking Granular Checks: Pods" specs of
#      k8s.io/kubernetes at the cluster's version (e2e.test and the agnhost image built from
#      the module and cached, hack/k8s/e2e-specs.sh): intra-pod and node-pod communication
#      over HTTP and UDP all pass
#   9. helm upgrade keeps running pods connected (same pods, same addresses, traffic)
#  10. deleting the pods leaves no epair links, ports or addresses behind
#  11. helm uninstall leaves the node clean (no conflist, plugin, links, nft table,
#      socket or state)
# The cluster is torn down at the end whatever happened (hack/k8s/cluster-down.sh),
# and the script checks that nothing of it is left.
#
# Needs root. Usage: e2e/k8s/run.sh      Env: WORK (default /tmp/epair-k8s-e2e),
# KEEP=1 (leave the cluster up for debugging; tear down with
# WORK=... hack/k8s/cluster-down.sh), RATE (PortPolicy rate, default 10M).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HK=$ROOT/hack/k8s
export WORK=${WORK:-/tmp/epair-k8s-e2e}
RATE=${RATE:-10M}
NS=epair-e2e
REL=epair
RELNS=epair-system
[ "$(id -u)" = 0 ] || { echo "e2e/k8s: needs root" >&2; exit 1; }
. "$ROOT/hack/deps.sh"
epair_deps test # tshark reads the captures

T0=$(date +%s)
# our_links: host links of the chart's network ("epair-cni:epair/..." in the owner alias the
# plugin records: "epair-cni:epair/<containerID>/<ifname>"), and the host port.
# Other epair runs on the host (other networks) are not ours to count or remove.
our_links() {
	ip -j link show 2>/dev/null | python3 -c '
import json, sys
for l in json.load(sys.stdin):
    if l.get("ifalias", "").startswith("epair-cni:epair/") or (len(sys.argv) > 1 and l.get("ifname") == "epvale0"):
        print(l["ifname"])' "$@"
}
step() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
ok() { echo "    ok: $*"; }
fail() { echo "FAIL: $*" >&2; diagnostics >&2 || true; exit 1; }

# --- build (cached) -----------------------------------------------------------
step "build: Kubernetes, e2e.test, etcd, helm, agnhost image (cached in ~/.cache/epair) and the agent image"
"$HK/build-k8s.sh" e2e >/dev/null
"$HK/build-e2e-images.sh" agnhost >/dev/null
HELM=$("$HK/tools.sh" helm)
IMG=$(TAG=e2e "$HK/build-image.sh" "$WORK.image.tar")
KEPAIR=$WORK.kubectl-epair
(cd "$ROOT" && go build -o "$KEPAIR" ./cmd/kubectl-epair)

# --- cluster ------------------------------------------------------------------
teardown() {
	local rc=$?
	if [ "${KEEP:-0}" = 1 ]; then
		[ -d "$WORK/node2" ] && echo "KEEP=1: second node left up; remove it first with WORK=$WORK $ROOT/e2e/k8s/node2.sh down"
		echo "KEEP=1: cluster left up; tear down with WORK=$WORK $HK/cluster-down.sh"
		exit $rc
	fi
	step "teardown"
	# The second node of step 8f, if a failure left it: while the API server and the
	# node's agent still run (its Node deleted, the agent drops the peer).
	[ -d "$WORK/node2" ] && { "$ROOT/e2e/k8s/node2.sh" down || true; }
	EPAIR_LEFTOVERS=1 "$HK/cluster-down.sh" || true
	local left=""
	# The cluster's processes all run from $WORK (binaries, configs); the
	# shims are containerd's children.
	pgrep -f "$WORK/" >/dev/null 2>&1 && left="$left processes($(pgrep -f "$WORK/" | tr '\n' ' '))"
	pgrep -f '^(/[^ ]*/)?containerd-shim-runc-v2 ' >/dev/null 2>&1 && left="$left containerd-shims"
	# only this cluster's pod namespaces (cluster-down.sh records them); others may be another run's
	if [ -f "$WORK/netns.ours" ]; then
		local ns
		while read -r ns; do [ -e "$ns" ] && left="$left netns($ns)"; done <"$WORK/netns.ours"
	fi
	[ -n "$(our_links host-port)" ] && left="$left epair-links($(our_links host-port | tr '\n' ' '))"
	# step 8f's second node and the tunnel to it
	for ns in epair-e2e-node2 epair-e2e-node2-pod; do [ -e "/run/netns/$ns" ] && left="$left netns($ns)"; done
	ip link show ep2-host >/dev/null 2>&1 && left="$left link(ep2-host)"
	ip link show epair.vxlan >/dev/null 2>&1 && left="$left link(epair.vxlan)"
	if [ -n "$left" ]; then
		echo "FAIL: teardown left:$left" >&2
		rc=1
	else
		ok "cluster torn down, nothing left"
	fi
	rm -f "$IMG" "$KEPAIR"
	[ $rc = 0 ] && echo "E2E-K8S-OK ($(( $(date +%s) - T0 ))s)"
	exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM
step "cluster up"
"$HK/cluster-up.sh" >"$WORK.up.log" 2>&1 || { cat "$WORK.up.log" >&2; fail "cluster-up.sh"; }
export KUBECONFIG=$WORK/run/admin.kubeconfig
K="$WORK/bin/kubectl"
NODE=$($K get nodes -o jsonpath='{.items[0].metadata.name}')
PODCIDR=$($K get node "$NODE" -o jsonpath='{.spec.podCIDR}')
for i in $(seq 30); do [ -n "$PODCIDR" ] && break; sleep 1; PODCIDR=$($K get node "$NODE" -o jsonpath='{.spec.podCIDR}'); done
[ -n "$PODCIDR" ] || fail "node $NODE got no pod CIDR"
ok "node $NODE, pod CIDR $PODCIDR"

diagnostics() {
	echo "--- diagnostics"
	$K get nodes -o wide 2>&1 | head
	$K get pods -A -o wide 2>&1 | head -30
	$K -n "$RELNS" logs ds/$REL-agent -c agent --tail=40 2>&1
	$K get nodestates -o yaml 2>&1 | head -80
	$K get events -A --sort-by=.lastTimestamp 2>&1 | tail -20
	our_links host-port
	if [ -f "$WORK/node2/agent.log" ]; then
		echo "--- the second node's agent (step 8f)"
		tail -n 20 "$WORK/node2/agent.log"
		ip route show proto 77
		ip -br link show epair.vxlan 2>&1
	fi
}

# --- install ------------------------------------------------------------------
step "import the agent image and helm install"
ctr -n k8s.io images import "$IMG" >/dev/null
"$HELM" install $REL "$ROOT/charts/epair" -n $RELNS --create-namespace -f "$ROOT/e2e/k8s/values-e2e.yaml" >/dev/null
$K wait --for condition=established --timeout=30s crd/virtualswitches.epair.dev crd/portpolicies.epair.dev crd/nodestates.epair.dev >/dev/null
ok "installed"

step "1. the API server rejects invalid objects"
$K create namespace $NS >/dev/null
expect_reject() { # expect_reject <what> <message part> <yaml>
	local out
	if out=$(echo "$3" | $K apply -f - 2>&1); then
		fail "$1 was accepted: $out"
	fi
	echo "$out" | grep -qF -- "$2" || fail "$1 rejected without '$2': $out"
	ok "$1 rejected: $(echo "$out" | grep -oF -- "$2" | head -1)"
}
expect_reject "VirtualSwitch mtu 10" "spec.mtu" 'apiVersion: epair.dev/v1alpha1
kind: VirtualSwitch
metadata: {name: valebad}
spec: {mtu: 10}'
expect_reject "VirtualSwitch fdb size 1000" "fdb.size must be a power of two" 'apiVersion: epair.dev/v1alpha1
kind: VirtualSwitch
metadata: {name: valebad}
spec: {fdb: {size: 1000}}'
expect_reject "VirtualSwitch named br0" "metadata.name must be 'vale'" 'apiVersion: epair.dev/v1alpha1
kind: VirtualSwitch
metadata: {name: br0}
spec: {}'
expect_reject "PortPolicy burst without rate" "burst needs rate" "apiVersion: epair.dev/v1alpha1
kind: PortPolicy
metadata: {name: bad, namespace: $NS}
spec: {podSelector: {}, burst: 64Ki}"

step "2. least-privilege RBAC and the NodeState admission policy"
SA=system:serviceaccount:$RELNS:$REL-agent
can() { $K auth can-i "$@" --as="$SA" 2>/dev/null || true; }
for a in "list pods" "watch nodes" "list virtualswitches.epair.dev" "list portpolicies.epair.dev" "create nodestates.epair.dev" "create events.events.k8s.io"; do
	[ "$(can $a)" = yes ] || fail "agent cannot $a"
done
[ "$(can update nodestates.epair.dev --subresource=status)" = yes ] || fail "agent cannot update nodestates/status"
[ "$(can get daemonsets -n $RELNS)" = yes ] || fail "agent cannot get its daemonset"
for a in "delete pods" "create pods" "get secrets" "update virtualswitches.epair.dev" "update portpolicies.epair.dev" "delete nodes" "update nodes" "get daemonsets -n default" "create events"; do
	[ "$(can $a)" = no ] || fail "agent may $a"
done
ok "agent may read nodes/pods/switches/policies, write NodeState and events; nothing else checked is allowed"
out=$(printf 'apiVersion: epair.dev/v1alpha1\nkind: NodeState\nmetadata: {name: not-%s}\nspec: {nodeName: not-%s}\n' "$NODE" "$NODE" |
	$K create -f - --as="$SA" --as-user-extra=authentication.kubernetes.io/node-name="$NODE" 2>&1) && fail "agent of $NODE wrote another node's NodeState"
echo "$out" | grep -q "may write only its own node" || fail "NodeState of another node rejected without the policy's message: $out"
ok "an agent cannot write another node's NodeState"

step "3. the init step installed epair-cni atomically"
for i in $(seq 60); do [ -x /opt/cni/bin/epair-cni ] && break; sleep 1; done
[ -x /opt/cni/bin/epair-cni ] || fail "epair-cni not installed in /opt/cni/bin"
want=$(tar -xOf "$IMG" --wildcards '*/layer.tar' | tar -xOf - ./epair-cni | sha256sum | cut -d' ' -f1)
got=$(sha256sum /opt/cni/bin/epair-cni | cut -d' ' -f1)
[ "$want" = "$got" ] || fail "installed epair-cni differs from the image's ($got != $want)"
ls -a /opt/cni/bin | grep -q '\.tmp-' && fail "temporary file left in /opt/cni/bin"
ok "/opt/cni/bin/epair-cni = the image's binary, no temporary file"

step "4. the agent rolls out, writes the conflist, the node turns Ready"
ready=0
for i in $(seq 120); do
	[ "$($K -n $RELNS get ds/$REL-agent -o jsonpath='{.status.numberReady}')" = 1 ] && { ready=1; break; }
	if $K -n $RELNS logs ds/$REL-agent -c agent 2>&1 | grep -q 'flag provided but not defined'; then
		fail "NOT RUN from here: cmd/node-agent has no cluster mode yet ($($K -n $RELNS logs ds/$REL-agent -c agent 2>&1 | head -1)); it needs -mode=cluster and the flags in charts/epair/templates/daemonset.yaml, wired to internal/controller"
	fi
	sleep 1
done
[ $ready = 1 ] || fail "agent DaemonSet not ready after 120 s"
$K wait --for=condition=Ready node/"$NODE" --timeout=60s >/dev/null || fail "node not Ready"
[ -f /etc/cni/net.d/10-epair.conflist ] || fail "conflist not written"
$K wait --for=condition=Ready nodestate/"$NODE" --timeout=30s >/dev/null || fail "NodeState not Ready"
[ "$($K get nodestate "$NODE" -o jsonpath='{.status.podCIDRs[0]}')" = "$PODCIDR" ] || fail "NodeState pod CIDRs"
ok "agent ready, conflist written, node Ready, NodeState Ready with $PODCIDR"

step "5. pods get addresses through epair-cni"
$K -n $NS apply -f - >/dev/null <<EOT
apiVersion: apps/v1
kind: Deployment
metadata: {name: bb}
spec:
  replicas: 2
  selector: {matchLabels: {app: bb}}
  template:
    metadata: {labels: {app: bb}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: bb
        image: epair/busybox:local
        imagePullPolicy: Never
        command: ["sh", "-c", "echo hello-from-\$(hostname) > /tmp/index.html; dd if=/dev/zero of=/tmp/big bs=1M count=12 2>/dev/null; exec httpd -f -p 8080 -h /tmp"]
EOT
$K -n $NS wait --for=condition=Available deploy/bb --timeout=120s >/dev/null || fail "pods not available"
PODS=($($K -n $NS get pods -l app=bb -o jsonpath='{.items[*].metadata.name}'))
A=${PODS[0]} B=${PODS[1]}
AIP=$($K -n $NS get pod "$A" -o jsonpath='{.status.podIP}')
BIP=$($K -n $NS get pod "$B" -o jsonpath='{.status.podIP}')
in_cidr() { python3 -c "import ipaddress,sys; sys.exit(0 if ipaddress.ip_address('$1') in ipaddress.ip_network('$2') else 1)"; }
for ip in "$AIP" "$BIP"; do in_cidr "$ip" "$PODCIDR" || fail "pod address $ip not in $PODCIDR"; done
$K -n $NS exec "$A" -- ip -o link show eth0 >/dev/null || fail "no eth0 in $A"
links=$(our_links | wc -l)
[ "$links" -ge 2 ] || fail "expected ≥2 epair host links, found $links"
ok "$A=$AIP $B=$BIP in $PODCIDR; $links epair host links"

step "6. pod-to-pod traffic is counted on the pods' ports (the switch's and the fast path's frames)"
port_rx() { # port_rx <pod>: rxPackets of the pod's port in NodeState (switch and fast path)
	$K get nodestate "$NODE" -o jsonpath="{.status.ports[?(@.pod==\"$NS/$1\")].rxPackets}"
}
rx0=$(port_rx "$A"); rx0=${rx0:-0}
$K -n $NS exec "$A" -- ping -c 20 -i 0.2 -W 2 "$BIP" >/dev/null || fail "ping $A -> $B"
out=$($K -n $NS exec "$A" -- wget -qO- "http://$BIP:8080/index.html") || fail "HTTP $A -> $B"
case $out in *"hello-from-$B"*) ;; *) fail "HTTP $A -> $B answered '$out'" ;; esac
rx1=$rx0
for i in $(seq 10); do rx1=$(port_rx "$A"); [ "${rx1:-0}" -ge $((rx0 + 20)) ] && break; sleep 1; done
[ "${rx1:-0}" -ge $((rx0 + 20)) ] || fail "port of $A counted $rx0 -> $rx1 frames for 20 pings + HTTP"
ok "ping and HTTP $A -> $B; $A's port rxPackets $rx0 -> $rx1"

step "7. ClusterIP Service through kube-proxy, hairpin included"
$K -n $NS expose deploy bb --port=80 --target-port=8080 --name=bb-svc >/dev/null
SVC=$($K -n $NS get svc bb-svc -o jsonpath='{.spec.clusterIP}')
seen=""
for i in $(seq 60); do
	r=$($K -n $NS exec "$A" -- timeout 3 wget -qO- "http://$SVC/index.html" 2>/dev/null || true)
	case $r in *"$A"*) seen="$seen hairpin" ;; *"$B"*) seen="$seen other" ;; esac
	echo "$seen" | grep -q hairpin && echo "$seen" | grep -q other && break
	sleep 0.5
done
echo "$seen" | grep -q other || fail "service $SVC did not reach $B from $A"
echo "$seen" | grep -q hairpin || fail "service $SVC did not reach $A from itself (hairpin)"
ok "service $SVC reached both backends from $A, itself included (hairpin)"

step "8. a PortPolicy limits a running pod's throughput to $RATE; deleting it lifts the limit"
RATE_BPS=$(python3 -c "
s='$RATE'; m={'k':1e3,'M':1e6,'G':1e9}
print(int(float(s[:-1])*m[s[-1]]) if s[-1] in m else int(s))")
# Download 12 MB from B into A; the pod's clock (/proc/uptime) times it.
measure() {
	local t
	t=$($K -n $NS exec "$A" -- sh -c "a=\$(cut -d' ' -f1 /proc/uptime); wget -qO /dev/null http://$BIP:8080/big || exit 1; b=\$(cut -d' ' -f1 /proc/uptime); echo \$a \$b") || return 1
	echo "$t" | awk '{printf "%d\n", 12*1048576*8/($2-$1)}'
}
base=$(measure) || fail "unlimited download"
echo "    unlimited: $((base / 1000000)) Mbit/s"
[ "$base" -gt $((RATE_BPS * 3)) ] || fail "unlimited throughput $base bit/s is not well above $RATE_BPS: the test could not tell a limit"
$K -n $NS label pod "$A" e2e-limit=yes >/dev/null
$K -n $NS apply -f - >/dev/null <<EOT
apiVersion: epair.dev/v1alpha1
kind: PortPolicy
metadata: {name: limit-a}
spec:
  podSelector: {matchLabels: {e2e-limit: "yes"}}
  rate: "$RATE"
EOT
sleep 2
lim=$(measure) || fail "limited download"
echo "    limited: $(awk -v b="$lim" 'BEGIN{printf "%.2f", b/1e6}') Mbit/s (policy $RATE)"
awk -v m="$lim" -v r="$RATE_BPS" 'BEGIN{d=(m-r)/r; if (d<0) d=-d; exit !(d<=0.10)}' ||
	fail "limited throughput $lim bit/s not within 10% of $RATE_BPS"
[ "$($K -n $NS get pod "$A" -o jsonpath='{.status.containerStatuses[0].restartCount}')" = 0 ] || fail "pod restarted"
$K -n $NS delete portpolicy limit-a >/dev/null
sleep 2
free=$(measure) || fail "download after the policy was deleted"
echo "    lifted: $((free / 1000000)) Mbit/s"
[ "$free" -gt $((RATE_BPS * 3)) ] || fail "limit not lifted: $free bit/s"
ok "limited to within 10% of $RATE and lifted again, pod not restarted"

step "8b. anti-spoofing is the default; a PortPolicy opting out lets a pod use a second address, live"
# A pod allowed to give its eth0 a second address (NET_ADMIN), to send from it. No PortPolicy
# selects it: the switch's default port security applies.
$K -n $NS apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Pod
metadata: {name: spoofer, labels: {e2e-spoof: "yes"}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: s
    image: epair/busybox:local
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    securityContext: {capabilities: {add: ["NET_ADMIN"]}}
EOT
$K -n $NS wait --for=condition=Ready pod/spoofer --timeout=60s >/dev/null || fail "spoofer pod not ready"
SPOOF=$(python3 -c "import ipaddress; n=ipaddress.ip_network('$PODCIDR'); print(n[n.num_addresses-3])")
BITS=${PODCIDR#*/}
$K -n $NS exec spoofer -- ip addr add "$SPOOF/$BITS" dev eth0 || fail "second address in the spoofer"
spoofed_ping() { $K -n $NS exec spoofer -- ping -c 2 -W 2 -I "$SPOOF" "$BIP" >/dev/null 2>&1; }
spoofed_drops() {
	$K get nodestate "$NODE" -o jsonpath="{.status.ports[?(@.pod==\"$NS/spoofer\")].drops[?(@.reason==\"spoofed-ip\")].packets}"
}
# The own address first: it resolves B's MAC with an ARP request from that address, so the
# spoofed pings then leave as IP packets (an ARP request from the second address would be
# refused as spoofed-arp-nd before any of them).
$K -n $NS exec spoofer -- ping -c 3 -i 0.2 -W 2 "$BIP" >/dev/null || fail "the spoofer's own address is dropped"
spoofed_ping && fail "ping from the second address $SPOOF passed without a policy (anti-spoofing is the default)"
d=""
for i in $(seq 30); do d=$(spoofed_drops); [ "${d:-0}" -gt 0 ] && break; spoofed_ping; sleep 1; done
[ "${d:-0}" -gt 0 ] || fail "NodeState counts no spoofed-ip drops for the spoofer: $($K get nodestate "$NODE" -o jsonpath="{.status.ports[?(@.pod==\"$NS/spoofer\")].drops}")"
$K -n $NS apply -f - >/dev/null <<EOT
apiVersion: epair.dev/v1alpha1
kind: PortPolicy
metadata: {name: may-spoof}
spec:
  podSelector: {matchLabels: {e2e-spoof: "yes"}}
  antiSpoofing: false
EOT
off=""
for i in $(seq 20); do spoofed_ping && { off=yes; break; }; sleep 0.5; done
[ -n "$off" ] || fail "second address $SPOOF still dropped with a PortPolicy opting out (antiSpoofing: false)"
$K -n $NS delete portpolicy may-spoof >/dev/null
on=""
for i in $(seq 20); do spoofed_ping || { on=yes; break; }; sleep 0.5; done
[ -n "$on" ] || fail "second address $SPOOF still passes after the opt-out policy was deleted"
$K -n $NS delete pod spoofer --wait=true >/dev/null
ok "second address $SPOOF dropped by default ($d counted as spoofed-ip in NodeState), own address passes; opt-out lets it through, lifted live"

step "8c. a second VirtualSwitch: a second interface on it (as Multus adds one), deleted live"
NETDIR=/etc/cni/multus/net.d
SECCIDR=10.213.0.0/24
$K apply -f - >/dev/null <<EOT
apiVersion: epair.dev/v1alpha1
kind: VirtualSwitch
metadata: {name: vale1}
spec:
  podCIDRs: ["$SECCIDR"]
  mtu: 1400
EOT
for i in $(seq 30); do [ -f $NETDIR/epair-vale1.conflist ] && break; sleep 1; done
[ -f $NETDIR/epair-vale1.conflist ] || fail "no conflist for the second switch in $NETDIR: $(ls $NETDIR 2>&1)"
for i in $(seq 20); do
	$K get nodestate "$NODE" -o jsonpath='{.status.switches[*].name}' | grep -qw vale1 && break; sleep 0.5
done
$K get nodestate "$NODE" -o jsonpath='{.status.switches[*].name}' | grep -qw vale1 || fail "NodeState does not list vale1"
pod_attachment() { # pod_attachment <pod>: "<netns> <containerID>" of the pod's eth0, from the agent's records
	$K -n $RELNS exec ds/$REL-agent -c agent -- /valectl -o json attachments | python3 -c '
import json, sys
for a in json.load(sys.stdin)["items"]:
    if a.get("podName") == sys.argv[1] and a["ifName"] == "eth0":
        print(a["netns"], a["containerID"])' "$1"
}
# cni_secondary <ADD|DEL> <pod>: epair-cni with the second switch's conflist, as Multus runs
# it: the pod's network namespace (from the agent's record of its first interface), ifname
# net1, the pod named in CNI_ARGS.
cni_secondary() {
	local netns cid
	read -r netns cid < <(pod_attachment "$2")
	[ -n "$netns" ] || return 1
	python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
p = dict(c["plugins"][0], name=c["name"], cniVersion=c["cniVersion"])
print(json.dumps(p))' "$SECCONF" |
	CNI_COMMAND=$1 CNI_CONTAINERID=$cid CNI_NETNS=$netns CNI_IFNAME=net1 CNI_PATH=/opt/cni/bin \
		CNI_ARGS="K8S_POD_NAMESPACE=$NS;K8S_POD_NAME=$2" /opt/cni/bin/epair-cni
}
pod_ns() { # pod_ns <pod> <cmd...>: a command in the pod's network namespace, on the node
	local netns cid
	read -r netns cid < <(pod_attachment "$1")
	shift
	nsenter --net="$netns" "$@"
}
# Multus keeps the network's configuration (from its NetworkAttachmentDefinition) for the
# pod's DEL; the test keeps a copy of the conflist for the same reason.
SECCONF=$WORK/epair-vale1.conflist
cp $NETDIR/epair-vale1.conflist "$SECCONF"
resA=$(cni_secondary ADD "$A") || fail "second CNI invocation for $A: $resA"
cni_secondary ADD "$B" >/dev/null || fail "second CNI invocation for $B"
ANET1=$(echo "$resA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
BNET1=$(pod_ns "$B" ip -o -4 addr show dev net1 | awk '{print $4}' | cut -d/ -f1)
in_cidr "$ANET1" "$SECCIDR" && in_cidr "$BNET1" "$SECCIDR" || fail "second interfaces $ANET1 $BNET1 not in $SECCIDR"
pod_ns "$A" ip -o link show dev net1 | grep -q " mtu 1400 " || fail "net1 of $A has not the second switch's MTU 1400: $(pod_ns "$A" ip -o link show dev net1)"
pod_ns "$A" ip route show default | grep -q net1 && fail "the second interface took the default route"
pod_ns "$A" ping -c 5 -i 0.2 -W 2 -I net1 "$BNET1" >/dev/null || fail "ping $A -> $B over the second switch"
$K -n $NS exec "$A" -- ping -c 3 -i 0.2 -W 2 "$BIP" >/dev/null || fail "ping $A -> $B over the first switch with two interfaces"
ports=$($K get nodestate "$NODE" -o jsonpath="{.status.ports[?(@.switch==\"vale1\")].pod}")
case "$ports" in *"$NS/$A"*) ;; *) sleep 2; ports=$($K get nodestate "$NODE" -o jsonpath="{.status.ports[?(@.switch==\"vale1\")].pod}") ;; esac
case "$ports" in *"$NS/$A"*"$NS/$B"*|*"$NS/$B"*"$NS/$A"*) ;; *) fail "NodeState ports of vale1: '$ports'" ;; esac
$K delete virtualswitch vale1 >/dev/null
for i in $(seq 30); do
	[ ! -e $NETDIR/epair-vale1.conflist ] && ! pod_ns "$A" ip link show net1 >/dev/null 2>&1 && break
	sleep 1
done
pod_ns "$A" ip link show net1 >/dev/null 2>&1 && fail "net1 of $A survived the VirtualSwitch"
pod_ns "$B" ip link show net1 >/dev/null 2>&1 && fail "net1 of $B survived the VirtualSwitch"
[ -e $NETDIR/epair-vale1.conflist ] && fail "the deleted switch's conflist is still in $NETDIR"
for i in $(seq 10); do
	$K get nodestate "$NODE" -o jsonpath='{.status.switches[*].name}' | grep -qw vale1 || break; sleep 1
done
$K get nodestate "$NODE" -o jsonpath='{.status.switches[*].name}' | grep -qw vale1 && fail "NodeState still lists vale1"
$K -n $NS exec "$A" -- ping -c 3 -i 0.2 -W 2 "$BIP" >/dev/null || fail "first network disconnected by deleting the second switch"
# Multus's DEL for the deleted network succeeds (nothing left to release).
cni_secondary DEL "$A" || fail "CNI DEL of the deleted network"
ok "vale1 ($SECCIDR) ran live; $A=$ANET1 and $B=$BNET1 pinged over net1; deleting it removed both net1, their ports and the conflist; eth0 unaffected"
# A live default queue change of the conflist's switch reaches a pod attached afterwards.
$K patch virtualswitch vale0 --type=merge -p '{"spec":{"defaultQueue":{"length":300}}}' >/dev/null
for i in $(seq 20); do
	[ "$($K get nodestate "$NODE" -o jsonpath='{.status.switches[?(@.name=="vale0")].observedGeneration}')" = \
	  "$($K get virtualswitch vale0 -o jsonpath='{.metadata.generation}')" ] && break; sleep 0.5
done
$K -n $NS run qlen --image=epair/busybox:local --image-pull-policy=Never --restart=Never -- sleep 3600 >/dev/null
$K -n $NS wait --for=condition=Ready pod/qlen --timeout=60s >/dev/null || fail "pod qlen not ready"
q=""
for i in $(seq 10); do
	q=$($K get nodestate "$NODE" -o jsonpath="{.status.ports[?(@.pod==\"$NS/qlen\")].queueLength}")
	[ -n "$q" ] && break; sleep 1
done
[ -n "$q" ] && [ "$q" -ge 300 ] && [ "$q" -lt 1024 ] || fail "pod attached after the default queue change has queue length '$q', want 300"
$K -n $NS delete pod qlen --wait=true >/dev/null
$K patch virtualswitch vale0 --type=merge -p '{"spec":{"defaultQueue":{"length":1024}}}' >/dev/null
ok "a pod attached after a live default queue change has the new queue length ($q)"

step "8d. kubectl epair capture of a pod while it serves traffic"
"$KEPAIR" capture -n $NS "$B" -t 4s -F pcap > "$WORK/b.pcap" 2>"$WORK/b.err" &
cap=$!
sleep 1
for i in 1 2 3; do $K -n $NS exec "$A" -- wget -qO- "http://$BIP:8080/index.html" >/dev/null || fail "HTTP $A -> $B during the capture"; done
wait $cap || fail "kubectl epair capture: $(cat "$WORK/b.err")"
# tshark reads the pcap: the TCP segments to and from port 8080 of B, by direction.
read -r to from < <(tshark -n -r "$WORK/b.pcap" -Y "tcp.port == 8080" -T fields -E separator=, \
	-e ip.src -e ip.dst -e tcp.srcport -e tcp.dstport 2>/dev/null | awk -F, -v b="$BIP" '
	$2 == b && $4 == 8080 { to++ } $1 == b && $3 == 8080 { from++ } END { print to + 0, from + 0 }')
[ "${to:-0}" -ge 9 ] && [ "${from:-0}" -ge 9 ] || fail "capture of $B holds $to segments to and $from from port 8080 for 3 HTTP requests"
ok "kubectl epair capture of $B read with tshark: $to TCP segments to and $from from :8080 for 3 HTTP requests"
out=$("$KEPAIR" ports "$NODE") || fail "kubectl epair ports"
case $out in *"$NS/$B"*) ;; *) fail "kubectl epair ports does not name $NS/$B: $out" ;; esac
ok "kubectl epair ports $NODE names the pods"

step "8e. kubectl epair trace between two pods"
out=$("$KEPAIR" trace -n $NS "$A" -to "$B" -p tcp -dport 8080) || fail "kubectl epair trace: $out"
bport=$(printf '%s\n' "$out" | awk -v p="($NS/$B)" '$2 == "output" && $4 == p { print $3 }')
case $out in *"result: delivered to $bport"*) ;; *) fail "trace $A -> $B is not delivered to $B's port ('$bport'): $out" ;; esac
case $out in *"TCP SYN 40000 > 8080"*) ;; *) fail "trace $A -> $B does not describe the TCP SYN: $out" ;; esac
ok "kubectl epair trace $A -> $B: delivered to $bport"
printf '%s\n' "$out" | sed 's/^/      /'
out=$("$KEPAIR" trace -n $NS "$A" -to "$BIP" -src-ip 10.254.254.254) || fail "kubectl epair trace (spoofed): $out"
case $out in *"result: dropped (spoofed-ip)"*) ;; *) fail "a spoofed trace is not dropped as spoofed-ip: $out" ;; esac
ok "kubectl epair trace from a spoofed address: dropped (spoofed-ip)"

step "8f. a second node: a kubelet pod reaches a pod on it, directly and through a ClusterIP Service"
# e2e/k8s/node2.sh: a network namespace with its own agent (the image's, in cluster mode, as
# the chart's ServiceAccount bound to its Node), its own Node object and a pod made through
# epair-cni, on a subnet of its own behind the host: both agents choose VXLAN.
N2SH=$ROOT/e2e/k8s/node2.sh
SA=$RELNS/$REL-agent POD_NAMESPACE=$NS "$N2SH" up "$IMG" >"$WORK.node2.log" 2>&1 || { cat "$WORK.node2.log" >&2; fail "node2.sh up"; }
. "$WORK/node2/env"
ok "$(tail -n 1 "$WORK.node2.log")"
$K wait --for=condition=Ready nodestate/"$NODE2" --timeout=30s >/dev/null || fail "NodeState $NODE2 (written by its agent) not Ready"
[ "$($K get nodestate "$NODE2" -o jsonpath='{.status.podCIDRs[0]}')" = "$NODE2_CIDR" ] || fail "NodeState $NODE2 pod CIDRs: $($K get nodestate "$NODE2" -o jsonpath='{.status.podCIDRs}')"
mtu1=$($K get nodestate "$NODE" -o jsonpath='{.status.switches[?(@.name=="vale0")].mtu}')
mtu2=$($K get nodestate "$NODE2" -o jsonpath='{.status.switches[?(@.name=="vale0")].mtu}')
[ -n "$mtu1" ] && [ "$mtu1" = "$mtu2" ] || fail "pod MTU $mtu2 on $NODE2, $mtu1 on $NODE: one underlay MTU, one VXLAN overhead"
real_peers() { $K -n $RELNS exec ds/$REL-agent -c agent -- /valectl -o json peers; }
node2_peers() { "$NODE2_VALECTL" -socket "$NODE2_SOCK" -o json peers; }
peer_of() { # peer_of <node>: "<mode> <routes> <pod CIDRs>" of node in a valectl peers list
	python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    if p["name"] == sys.argv[1]: print(p["mode"], p["routes"], ",".join(p["podCIDRs"]))' "$1"
}
for i in $(seq 40); do
	m1=$(real_peers 2>/dev/null | peer_of "$NODE2" || true)
	m2=$(node2_peers 2>/dev/null | peer_of "$NODE" || true)
	m3=$($K get nodestate "$NODE" -o jsonpath="{.status.peers[?(@.node==\"$NODE2\")].mode}")
	[ "$m1" = "vxlan 1 $NODE2_CIDR" ] && [ "$m2" = "vxlan 1 $PODCIDR" ] && [ "$m3" = vxlan ] && break
	sleep 0.5
done
[ "$m1" = "vxlan 1 $NODE2_CIDR" ] || fail "$NODE's agent has peer $NODE2 as '$m1', want 'vxlan 1 $NODE2_CIDR' (mode, routes, pod CIDRs): $(real_peers 2>&1)"
[ "$m2" = "vxlan 1 $PODCIDR" ] || fail "$NODE2's agent has peer $NODE as '$m2', want 'vxlan 1 $PODCIDR' (mode, routes, pod CIDRs): $(node2_peers 2>&1)"
[ "$m3" = vxlan ] || fail "NodeState $NODE lists peer $NODE2 as '$m3', want vxlan: $($K get nodestate "$NODE" -o jsonpath='{.status.peers}')"
ok "each agent has the other node as a VXLAN peer (valectl peers on both, NodeState $NODE): $NODE2_CIDR via $NODE2_IP, $PODCIDR via $($K get node "$NODE" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}'); pod MTU $mtu1 on both"
vx_tx() { ip -j -s link show epair.vxlan | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["packets"])'; }
tx0=$(vx_tx) || fail "no VXLAN device epair.vxlan on $NODE with a VXLAN peer"
$K -n $NS exec "$A" -- ping -c 5 -i 0.2 -W 2 "$NODE2_POD_IP" >/dev/null || fail "ping $A (kubelet pod on $NODE) -> $NODE2_POD_IP (pod on $NODE2)"
out=$($K -n $NS exec "$A" -- timeout 5 wget -qO- "http://$NODE2_POD_IP:8080/index.html" 2>&1) || fail "HTTP $A -> $NODE2_POD_IP:8080 on $NODE2: $out"
case $out in *"hello-from-$NODE2"*) ;; *) fail "HTTP $A -> $NODE2_POD_IP:8080 on $NODE2 answered '$out'" ;; esac
ip netns exec "$NODE2_PODNS" /bin/busybox ping -c 3 -i 0.2 -W 2 "$AIP" >/dev/null || fail "ping $NODE2's pod -> $A ($AIP)"
tx1=$(vx_tx) || fail "epair.vxlan on $NODE gone while $NODE2 is a VXLAN peer"
[ $((tx1 - tx0)) -ge 8 ] || fail "$NODE's epair.vxlan sent $((tx1 - tx0)) packets for 8 pings and an HTTP exchange with $NODE2"
ok "$A ($AIP) -> $NODE2's pod ($NODE2_POD_IP): ping and HTTP, and back: ping; $((tx1 - tx0)) packets into $NODE's VXLAN device"
# A Service without selector; its only endpoint, in an EndpointSlice made here, is the pod
# on node2.
$K -n $NS apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Service
metadata: {name: node2-web}
spec:
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: node2-web-1
  labels: {kubernetes.io/service-name: node2-web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: ["$NODE2_POD_IP"]
  nodeName: $NODE2
  conditions: {ready: true}
EOT
SVC2=$($K -n $NS get svc node2-web -o jsonpath='{.spec.clusterIP}')
for i in $(seq 30); do
	out=$($K -n $NS exec "$A" -- timeout 3 wget -qO- "http://$SVC2/index.html" 2>&1) && break
	sleep 0.5
done
case $out in *"hello-from-$NODE2"*) ;; *) fail "ClusterIP $SVC2:80 (its only endpoint, in the EndpointSlice: $($K -n $NS get endpointslice node2-web-1 -o jsonpath='{.endpoints[0].addresses[0]}:{.ports[0].port}'); $NODE2's pod serves $NODE2_POD_IP:8080) from $A: '$out'" ;; esac
ok "ClusterIP $SVC2:80 answered $A through kube-proxy from its only endpoint, $NODE2's pod: $out"
n=$($K get pods -A --field-selector spec.nodeName="$NODE2" -o name) || fail "list the pods of $NODE2"
[ -z "$n" ] || fail "pods were bound to $NODE2, which has no kubelet: $n"
# Deleting the Node: the real node's agent drops the peer, its route and the VXLAN device.
$K -n $NS delete svc node2-web >/dev/null
$K -n $NS delete endpointslice node2-web-1 >/dev/null
$K delete node "$NODE2" >/dev/null
gone=""
for i in $(seq 40); do
	m1=$(real_peers | peer_of "$NODE2" || echo "(valectl peers failed)")
	if [ -z "$m1" ] && ! ip link show epair.vxlan >/dev/null 2>&1 && ! ip route show proto 77 | grep "^$NODE2_CIDR " >/dev/null; then gone=yes; break; fi
	sleep 0.25
done
[ -n "$gone" ] || fail "10 s after $NODE2 was deleted $NODE still has it: peer '$m1', $(ip -br link show epair.vxlan 2>&1), routes: $(ip route show proto 77)"
for i in $(seq 20); do $K get nodestate "$NODE2" >/dev/null 2>&1 || break; sleep 0.5; done
$K get nodestate "$NODE2" >/dev/null 2>&1 && fail "NodeState $NODE2 outlived its Node"
"$N2SH" down >>"$WORK.node2.log" 2>&1 || { cat "$WORK.node2.log" >&2; fail "node2.sh down"; }
ok "$NODE2 deleted: $NODE's agent dropped the peer, its route and epair.vxlan; its NodeState went with it; namespaces and agent removed"

step "8g. netmap application ports: pods ping-pong through their own; none without asking, none of another pod"
# The switch the conflist attaches pods to (the chart's defaultSwitch): a pod names its
# application ports "<switch>:<name>".
SW=$(python3 -c '
import json
for p in json.load(open("/etc/cni/net.d/10-epair.conflist"))["plugins"]:
    if p.get("type") == "epair-cni": print(p["switch"])')
[ -n "$SW" ] || fail "no epair-cni switch in /etc/cni/net.d/10-epair.conflist"
NMIMG=$($K -n $RELNS get ds/$REL-agent -o jsonpath='{.spec.template.spec.containers[0].image}')
nm_pod() { # nm_pod <name> <netmap-ports annotation, or ""> <nm-pktgen args...>: a pod running the image's nm-pktgen
	local name=$1 ann=$2 args="" a
	shift 2
	for a in -socket @epair-netmap "$@"; do args="$args, \"$a\""; done
	$K -n $NS apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Pod
metadata:
  name: $name
  annotations: {${ann:+"epair.dev/netmap-ports": '$ann'}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: pg
    image: $NMIMG
    imagePullPolicy: Never
    command: ["/nm-pktgen"$args]
EOT
}
nm_log() { # nm_log <pod>: its log, with the NUL that Go's error text has for an abstract socket's "@" shown as "@"
	$K -n $NS logs "$1" 2>&1 | tr '\0' '@'
}
nm_done() { # nm_done <pod> <Succeeded|Failed>: the pod ran nm-pktgen to that end; prints its log
	$K -n $NS wait --for=jsonpath='{.status.phase}'="$2" pod/"$1" --timeout=90s >/dev/null ||
		fail "pod $1 did not end $2 (phase $($K -n $NS get pod "$1" -o jsonpath='{.status.phase}')): $(nm_log "$1" | tail -5)"
	nm_log "$1"
}
nm_pod nm-pong pg -i "$SW:pg" -f pong -d 300s
$K -n $NS wait --for=condition=Ready pod/nm-pong --timeout=60s >/dev/null || fail "pod nm-pong (netmap ports pg) not ready: $($K -n $NS describe pod nm-pong | tail -5)"
# "nm-pktgen: port vale0:pg: MAC 06:... addresses [{10.244.0.9/24 10.244.0.1}]"
line=""
for i in $(seq 20); do line=$($K -n $NS logs nm-pong 2>/dev/null | head -1); [ -n "$line" ] && break; sleep 0.5; done
read -r _ _ _ mac pmac _ paddr _ <<<"$line"
PMAC=$pmac PIP=${paddr#\[\{}
PIP=${PIP%%/*}
[ "$mac" = MAC ] && [ -n "$PMAC" ] && in_cidr "$PIP" "$PODCIDR" || fail "nm-pong did not print its port's identity (a MAC, an address in $PODCIDR): '$line'"
nm_pod nm-ping pg -i "$SW:pg" -f ping -n 200 -dst "$PMAC" -dstip "$PIP"
out=$(nm_done nm-ping Succeeded)
case $out in *"200 of 200 replies"*) ;; *) fail "nm-ping -> nm-pong ($PMAC $PIP): '$out'" ;; esac
ok "nm-ping -> nm-pong ($SW:pg, $PMAC $PIP): $(printf '%s\n' "$out" | grep -F 'of 200 replies')"
# The switch's name of nm-pong's application port, as the agent lists it.
app_port_of() { # app_port_of <pod>: the switch port names of the pod's application ports
	$K -n $RELNS exec ds/$REL-agent -c agent -- /valectl -o json ports "$SW" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"][0]["ports"]:
    if p.get("kind") == "app" and p.get("pod") == sys.argv[1]: print(p["name"])' "$1"
}
pport=$(app_port_of "$NS/nm-pong") || fail "valectl ports $SW: $pport"
[ -n "$pport" ] || fail "the agent lists no application port of $NS/nm-pong on $SW"
case $pport in *:*) ;; *) pport=$SW:$pport ;; esac
# A pod without the annotation has no netmap socket; one with ports of its own may not
# open another pod's port by its switch name.
nm_pod nm-noports "" -i "$SW:pg" -f rx -n 1
out=$(nm_done nm-noports Failed)
case $out in *"connection refused"*) ;; *) fail "a pod without application ports opened $SW:pg: '$out'" ;; esac
ok "a pod without the annotation: $out"
nm_pod nm-thief pg -i "$pport" -f rx -n 1
out=$(nm_done nm-thief Failed)
case $out in *"permission denied"*) ;; *) fail "a pod opened $pport, nm-pong's application port: '$out'" ;; esac
ok "a pod with its own ports opening nm-pong's ($pport): $out"
$K -n $NS delete pod nm-pong nm-ping nm-noports nm-thief --wait=true >/dev/null
left=""
for i in $(seq 20); do left=$(app_port_of "$NS/nm-pong"); [ -z "$left" ] && break; sleep 0.5; done
[ -z "$left" ] || fail "nm-pong's application port $left outlived the pod"
ok "the application ports went with their pods"

step "8h. Kubernetes e2e: Networking Granular Checks (pod to pod, node to pod; HTTP and UDP)"
# The four [Conformance] specs of test/e2e/common/network/networking.go, run by the e2e.test
# of the cluster's version against this cluster; their netserver and test pods go through
# epair-cni like any pod (node to pod: from a hostNetwork pod, curl and nc).
GRANULAR='\[sig-network\] Networking Granular Checks: Pods should function for (intra-pod|node-pod) communication: (http|udp)'
REPORT=$WORK.granular IMAGES=agnhost "$HK/e2e-specs.sh" "$GRANULAR" >"$WORK.granular.log" 2>&1 ||
	{ cat "$WORK.granular.log" >&2; fail "Networking Granular Checks (e2e.test log: $WORK.granular/e2e.log)"; }
grep -q '^e2e-specs: 4 passed, 0 failed, 0 skipped' "$WORK.granular.log" ||
	{ cat "$WORK.granular.log" >&2; fail "Networking Granular Checks: want 4 specs passed"; }
sed -n 's/^  PASSED  /    ok: /p' "$WORK.granular.log"
ok "$(grep '^e2e-specs: [0-9]* passed' "$WORK.granular.log")"
rm -rf "$WORK.granular" "$WORK.granular.log"

step "9. helm upgrade keeps running pods connected"
uids0=$($K -n $NS get pods -l app=bb -o jsonpath='{.items[*].metadata.uid} {.items[*].status.podIP}')
"$HELM" upgrade $REL "$ROOT/charts/epair" -n $RELNS -f "$ROOT/e2e/k8s/values-e2e.yaml" --set agent.logLevel=debug >/dev/null
$K -n $RELNS rollout status ds/$REL-agent --timeout=90s >/dev/null || fail "upgrade did not roll out"
[ "$($K -n $RELNS get ds/$REL-agent -o jsonpath='{.status.updatedNumberScheduled}')" = 1 ] || fail "agent not updated"
uids1=$($K -n $NS get pods -l app=bb -o jsonpath='{.items[*].metadata.uid} {.items[*].status.podIP}')
[ "$uids0" = "$uids1" ] || fail "pods changed across the upgrade: $uids0 -> $uids1"
for i in $(seq 20); do $K -n $NS exec "$A" -- ping -c 1 -W 1 "$BIP" >/dev/null 2>&1 && break; sleep 0.5; done
$K -n $NS exec "$A" -- ping -c 5 -i 0.2 -W 2 "$BIP" >/dev/null || fail "pods disconnected after the upgrade"
out=$($K -n $NS exec "$A" -- wget -qO- "http://$BIP:8080/index.html") || fail "HTTP after the upgrade"
case $out in *"hello-from-$B"*) ;; *) fail "HTTP after the upgrade answered '$out'" ;; esac
[ -f /etc/cni/net.d/10-epair.conflist ] || fail "conflist removed by an upgrade"
ok "same pods and addresses, ping and HTTP work after the upgrade"

step "10. deleting the pods leaves nothing behind"
$K -n $NS delete deploy bb --wait=true >/dev/null
$K -n $NS wait --for=delete pod -l app=bb --timeout=60s >/dev/null 2>&1 || true
for i in $(seq 30); do
	n=$(our_links | wc -l)
	p=$($K get nodestate "$NODE" -o jsonpath="{.status.ports[?(@.pod!=\"\")].name}")
	[ "$n" = 0 ] && [ -z "$p" ] && break
	sleep 1
done
[ "$n" = 0 ] || fail "$n epair links left after deleting the pods"
[ -z "$p" ] && ok "no epair links, no pod ports in NodeState" || fail "pod ports left: $p"
# The agent's IPAM released the addresses: no attachment holds them.
att=$($K -n $RELNS exec ds/$REL-agent -c agent -- /valectl -o json attachments) || fail "valectl attachments"
for ip in "$AIP" "$BIP"; do
	case $att in *"\"$ip/"*|*"\"$ip\""*) fail "address $ip still allocated: $att" ;; esac
done
ok "addresses $AIP and $BIP released (valectl attachments)"

step "11. helm uninstall leaves the node clean"
"$HELM" uninstall $REL -n $RELNS --wait --timeout 90s >/dev/null
for i in $(seq 30); do [ -z "$($K -n $RELNS get pods -o name 2>/dev/null)" ] && break; sleep 1; done
left=""
[ -e /etc/cni/net.d/10-epair.conflist ] && left="$left conflist"
ls /etc/cni/multus/net.d/epair-*.conflist >/dev/null 2>&1 && left="$left secondary-conflists"
[ -e /opt/cni/bin/epair-cni ] && left="$left epair-cni"
[ -n "$(our_links host-port)" ] && left="$left links($(our_links host-port | tr '\n' ' '))"
nft list table inet epair >/dev/null 2>&1 && left="$left nft-table"
[ -e /run/epair/agent.sock ] && left="$left socket"
[ -n "$(ls -A /var/lib/epair 2>/dev/null)" ] && left="$left state($(ls /var/lib/epair | tr '\n' ' '))"
[ -n "$left" ] && fail "helm uninstall left:$left"
ok "no conflist, plugin, links, nft table or socket left"
