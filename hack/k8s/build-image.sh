#!/usr/bin/env bash
# build-image.sh [out.tar]: build the agent image without a registry or Docker.
# A scratch image holding the static binaries that exist in the tree:
#   /node-agent (cmd/node-agent), /epair-cni (cmd/epair-cni), /valectl (cmd/valectl),
#   /epair-install-cni (internal/controller/cmd/epair-install-cni),
#   /nm-pktgen (cmd/nm-pktgen: a pod with netmap application ports can run it from this
#   image, command ["/nm-pktgen", "-socket", "@epair-netmap", ...], as e2e/k8s step 8g does)
# written as a docker-archive tarball (hack/k8s/mkimage.sh) that
#   ctr -n k8s.io images import <out.tar>
# loads as epair/node-agent:$TAG. Prints the tarball's path.
# The image also carries the build host's nft binary with its shared libraries and
# loader (same paths), because the agent's masquerade (on by default in the chart)
# drives nftables through it. Env NFT=0 leaves it out (the chart then needs
# agent.masquerade=false).
# /var/run is a link to /run, as on the nodes: the runtime's CNI_NETNS paths
# (/var/run/netns/cni-...) resolve in the agent's container, which mounts the node's
# /run/netns (charts/epair, agent.netmapPorts).
# Default out: ~/.cache/epair/images/node-agent-$TAG.tar. Env: TAG (default dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${TAG:-dev}
CACHE=${EPAIR_CACHE:-$HOME/.cache/epair}
OUT=${1:-$CACHE/images/node-agent-$TAG.tar}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/rootfs/tmp" "$W/rootfs/etc" "$W/rootfs/run" "$W/rootfs/var"
ln -s ../run "$W/rootfs/var/run"
chmod 1777 "$W/rootfs/tmp"
built=""
for pkg in cmd/node-agent cmd/epair-cni cmd/valectl internal/controller/cmd/epair-install-cni cmd/nm-pktgen; do
	if [ ! -d "$pkg" ]; then
		echo "build-image: $pkg does not exist yet; left out of the image" >&2
		continue
	fi
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$W/rootfs/$(basename "$pkg")" "./$pkg"
	built="$built $(basename "$pkg")"
done
[ -n "$built" ] || { echo "build-image: nothing to build" >&2; exit 1; }
if [ "${NFT:-1}" != 0 ]; then
	nft=$(command -v nft || true)
	[ -n "$nft" ] || { echo "build-image: no nft on this host (apt-get install nftables), or NFT=0 to build without masquerade support" >&2; exit 1; }
	nft=$(readlink -f "$nft")
	mkdir -p "$W/rootfs/usr/sbin"
	cp "$nft" "$W/rootfs/usr/sbin/nft"
	for lib in $(ldd "$nft" | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}'); do
		mkdir -p "$W/rootfs$(dirname "$lib")"
		cp -L "$lib" "$W/rootfs$lib"
	done
	built="$built nft"
fi
echo 'root:x:0:0:root:/:/node-agent' >"$W/rootfs/etc/passwd"
echo 'root:x:0:' >"$W/rootfs/etc/group"
hack/k8s/mkimage.sh "$W/rootfs" "epair/node-agent:$TAG" '"Entrypoint":["/node-agent"]' "$OUT"
echo "build-image: epair/node-agent:$TAG with$built ($(du -h "$OUT" | cut -f1))" >&2
echo "$OUT"
