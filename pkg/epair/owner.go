package epair

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// OwnerKey is the owner recorded after AliasPrefix in a host link's alias: network,
// container and interface name ("<network>/<containerID>/<ifname>"), so that a garbage
// collection of one network never touches another's links. A key that would not fit the
// alias hashes the container ID ("<network>/sha256:<hex>/<ifname>") and, if still too long,
// everything ("sha256:<hex>").
func OwnerKey(network, containerID, ifName string) string {
	const max = 255 - len(AliasPrefix)
	k := network + "/" + containerID + "/" + ifName
	if len(k) <= max {
		return k
	}
	h := sha256.Sum256([]byte(containerID))
	k = network + "/sha256:" + hex.EncodeToString(h[:]) + "/" + ifName
	if len(k) <= max {
		return k
	}
	h = sha256.Sum256([]byte(network + "/" + containerID + "/" + ifName))
	return "sha256:" + hex.EncodeToString(h[:])
}

// ParseOwnerKey splits an owner key made by OwnerKey. ok is false for a key it cannot
// invert: not in the format, or with a hashed container ID ("sha256:…", or hashed whole);
// a caller then matches its records by recomputing OwnerKey for them.
func ParseOwnerKey(k string) (network, containerID, ifName string, ok bool) {
	i, j := strings.IndexByte(k, '/'), strings.LastIndexByte(k, '/')
	if i < 0 || j <= i {
		return "", "", "", false
	}
	network, containerID, ifName = k[:i], k[i+1:j], k[j+1:]
	if strings.HasPrefix(containerID, "sha256:") {
		return "", "", "", false // a hashed container ID
	}
	return network, containerID, ifName, true
}
