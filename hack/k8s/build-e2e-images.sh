#!/usr/bin/env bash
# build-e2e-images.sh: the container images the Kubernetes e2e specs of
# hack/k8s/conformance.sh use, without a registry or Docker: docker-archive
# tarballs (hack/k8s/mkimage.sh) named exactly as the e2e framework of
# k8s.io/kubernetes@v$K8S_VERSION names them (test/utils/image/manifest.go, read
# from the module source), for `ctr -n k8s.io images import`. Cached, keyed by
# version; an image is built only when its tarball is missing, and written to a
# temporary name first (mkimage.sh renames it into place):
#
#   ~/.cache/epair/e2e-images-k8s-v$K8S_VERSION/
#     agnhost-<tag>.tar            registry.k8s.io/e2e-test-images/agnhost:<tag>
#                                  agnhost built from k8s.io/kubernetes/test/images/agnhost
#                                  (hack/k8s/build-k8s.sh e2e); the tools its upstream
#                                  Dockerfile adds from Alpine come from Debian here: busybox
#                                  (awk, grep, hostname...), sh (dash), curl, nc (netcat-openbsd),
#                                  dig (bind9-dnsutils), getent, ip and ss (iproute2), bash,
#                                  copied with their shared libraries; /agnhost-2, /uploads,
#                                  porter's localhost.crt/key, user 1000 and group 50000 as
#                                  upstream; ENTRYPOINT /agnhost, CMD pause
#     glibc-dns-testing-<tag>.tar  registry.k8s.io/e2e-test-images/glibc-dns-testing:<tag>
#                                  the DNS specs' "jessie" prober: a glibc userland with dig,
#                                  getent and a shell (the same tools, no agnhost)
#     nginx-<tag>.tar              registry.k8s.io/e2e-test-images/nginx:<tag>
#                                  Debian's nginx binary (apt-get download, not installed on
#                                  the host) serving a static page on :80 in the foreground
#     coredns-<tag>.tar            registry.k8s.io/coredns/coredns:<tag> (kubeadm's CoreDNS
#                                  version of this Kubernetes release), the binary built from
#                                  github.com/coredns/coredns@<tag> through the Go module proxy
#                                  and cached in ~/.cache/epair/coredns-<tag>/bin
#
# The busybox and pause images the specs name are the cluster's own
# (hack/k8s/cluster-up.sh: epair/busybox:local, epair/pause:3.10), tagged with the
# specs' names after the import (hack/k8s/conformance.sh e2e_images_import).
#
# Usage: hack/k8s/build-e2e-images.sh [agnhost|all]   (default all; agnhost: only
# what the default suite's Networking Granular Checks need). Prints the cache
# directory on the last line of stdout; `image_ref <name>` lines before it give each
# tarball's image reference ("<file> <ref>").
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-1.36.3}
CACHE=${EPAIR_CACHE:-$HOME/.cache/epair}
what=${1:-all}
OUT=$CACHE/e2e-images-k8s-v$K8S_VERSION
K8S_BIN=$CACHE/k8s-v$K8S_VERSION/bin
log() { echo "build-e2e-images: $*" >&2; }

[ -x "$K8S_BIN/e2e.test" ] && [ -x "$K8S_BIN/agnhost" ] || "$HERE/build-k8s.sh" e2e >/dev/null
SRC=$(cd "$HERE" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -n "$SRC" ] || { log "cannot download k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
MANIFEST=$SRC/test/utils/image/manifest.go

# e2e_ref <ImageID>: the reference the e2e framework uses for an image of manifest.go,
# e.g. e2e_ref Agnhost -> registry.k8s.io/e2e-test-images/agnhost:2.63.0
e2e_ref() {
	local line reg name tag host
	line=$(grep -E "^\s*configs\[$1\] = Config\{" "$MANIFEST") || { log "no image $1 in $MANIFEST"; return 1; }
	reg=$(echo "$line" | sed -E 's/.*Config\{list\.([A-Za-z0-9]+), .*/\1/')
	name=$(echo "$line" | sed -E 's/.*Config\{[^,]+, "([^"]+)", "([^"]+)"\}.*/\1/')
	tag=$(echo "$line" | sed -E 's/.*Config\{[^,]+, "([^"]+)", "([^"]+)"\}.*/\2/')
	host=$(grep -E "^\s*$reg: +\"" "$MANIFEST" | head -1 | sed -E 's/.*"([^"]+)".*/\1/')
	[ -n "$host" ] && [ -n "$name" ] && [ -n "$tag" ] || { log "cannot parse image $1 in $MANIFEST"; return 1; }
	echo "$host/$name:$tag"
}
# The CoreDNS version kubeadm deploys with this release.
COREDNS_VERSION=$(sed -n 's/^\s*CoreDNSVersion = "\(v[0-9.]*\)".*/\1/p' "$SRC/cmd/kubeadm/app/constants/constants.go")
[ -n "$COREDNS_VERSION" ] || { log "no CoreDNSVersion in kubeadm's constants"; exit 1; }

mkdir -p "$OUT"
TMPDIRS=()
trap 'rm -rf "${TMPDIRS[@]}" 2>/dev/null' EXIT

# Debian packages whose binaries go into the images (installed once; nginx is only
# downloaded, never installed on the host).
missing=""
for p in busybox-static dash curl netcat-openbsd bind9-dnsutils iproute2 bash libc-bin; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	log "installing$missing"
	apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# add_bin <rootfs> <binary> [name in rootfs]: copy a dynamically linked binary of the
# host with its shared libraries and loader (same paths, as hack/k8s/build-image.sh does
# for nft).
add_bin() {
	local root=$1 bin lib dst=${3:-}
	bin=$(readlink -f "$2")
	[ -n "$dst" ] || dst=$2
	mkdir -p "$root$(dirname "$dst")"
	cp "$bin" "$root$dst"
	for lib in $(ldd "$bin" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}'); do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

# tools_rootfs <dir>: busybox for the small tools, then sh (dash), curl, nc, dig, getent,
# ip, ss and bash from Debian with their libraries.
tools_rootfs() {
	local r=$1 a
	mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/usr/bin" "$r/usr/sbin" "$r/root"
	chmod 1777 "$r/tmp"
	cp /bin/busybox "$r/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -sf /bin/busybox "$r/bin/$a"
	done
	add_bin "$r" /usr/bin/curl
	add_bin "$r" /bin/nc.openbsd /usr/bin/nc
	add_bin "$r" /usr/bin/dig
	add_bin "$r" /usr/bin/getent
	add_bin "$r" /usr/sbin/ip /usr/sbin/ip
	add_bin "$r" /usr/bin/ss
	add_bin "$r" /bin/bash /usr/bin/bash
	# busybox's applets of the same names would come first in PATH (/bin): the
	# Debian tools win (curl and dig have no applet; nc, ip, ss would).
	for a in nc ip ss bash sh; do rm -f "$r/bin/$a"; done
	# /bin/sh is Debian's dash, not busybox's: Debian's static busybox runs its own applets
	# before anything on PATH ("standalone shell"), so `sh -c 'nc -u ...'` would get the
	# applet, which has no -u.
	add_bin "$r" /usr/bin/dash /bin/sh
	ln -sf /usr/bin/bash "$r/bin/bash"
	ln -sf /usr/bin/nc "$r/bin/nc"
	ln -sf /usr/sbin/ip "$r/bin/ip"
	# CA bundle for curl (no test here needs it; harmless), NSS for getent, the users.
	[ -f /etc/ssl/certs/ca-certificates.crt ] && { mkdir -p "$r/etc/ssl/certs"; cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"; }
	printf 'passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' >"$r/etc/nsswitch.conf"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
	[ -f /etc/services ] && cp /etc/services "$r/etc/services"
	[ -f /etc/protocols ] && cp /etc/protocols "$r/etc/protocols"
	return 0
}

# image <file stem> <ref> <config fragment> <builder function>: build <stem>.tar once.
image() {
	local stem=$1 ref=$2 cfg=$3 fn=$4 w
	echo "image_ref $OUT/$stem.tar $ref"
	[ -f "$OUT/$stem.tar" ] && return 0
	log "building $ref"
	w=$(mktemp -d "$CACHE/.e2e-image.XXXXXX")
	TMPDIRS+=("$w")
	chmod 755 "$w"
	mkdir "$w/rootfs"
	"$fn" "$w/rootfs" "$w"
	"$HERE/mkimage.sh" "$w/rootfs" "$ref" "$cfg" "$OUT/$stem.tar"
	rm -rf "$w"
	log "$ref: $(du -h "$OUT/$stem.tar" | cut -f1)"
}

agnhost_rootfs() {
	local r=$1
	tools_rootfs "$r"
	cp "$K8S_BIN/agnhost" "$r/agnhost"
	ln -s agnhost "$r/agnhost-2"
	mkdir -p "$r/uploads"
	cp "$SRC/test/images/agnhost/porter/localhost.crt" "$SRC/test/images/agnhost/porter/localhost.key" "$r/"
	chmod 644 "$r/localhost.crt" "$r/localhost.key"
	echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$r/etc/passwd"
	printf 'user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' >>"$r/etc/group"
}

dns_rootfs() { tools_rootfs "$1"; }

coredns_rootfs() {
	local r=$1 dir=$CACHE/coredns-$COREDNS_VERSION/bin w
	if [ ! -x "$dir/coredns" ]; then
		log "building CoreDNS $COREDNS_VERSION (about 2 minutes)"
		mkdir -p "$dir"
		w=$(mktemp -d "$CACHE/.coredns-build.XXXXXX")
		TMPDIRS+=("$w")
		GOBIN=$w CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
		mv -f "$w/coredns" "$dir/coredns"
	fi
	cp "$dir/coredns" "$r/coredns"
	mkdir -p "$r/etc/ssl/certs"
	[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
	return 0
}

nginx_rootfs() {
	local r=$1 w=$2 deb
	(cd "$w" && apt-get download nginx >/dev/null 2>&1) || { apt-get update -qq && (cd "$w" && apt-get download nginx >/dev/null); }
	deb=$(ls "$w"/nginx_*.deb)
	dpkg-deb -x "$deb" "$w/nginx"
	tools_rootfs "$r"
	add_bin "$r" "$w/nginx/usr/sbin/nginx" /usr/sbin/nginx
	mkdir -p "$r/etc/nginx" "$r/usr/share/nginx/html" "$r/var/log/nginx" "$r/var/lib/nginx" "$r/run"
	echo '<html><body>nginx</body></html>' >"$r/usr/share/nginx/html/index.html"
	cat >"$r/etc/nginx/nginx.conf" <<'EOT'
user root;
daemon off;
error_log stderr;
pid /tmp/nginx.pid;
events {}
http {
  access_log off;
  client_body_temp_path /tmp/client_body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  server {
    listen 80;
    location / { root /usr/share/nginx/html; }
  }
}
EOT
}

image agnhost-"$(e2e_ref Agnhost | sed 's/.*://')" "$(e2e_ref Agnhost)" '"Entrypoint":["/agnhost"],"Cmd":["pause"]' agnhost_rootfs
if [ "$what" = all ]; then
	image glibc-dns-testing-"$(e2e_ref GlibcDnsTesting | sed 's/.*://')" "$(e2e_ref GlibcDnsTesting)" '"Cmd":["/bin/sh"]' dns_rootfs
	image nginx-"$(e2e_ref Nginx | sed 's/.*://')" "$(e2e_ref Nginx)" '"Entrypoint":["/usr/sbin/nginx","-c","/etc/nginx/nginx.conf"]' nginx_rootfs
	image coredns-"$COREDNS_VERSION" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" '"Entrypoint":["/coredns"]' coredns_rootfs
	echo "e2e_ref BusyBox $(e2e_ref BusyBox)"
	echo "e2e_ref Pause $(e2e_ref Pause)"
fi
echo "$OUT"
