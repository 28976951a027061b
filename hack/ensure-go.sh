#!/usr/bin/env bash
# Makes sure a Go toolchain of at least $GO_VERSION is on PATH, installing what is missing:
# Debian's golang-go as a bootstrap, then the exact toolchain fetched as a module through the
# Go module proxy (the same way GOTOOLCHAIN=auto does it), unpacked under /usr/local.
# Source it: `. hack/ensure-go.sh`.
GO_VERSION=${GO_VERSION:-1.26.8}

_epair_go_ok() {
	command -v go >/dev/null 2>&1 || return 1
	local v
	v=$(go env GOVERSION 2>/dev/null) || return 1
	v=${v#go}
	[ "$(printf '%s\n%s\n' "$GO_VERSION" "$v" | sort -V | head -n1)" = "$GO_VERSION" ]
}

_epair_install_go() {
	local dest=/usr/local/go-$GO_VERSION
	if [ -x "$dest/bin/go" ]; then
		export PATH=$dest/bin:$PATH
		return 0
	fi
	if ! command -v go >/dev/null 2>&1; then
		echo "ensure-go: installing Debian's golang-go to bootstrap Go $GO_VERSION" >&2
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go ca-certificates >/dev/null ||
			{ echo "ensure-go: apt-get install golang-go failed" >&2; return 1; }
	fi
	local arch mod dir tmp
	arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
	mod=golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$arch
	tmp=$(mktemp -d)
	echo "ensure-go: fetching $mod" >&2
	dir=$(cd "$tmp" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	rm -rf "$tmp"
	[ -n "$dir" ] && [ -d "$dir/bin" ] || { echo "ensure-go: could not download $mod" >&2; return 1; }
	rm -rf "$dest.tmp" && cp -a "$dir" "$dest.tmp" && chmod -R u+w "$dest.tmp" &&
		chmod +x "$dest.tmp"/bin/* "$dest.tmp"/pkg/tool/*/* && mv "$dest.tmp" "$dest" || return 1
	export PATH=$dest/bin:$PATH
}

if [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi
_epair_go_ok || _epair_install_go || { echo "ensure-go: no Go >= $GO_VERSION" >&2; return 1 2>/dev/null || exit 1; }
export PATH=$(go env GOPATH)/bin:$PATH
