#!/usr/bin/env bash
# bench-netmap.sh: application to application through the epair switch, over netmap
# application ports, next to the kernel path between two pods, in the same run (issue 17).
#
# epair: a standalone node agent built from this tree runs in its own network namespace with
# one switch (vale0) and its netmap socket (netmapSocket, an abstract @name in that
# namespace). Two applications open node-level ports on it through pkg/nmport, as
# cmd/nm-pktgen does:
#   - throughput: nm-pktgen rx on vale0:b (CPU 1; it announces its MAC once) and nm-pktgen
#     tx on vale0:a (CPU 0), unicast to rx's MAC, 60-byte frames (64 on the wire with the
#     FCS) and 1514-byte frames, blocking (poll) and with -busy (both sides poll the rings).
#     The figure is what rx counts (the frame count of its final line) divided by tx's run
#     time (the figure of tx's final line is what it handed to the switch, not what arrived).
#   - latency: nm-pktgen ping on vale0:a (CPU 0) and pong on vale0:b (CPU 1), one 60-byte
#     frame at a time for BENCH_SECONDS: round-trip p50 and p99, blocking and -busy.
#   The agent's own sync loops (one per port) run on the CPUs other than 0 and 1 when the
#   machine has more than two (taskset), else wherever the scheduler puts them, next to tx
#   and rx: with 2 CPUs, -busy leaves them no CPU of their own, which shows in its figures.
# kernel path: two pods (network namespaces with a veth each) whose host ends are on a Linux
#   bridge, as a bridge CNI wires them; the dpbench udp-flood sendmmsg generator (64 UDP
#   datagrams per call) in pod A on CPU 0 with 18-byte and 1472-byte payloads, i.e. 60-byte
#   and 1514-byte Ethernet frames, the lengths nm-pktgen's -l 60 and -l 1514 send (64 and
#   1518 bytes on a wire, with the FCS: the "64-byte" and "1514-byte" of the tables),
#   counted at pod B's interface (received packets per second), as hack/bench-dataplane.sh's
#   "generator" column; pod B's receive processing is steered to CPU 1 (RPS).
# Agent-side allocations: BenchmarkAppToApp (internal/appport) moves 64-byte frames between
#   two application ports of one in-process server; its allocs/op is per frame.
# Each figure is the best of BENCH_RUNS runs (default 2) of BENCH_SECONDS (default 5). It
# prints the figures, the ratios epair/kernel and issue 17's targets (at least 10 Mpps at 64
# bytes, at least 10x the kernel path, zero allocations per frame in the agent, ping-pong
# p50 at most 10 us with busy polling), and writes them to BENCHMARKS.md ("## netmap
# application ports: ..." section; --no-write only prints). Needs root; sends only into
# the namespaces it creates, and removes everything it creates (trap).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps bench

WRITE=${WRITE:-1}
[ "${1:-}" = "--no-write" ] && WRITE=0
[ "$(id -u)" -eq 0 ] || { echo "bench-netmap: needs root (namespaces)" >&2; exit 1; }
for t in ip taskset jq python3; do command -v "$t" >/dev/null || { echo "bench-netmap: $t missing" >&2; exit 1; }; done
NCPU=$(nproc)
[ "$NCPU" -ge 2 ] || { echo "bench-netmap: needs 2 CPUs (sender and receiver pinned apart)" >&2; exit 1; }

DUR=${BENCH_SECONDS:-5}
RUNS=${BENCH_RUNS:-2}
NODE=epnm-node H=epnm-h A=epnm-a B=epnm-b
IPA=10.92.0.1 IPB=10.92.0.2
SOCK=@epair-nmbench
MACA=02:6e:6d:00:00:0a MACB=02:6e:6d:00:00:0b
WORK=$(mktemp -d)
BIN=$WORK/bin
AGENTPID=
BGPID=

cleanup() {
	if [ -n "$BGPID" ]; then kill -TERM "$BGPID" 2>/dev/null || true; fi
	if [ -n "$AGENTPID" ]; then
		kill -TERM "$AGENTPID" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$AGENTPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$AGENTPID" 2>/dev/null || true
		wait "$AGENTPID" 2>/dev/null || true
	fi
	for n in $A $B $H $NODE; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$BIN"
go build -o "$BIN/" ./cmd/node-agent ./cmd/nm-pktgen ./internal/dataplane/dpbench

best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

# ---- epair: the agent and two application ports ----------------------------------------

ip netns del $NODE 2>/dev/null || true
ip netns add $NODE
ip -n $NODE link set lo up
cat >"$WORK/agent.json" <<EOF
{
  "socket": "$WORK/run/agent.sock",
  "stateDir": "$WORK/state",
  "switches": [{"name": "vale0", "mtu": 1500, "ranges": [{"subnet": "10.92.1.0/24"}]}],
  "netmapSocket": "$SOCK"
}
EOF
AGENTCPUS="not pinned: with $NCPU CPUs it shares CPUs 0 and 1 with the applications"
agent=(ip netns exec "$NODE")
if [ "$NCPU" -ge 3 ]; then
	agent+=(taskset -c "2-$((NCPU - 1))")
	AGENTCPUS="CPUs 2-$((NCPU - 1))"
fi
"${agent[@]}" "$BIN/node-agent" -config "$WORK/agent.json" -uninstall >"$WORK/agent.log" 2>&1 &
AGENTPID=$!
for i in $(seq 100); do
	grep -q 'msg="agent ready"' "$WORK/agent.log" && break
	if ! kill -0 "$AGENTPID" 2>/dev/null || [ "$i" -eq 100 ]; then
		echo "bench-netmap: the agent did not start" >&2
		cat "$WORK/agent.log" >&2
		exit 1
	fi
	sleep 0.1
done

# pg CPU ARGS...: nm-pktgen in the agent's namespace on CPU.
pg() {
	local cpu=$1
	shift
	ip netns exec $NODE taskset -c "$cpu" "$BIN/nm-pktgen" -socket $SOCK "$@"
}

# stream LEN [-busy]: R is the Mpps that rx counted (its frames over tx's run time), O the
# Mpps tx handed to the switch (the switch drops what rx's ring has no room for, as VALE
# does). Not run in a subshell, so that cleanup sees BGPID.
stream() {
	local len=$1 n t
	shift
	ip netns exec $NODE taskset -c 1 "$BIN/nm-pktgen" -socket $SOCK -i vale0:b -f rx -l "$len" -src $MACB -d "$((DUR + 1))s" "$@" >"$WORK/rx.out" 2>"$WORK/rx.err" &
	BGPID=$!
	sleep 0.5
	pg 0 -i vale0:a -f tx -l "$len" -src $MACA -dst $MACB -d "${DUR}s" "$@" >"$WORK/tx.out" 2>"$WORK/tx.err" ||
		{ cat "$WORK/tx.err" >&2; return 1; }
	wait "$BGPID" || { cat "$WORK/rx.err" >&2; return 1; }
	BGPID=
	n=$(awk '/^total / { print $2 }' "$WORK/rx.out")
	t=$(awk '/^total / { sub(/s:$/, "", $5); print $5 }' "$WORK/tx.out")
	R=$(awk -v n="${n:-0}" -v t="${t:-1}" 'BEGIN { printf "%.3f", n / t / 1e6 }')
	O=$(awk '/^total / { printf "%.3f", $6 }' "$WORK/tx.out")
}

# rtt [-busy]: R is "p50 p99" of the ping-pong round trips in µs.
rtt() {
	ip netns exec $NODE taskset -c 1 "$BIN/nm-pktgen" -socket $SOCK -i vale0:b -f pong -src $MACB -d "$((DUR + 2))s" "$@" >/dev/null 2>"$WORK/pong.err" &
	BGPID=$!
	sleep 0.5
	pg 0 -i vale0:a -f ping -src $MACA -dst $MACB -d "${DUR}s" "$@" >"$WORK/ping.out" 2>"$WORK/ping.err" ||
		{ cat "$WORK/ping.err" >&2; return 1; }
	kill -TERM "$BGPID" 2>/dev/null || true
	wait "$BGPID" || true
	BGPID=
	# "N of M replies; rtt p50 D p90 D p99 D max D", D a Go duration.
	R=$(LC_ALL=C awk 'function us(d, u) {
			u = d
			sub(/^[0-9.]+/, "", u)
			if (u == "ns") return d / 1000
			if (u == "ms") return d * 1000
			if (u == "s") return d * 1e6
			return d + 0 # µs
		}
		/rtt p50/ { printf "%.1f %.1f", us($7), us($11) }' "$WORK/ping.out")
	[ -n "$R" ] || { echo "bench-netmap: ping: no figures" >&2; cat "$WORK/ping.out" "$WORK/ping.err" >&2; return 1; }
}

# ---- kernel path: two pods on a Linux bridge --------------------------------------------

for n in $H $A $B; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n $H link add ha numtxqueues 1 numrxqueues 1 type veth peer name eth0 numtxqueues 1 numrxqueues 1 netns $A
ip -n $H link add hb numtxqueues 1 numrxqueues 1 type veth peer name eth0 numtxqueues 1 numrxqueues 1 netns $B
ip -n $A link set eth0 address 02:00:00:92:00:01
ip -n $B link set eth0 address 02:00:00:92:00:02
ip -n $A addr add $IPA/24 dev eth0
ip -n $B addr add $IPB/24 dev eth0
ip -n $H link add br0 type bridge
for l in ha hb; do ip -n $H link set $l master br0; ip -n $H link set $l up; done
ip -n $H link set br0 up
for n in $A $B; do ip -n "$n" link set eth0 up; done
ip -n $A neigh replace $IPB lladdr 02:00:00:92:00:02 dev eth0 nud permanent
ip -n $B neigh replace $IPA lladdr 02:00:00:92:00:01 dev eth0 nud permanent
# The receiving pod's stack runs on CPU 1 (RPS), the generator on CPU 0.
ip netns exec $B sh -c 'echo 2 >/sys/class/net/eth0/queues/rx-0/rps_cpus'
ip netns exec $A ping -c 3 -i 0.2 -W 2 -q $IPB >/dev/null || { echo "bench-netmap: kernel path: no connectivity" >&2; exit 1; }

rx_packets() { ip -n $B -s -j link show eth0 | jq '.[0].stats64.rx.packets'; }
# kgen PAYLOAD: Mpps counted at pod B's interface.
kgen() {
	local r0 r1
	r0=$(rx_packets)
	ip netns exec $A taskset -c 0 "$BIN/dpbench" udp-flood -dst $IPB:9 -size "$1" -duration "${DUR}s" >/dev/null 2>&1
	r1=$(rx_packets)
	awk -v n="$((r1 - r0))" -v t="$DUR" 'BEGIN { printf "%.3f\n", n / t / 1e6 }'
}

# ---- measure -----------------------------------------------------------------------------

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
e64=0 e1514=0 b64=0 b1514=0 k64=0 k1514=0
r50=1e9 r99=1e9 rb50=1e9 rb99=1e9
for i in $(seq "$RUNS"); do
	stream 60; e64=$(best "$e64" "$R"); o=$O
	stream 1514; e1514=$(best "$e1514" "$R"); o="$o/$O"
	stream 60 -busy; b64=$(best "$b64" "$R"); o="$o, busy $O"
	stream 1514 -busy; b1514=$(best "$b1514" "$R"); o="$o/$O"
	rtt; read -r a b <<<"$R"; r50=$(least "$r50" "$a"); r99=$(least "$r99" "$b")
	rtt -busy; read -r a b <<<"$R"; rb50=$(least "$rb50" "$a"); rb99=$(least "$rb99" "$b")
	k64=$(best "$k64" "$(kgen 18)")
	k1514=$(best "$k1514" "$(kgen 1472)")
	echo "bench-netmap: run $i: epair (best so far) $e64/$e1514 Mpps received (this run offered $o Mpps), busy $b64/$b1514 Mpps, RTT $r50/$r99 µs, busy $rb50/$rb99 µs; kernel $k64/$k1514 Mpps" >&2
done
if grep -q 'level=\(WARN\|ERROR\)\|put in error' "$WORK/agent.log"; then
	echo "bench-netmap: the agent's log:" >&2
	grep 'level=\(WARN\|ERROR\)\|put in error' "$WORK/agent.log" >&2
fi

# Agent-side allocations per frame (the Go benchmark; no root needed).
go test -run '^$' -bench '^BenchmarkAppToApp$' -benchmem -benchtime "${DUR}s" -count 1 ./internal/appport >"$WORK/gobench.out" 2>&1 ||
	{ cat "$WORK/gobench.out" >&2; exit 1; }
read -r gfps gallocs < <(awk '/^BenchmarkAppToApp/ { for (i = 2; i < NF; i++) { if ($(i + 1) == "frames/s") f = $i; if ($(i + 1) == "allocs/op") a = $i } }
	END { print f + 0, a + 0 }' "$WORK/gobench.out")

# ---- report ------------------------------------------------------------------------------

gbit() { awk -v m="$1" -v l="$2" 'BEGIN { printf "%.2f", m * 1e6 * l * 8 / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else printf "—" }'; }
yes() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }
{
	echo "## netmap application ports: application to application through the switch vs the kernel path"
	echo
	echo "Two applications on netmap ports of the epair switch (hack/bench-netmap.sh, issue 17): a"
	echo "standalone node agent built from the tree, in its own network namespace, serves node-level"
	echo "ports vale0:a and vale0:b on its netmap socket; cmd/nm-pktgen tx on vale0:a (CPU 0) sends"
	echo "unicast to nm-pktgen rx on vale0:b (CPU 1), which counts what arrives (its frames over tx's"
	echo "run time); ping/pong bounce one 60-byte frame. Blocking: both sleep in poll; busy: both"
	echo "poll the rings (-busy). The agent: $AGENTCPUS. The kernel path, in the same run: two pods"
	echo "(network namespaces with a veth each) on a Linux bridge, dpbench udp-flood (sendmmsg, 64"
	echo "datagrams a call) in pod A on CPU 0, received packets counted at pod B's interface (its"
	echo "receive processing on CPU 1), as in the Dataplane section's generator column. Frame"
	echo "sizes: 60 and 1514 bytes as nm-pktgen counts them, 64 and 1518 on a wire (FCS). ${DUR} s per figure, best of"
	echo "${RUNS} runs. Machine: ${NCPU} vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r),"
	echo "load average at start $LOAD0 (a shared machine: figures vary between runs). Reproduce:"
	echo "\`sudo hack/bench-netmap.sh\` or \`BENCH=netmap make bench\` (run $(date -u +%Y-%m-%d))."
	echo
	echo "| path | 64 B (Mpps) | 1514 B (Mpps) | 1514 B (Gbit/s) | 64 B vs kernel | 1514 B vs kernel |"
	echo "|---|---:|---:|---:|---:|---:|"
	echo "| epair app → app, blocking | $e64 | $e1514 | $(gbit "$e1514" 1514) | $(ratio "$e64" "$k64") | $(ratio "$e1514" "$k1514") |"
	echo "| epair app → app, busy polling | $b64 | $b1514 | $(gbit "$b1514" 1514) | $(ratio "$b64" "$k64") | $(ratio "$b1514" "$k1514") |"
	echo "| kernel: veth + bridge, sendmmsg generator | $k64 | $k1514 | $(gbit "$k1514" 1514) | 1.00× | 1.00× |"
	echo
	echo "| ping-pong, 60-byte frames | RTT p50 (µs) | RTT p99 (µs) |"
	echo "|---|---:|---:|"
	echo "| epair app ↔ app, blocking | $r50 | $r99 |"
	echo "| epair app ↔ app, busy polling | $rb50 | $rb99 |"
	echo
	echo "Agent side in one process (\`go test -bench BenchmarkAppToApp ./internal/appport\`): $(awk -v f="$gfps" 'BEGIN { printf "%.2f", f / 1e6 }') Mpps"
	echo "between two application ports, $gallocs allocations per frame (client, server and switch together)."
	echo
	m64=$(best "$e64" "$b64")
	echo "Issue 17's targets in this run: at least 10 Mpps at 64 bytes between two application"
	echo "ports: $(yes "$m64 >= 10") ($m64); at least 10× the kernel path: $(yes "$k64 > 0 && $m64 >= 10 * $k64") ($(ratio "$m64" "$k64"));"
	echo "zero allocations per frame in the agent: $(yes "$gallocs == 0") ($gallocs); ping-pong p50 at most 10 µs"
	echo "with busy polling: $(yes "$rb50 <= 10") ($rb50 µs)."
} >"$WORK/section"
echo
cat "$WORK/section"

if [ "$WRITE" = 1 ]; then
	python3 hack/bench-section.py "$WORK/section" "## netmap application ports:" "<!-- netmap-notes -->"
	echo "bench-netmap: wrote the section to BENCHMARKS.md" >&2
fi
