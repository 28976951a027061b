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
	// Mode is "routed" (its pod CIDRs are routed to its address on a shared subnet) or
	// "unreachable" (Reason says why).
	Mode   string `json:"mode"`
	Reason string `json:"reason,omitempty"`
	// Routes is the number of its pod CIDRs routed now.
	Routes int `json:"routes"`
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
