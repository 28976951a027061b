#!/usr/bin/env bash
# epair_deps PURPOSE: installs the Debian packages the named purpose needs, once.
# Source it, then call epair_deps test|demo|bench.
epair_deps() {
	local pkgs=(iproute2 make)
	case "${1:-test}" in
	test) pkgs+=(nftables iputils-ping python3 tshark) ;;
	bench) pkgs+=(iperf3 sockperf iputils-ping nftables jq python3) ;;
	demo) pkgs+=(iputils-ping iperf3) ;;
	esac
	local missing=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${missing[*]}; run as root to install them" >&2
		return 0
	fi
	echo "deps: installing ${missing[*]}" >&2
	# tshark's wireshark-common asks whether non-root users may capture (a setuid
	# dumpcap); the tests read capture files as root and need no capturing group.
	if [[ " ${missing[*]} " == *" tshark "* ]]; then
		echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
