#!/usr/bin/env bash
# bench-dataplane.sh: pod to pod on one node, measured as applications see it, through the
# epair switch and through the Linux kernel bridge in the same run, on the same two pods.
#
# Two pods (network namespaces with a veth each). The host ends are either on a Linux bridge
# (what a bridge CNI gives) or attached to the epair dataplane (dpbench: the agent's
# dataplane in this script's host namespace): the plain switch (AF_XDP ports after their
# FastStart move; the pods send complete checksums, as the CNI sets them up) and the
# offload switch (virtio-net headers; the pods keep TSO and checksum offload), also with the
# kernel fast path on (dpbench -fast-path: known-unicast frames between the pods moved by a
# tc program, pkg/fastpath; the agent's fastPath). For each:
#   - iperf3 TCP, 1 and 4 streams (Gbit/s received);
#   - iperf3 UDP at full speed with 18-byte payloads (64-byte frames) and 1400-byte
#     payloads: datagrams per second received by the server and the loss it counts;
#   - ping (p50 and p99 of 200 probes, 10 ms apart) and sockperf ping-pong over UDP and
#     TCP, 64-byte messages (p50/p99 of its one-way latency, RTT/2);
#   - the CPU busy share of the node (all CPUs) during the TCP 1-stream run;
#   - the sendmmsg generator (dpbench udp-flood, 64-byte frames counted at the receiving
#     pod's interface), a separate column: not what an application gets.
# Every client runs on CPU 0 and every server on CPU 1 (taskset). Each figure is the best of
# BENCH_RUNS runs (default 2) of BENCH_SECONDS (default 5). It prints the figures and their
# ratios to the bridge, and writes them to BENCHMARKS.md ("## Dataplane: ..." section;
# --no-write only prints). Needs root; sends only into the namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps bench

WRITE=${WRITE:-1}
[ "${1:-}" = "--no-write" ] && WRITE=0
[ "$(id -u)" -eq 0 ] || { echo "bench-dataplane: needs root (namespaces, XDP)" >&2; exit 1; }
for t in iperf3 sockperf jq ping ip taskset; do command -v "$t" >/dev/null || { echo "bench-dataplane: $t missing" >&2; exit 1; }; done
[ "$(nproc)" -ge 2 ] || { echo "bench-dataplane: needs 2 CPUs (client and server pinned apart)" >&2; exit 1; }

DUR=${BENCH_SECONDS:-5}
RUNS=${BENCH_RUNS:-2}
H=epbench-h A=epbench-a B=epbench-b
IPA=10.90.0.1 IPB=10.90.0.2 GW=10.90.0.254/24
WORK=$(mktemp -d)
BIN=$WORK/dpbench
SWPID=
SRVPID=

cleanup() {
	[ -n "$SRVPID" ] && kill "$SRVPID" 2>/dev/null || true
	[ -n "$SWPID" ] && kill -TERM "$SWPID" 2>/dev/null && wait "$SWPID" 2>/dev/null || true
	for n in $A $B $H; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$BIN" ./internal/dataplane/dpbench

for n in $H $A $B; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n $H link add ha numtxqueues 1 numrxqueues 1 type veth peer name eth0 numtxqueues 1 numrxqueues 1 netns $A
ip -n $H link add hb numtxqueues 1 numrxqueues 1 type veth peer name eth0 numtxqueues 1 numrxqueues 1 netns $B
ip -n $A link set eth0 address 02:00:00:90:00:01
ip -n $B link set eth0 address 02:00:00:90:00:02
ip -n $A addr add $IPA/24 dev eth0
ip -n $B addr add $IPB/24 dev eth0
for n in $A $B; do ip -n "$n" link set eth0 up; done
ip -n $H link set ha up
ip -n $H link set hb up
ip -n $A neigh replace $IPB lladdr 02:00:00:90:00:02 dev eth0 nud permanent
ip -n $B neigh replace $IPA lladdr 02:00:00:90:00:01 dev eth0 nud permanent

cli() { ip netns exec $A taskset -c 0 "$@"; }
srv() { ip netns exec $B taskset -c 1 "$@"; }
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

# cpu_busy: the busy share of all CPUs (percent) since the snapshot in $WORK/stat.
cpu_snap() { head -1 /proc/stat >"$WORK/stat"; }
cpu_busy() {
	awk 'NR == 1 { for (i = 2; i <= 9; i++) t0 += $i; i0 = $5 + $6 }
	     NR == 2 { for (i = 2; i <= 9; i++) t1 += $i; i1 = $5 + $6
	               printf "%.0f", 100 * (1 - (i1 - i0) / (t1 - t0)) }' "$WORK/stat" <(head -1 /proc/stat)
}

iperf_srv() {
	srv iperf3 -s -1 -D -B $IPB --pidfile "$WORK/iperf.pid"
	sleep 0.3
}

# tcp STREAMS: Gbit/s received; with STREAMS 1 also the CPU busy share (into $WORK/cpu).
tcp() {
	iperf_srv
	cpu_snap
	cli iperf3 -c $IPB -t "$DUR" -P "$1" -J >"$WORK/tcp.json"
	[ "$1" = 1 ] && cpu_busy >"$WORK/cpu"
	jq '.end.sum_received.bits_per_second / 1e9' "$WORK/tcp.json"
	sleep 0.3
}

# udp PAYLOAD: "received-per-second loss-percent", as the receiving iperf3 counted them.
udp() {
	iperf_srv
	cli iperf3 -c $IPB -u -b 0 -l "$1" -t "$DUR" -J >"$WORK/udp.json"
	jq -r --argjson d "$DUR" '.end.sum | "\((.packets - .lost_packets) / $d | floor) \(.lost_percent)"' "$WORK/udp.json"
	sleep 0.3
}

# pingp: "p50 p99" of 200 pings in ms.
pingp() {
	cli ping -c 200 -i 0.01 -q -W 1 $IPB >/dev/null 2>&1 || true
	cli ping -c 200 -i 0.01 -W 1 $IPB | awk -F'time=' '/time=/ { split($2, a, " "); print a[1] }' | sort -n |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "0 0"; exit } printf "%.3f %.3f\n", v[int(NR * 0.5) + (NR * 0.5 > int(NR * 0.5))], v[int(NR * 0.99) + (NR * 0.99 > int(NR * 0.99))] }'
}

# sock [--tcp]: sockperf ping-pong, 64-byte messages: "p50 p99" in µs (one way).
sock() {
	srv sockperf sr -i $IPB -p 11111 "$@" >/dev/null 2>&1 &
	SRVPID=$!
	sleep 0.5
	cli sockperf pp -i $IPB -p 11111 -m 64 -t "$DUR" "$@" 2>&1 | tr -d '\033' | sed 's/\[[0-9;]*m//g' >"$WORK/sock.out" || true
	kill "$SRVPID" 2>/dev/null || true
	wait "$SRVPID" 2>/dev/null || true
	SRVPID=
	awk '/percentile 50.000/ { p50 = $NF } /percentile 99.000/ { p99 = $NF } END { printf "%.1f %.1f\n", p50, p99 }' "$WORK/sock.out"
}

rx_packets() { ip -n $B -s -j link show eth0 | jq '.[0].stats64.rx.packets'; }
gen() {
	local r0 r1
	r0=$(rx_packets)
	ip netns exec $A taskset -c 0 "$BIN" udp-flood -dst $IPB:9 -size 18 -duration "${DUR}s" >/dev/null 2>&1
	r1=$(rx_packets)
	echo $(((r1 - r0) / DUR))
}

# measure LABEL: one row (best of $RUNS runs of each figure) into $WORK/rows, as
# label|tcp1|tcp4|udp64|loss64|udp1400|loss1400|ping50|ping99|su50|su99|st50|st99|cpu|gen
measure() {
	local label=$1 i v a b
	cli ping -c 3 -i 0.2 -W 2 -q $IPB >/dev/null || { echo "bench-dataplane: $label: no connectivity" >&2; return 1; }
	local t1=0 t4=0 u64=0 l64=100 u14=0 l14=100 p50=1e9 p99=1e9 su50=1e9 su99=1e9 st50=1e9 st99=1e9 cpu=0 g=0
	for i in $(seq "$RUNS"); do
		v=$(tcp 1); gt "$v" "$t1" && { t1=$v; cpu=$(cat "$WORK/cpu"); }
		t4=$(best "$t4" "$(tcp 4)")
		read -r a b < <(udp 18); gt "$a" "$u64" && { u64=$a; l64=$b; }
		read -r a b < <(udp 1400); gt "$a" "$u14" && { u14=$a; l14=$b; }
		read -r a b < <(pingp); p50=$(least "$p50" "$a"); p99=$(least "$p99" "$b")
		read -r a b < <(sock); su50=$(least "$su50" "$a"); su99=$(least "$su99" "$b")
		read -r a b < <(sock --tcp); st50=$(least "$st50" "$a"); st99=$(least "$st99" "$b")
		g=$(best "$g" "$(gen)")
	done
	echo "$label|$t1|$t4|$u64|$l64|$u14|$l14|$p50|$p99|$su50|$su99|$st50|$st99|$cpu|$g" >>"$WORK/rows"
	echo "bench-dataplane: $label: TCP $t1/$t4 Gbit/s, UDP64 $u64/s ($l64 % lost), UDP1400 $u14/s ($l14 % lost), ping $p50/$p99 ms, sockperf UDP $su50/$su99 µs TCP $st50/$st99 µs, CPU $cpu %, generator $g pps" >&2
}

LINKA=ha,02:00:00:90:00:01,$IPA
LINKB=hb,02:00:00:90:00:02,$IPB

# start_switch plain|offload|fast: the dataplane in the bench's host namespace.
start_switch() {
	local args=(-link "$LINKA" -link "$LINKB" -gw $GW)
	[ "$1" != plain ] && args+=(-offload -backend packet)
	[ "$1" = fast ] && args+=(-fast-path)
	ip netns exec $H "$BIN" switch "${args[@]}" >"$WORK/sw.out" 2>"$WORK/sw.err" &
	SWPID=$!
	for _ in $(seq 100); do
		grep -q ready "$WORK/sw.out" 2>/dev/null && return 0
		sleep 0.1
	done
	cat "$WORK/sw.err" >&2
	return 1
}
stop_switch() { kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID=; cat "$WORK/sw.err" >&2; }

: >"$WORK/rows"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# 1. The kernel bridge, pods with their default offloads (what a bridge CNI gives).
ip -n $H link add br0 type bridge
ip -n $H link set ha master br0
ip -n $H link set hb master br0
ip -n $H link set br0 up
measure "kernel bridge"
ip -n $H link del br0

# 2. The offload switch: the pods keep their default offloads.
start_switch offload
measure "epair offload switch"
stop_switch

# 2b. The same with the kernel fast path on.
start_switch fast
measure "epair offload switch + fast path"
stop_switch

# 3. The plain switch: the pods send complete checksums (no TSO), as the CNI sets them up
#    on a plain switch.
ip netns exec $A "$BIN" csum-off eth0
ip netns exec $B "$BIN" csum-off eth0
start_switch plain
measure "epair plain switch"
stop_switch

{
	echo "## Dataplane: epair switch vs kernel bridge"
	echo
	echo "Pod to pod on one node, as applications see it (hack/bench-dataplane.sh): two pods"
	echo "(network namespaces with a veth each) whose host ends are on a Linux bridge or on the"
	echo "epair dataplane (the offload switch: virtio-net headers, pods with their default TSO"
	echo "and checksum offload; with the fast path, the frames between the pods are moved by the"
	echo "kernel fast path, pkg/fastpath; the plain switch: AF_XDP ports, pods sending complete"
	echo "checksums)."
	echo "iperf3 TCP (1 and 4 streams) and UDP at full speed (18-byte payloads = 64-byte frames,"
	echo "and 1400-byte payloads; datagrams per second received by the server, loss as it counts"
	echo "it); ping p50/p99 (200 probes); sockperf ping-pong, 64-byte messages, one-way p50/p99;"
	echo "node CPU busy share during TCP 1 stream; the sendmmsg generator (frames per second at"
	echo "the receiving pod's interface, not what an application gets). Clients on CPU 0, servers"
	echo "on CPU 1. ${DUR} s per figure, best of ${RUNS} runs. Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
	echo "kernel $(uname -r), load average at start $LOAD0 (a shared machine: figures vary"
	echo "between runs). Reproduce: \`sudo hack/bench-dataplane.sh\` (run $(date -u +%Y-%m-%d))."
	echo
	echo "| path | TCP 1 (Gbit/s) | TCP 4 (Gbit/s) | UDP 64 B rx/s (loss) | UDP 1400 B rx/s (loss) | ping p50/p99 (ms) | sockperf UDP p50/p99 (µs) | sockperf TCP p50/p99 (µs) | CPU busy | generator 64 B (pps) |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	awk -F'|' '{ printf "| %s | %.2f | %.2f | %d (%.1f %%) | %d (%.1f %%) | %.3f / %.3f | %.1f / %.1f | %.1f / %.1f | %d %% | %d |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 }' "$WORK/rows"
	echo
	echo "Ratios to the kernel bridge (throughput: higher is better; latency: lower is better):"
	echo
	echo "| path | TCP 1 | TCP 4 | UDP 64 B | UDP 1400 B | ping p50 | sockperf UDP p50 | sockperf TCP p50 | generator |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	awk -F'|' 'NR == 1 { for (i = 2; i <= 15; i++) b[i] = $i; next }
		function r(x, y) { return y > 0 ? sprintf("%.2f×", x / y) : "—" }
		{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, r($2, b[2]), r($3, b[3]), r($4, b[4]), r($6, b[6]), r($8, b[8]), r($10, b[10]), r($12, b[12]), r($15, b[15]) }' "$WORK/rows"
} >"$WORK/section"
echo
cat "$WORK/section"

if [ "$WRITE" = 1 ]; then
	python3 hack/bench-section.py "$WORK/section" "## Dataplane: epair switch vs kernel bridge" "<!-- dataplane-notes -->"
	echo "bench-dataplane: wrote the section to BENCHMARKS.md" >&2
fi
