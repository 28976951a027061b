#!/usr/bin/env bash
# cluster-up.sh: start a real single-node cluster for epair's e2e test: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, containerd(+runc),
# kubelet and kube-proxy, from the binaries hack/k8s/build-k8s.sh caches in
# ~/.cache/epair (built first when missing). No CNI is configured (the node stays
# NotReady until epair's agent writes its conflist) unless INSTALL_BRIDGE_CNI=1,
# which installs the reference bridge+host-local plugins instead.
# Images without a registry: a static pause and busybox-static, imported with ctr
# as epair/pause:3.10 and epair/busybox:local.
# Needs root. Everything except the system paths cluster-down.sh cleans lives
# under $WORK (default /tmp/epair-k8s). Tear down with hack/k8s/cluster-down.sh.
# Adapted from the verified recipe (sandbox quirks: restrict_oom_score_adj for
# hosts without CAP_SYS_RESOURCE, failCgroupV1: false for cgroup v1 hosts).
# Usage: [WORK=<dir>] hack/k8s/cluster-up.sh
# Env CLUSTER_DNS=<service IP>: kubelet's clusterDNS (pods resolve through a DNS add-on
# served at that address, e.g. the CoreDNS of hack/k8s/conformance.sh); unset, pods use
# the node's /etc/resolv.conf.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "cluster-up: needs root" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/epair-k8s}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
if [ -e "$WORK/run/pids" ] && [ -n "$(ls -A "$WORK/run/pids" 2>/dev/null)" ]; then
  echo "cluster-up: $WORK/run/pids is not empty: a cluster is running (hack/k8s/cluster-down.sh first)" >&2
  exit 1
fi
# Debian packages the node needs (once).
missing=""
for p in containerd runc containernetworking-plugins busybox-static iptables conntrack iproute2 openssl gcc libc6-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "cluster-up: installing$missing" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The cached binaries, linked into $WORK/bin.
KBIN=$("$HERE/tools.sh" k8s)
ETCD=$("$HERE/tools.sh" etcd)
B=$WORK/bin
mkdir -p "$B"
for b in kube-apiserver kubelet kubectl kube-controller-manager kube-scheduler kube-proxy; do ln -sfn "$KBIN/$b" "$B/$b"; done
ln -sfn "$ETCD" "$B/etcd"
R=$WORK/run
rm -rf "$R"
POD_CIDR=${POD_CIDR:-10.244.0.0/16}
SVC_CIDR=${SVC_CIDR:-10.96.0.0/16}
NODE_NAME=${NODE_NAME:-$(hostname | tr 'A-Z' 'a-z')}
NODE_IP=${NODE_IP:-$(ip -4 -o addr show scope global | awk 'NR==1{split($4,a,"/");print a[1]}')}
INSTALL_BRIDGE_CNI=${INSTALL_BRIDGE_CNI:-0}
mkdir -p "$R"/{pki,logs,pids,etcd,kubelet,containerd/root}
cd "$R"
sysctl -n net.ipv4.ip_forward > ip_forward.orig   # bridge plugin / kube-proxy turn it on
# a node prerequisite (kubeadm checks it too): the agent, a DaemonSet pod with a read-only
# /proc/sys, cannot turn it on itself; cluster-down.sh restores the original value
sysctl -qw net.ipv4.ip_forward=1
start() { # start <name> <cmd...>: background it, remember its pid
  local n=$1; shift
  "$@" >"logs/$n.log" 2>&1 &
  echo $! >"pids/$n.pid"
}

# --- PKI (throwaway) ---------------------------------------------------------
cd pki
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=test-ca 2>/dev/null
printf 'subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:%s,IP:%s\nextendedKeyUsage=serverAuth\n' \
  "$(echo "$SVC_CIDR" | sed 's#0/[0-9]*$#1#')" "$NODE_IP" > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile server.ext 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 30 -extfile client.ext 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
cd ..
KC=$R/admin.kubeconfig
"$B/kubectl" config --kubeconfig="$KC" set-cluster local --server=https://127.0.0.1:6443 --certificate-authority=pki/ca.crt --embed-certs=true >/dev/null
"$B/kubectl" config --kubeconfig="$KC" set-credentials admin --client-certificate=pki/admin.crt --client-key=pki/admin.key --embed-certs=true >/dev/null
"$B/kubectl" config --kubeconfig="$KC" set-context local --cluster=local --user=admin >/dev/null
"$B/kubectl" config --kubeconfig="$KC" use-context local >/dev/null
K="$B/kubectl --kubeconfig=$KC"

# --- control plane -------------------------------------------------------------
start etcd "$B/etcd" --data-dir etcd --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380
start kube-apiserver "$B/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" --cert-dir=pki \
  --tls-cert-file=pki/apiserver.crt --tls-private-key-file=pki/apiserver.key --client-ca-file=pki/ca.crt \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file=pki/sa.pub --service-account-signing-key-file=pki/sa.key \
  --service-cluster-ip-range="$SVC_CIDR" --authorization-mode=Node,RBAC --allow-privileged=true \
  --kubelet-client-certificate=pki/admin.crt --kubelet-client-key=pki/admin.key
for i in $(seq 60); do $K get --raw /readyz >/dev/null 2>&1 && break; sleep 1; done
$K get --raw /readyz >/dev/null
start kube-controller-manager "$B/kube-controller-manager" --kubeconfig="$KC" \
  --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" --leader-elect=false \
  --service-account-private-key-file=pki/sa.key --root-ca-file=pki/ca.crt \
  --cluster-signing-cert-file=pki/ca.crt --cluster-signing-key-file=pki/ca.key \
  --use-service-account-credentials=true --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" \
  --node-cidr-mask-size=24 --service-cluster-ip-range="$SVC_CIDR" --bind-address=127.0.0.1
start kube-scheduler "$B/kube-scheduler" --kubeconfig="$KC" --authentication-kubeconfig="$KC" \
  --authorization-kubeconfig="$KC" --leader-elect=false --bind-address=127.0.0.1

# --- node: CNI, images, containerd, kubelet, kube-proxy ------------------------------
mkdir -p /opt/cni/bin /etc/cni/net.d
for p in /usr/lib/cni/*; do [ -e "/opt/cni/bin/$(basename "$p")" ] || ln -s "$p" /opt/cni/bin/; done
if [ "$INSTALL_BRIDGE_CNI" = 1 ]; then
  cat > /etc/cni/net.d/10-testbridge.conflist <<EOT
{"cniVersion":"1.0.0","name":"testnet","plugins":[
 {"type":"bridge","bridge":"cni-test0","isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"$(echo "$POD_CIDR" | sed 's#\.0\.0/16#.0.0/24#')"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}
EOT
fi
# CONTAINERD_DIR: optional dir with containerd, containerd-shim-runc-v2, ctr built by
#   go install github.com/containerd/containerd/v2/cmd/{containerd,containerd-shim-runc-v2,ctr}@v2.x
# (default: Debian's containerd 1.6 in PATH). It must come first in PATH so the
# matching shim is found.
[ -n "${CONTAINERD_DIR:-}" ] && export PATH="$(cd "$CONTAINERD_DIR" && pwd):$PATH"
if containerd --version | grep -qE ' v?1\.'; then
cat > containerd.toml <<EOT
version = 2
root = "$R/containerd/root"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "epair/pause:3.10"
    # needed where the host lacks CAP_SYS_RESOURCE (negative oom_score_adj -> EACCES in runc)
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
EOT
else
cat > containerd.toml <<EOT
version = 3
root = "$R/containerd/root"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'epair/pause:3.10'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/opt/cni/bin']
    conf_dir = '/etc/cni/net.d'
EOT
fi
start containerd containerd --config "$R/containerd.toml"
for i in $(seq 30); do ctr version >/dev/null 2>&1 && break; sleep 1; done

# images without a registry: static pause + busybox-static, docker-archive tarballs
mkdir -p img/pause img/busybox/bin img/busybox/etc img/busybox/tmp
printf '%s\n' '#include <signal.h>' '#include <unistd.h>' '#include <sys/wait.h>' \
  'static void t(int s){(void)s;_exit(0);}' 'static void r(int s){(void)s;while(waitpid(-1,0,WNOHANG)>0);}' \
  'int main(void){signal(SIGTERM,t);signal(SIGINT,t);signal(SIGCHLD,r);for(;;)pause();}' > img/pause.c
gcc -static -Os -s -o img/pause/pause img/pause.c
cp /bin/busybox img/busybox/bin/busybox
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "img/busybox/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > img/busybox/etc/passwd; echo 'root:x:0:' > img/busybox/etc/group
"$HERE/mkimage.sh" img/pause epair/pause:3.10 '"Entrypoint":["/pause"]' img/pause.tar
"$HERE/mkimage.sh" img/busybox epair/busybox:local '"Cmd":["sh"]' img/busybox.tar
ctr -n k8s.io images import img/pause.tar
ctr -n k8s.io images import img/busybox.tar

cat > kubelet.yaml <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: $R/pki/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
${CLUSTER_DNS:+clusterDNS: [$CLUSTER_DNS]}
imageGCHighThresholdPercent: 100
evictionHard: {nodefs.available: "1%", imagefs.available: "1%", memory.available: "100Mi"}
EOT
start kubelet "$B/kubelet" --config=kubelet.yaml --kubeconfig="$KC" --root-dir="$R/kubelet" \
  --cert-dir="$R/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
# The service CIDR is not routed out of the node, as in a real cluster's network: a pod's
# packet to an address or port of it that kube-proxy did not translate (no such Service, or
# a port its Service no longer has) is rejected here rather than sent out through the
# default route, where this sandbox's network answers TCP port 80 of any address (the e2e
# spec "Services should serve endpoints on same port and different protocols" checks that
# a removed port stops answering). kube-proxy's DNAT comes first (PREROUTING): a served
# ClusterIP never reaches this rule. cluster-down.sh removes it by its comment.
iptables -A FORWARD -d "$SVC_CIDR" -m comment --comment "epair-e2e: unserved service address" -j REJECT
start kube-proxy "$B/kube-proxy" --kubeconfig="$KC" --hostname-override="$NODE_NAME" \
  --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --conntrack-max-per-core=0 \
  --metrics-bind-address=127.0.0.1:10249
for i in $(seq 60); do $K get node "$NODE_NAME" >/dev/null 2>&1 && break; sleep 1; done
if [ "$INSTALL_BRIDGE_CNI" = 1 ]; then   # without a CNI config the node stays NotReady
  $K wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s
  for i in $(seq 60); do [ -z "$($K get node "$NODE_NAME" -o jsonpath='{.spec.taints}')" ] && break; sleep 1; done
fi
$K get nodes -o wide
echo "export KUBECONFIG=$KC"
