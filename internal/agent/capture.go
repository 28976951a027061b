package agent

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/agentapi"
)

var _ agentapi.Capturer = (*Agent)(nil)

// Capture implements agentapi.Capturer: a tap on the port's switch (dataplane.Capture)
// written to w as a pcap file of Ethernet frames, until req's count or duration is reached
// or ctx ends (the client went away). Frames the reader was too slow for are not written;
// the tap is removed when it returns, however it ends.
func (a *Agent) Capture(ctx context.Context, req *agentapi.CaptureRequest, w io.Writer) error {
	if err := req.Validate(); err != nil {
		return err
	}
	o := dataplane.CaptureOptions{RX: req.Direction == "rx", TX: req.Direction == "tx", SnapLen: req.SnapLen}
	c, err := a.dp.Capture(req.Port, o)
	if err != nil {
		if errors.Is(err, dataplane.ErrNoPort) || errors.Is(err, dataplane.ErrNoSwitch) || errors.Is(err, dataplane.ErrInvalid) {
			return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeNotFound, Field: "port", Message: "port: " + err.Error()}}
		}
		return err
	}
	defer c.Close()
	if req.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Duration)
		defer cancel()
	}
	snap := req.SnapLen
	if snap == 0 {
		snap = agentapi.MaxCaptureSnapLen
	}
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(uint32(snap), layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("capture %s: %w", req.Port, err)
	}
	for n := 0; req.Count == 0 || n < req.Count; n++ {
		f, err := c.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("capture %s: %w", req.Port, err)
		}
		ci := gopacket.CaptureInfo{Timestamp: f.Time, CaptureLength: len(f.Data), Length: f.Len}
		if err := pw.WritePacket(ci, f.Data); err != nil {
			return fmt.Errorf("capture %s: %w", req.Port, err) // the client went away
		}
	}
	return nil
}
