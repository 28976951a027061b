#!/usr/bin/env bash
# cluster-down.sh: tear down what hack/k8s/cluster-up.sh started, whatever state
# it is in: workloads first (so the CNI DEL runs), then every process by its
# recorded pid, then host leftovers, including anything epair left behind
# (conflist, plugin binary, agent socket/state dirs, epair links, nftables
# table) when a test failed before helm uninstall, if EPAIR_LEFTOVERS=1.
# Idempotent; needs root.
# Usage: [WORK=<dir>] [EPAIR_LEFTOVERS=1] hack/k8s/cluster-down.sh
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "cluster-down: needs root" >&2; exit 1; }
WORK=${WORK:-/tmp/epair-k8s}
[ -d "$WORK" ] || exit 0
WORK=$(cd "$WORK" && pwd)
R=$WORK/run
K="$WORK/bin/kubectl --kubeconfig=$R/admin.kubeconfig"
[ -n "${CONTAINERD_DIR:-}" ] && export PATH="$(cd "$CONTAINERD_DIR" && pwd):$PATH"
stop() { # stop <name>: SIGTERM the recorded pid, wait, then SIGKILL
  local f=$R/pids/$1.pid; [ -f "$f" ] || return 0
  local p; p=$(cat "$f")
  kill "$p" 2>/dev/null
  for i in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$p" 2>/dev/null; rm -f "$f"
}
# ours_netns: record the network namespaces of this cluster's pod sandboxes (from this
# containerd's container specs) in $WORK/netns.ours: only those are ever deleted or
# unmounted here; other runs on the host have their own cni-* namespaces.
NSLIST=$WORK/netns.ours
ours_netns() {
  local c
  for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do
    ctr -n k8s.io containers info "$c" 2>/dev/null
  done | python3 -c '
import json, sys
dec, s, i = json.JSONDecoder(), sys.stdin.read(), 0
while True:
    while i < len(s) and s[i].isspace(): i += 1
    if i >= len(s): break
    try: o, i = dec.raw_decode(s, i)
    except ValueError: break
    for n in (((o.get("Spec") or {}).get("linux") or {}).get("namespaces") or []):
        if n.get("type") == "network" and n.get("path", "").startswith("/run/netns/"):
            print(n["path"])' >>"$NSLIST" 2>/dev/null
  sort -u -o "$NSLIST" "$NSLIST" 2>/dev/null
}
ours_netns
# 1. no new pods, then delete all pods so kubelet -> containerd -> CNI DEL cleans up
stop kube-controller-manager; stop kube-scheduler
$K delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1
for i in $(seq 60); do
  [ -z "$($K get pods -A -o name 2>/dev/null)" ] && [ -z "$(ctr -n k8s.io tasks ls -q 2>/dev/null)" ] && break
  sleep 1
done
stop kubelet
# 2. anything left in containerd: kill and remove (the shims exit with their tasks)
ours_netns
for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do
  ctr -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1; sleep 0.2
  ctr -n k8s.io tasks delete -f "$c" >/dev/null 2>&1
  ctr -n k8s.io containers delete "$c" >/dev/null 2>&1
done
stop containerd
# 3. kube-proxy rules
stop kube-proxy
"$WORK/bin/kube-proxy" --cleanup >/dev/null 2>&1
stop kube-apiserver; stop etcd
# 4. host leftovers: mounts, netns, bridge, iptables chains, state dirs
grep -E " ($R|/run/containerd)" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
# only this cluster's pod network namespaces (ours_netns), never another run's
if [ -f "$NSLIST" ]; then
  while read -r ns; do
    [ -e "$ns" ] || continue
    ip netns delete "$(basename "$ns")" 2>/dev/null || { umount -l "$ns" 2>/dev/null; rm -f "$ns"; }
  done <"$NSLIST"
fi
ip link delete cni-test0 2>/dev/null
for t in iptables ip6tables; do
  $t-save | grep -vE -- '(^|[ :-])(CNI|KUBE)-|epair-e2e: unserved service address' | $t-restore 2>/dev/null || true
done
rm -f /etc/cni/net.d/10-testbridge.conflist
find /opt/cni/bin -maxdepth 1 -type l -lname '/usr/lib/cni/*' -delete 2>/dev/null
rm -rf /var/lib/cni /var/log/pods /var/log/containers /run/containerd \
       /var/lib/kubelet/device-plugins /usr/libexec/kubernetes/kubelet-plugins
rmdir /var/lib/kubelet /usr/libexec/kubernetes 2>/dev/null
# empty pod cgroups left by kubelet (cgroupfs driver; v1 hierarchies or v2 root)
for d in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done
# 5. epair leftovers, normally removed by helm uninstall: only with
#    EPAIR_LEFTOVERS=1 (e2e/k8s/run.sh sets it), because the agent's default
#    paths and nftables table may belong to another epair run on a shared host.
#    Links are removed only when their alias says they belong to the chart's
#    network ("epair-cni:epair/<containerID>/<ifname>", pkg/epair + cniplugin.OwnerKey).
if [ "${EPAIR_LEFTOVERS:-0}" = 1 ]; then
  rm -f /etc/cni/net.d/10-epair.conflist /etc/cni/net.d/.10-epair.conflist.tmp-* /opt/cni/bin/epair-cni /opt/cni/bin/.epair-cni.tmp-*
  ip -j link show 2>/dev/null | python3 -c '
import json, sys
for l in json.load(sys.stdin):
    if l.get("ifalias", "").startswith("epair-cni:epair/") or l.get("ifname") == "epvale0":
        print(l["ifname"])' | while read -r l; do ip link delete "$l" 2>/dev/null; done
  nft delete table inet epair 2>/dev/null
  rm -rf /run/epair /var/lib/epair
fi
rmdir /etc/cni/net.d /etc/cni /opt/cni/bin /opt/cni 2>/dev/null
[ -f "$R/ip_forward.orig" ] && sysctl -qw net.ipv4.ip_forward="$(cat "$R/ip_forward.orig")"
rm -rf "$R"
exit 0
