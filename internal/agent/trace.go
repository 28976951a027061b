package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/agentapi"
)

var _ agentapi.Tracer = (*Agent)(nil)

// Trace implements agentapi.Tracer: the dataplane's trace of the described frame
// (dataplane.Dataplane.Trace), which runs it through the switch's forwarding code and
// the node's routing without sending it.
func (a *Agent) Trace(_ context.Context, req *agentapi.TraceRequest) (*agentapi.TraceResult, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	dr := dataplane.TraceRequest{Port: req.Port, Proto: req.Proto, SrcPort: req.SrcPort, DstPort: req.DstPort}
	// Validate checked the syntax of every address.
	dr.DstIP, _ = parseAddrOpt(req.DstIP)
	dr.SrcIP, _ = parseAddrOpt(req.SrcIP)
	if req.DstMAC != "" {
		dr.DstMAC, _ = net.ParseMAC(req.DstMAC)
	}
	if req.SrcMAC != "" {
		dr.SrcMAC, _ = net.ParseMAC(req.SrcMAC)
	}
	r, err := a.dp.Trace(dr)
	if err != nil {
		switch {
		case errors.Is(err, dataplane.ErrNoPort) || errors.Is(err, dataplane.ErrNoSwitch):
			return nil, &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeNotFound, Field: "port", Message: "port: " + err.Error()}}
		case errors.Is(err, dataplane.ErrInvalid):
			return nil, &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeInvalidRequest, Message: err.Error()}}
		}
		return nil, err
	}
	out := &agentapi.TraceResult{Port: r.Port, DeliveredTo: r.DeliveredTo, Reason: r.Reason, Frame: r.Frame}
	for _, s := range r.Steps {
		out.Steps = append(out.Steps, agentapi.TraceStep{Stage: s.Stage, Port: s.Port, Pod: s.Pod, Verdict: s.Verdict, Reason: s.Reason, Detail: s.Detail})
	}
	return out, nil
}

func parseAddrOpt(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	return netip.ParseAddr(s)
}
