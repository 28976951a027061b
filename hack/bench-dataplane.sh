#!/usr/bin/env bash
# bench-dataplane.sh: pod-to-pod through the epair switch (AF_XDP and AF_PACKET
# ports) against the Linux kernel bridge with veth, in namespaces this script
# creates and removes, plus the opt-in offload mode (virtio-net headers through
# the switch, pods keep TSO and checksum offload). Measures 64-byte UDP packets per second received by the
# pod, TCP throughput with one and four streams (iperf3) and ping round trips,
# prints a table and writes it to BENCHMARKS.md ("## Dataplane: ..." section;
# --no-write only prints). Needs root. Usage: hack/bench-dataplane.sh [--no-write]
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/ensure-go.sh
. hack/deps.sh
epair_deps bench

WRITE=${WRITE:-1} # WRITE=0: print the table only
[ "${1:-}" = "--no-write" ] && WRITE=0
[ "$(id -u)" -eq 0 ] || { echo "bench-dataplane: needs root (namespaces, XDP)" >&2; exit 1; }
for t in iperf3 jq ping ip; do command -v "$t" >/dev/null || { echo "bench-dataplane: $t missing" >&2; exit 1; }; done

DUR=${BENCH_SECONDS:-5}
RUNS=${BENCH_RUNS:-3}
H=epbench-h A=epbench-a B=epbench-b
IPA=10.90.0.1 IPB=10.90.0.2 GW=10.90.0.254/24
WORK=$(mktemp -d)
BIN=$WORK/dpbench
SWPID=

cleanup() {
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
# Static neighbours: a flood must not wait on (or lose frames to) ARP.
ip -n $A neigh replace $IPB lladdr 02:00:00:90:00:02 dev eth0 nud permanent
ip -n $B neigh replace $IPA lladdr 02:00:00:90:00:01 dev eth0 nud permanent

rx_packets() { ip -n $B -s -j link show eth0 | jq '.[0].stats64.rx.packets'; }

# best A B: the larger of two numbers (awk, they may be fractional).
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

udp_pps() {
	local r0 r1
	r0=$(rx_packets)
	ip netns exec $A "$BIN" udp-flood -dst $IPB:9 -size 18 -duration "${DUR}s" >>"$WORK/flood" 2>&1
	r1=$(rx_packets)
	echo $(( (r1 - r0) / DUR ))
}

tcp_gbps() {
	ip netns exec $B iperf3 -s -1 -D -B $IPB --pidfile "$WORK/iperf.pid"
	sleep 0.5
	ip netns exec $A iperf3 -c $IPB -t "$DUR" -P "$1" -J | jq '.end.sum_received.bits_per_second / 1e9'
	sleep 0.5
}

# measure LABEL: best of $RUNS runs of each figure, as one table row.
measure() {
	local label=$1
	ip netns exec $A ping -c 3 -i 0.2 -W 2 -q $IPB >/dev/null || { echo "bench-dataplane: $label: no connectivity" >&2; return 1; }
	local pps=0 t1=0 t4=0 rtt=1000 i
	: >"$WORK/flood"
	for i in $(seq "$RUNS"); do
		pps=$(best "$pps" "$(udp_pps)")
		sleep 0.5
		t1=$(best "$t1" "$(tcp_gbps 1)")
		t4=$(best "$t4" "$(tcp_gbps 4)")
		rtt=$(least "$rtt" "$(ip netns exec $A ping -c 40 -i 0.05 -q $IPB | awk -F/ '/^rtt/ {print $5}')")
	done
	printf '| %s | %d | %.2f | %.2f | %.3f |\n' "$label" "$pps" "$t1" "$t4" "$rtt" >>"$WORK/rows"
	echo "bench-dataplane: $label: $pps pps, TCP $t1/$t4 Gbit/s, rtt $rtt ms; sender: $(tr '\n' ' ' <"$WORK/flood")" >&2
}

# The pods' identities, which the switch pins in its FDB and anti-spoofing checks (the
# dataplane's default); BENCH_ALLOW_SPOOFING=1 measures the ports without the checks.
LINKA=ha,02:00:00:90:00:01,$IPA
LINKB=hb,02:00:00:90:00:02,$IPB
SPOOF=
[ "${BENCH_ALLOW_SPOOFING:-0}" = 1 ] && SPOOF=-allow-spoofing

# start_switch BACKEND: the dataplane runs in the bench's host namespace
# (BACKEND offload: an offload switch, AF_PACKET ports with virtio-net headers).
start_switch() {
	if [ "$1" = offload ]; then
		ip netns exec $H "$BIN" switch -offload -backend packet -link "$LINKA" -link "$LINKB" -gw $GW $SPOOF >"$WORK/sw.out" 2>"$WORK/sw.err" &
	else
		ip netns exec $H "$BIN" switch -backend "$1" -link "$LINKA" -link "$LINKB" -gw $GW -xdp-frames 4096 $SPOOF >"$WORK/sw.out" 2>"$WORK/sw.err" &
	fi
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

# 1. Kernel bridge, pods with their default offloads (what a bridge CNI gets).
ip -n $H link add br0 type bridge
ip -n $H link set ha master br0
ip -n $H link set hb master br0
ip -n $H link set br0 up
measure "kernel bridge + veth (pod offloads on)"

# 2. The same bridge once the pods send complete checksums (no TSO), as they
# must for a userspace switch: the per-packet cost compared like for like.
ip netns exec $A "$BIN" csum-off eth0
ip netns exec $B "$BIN" csum-off eth0
measure "kernel bridge + veth (pod TX offloads off)"
ip -n $H link del br0

# 3-4. The epair switch.
start_switch xdp
measure "epair switch, AF_XDP ports"
stop_switch
start_switch packet
measure "epair switch, AF_PACKET ports"
stop_switch

# 5. The epair switch in offload mode: every port carries a virtio-net header
# (AF_PACKET + PACKET_VNET_HDR, TAP with IFF_VNET_HDR), the pods keep TSO and
# checksum offload, and 64 KB super-frames cross as slot chains.
ip netns exec $A "$BIN" csum-on eth0
ip netns exec $B "$BIN" csum-on eth0
start_switch offload
measure "epair offload switch, AF_PACKET + vnet header (pod offloads on)"
stop_switch

{
	echo "## Dataplane: epair switch vs kernel bridge"
	echo
	echo "Pod to pod on one node: two network namespaces with a veth each, the host ends"
	echo "either on a Linux bridge or attached to the epair switch (internal/dataplane:"
	echo "VALE switch, ifcore output queue per port, AF_XDP or AF_PACKET sockets; the"
	echo "offload row: an offload switch (SwitchConfig.Offload), 10-byte virtio-net headers"
	echo "on every port, pods with TSO and checksum offload on)."
	echo "UDP: 18-byte payloads (64-byte frames) sent with sendmmsg by one thread in pod A"
	echo "for ${DUR} s, counted as packets received by pod B's eth0. TCP: iperf3, ${DUR} s."
	echo "RTT: ping, 40 probes (average). Each figure is the best of ${RUNS} runs. Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
	echo "kernel $(uname -r), load average at start $LOAD0 (shared with other engineers'"
	echo "builds and tests: figures vary between runs)."
	echo
	echo "Reproduce: \`sudo hack/bench-dataplane.sh\` (run $(date -u +%Y-%m-%d))."
	echo
	echo "| path | UDP 64 B received (pps) | TCP 1 stream (Gbit/s) | TCP 4 streams (Gbit/s) | RTT avg (ms) |"
	echo "|---|---:|---:|---:|---:|"
	cat "$WORK/rows"
} >"$WORK/section"
echo
cat "$WORK/section"

if [ "$WRITE" = 1 ]; then
	touch BENCHMARKS.md
	python3 - "$WORK/section" <<'PY'
import re, sys
sec = open(sys.argv[1]).read().rstrip("\n") + "\n"
notes_marker = "<!-- dataplane-notes -->"
text = open("BENCHMARKS.md").read()
head = "## Dataplane: epair switch vs kernel bridge"
i = text.find(head)
if i < 0:
    text = text.rstrip("\n") + "\n\n" + sec
else:
    j = text.find("\n## ", i + len(head))
    old = text[i:] if j < 0 else text[i:j + 1]
    # Keep hand-written notes that follow the marker inside the section.
    k = old.find(notes_marker)
    if k >= 0:
        sec = sec + "\n" + old[k:].rstrip("\n") + "\n"
    text = text[:i] + sec + ("" if j < 0 else text[j:])
open("BENCHMARKS.md", "w").write(text)
PY
	echo "bench-dataplane: wrote the section to BENCHMARKS.md" >&2
fi
