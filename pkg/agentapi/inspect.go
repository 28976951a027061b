package agentapi

import (
	"context"
	"net/http"
	"net/url"
)

// DefaultSocket is the agent socket's default path (the plugin's agentSocket default).
const DefaultSocket = "/run/epair/agent.sock"

// Inspection endpoints (valectl). They are optional for a backend: NewAgentServer serves
// them when given an Inspector, and NewServer alone answers them with CodeNotFound.
const (
	PathSwitches = "/v1/switches"
	// PathFDB is GET /v1/switches/{switch}/fdb.
	PathFDB = "/v1/switches/{switch}/fdb"
)

// Inspector is the read-only view of the dataplane that valectl shows.
type Inspector interface {
	// Switches lists every switch with its ports and their counters.
	Switches(ctx context.Context) (*SwitchList, error)
	// FDB returns the learned and static forwarding entries of one switch; ErrNotFound if
	// there is no such switch.
	FDB(ctx context.Context, sw string) (*FDB, error)
}

// Counters are a port's (or a switch's) frame counters. "In" is what the switch received
// from the port, "Out" what it delivered to it.
type Counters struct {
	InFrames  uint64 `json:"inFrames"`
	InBytes   uint64 `json:"inBytes"`
	OutFrames uint64 `json:"outFrames"`
	OutBytes  uint64 `json:"outBytes"`
	// Dropped is the sum of Drops.
	Dropped uint64 `json:"dropped"`
	// Drops by reason (names are the dataplane's), only non-zero ones: the switch's
	// ("queue-full", "no-destination", "too-long", "bad-frame"), port security's
	// ("spoofed-mac", "spoofed-ip", "spoofed-arp-nd", "spoofed-ethertype", "storm"; a
	// switch's counters have them as "refused") and, for a pod port, "socket-full": frames
	// from the pod that the kernel dropped before the switch saw them, because the port's
	// socket (its receive ring or queue) was full. InFrames does not count socket-full
	// frames, captures and traces never show them, and a switch's counters (which count
	// what the switch itself dropped) do not have them.
	Drops map[string]uint64 `json:"drops,omitempty"`
}

// PortInfo is one switch port as valectl lists it.
type PortInfo struct {
	// Name is the switch port name ("vale0:epair3a").
	Name string `json:"name"`
	// Kind is "pod", "host" or another dataplane kind.
	Kind        string `json:"kind"`
	HostIfName  string `json:"hostIfName,omitempty"`
	HostIfIndex int    `json:"hostIfIndex,omitempty"`
	// Backend is how the link is opened: "afxdp", "afpacket" or "tap".
	Backend string `json:"backend,omitempty"`
	// Owner is the attachment ("<network>/<containerID>/<ifname>") the port belongs to, if any.
	Owner string `json:"owner,omitempty"`
	// Pod is "namespace/name" of the pod behind the port, when the runtime named it.
	Pod string `json:"pod,omitempty"`
	// Policy is "namespace/name" of the PortPolicy applied to the port (cluster mode); empty
	// is the switch's default.
	Policy string   `json:"policy,omitempty"`
	Active bool     `json:"active"`
	Stats  Counters `json:"counters"`
	// Queue is the port's output queue (pod ports).
	Queue *QueueInfo `json:"queue,omitempty"`
	// Captures is the number of captures (GET /v1/capture) tapping the port now (pod
	// ports); a capture that ended, however it ended, is no longer counted.
	Captures int `json:"captures,omitempty"`
	// FastPath is what the kernel fast path (the agent's fastPath) does for the port: absent
	// when it has nothing to do with it.
	FastPath *FastPathInfo `json:"fastPath,omitempty"`
}

// FastPathInfo is a port's part in the kernel fast path: whether the frames the pod sends
// (Source) and the frames sent to it (Dest) may bypass the switch now (a capture, a
// mirror or a shaping queue takes them back to it), and the frames and bytes the fast
// path moved from the pod (in) and to it (out); for a switch's host port, from the node's
// stack to pods (in) and from pods into it (out). Those frames are not in the port's
// counters, which count what the switch saw; a GSO super-frame counts once.
type FastPathInfo struct {
	Source    bool   `json:"source"`
	Dest      bool   `json:"dest"`
	InFrames  uint64 `json:"inFrames"`
	InBytes   uint64 `json:"inBytes"`
	OutFrames uint64 `json:"outFrames"`
	OutBytes  uint64 `json:"outBytes"`
	// Error is why the fast path could not take the port's last change (its frames then
	// cross the switch).
	Error string `json:"error,omitempty"`
}

// QueueInfo is a port's output queue: its depth and capacity, what it handed to the link,
// and the frames it evicted after queueing them (the frames it refused when full are the
// port's "queue-full" drops).
type QueueInfo struct {
	Len      int    `json:"len"`
	MaxLen   int    `json:"maxLen"`
	TxFrames uint64 `json:"txFrames"`
	TxBytes  uint64 `json:"txBytes"`
	Evicted  uint64 `json:"evicted,omitempty"`
}

// SwitchInfo is one switch and its ports.
type SwitchInfo struct {
	Name string `json:"name"`
	MTU  int    `json:"mtu,omitempty"`
	// Offload: an offload switch (virtio-net headers on every port, pods keep TSO).
	Offload bool       `json:"offload,omitempty"`
	Ports   []PortInfo `json:"ports"`
	Stats   Counters   `json:"counters"`
}

// SwitchList is every switch of the node.
type SwitchList struct {
	Items []SwitchInfo `json:"items"`
}

// FDBEntry is one forwarding entry.
type FDBEntry struct {
	MAC    string `json:"mac"`
	Port   string `json:"port"`
	Static bool   `json:"static,omitempty"`
	// AgeSeconds is the time since the entry was last refreshed (0 for static ones).
	AgeSeconds float64 `json:"ageSeconds"`
}

// FDB is a switch's forwarding table.
type FDB struct {
	Switch  string     `json:"switch"`
	Entries []FDBEntry `json:"entries"`
}

// NewAgentServer is NewServer plus the inspection endpoints served by insp, and extra
// handlers (for example /metrics) mounted at their patterns.
func NewAgentServer(backend Interface, insp Inspector, extra map[string]http.Handler) http.Handler {
	mux := http.NewServeMux()
	if insp != nil {
		mux.HandleFunc("GET "+PathSwitches, func(w http.ResponseWriter, r *http.Request) {
			resp, err := insp.Switches(r.Context())
			reply(w, resp, err)
		})
		mux.HandleFunc("GET "+PathFDB, func(w http.ResponseWriter, r *http.Request) {
			sw := r.PathValue("switch")
			if sw == "" {
				writeError(w, invalid("switch", "must not be empty"))
				return
			}
			resp, err := insp.FDB(r.Context(), sw)
			reply(w, resp, err)
		})
		if c, ok := insp.(Capturer); ok {
			mux.HandleFunc("GET "+PathCapture, captureHandler(c))
		}
		if t, ok := insp.(Tracer); ok {
			mux.Handle("POST "+PathTrace, handle(t.Trace))
		}
		if pl, ok := insp.(PeerLister); ok {
			mux.HandleFunc("GET "+PathPeers, func(w http.ResponseWriter, r *http.Request) {
				resp, err := pl.Peers(r.Context())
				reply(w, resp, err)
			})
		}
	}
	for pattern, h := range extra {
		mux.Handle(pattern, h)
	}
	mux.Handle("/", NewServer(backend))
	return mux
}

// Switches calls GET /v1/switches.
func (c *Client) Switches(ctx context.Context) (*SwitchList, error) {
	return call[SwitchList](ctx, c, http.MethodGet, PathSwitches, nil)
}

// FDB calls GET /v1/switches/{sw}/fdb.
func (c *Client) FDB(ctx context.Context, sw string) (*FDB, error) {
	if sw == "" {
		return nil, invalid("switch", "must not be empty")
	}
	return call[FDB](ctx, c, http.MethodGet, "/v1/switches/"+url.PathEscape(sw)+"/fdb", nil)
}

var _ Inspector = (*Client)(nil)
