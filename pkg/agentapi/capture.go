package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/epair-cni/epair/pkg/pcapfilter"
)

// PathCapture streams a port's frames as a pcap file (GET, CaptureRequest as query).
const PathCapture = "/v1/capture"

// MaxCaptureSnapLen bounds CaptureRequest.SnapLen (a 64 KiB super-frame of an offload
// switch fits).
const MaxCaptureSnapLen = 1 << 16

// CaptureRequest asks for a capture of one switch port.
type CaptureRequest struct {
	// Port is the switch port, "<switch>:<port>" (valectl ports lists them).
	Port string
	// Direction is "rx" (frames the switch received from the port), "tx" (frames it
	// handed to the port) or "both" ("" is both).
	Direction string
	// Count stops the capture after this many frames; 0 is no limit.
	Count int
	// Duration stops the capture after this long; 0 is until the client goes away.
	Duration time.Duration
	// SnapLen is the bytes kept of each frame; 0 is whole frames.
	SnapLen int
	// Format is "pcapng" ("" too: each frame with its direction, and the reason of a frame
	// the switch dropped as a comment) or "pcap" (frames only). Frames the kernel dropped
	// before the switch saw them (the port's "socket-full" drops) are in no capture.
	Format string
	// Filter keeps only the frames it matches: tcpdump's filter syntax, the subset
	// pkg/pcapfilter compiles (hosts, nets, protocols, ports, MACs, VLANs, and/or/not).
	// "" keeps every frame.
	Filter string
}

// Validate checks the request and names the first bad field.
func (r *CaptureRequest) Validate() error {
	switch {
	case r.Port == "":
		return invalid("port", "must not be empty")
	case r.Direction != "" && r.Direction != "rx" && r.Direction != "tx" && r.Direction != "both":
		return invalid("direction", fmt.Sprintf("%q: want rx, tx or both", r.Direction))
	case r.Count < 0:
		return invalid("count", "must not be negative")
	case r.Duration < 0:
		return invalid("duration", "must not be negative")
	case r.Format != "" && r.Format != "pcapng" && r.Format != "pcap":
		return invalid("format", fmt.Sprintf("%q: want pcapng or pcap", r.Format))
	case r.SnapLen < 0 || r.SnapLen > MaxCaptureSnapLen:
		return invalid("snapLen", fmt.Sprintf("%d: want 0 (whole frames) to %d", r.SnapLen, MaxCaptureSnapLen))
	case len(r.Filter) > maxFilter:
		return invalid("filter", fmt.Sprintf("%d bytes: at most %d", len(r.Filter), maxFilter))
	}
	if _, err := pcapfilter.Compile(r.Filter); err != nil {
		return invalid("filter", err.Error())
	}
	return nil
}

// maxFilter bounds CaptureRequest.Filter.
const maxFilter = 4096

func (r *CaptureRequest) query() url.Values {
	q := url.Values{"port": {r.Port}}
	if r.Direction != "" {
		q.Set("direction", r.Direction)
	}
	if r.Count != 0 {
		q.Set("count", strconv.Itoa(r.Count))
	}
	if r.Duration != 0 {
		q.Set("duration", r.Duration.String())
	}
	if r.SnapLen != 0 {
		q.Set("snapLen", strconv.Itoa(r.SnapLen))
	}
	if r.Format != "" {
		q.Set("format", r.Format)
	}
	if r.Filter != "" {
		q.Set("filter", r.Filter)
	}
	return q
}

func parseCaptureRequest(q url.Values) (*CaptureRequest, error) {
	r := &CaptureRequest{Port: q.Get("port"), Direction: q.Get("direction"), Format: q.Get("format"), Filter: q.Get("filter")}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"count", &r.Count}, {"snapLen", &r.SnapLen}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, invalid(f.name, fmt.Sprintf("%q: want a number", v))
			}
			*f.dst = n
		}
	}
	if v := q.Get("duration"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, invalid("duration", fmt.Sprintf("%q: want a duration such as 10s", v))
		}
		r.Duration = d
	}
	return r, r.Validate()
}

// Capturer captures switch ports; the agent implements it. Capture writes a pcap file of
// req's port to w until the count or duration is reached or ctx ends. It returns an error
// without writing anything when the capture cannot start.
type Capturer interface {
	Capture(ctx context.Context, req *CaptureRequest, w io.Writer) error
}

// captureHandler serves PathCapture: an error before the first byte is a JSON error; once
// the pcap stream started, the stream just ends.
func captureHandler(c Capturer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := parseCaptureRequest(r.URL.Query())
		if err != nil {
			writeError(w, err)
			return
		}
		// A capture outlives the server's write timeout: it ends with its count, its
		// duration or the client.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		sw := &streamWriter{w: w}
		ctx, cancel := streamStopping(r.Context())
		defer cancel()
		if err := c.Capture(ctx, req, sw); err != nil && !sw.started {
			writeError(w, err)
		}
	}
}

// streamWriter sends the pcap header with status 200 on the first write and flushes
// every write, so that a reader sees each frame as it is captured.
type streamWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *streamWriter) Write(b []byte) (int, error) {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", "application/octet-stream")
		s.w.WriteHeader(http.StatusOK)
	}
	n, err := s.w.Write(b)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return n, err
}

// Capture calls GET /v1/capture and copies the pcap stream into w until the capture ends
// (its count or duration) or ctx is done; the context's deadline bounds the whole capture,
// not the client's Timeout.
func (c *Client) Capture(ctx context.Context, req *CaptureRequest, w io.Writer) error {
	if err := req.Validate(); err != nil {
		return err
	}
	path := PathCapture + "?" + req.query().Encode()
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Code == "" {
			eb = ErrorBody{Code: CodeInternal, Message: fmt.Sprintf("%s: HTTP %d: %s", PathCapture, resp.StatusCode, bytes.TrimSpace(truncate(data, 512)))}
		}
		return &Error{ErrorBody: eb}
	}
	if _, err := io.Copy(w, resp.Body); err != nil && ctx.Err() == nil {
		return transportError(ctx, PathCapture, err)
	}
	return nil
}
