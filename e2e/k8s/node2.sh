#!/usr/bin/env bash
# e2e/k8s/node2.sh: a second node for the real-cluster e2e (e2e/k8s/run.sh, step 8f), without
# a kubelet: a network namespace with its own node-agent in cluster mode, its own Node object
# and one pod made through epair-cni, as a runtime would.
#
#   underlay   the namespace $NODE2 is joined to the host by a veth ($HOSTIF on the host,
#              eth0 in it, with the MTU of the host's interface holding the API server's
#              address) on the transit subnet 10.250.0.0/30, and its InternalIP
#              10.250.1.2/32 sits behind that link: neither node has the other's address
#              on a subnet of its own, so both agents (peerMode auto, the chart's default)
#              choose VXLAN for each other, which run.sh checks. (Addresses on one shared
#              subnet would make both choose routed: auto takes any subnet of the node's.)
#   Node       created by the test as a kubelet would register it: no pod CIDR (the
#              controller-manager's node IPAM allocates one), status.addresses InternalIP
#              (the status subresource), a NoSchedule taint and no kubernetes.io/os label
#              (nothing is scheduled there, the chart's DaemonSet selects only
#              kubernetes.io/os=linux nodes).
#   agent      the image's /node-agent (the real node's binary) run with `ip netns exec`,
#              with the chart's cluster-mode flags, its own socket, state, conflist and CNI
#              directories under $WORK/node2, and the chart's agent ServiceAccount through a
#              token bound to this Node (`kubectl create token --bound-object-kind Node`):
#              the API server puts the node's name in the token's identity as it does for
#              the agent pods' tokens, so the chart's RBAC and NodeState admission policy
#              apply to it unchanged. The API server is reached at its advertised address
#              (the kubernetes EndpointSlice), which its serving certificate carries.
#   pod        the namespace $NODE2-pod, attached by the image's epair-cni run in $NODE2
#              with the conflist node2's agent writes once ready; busybox httpd serves
#              "hello-from-$NODE2" on :8080 in it.
#
# `up` writes $WORK/node2/env (NODE2, NODE2_IP, NODE2_CIDR, NODE2_POD_IP, NODE2_SOCK,
# NODE2_VALECTL, NODE2_NETNS, NODE2_PODNS) for the caller. `down` stops and removes all of it,
# whatever state `up` left (idempotent); run it while the API server is up.
#
# Needs root. Usage: WORK=<cluster dir> e2e/k8s/node2.sh up <agent image tarball>
#                    WORK=<cluster dir> e2e/k8s/node2.sh down
# Env: SA (the agent ServiceAccount, default epair-system/epair-agent), SWITCH (vale0),
# POD_NAMESPACE (the namespace named in the pod's CNI_ARGS, default epair-e2e).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "node2.sh: needs root" >&2; exit 1; }
: "${WORK:?set WORK to the directory of the cluster (e2e/k8s/run.sh, hack/k8s/cluster-up.sh)}"
NODE2=epair-e2e-node2
NETNS=$NODE2
PODNS=$NODE2-pod
HOSTIF=ep2-host
HOST_TRANSIT=10.250.0.1
NODE2_TRANSIT=10.250.0.2
NODE2_IP=10.250.1.2
SA=${SA:-epair-system/epair-agent}
SWITCH=${SWITCH:-vale0}
POD_NAMESPACE=${POD_NAMESPACE:-epair-e2e}
N2=$WORK/node2
K="$WORK/bin/kubectl --kubeconfig=$WORK/run/admin.kubeconfig --request-timeout=20s"
nsx() { ip netns exec "$NETNS" "$@"; }
die() { echo "node2.sh: $*" >&2; exit 1; }

# stop_pid <file>: SIGTERM the process recorded in file if it is still ours (its command
# line names $N2), wait up to 10 s, then SIGKILL.
stop_pid() {
	local f=$1 p
	[ -f "$f" ] || return 0
	p=$(cat "$f")
	if cat "/proc/$p/cmdline" 2>/dev/null | tr '\0' ' ' | grep -F "$N2/" >/dev/null; then
		kill "$p" 2>/dev/null || true
		for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
		kill -9 "$p" 2>/dev/null || true
	fi
	rm -f "$f"
}

down() {
	local cidr=""
	stop_pid "$N2/httpd.pid"
	stop_pid "$N2/agent.pid"
	ip netns delete "$PODNS" 2>/dev/null || true
	ip netns delete "$NETNS" 2>/dev/null || true # takes the veth (and its host route) along
	ip link delete "$HOSTIF" 2>/dev/null || true
	ip route delete "$NODE2_IP/32" 2>/dev/null || true
	cidr=$($K get node "$NODE2" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)
	$K delete node "$NODE2" --ignore-not-found >/dev/null 2>&1 || true
	$K delete nodestate "$NODE2" --ignore-not-found >/dev/null 2>&1 || true
	# The real node's agent removes its route (and VXLAN device) to the deleted node; if it
	# is not running to do so, this does.
	if [ -n "$cidr" ]; then
		for _ in $(seq 20); do ip route show proto 77 | grep "^$cidr " >/dev/null || break; sleep 0.25; done
		if ip route show proto 77 | grep "^$cidr " >/dev/null; then
			echo "node2.sh: the real node's agent left its route to $cidr: removed" >&2
			ip route delete "$cidr" proto 77 2>/dev/null || true
			[ -z "$(ip route show proto 77)" ] && ip link delete epair.vxlan 2>/dev/null || true
		fi
	fi
	rm -rf "$N2"
}

up() {
	local img=$1 apiserver tok conf res pod_ip cidr who dev mtu
	[ -f "$img" ] || die "agent image tarball $img not found"
	[ ! -e "$N2" ] && [ ! -e "/run/netns/$NETNS" ] || die "$NODE2 exists already ($N2 or netns $NETNS): $0 down first"
	mkdir -p "$N2"/{bin,run,state,net.d,www}
	chmod 700 "$N2"
	# The real node's binaries: the ones in the agent image.
	tar -xOf "$img" --wildcards '*/layer.tar' | tar -xf - -C "$N2/bin" ./node-agent ./valectl ./epair-cni

	# Underlay: a transit /30 on a veth; node2's address behind it, on its eth0, whose MTU
	# (the agent detects the pods' from it) is that of the host's interface holding the API
	# server's advertised address, the real node's InternalIP: one underlay MTU.
	apiserver=$($K -n default get endpointslice kubernetes -o jsonpath='{.endpoints[0].addresses[0]}:{.ports[0].port}')
	dev=$(ip -o addr show | awk -v a="${apiserver%:*}" '{split($4, x, "/"); if (x[1] == a) print $2}' | head -n 1)
	mtu=$(cat "/sys/class/net/$dev/mtu" 2>/dev/null || echo 1500)
	ip netns add "$NETNS"
	ip netns add "$PODNS"
	ip link add "$HOSTIF" mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$NETNS"
	ip addr add "$HOST_TRANSIT/30" dev "$HOSTIF"
	ip link set "$HOSTIF" up
	nsx ip link set lo up
	nsx ip link set eth0 up
	nsx ip addr add "$NODE2_TRANSIT/30" dev eth0
	nsx ip addr add "$NODE2_IP/32" dev eth0
	nsx ip route add default via "$HOST_TRANSIT" src "$NODE2_IP"
	ip route add "$NODE2_IP/32" via "$NODE2_TRANSIT" dev "$HOSTIF"
	ip netns exec "$PODNS" ip link set lo up

	# The Node, as a kubelet registers it; the node IPAM controller gives it a pod CIDR.
	$K create -f - >/dev/null <<EOT
apiVersion: v1
kind: Node
metadata:
  name: $NODE2
  labels: {epair.dev/e2e: node2}
spec:
  taints: [{key: epair.dev/e2e-no-kubelet, effect: NoSchedule}]
EOT
	$K patch node "$NODE2" --subresource=status --type=merge \
		-p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$NODE2_IP\"},{\"type\":\"Hostname\",\"address\":\"$NODE2\"}]}}" >/dev/null
	cidr=""
	for _ in $(seq 60); do
		cidr=$($K get node "$NODE2" -o jsonpath='{.spec.podCIDR}')
		[ -n "$cidr" ] && break
		sleep 0.5
	done
	[ -n "$cidr" ] || die "the controller-manager allocated no pod CIDR to $NODE2"

	# The chart's agent ServiceAccount, through a token bound to this Node.
	tok=$($K -n "${SA%/*}" create token "${SA#*/}" --bound-object-kind=Node --bound-object-name="$NODE2" --duration=1h)
	local kc="$WORK/bin/kubectl --kubeconfig=$N2/kubeconfig"
	$kc config set-cluster e2e --server="https://$apiserver" --certificate-authority="$WORK/run/pki/ca.crt" --embed-certs=true >/dev/null
	$kc config set-credentials agent --token="$tok" >/dev/null
	$kc config set-context e2e --cluster=e2e --user=agent >/dev/null
	$kc config use-context e2e >/dev/null
	chmod 600 "$N2/kubeconfig"
	who=$(nsx $kc auth whoami -o jsonpath='{.status.userInfo.username} {.status.userInfo.extra.authentication\.kubernetes\.io/node-name[0]}') ||
		die "the API server at $apiserver is not reachable from $NETNS with node2's kubeconfig"
	[ "$who" = "system:serviceaccount:${SA%/*}:${SA#*/} $NODE2" ] || die "node2's token identity is '$who', want the agent ServiceAccount bound to $NODE2"

	# node2's agent: the chart's cluster-mode flags, node2's own paths.
	cat >"$N2/10-epair.conflist" <<EOT
{"cniVersion": "1.0.0", "name": "epair", "plugins": [
 {"type": "epair-cni", "agentSocket": "$N2/run/agent.sock", "switch": "$SWITCH", "logFile": "$N2/epair-cni.log"}]}
EOT
	ip netns exec "$NETNS" env KUBECONFIG="$N2/kubeconfig" "$N2/bin/node-agent" -mode=cluster -node-name="$NODE2" \
		-socket="$N2/run/agent.sock" -state-dir="$N2/state" -backend=auto -masquerade=true -peer-mode=auto \
		-vxlan-port=4789 -log-level=info -status-interval=1s -cni-conf-dir="$N2/net.d" \
		-cni-conflist="$N2/10-epair.conflist" -cni-switch="$SWITCH" -cni-plugin="$N2/bin/epair-cni" \
		-health-addr=0 -metrics-addr=0 </dev/null >"$N2/agent.log" 2>&1 &
	echo $! >"$N2/agent.pid"
	for _ in $(seq 120); do
		[ -f "$N2/net.d/10-epair.conflist" ] && break
		kill -0 "$(cat "$N2/agent.pid")" 2>/dev/null || { tail -20 "$N2/agent.log" >&2; die "node2's agent exited"; }
		sleep 0.25
	done
	[ -f "$N2/net.d/10-epair.conflist" ] || { tail -20 "$N2/agent.log" >&2; die "node2's agent wrote no conflist in 30 s"; }

	# A pod: epair-cni in node2's namespace with the conflist node2's agent wrote, as a
	# runtime runs it.
	conf=$(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(json.dumps(dict(c["plugins"][0], name=c["name"], cniVersion=c["cniVersion"])))' "$N2/net.d/10-epair.conflist")
	res=$(echo "$conf" | nsx env CNI_COMMAND=ADD CNI_CONTAINERID="$NODE2-web" CNI_NETNS="/run/netns/$PODNS" \
		CNI_IFNAME=eth0 CNI_PATH="$N2/bin" CNI_ARGS="K8S_POD_NAMESPACE=$POD_NAMESPACE;K8S_POD_NAME=$NODE2-web" \
		"$N2/bin/epair-cni") || die "CNI ADD on $NODE2: $res"
	pod_ip=$(echo "$res" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
	echo "hello-from-$NODE2" >"$N2/www/index.html"
	ip netns exec "$PODNS" /bin/busybox httpd -f -p 8080 -h "$N2/www" </dev/null >"$N2/httpd.log" 2>&1 &
	echo $! >"$N2/httpd.pid"
	for _ in $(seq 20); do
		ip netns exec "$PODNS" /bin/busybox wget -qO- "http://$pod_ip:8080/index.html" 2>/dev/null | grep -q "hello-from-$NODE2" && break
		sleep 0.25
	done
	cat >"$N2/env" <<EOT
NODE2=$NODE2
NODE2_IP=$NODE2_IP
NODE2_CIDR=$cidr
NODE2_POD_IP=$pod_ip
NODE2_SOCK=$N2/run/agent.sock
NODE2_VALECTL=$N2/bin/valectl
NODE2_NETNS=$NETNS
NODE2_PODNS=$PODNS
EOT
	echo "node2: $NODE2, InternalIP $NODE2_IP behind $HOSTIF (MTU $mtu), pod CIDR $cidr, agent as $who, pod $pod_ip serving :8080"
}

case "${1:-}" in
up)
	[ $# = 2 ] || die "usage: $0 up <agent image tarball>"
	up "$2"
	;;
down) down ;;
*) die "usage: $0 up <agent image tarball> | down" ;;
esac
