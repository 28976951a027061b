#!/usr/bin/env bash
# mkimage.sh <rootfs-dir> <image-ref> <config-json-fragment> <out.tar>
# Writes a single-layer image in docker-archive ("docker save") format that
# `ctr -n k8s.io images import` loads: no registry, no Docker. The layer is
# reproducible (sorted names, fixed mtime, numeric root ownership), so the
# same binaries give the same image ID.
#   e.g. mkimage.sh rootfs epair/node-agent:dev '"Entrypoint":["/node-agent"]' out.tar
set -euo pipefail
ROOTFS=$1 REF=$2 ENTRY=$3 OUT=$4
[ -d "$ROOTFS" ] || { echo "mkimage: rootfs $ROOTFS is not a directory" >&2; exit 2; }
case $REF in *:*) ;; *) echo "mkimage: image ref $REF needs a tag (name:tag)" >&2; exit 2 ;; esac
W=$(mktemp -d)
chmod 755 "$W"
trap 'rm -rf "$W"' EXIT
tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$ROOTFS" -cf "$W/layer.tar" .
DIFF=$(sha256sum "$W/layer.tar" | cut -d' ' -f1)
mkdir "$W/$DIFF" && mv "$W/layer.tar" "$W/$DIFF/layer.tar"
cat >"$W/config.json" <<EOT
{"architecture":"amd64","os":"linux","config":{$ENTRY,"Env":["PATH=/bin:/usr/bin:/sbin:/usr/sbin:/"]},"rootfs":{"type":"layers","diff_ids":["sha256:$DIFF"]},"history":[{"created_by":"hack/k8s/mkimage.sh"}]}
EOT
CFG=$(sha256sum "$W/config.json" | cut -d' ' -f1)
mv "$W/config.json" "$W/$CFG.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$CFG" "$REF" "$DIFF" >"$W/manifest.json"
mkdir -p "$(dirname "$OUT")"
tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$W" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
