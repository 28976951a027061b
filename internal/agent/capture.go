package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/pcapfilter"
)

var _ agentapi.Capturer = (*Agent)(nil)

// Capture implements agentapi.Capturer: a tap on the port's switch (dataplane.Capture)
// written to w as a pcapng file of Ethernet frames (with each frame's direction, inbound
// for what the port sent, and a comment naming the reason of a frame the switch dropped)
// or a classic pcap file, until req's count or duration is reached
// or ctx ends (the client went away). Frames the reader was too slow for are not written;
// the tap is removed when it returns, however it ends.
func (a *Agent) Capture(ctx context.Context, req *agentapi.CaptureRequest, w io.Writer) error {
	if err := req.Validate(); err != nil {
		return err
	}
	o := dataplane.CaptureOptions{RX: req.Direction == "rx", TX: req.Direction == "tx", SnapLen: req.SnapLen}
	if req.Filter != "" {
		f, err := pcapfilter.Compile(req.Filter)
		if err != nil { // Validate compiled it already
			return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeInvalidRequest, Field: "filter", Message: "filter: " + err.Error()}}
		}
		o.Filter = f
	}
	c, err := a.dp.Capture(req.Port, o)
	if err != nil {
		switch {
		case errors.Is(err, dataplane.ErrNoPort) || errors.Is(err, dataplane.ErrNoSwitch):
			return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeNotFound, Field: "port", Message: "port: " + err.Error()}}
		case errors.Is(err, dataplane.ErrInvalid):
			return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeInvalidRequest, Field: "port", Message: "port: " + err.Error()}}
		}
		return err
	}
	defer c.Close()
	client := ctx
	if req.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Duration)
		defer cancel()
	}
	snap := req.SnapLen
	if snap == 0 {
		snap = agentapi.MaxCaptureSnapLen
	}
	write, finish, err := captureWriter(w, req.Format, snap)
	if err != nil {
		return fmt.Errorf("capture %s: %w", req.Port, err)
	}
	start := time.Now()
	var n int
	for n = 0; req.Count == 0 || n < req.Count; n++ {
		f, err := c.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				return fmt.Errorf("capture %s: %w", req.Port, err)
			}
			if client.Err() != nil {
				return nil // the client went away: nobody reads a summary
			}
			break // the duration is over
		}
		if err := write(f); err != nil {
			return fmt.Errorf("capture %s: %w", req.Port, err) // the client went away
		}
	}
	// The end of a capture that ran its course says what it could not keep.
	if err := finish(start, uint64(n), c.Lost()); err != nil {
		return fmt.Errorf("capture %s: %w", req.Port, err)
	}
	return nil
}

// captureWriter writes the file header to w and returns what writes one frame, in pcapng
// (format "" or "pcapng") or classic pcap, and what ends the file: in pcapng an interface
// statistics block with the frames written and those the capture could not keep (its
// reader was behind), which tshark and capinfos show; nothing in pcap, which has no place
// for it.
func captureWriter(w io.Writer, format string, snap int) (func(dataplane.CapturedFrame) error, func(start time.Time, written, lost uint64) error, error) {
	if format == "pcap" {
		pw := pcapgo.NewWriter(w)
		if err := pw.WriteFileHeader(uint32(snap), layers.LinkTypeEthernet); err != nil {
			return nil, nil, err
		}
		return func(f dataplane.CapturedFrame) error {
			return pw.WritePacket(gopacket.CaptureInfo{Timestamp: f.Time, CaptureLength: len(f.Data), Length: f.Len}, f.Data)
		}, func(time.Time, uint64, uint64) error { return nil }, nil
	}
	nw, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{Name: "epair", LinkType: layers.LinkTypeEthernet, SnapLength: uint32(snap),
		TimestampResolution: 9}, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		return nil, nil, err
	}
	// The file's header at once, as pcap's: a capture of an idle port ended early is still
	// a valid, empty file, and the client has its 200 as soon as the tap is in place.
	if err := nw.Flush(); err != nil {
		return nil, nil, err
	}
	in, out := &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}, &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}
	return func(f dataplane.CapturedFrame) error {
			o := pcapgo.NgPacketOptions{Flags: in}
			if f.TX {
				o.Flags = out
			}
			if f.Dropped {
				o.Comments = []string{"dropped: " + f.Reason}
			}
			ci := gopacket.CaptureInfo{Timestamp: f.Time, CaptureLength: len(f.Data), Length: f.Len}
			if err := nw.WritePacketWithOptions(ci, f.Data, o); err != nil {
				return err
			}
			return nw.Flush()
		}, func(start time.Time, written, lost uint64) error {
			now := time.Now()
			if err := nw.WriteInterfaceStats(0, pcapgo.NgInterfaceStatistics{LastUpdate: now, StartTime: start, EndTime: now,
				PacketsReceived: written + lost, PacketsDropped: lost}); err != nil {
				return err
			}
			return nw.Flush()
		}, nil
}
