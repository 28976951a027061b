#!/usr/bin/env bash
# The README's first command (as root, on a fresh Debian machine):
#
#   sudo hack/demo.sh
#
# It builds the node agent, the epair CNI plugin, valectl and the reference CNI client
# (cnitool, libcni) into _out/demo, starts the agent in standalone mode inside a "node"
# network namespace, creates three pods as network namespaces through libcni exactly as a
# container runtime would (the epair-cni binary executed with a conflist), pings every pair
# and the node, runs short iperf3 throughput tests between two pods and from a pod to the
# node (the kernel fast path, where the kernel has it), captures a pod's pings with valectl
# (a captured port's frames cross the userspace switch), shows the switch's ports with
# their counters (the switch's and the fast path's) and its FDB, and removes everything it
# made, whatever happens (trap).
#
# Nothing outside its own namespaces, a temporary directory and _out/demo is touched: no
# /etc/cni, no host routes, no traffic leaving the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: must run as root (network namespaces, veth pairs, AF_XDP): sudo $0" >&2
	exit 1
fi

. hack/ensure-go.sh
. hack/deps.sh
epair_deps demo

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

OUT=$ROOT/_out/demo
BIN=$OUT/bin
WORK=$(mktemp -d /tmp/epair-demo.XXXXXX)
chmod 700 "$WORK"
NODE=epair-demo-node-$$
PODS=(epair-demo-pod1-$$ epair-demo-pod2-$$ epair-demo-pod3-$$)
AGENT_PID=
INTERRUPTED=0
# cnitool keeps libcni's default cache (/var/lib/cni); remove what the demo adds there.
CNI_CACHE_EXISTED=$([ -e /var/lib/cni ] && echo 1 || echo 0)
export NETCONFPATH=$WORK/net.d CNI_PATH=$BIN/cni CNI_IFNAME=eth0

cnitool_in_node() { ip netns exec "$NODE" "$BIN/cnitool" "$@"; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	say "cleaning up"
	if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
		for p in "${PODS[@]}"; do
			[ -e "/var/run/netns/$p" ] && cnitool_in_node del podnet "/var/run/netns/$p" >/dev/null 2>&1
		done
		# The agent runs with -uninstall: SIGTERM removes ports, links, rules and state.
		kill -TERM "$AGENT_PID" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$AGENT_PID" 2>/dev/null
	fi
	if [ $rc -ne 0 ] && [ "$INTERRUPTED" = 0 ] && [ -s "$WORK/agent.log" ]; then
		echo "demo: agent log:" >&2
		tail -n 40 "$WORK/agent.log" >&2
	fi
	for p in "${PODS[@]}"; do ip netns del "$p" 2>/dev/null; done
	ip netns del "$NODE" 2>/dev/null
	rm -rf "$WORK"
	if [ "$CNI_CACHE_EXISTED" = 0 ]; then rm -rf /var/lib/cni; else rm -f /var/lib/cni/results/podnet-cnitool-* 2>/dev/null; fi
	if [ "$INTERRUPTED" = 1 ]; then
		echo "demo: interrupted; cleaned up" >&2
		rc=130
	elif [ $rc -eq 0 ]; then
		echo "demo: done, nothing left behind"
	else
		echo "demo: failed (exit $rc); cleaned up" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'INTERRUPTED=1; exit 130' INT TERM

say "building node-agent, epair-cni, valectl and cnitool into $BIN"
mkdir -p "$BIN/cni"
go build -o "$BIN/" ./cmd/node-agent ./cmd/valectl
# Static, as the image ships it: the plugin is exec'd for every pod, and the dynamic
# loader would add ~0.7 ms to each call.
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$BIN/cni/epair" ./cmd/epair-cni
go build -o "$BIN/cnitool" github.com/containernetworking/cni/cnitool

say "starting the agent in standalone mode in namespace $NODE"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
cat >"$WORK/agent.json" <<EOF
{
  "socket": "$WORK/run/agent.sock",
  "stateDir": "$WORK/state",
  "backend": "auto",
  "switches": [{"name": "vale0", "mtu": 1500, "ranges": [{"subnet": "10.89.0.0/24"}]}]
}
EOF
ip netns exec "$NODE" "$BIN/node-agent" -config "$WORK/agent.json" -uninstall >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
VALECTL=("$BIN/valectl" -socket "$WORK/run/agent.sock")
for i in $(seq 100); do
	"${VALECTL[@]}" status 2>/dev/null | grep -q '^ready' && break
	kill -0 "$AGENT_PID" 2>/dev/null || { cat "$WORK/agent.log" >&2; exit 1; }
	[ "$i" -eq 100 ] && { echo "demo: agent not ready after 10s" >&2; cat "$WORK/agent.log" >&2; exit 1; }
	sleep 0.1
done
"${VALECTL[@]}" status

mkdir -p "$NETCONFPATH"
cat >"$NETCONFPATH/10-epair.conflist" <<EOF
{
  "cniVersion": "1.1.0",
  "name": "podnet",
  "plugins": [
    {"type": "epair", "agentSocket": "$WORK/run/agent.sock", "capabilities": {"ips": true, "mac": true}}
  ]
}
EOF
say "conflist $NETCONFPATH/10-epair.conflist"
cat "$NETCONFPATH/10-epair.conflist"

declare -A IP
for p in "${PODS[@]}"; do
	say "CNI ADD $p (libcni runs $CNI_PATH/epair with the conflist)"
	ip netns add "$p"
	res=$(CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$p" cnitool_in_node add podnet "/var/run/netns/$p")
	echo "$res"
	IP[$p]=$(ip -n "$p" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
	echo "$p: eth0 ${IP[$p]}"
done

say "CNI CHECK and STATUS"
for p in "${PODS[@]}"; do cnitool_in_node check podnet "/var/run/netns/$p" && echo "$p: CHECK ok"; done
cnitool_in_node status podnet "/var/run/netns/${PODS[0]}" && echo "STATUS ok"

say "ping every pair and the node (the kernel fast path; ARP and neighbour discovery: the userspace switch)"
for a in "${PODS[@]}"; do
	for b in "${PODS[@]}"; do
		[ "$a" = "$b" ] && continue
		ip netns exec "$a" ping -c 3 -i 0.2 -W 1 -q "${IP[$b]}" | sed -n 's/^\(.*packets transmitted.*\)$/'"$a -> $b (${IP[$b]}): "'\1/p'
	done
	ip netns exec "$a" ping -c 1 -W 1 -q 10.89.0.1 >/dev/null && echo "$a -> node (gateway 10.89.0.1): ok"
done

say "iperf3: ${PODS[1]} -> ${PODS[0]} for 5 seconds"
ip netns exec "${PODS[0]}" iperf3 -s -1 -D -B "${IP[${PODS[0]}]}" --logfile "$WORK/iperf3-server.log"
sleep 0.5
ip netns exec "${PODS[1]}" iperf3 -c "${IP[${PODS[0]}]}" -t 5 -f m | grep -E 'sender|receiver'

say "iperf3: ${PODS[1]} -> the node (10.89.0.1, into the node's stack through the host port's TAP) for 5 seconds"
ip netns exec "$NODE" iperf3 -s -1 -D -B 10.89.0.1 --logfile "$WORK/iperf3-node.log"
sleep 0.5
ip netns exec "${PODS[1]}" iperf3 -c 10.89.0.1 -t 5 -f m | grep -E 'sender|receiver'

say "valectl capture of ${PODS[2]} while ${PODS[0]} pings it (a captured port's frames cross the userspace switch)"
"${VALECTL[@]}" capture "demo/${PODS[2]}" -c 6 -w "$WORK/capture.pcapng" icmp &
CAPTURE=$!
sleep 0.5
ip netns exec "${PODS[0]}" ping -c 3 -i 0.2 -W 1 -q "${IP[${PODS[2]}]}" | grep transmitted
wait "$CAPTURE"
echo "captured 6 ICMP frames (the 3 echo requests and 3 replies) into $(stat -c %s "$WORK/capture.pcapng") bytes of pcapng"

say "valectl ports (counters: IN/OUT through the switch, FAST-IN/FAST-OUT by the kernel fast path)"
"${VALECTL[@]}" ports
say "valectl fdb vale0"
"${VALECTL[@]}" fdb vale0
say "valectl attachments"
"${VALECTL[@]}" attachments

say "CNI DEL"
for p in "${PODS[@]}"; do cnitool_in_node del podnet "/var/run/netns/$p" && echo "$p: DEL ok"; done
"${VALECTL[@]}" ports
