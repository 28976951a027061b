package agentapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
)

// PathTrace traces a described frame through a switch (POST, TraceRequest → TraceResult).
const PathTrace = "/v1/trace"

// TraceRequest describes a frame a port sends, for the switch to say what it would do with it.
type TraceRequest struct {
	// Port is the port the frame comes from, "<switch>:<port>" (a pod port or a host port).
	Port string `json:"port"`
	// DstIP is the destination address; DstMAC the destination MAC, by default what the
	// sender would resolve DstIP to. One of them is required.
	DstIP  string `json:"dstIP,omitempty"`
	DstMAC string `json:"dstMAC,omitempty"`
	// SrcIP and SrcMAC default to the port's own (set them to trace a spoofed frame).
	SrcIP  string `json:"srcIP,omitempty"`
	SrcMAC string `json:"srcMAC,omitempty"`
	// Proto is "icmp" (an echo request, the default), "tcp" (a SYN) or "udp".
	Proto   string `json:"proto,omitempty"`
	SrcPort uint16 `json:"srcPort,omitempty"`
	DstPort uint16 `json:"dstPort,omitempty"`
}

// Validate checks the request and names the first bad field.
func (r *TraceRequest) Validate() error {
	switch {
	case r.Port == "":
		return invalid("port", "must not be empty")
	case r.DstIP == "" && r.DstMAC == "":
		return invalid("dstIP", "give a destination IP address or MAC")
	case r.Proto != "" && r.Proto != "icmp" && r.Proto != "tcp" && r.Proto != "udp":
		return invalid("proto", fmt.Sprintf("%q: want icmp, tcp or udp", r.Proto))
	case (r.SrcPort != 0 || r.DstPort != 0) && r.Proto != "tcp" && r.Proto != "udp":
		return invalid("dstPort", "ports are for tcp and udp")
	}
	for _, f := range []struct{ name, v string }{{"dstIP", r.DstIP}, {"srcIP", r.SrcIP}} {
		if f.v != "" {
			if _, err := netip.ParseAddr(f.v); err != nil {
				return invalid(f.name, fmt.Sprintf("%q is not an IP address", f.v))
			}
		}
	}
	for _, f := range []struct{ name, v string }{{"dstMAC", r.DstMAC}, {"srcMAC", r.SrcMAC}} {
		if f.v != "" {
			if m, err := net.ParseMAC(f.v); err != nil || len(m) != 6 {
				return invalid(f.name, fmt.Sprintf("%q is not an Ethernet MAC address", f.v))
			}
		}
	}
	return nil
}

// TraceStep is one decision on the frame's way, in order.
type TraceStep struct {
	// Stage: "frame", "resolve", "ingress", "port-security", "fdb", "output", "host",
	// "fastpath" (the kernel fast path would move the frame instead of the switch).
	Stage string `json:"stage"`
	// Port and Pod name the port the step is about, when there is one.
	Port string `json:"port,omitempty"`
	Pod  string `json:"pod,omitempty"`
	// Verdict: "ok", "refused", "dropped", "unicast", "flood", "delivered", "routed",
	// "local", "unreachable".
	Verdict string `json:"verdict"`
	// Reason is a drop reason, with the names of the drop counters ("spoofed-ip",
	// "queue-full", "no-destination", ...; never "socket-full", which the kernel decides
	// before the switch sees a frame).
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// TraceResult is what the switch and the node would do with the frame.
type TraceResult struct {
	Port  string      `json:"port"`
	Steps []TraceStep `json:"steps"`
	// DeliveredTo lists the ports that would take the frame; when empty, Reason says why
	// it is dropped.
	DeliveredTo []string `json:"deliveredTo,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	// Frame is the traced frame, from its Ethernet header.
	Frame []byte `json:"frame,omitempty"`
}

// Tracer traces frames through a switch; the agent implements it.
type Tracer interface {
	Trace(ctx context.Context, req *TraceRequest) (*TraceResult, error)
}

// Trace calls POST /v1/trace.
func (c *Client) Trace(ctx context.Context, req *TraceRequest) (*TraceResult, error) {
	return call[TraceResult](ctx, c, http.MethodPost, PathTrace, req)
}
