package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// maxResponse bounds a response body (a List on a node with many pods is the largest).
const maxResponse = 64 << 20

// Client calls the agent over its unix socket. Every call has a deadline: the context's, or
// Timeout when the context has none. It is safe for concurrent use.
type Client struct {
	socket  string
	timeout time.Duration
	hc      *http.Client
}

// NewClient returns a client for the agent socket at path. timeout bounds calls without a
// context deadline; <= 0 means DefaultTimeout.
func NewClient(path string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:       4,
		IdleConnTimeout:    30 * time.Second,
		DisableCompression: true,
	}
	return &Client{socket: path, timeout: timeout, hc: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// Socket is the socket path.
func (c *Client) Socket() string { return c.socket }

var _ Interface = (*Client)(nil)

// Allocate calls POST /v1/attachments/allocate.
func (c *Client) Allocate(ctx context.Context, req *AllocateRequest) (*Attachment, error) {
	return call[Attachment](ctx, c, http.MethodPost, PathAllocate, req)
}

// Attach calls POST /v1/attachments/attach.
func (c *Client) Attach(ctx context.Context, req *AttachRequest) (*Port, error) {
	return call[Port](ctx, c, http.MethodPost, PathAttach, req)
}

// Release calls POST /v1/attachments/release.
func (c *Client) Release(ctx context.Context, req *ReleaseRequest) (*ReleaseResponse, error) {
	return call[ReleaseResponse](ctx, c, http.MethodPost, PathRelease, req)
}

// Check calls POST /v1/attachments/check.
func (c *Client) Check(ctx context.Context, req *CheckRequest) (*Attachment, error) {
	return call[Attachment](ctx, c, http.MethodPost, PathCheck, req)
}

// List calls GET /v1/attachments.
func (c *Client) List(ctx context.Context) (*AttachmentList, error) {
	return call[AttachmentList](ctx, c, http.MethodGet, PathAttachments, nil)
}

// GC calls POST /v1/gc.
func (c *Client) GC(ctx context.Context, req *GCRequest) (*GCResponse, error) {
	return call[GCResponse](ctx, c, http.MethodPost, PathGC, req)
}

// Status calls GET /v1/status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	return call[Status](ctx, c, http.MethodGet, PathStatus, nil)
}

// Ready calls GET /readyz and returns nil when the agent is ready, else an *Error with
// CodeNotReady (or the transport's code).
func (c *Client) Ready(ctx context.Context) error {
	ctx, cancel := c.deadline(ctx)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, PathReadyz, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return NewError(CodeNotReady, string(bytes.TrimSpace(b)))
	}
	return nil
}

func (c *Client) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

func call[Resp any](ctx context.Context, c *Client, method, path string, req any) (*Resp, error) {
	if v, ok := req.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := c.deadline(ctx)
	defer cancel()
	var body []byte
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return nil, fmt.Errorf("encode %s request: %w", path, err)
		}
	}
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, transportError(ctx, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Code == "" {
			eb = ErrorBody{Code: CodeInternal, Message: fmt.Sprintf("%s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(truncate(data, 512)))}
		}
		return nil, &Error{ErrorBody: eb}
	}
	out := new(Resp)
	if err := json.Unmarshal(data, out); err != nil {
		return nil, &Error{ErrorBody: ErrorBody{Code: CodeInternal, Message: fmt.Sprintf("decode %s response: %v", path, err)}, cause: err}
	}
	return out, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	// The host part is ignored by the unix dialer; "agent" makes logs readable.
	hreq, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, rd)
	if err != nil {
		return nil, fmt.Errorf("build %s request: %w", path, err)
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return nil, transportError(ctx, path, err)
	}
	return resp, nil
}

// transportError classifies a failure to talk to the agent: an expired deadline is
// CodeTimeout, anything else (no socket, refused, reset) is CodeUnavailable.
func transportError(ctx context.Context, path string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &Error{ErrorBody: ErrorBody{Code: CodeTimeout, Message: fmt.Sprintf("%s: deadline expired: %v", path, err)},
			cause: errors.Join(context.DeadlineExceeded, err)}
	}
	return &Error{ErrorBody: ErrorBody{Code: CodeUnavailable, Message: fmt.Sprintf("%s: agent unreachable: %v", path, err)}, cause: err}
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
