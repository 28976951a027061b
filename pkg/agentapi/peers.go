package agentapi

import (
	"context"
	"net/http"
)

// PathPeers lists the node's peers (GET → PeerList).
const PathPeers = "/v1/peers"

// PeerInfo is another node of the pod network as this node programs it.
type PeerInfo struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
	PodCIDRs  []string `json:"podCIDRs"`
	// Mode is "routed" (its pod CIDRs are routed to its address on a shared subnet),
	// "vxlan" (through the node's VXLAN device), both joined by a comma when its pod
	// CIDRs differ, or "unreachable" (Reason says why).
	Mode   string `json:"mode"`
	Reason string `json:"reason,omitempty"`
	// Routes is the number of its pod CIDRs routed now.
	Routes int `json:"routes"`
	// Counters are the traffic between this node and the peer's pods; absent when the
	// node does not count it (the counters are in the agent's nftables table, so
	// masquerading must be on).
	Counters *PeerCounters `json:"counters,omitempty"`
}

// PeerCounters are what crossed between this node and a peer's pods, as netfilter counts
// it (a GSO or GRO super-packet is one frame; bytes are IP bytes, without Ethernet
// header or tunnel overhead).
type PeerCounters struct {
	// TxFrames and TxBytes are what left this node for the peer's pod CIDRs.
	TxFrames uint64 `json:"txFrames"`
	TxBytes  uint64 `json:"txBytes"`
	// RxFrames and RxBytes are what arrived from the peer's pod CIDRs.
	RxFrames uint64 `json:"rxFrames"`
	RxBytes  uint64 `json:"rxBytes"`
}

// PeerList is every peer, by name.
type PeerList struct {
	Items []PeerInfo `json:"items"`
}

// PeerLister lists the node's peers; the agent implements it.
type PeerLister interface {
	Peers(ctx context.Context) (*PeerList, error)
}

// Peers calls GET /v1/peers.
func (c *Client) Peers(ctx context.Context) (*PeerList, error) {
	return call[PeerList](ctx, c, http.MethodGet, PathPeers, nil)
}
