package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeBackend is a test double: an in-memory map of attachments with scripted failures.
type fakeBackend struct {
	mu       sync.Mutex
	atts     map[Key]*Attachment
	next     int
	ready    bool
	block    chan struct{} // when non-nil, Allocate waits for it or for ctx
	failWith error         // returned by Allocate when set
}

func newFake() *fakeBackend { return &fakeBackend{atts: map[Key]*Attachment{}, ready: true} }

func (f *fakeBackend) Allocate(ctx context.Context, req *AllocateRequest) (*Attachment, error) {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return nil, f.failWith
	}
	if a, ok := f.atts[req.Key]; ok {
		return a, nil
	}
	f.next++
	a := &Attachment{
		Key: req.Key, NetNS: req.NetNS, PodName: req.PodName, PodNamespace: req.PodNamespace,
		IPs: []IPConfig{{
			Address: netip.MustParsePrefix(fmt.Sprintf("10.22.%d.%d/16", f.next/250, f.next%250+2)),
			Gateway: netip.MustParseAddr("10.22.0.1"),
		}},
		Routes: []Route{{Dst: netip.MustParsePrefix("0.0.0.0/0")}},
		MTU:    1500, Switch: "vale0", MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", byte(f.next>>8), byte(f.next)),
	}
	f.atts[req.Key] = a
	return a, nil
}

func (f *fakeBackend) Attach(_ context.Context, req *AttachRequest) (*Port, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.atts[req.Key]
	if !ok {
		return nil, NewError(CodeNotFound, "no attachment "+req.Key.String())
	}
	a.Port = &Port{Switch: a.Switch, Name: "vale0:" + req.HostIfName, HostIfName: req.HostIfName, HostIfIndex: req.HostIfIndex, Up: true}
	return a.Port, nil
}

func (f *fakeBackend) Release(_ context.Context, req *ReleaseRequest) (*ReleaseResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.atts[req.Key]
	delete(f.atts, req.Key)
	return &ReleaseResponse{Released: ok}, nil
}

func (f *fakeBackend) Check(_ context.Context, req *CheckRequest) (*Attachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.atts[req.Key]
	if !ok {
		return nil, fmt.Errorf("check %s: %w", req.Key, ErrNotFound)
	}
	return a, nil
}

func (f *fakeBackend) List(context.Context) (*AttachmentList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := &AttachmentList{Items: []Attachment{}}
	for _, a := range f.atts {
		l.Items = append(l.Items, *a)
	}
	return l, nil
}

func (f *fakeBackend) GC(_ context.Context, req *GCRequest) (*GCResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	valid := map[Key]bool{}
	for _, k := range req.Valid {
		valid[k] = true
	}
	resp := &GCResponse{Removed: []Key{}}
	for k := range f.atts {
		if !valid[k] {
			delete(f.atts, k)
			resp.Removed = append(resp.Removed, k)
		}
	}
	return resp, nil
}

func (f *fakeBackend) Status(context.Context) (*Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ready {
		return &Status{Ready: false, Reason: "ipam store not open"}, nil
	}
	return &Status{Ready: true, AgentVersion: "test", Switches: []string{"vale0"}}, nil
}

var _ Interface = (*fakeBackend)(nil)

// serve starts backend on a socket in a fresh directory and returns a client for it.
func serve(t *testing.T, b Interface, timeout time.Duration) (*Client, *SocketServer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	srv, err := ListenAndServe(path, NewServer(b))
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(path, timeout)
	t.Cleanup(func() {
		c.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return c, srv
}

func TestRoundTrip(t *testing.T) {
	fb := newFake()
	c, _ := serve(t, fb, 0)
	ctx := context.Background()
	key := Key{ContainerID: "c1", IfName: "eth0"}
	req := &AllocateRequest{Key: key, NetNS: "/var/run/netns/p1", PodName: "p", PodNamespace: "ns",
		IPs: []netip.Addr{netip.MustParseAddr("10.22.0.9")}, MAC: "02:00:00:00:00:09"}
	a1, err := c.Allocate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if a1.Key != key || a1.PodName != "p" || a1.MTU != 1500 || len(a1.IPs) != 1 ||
		a1.IPs[0].Address != netip.MustParsePrefix("10.22.0.3/16") || a1.IPs[0].Gateway != netip.MustParseAddr("10.22.0.1") ||
		len(a1.Routes) != 1 || a1.Routes[0].GW.IsValid() {
		t.Fatalf("allocate: got %+v", a1)
	}
	a2, err := c.Allocate(ctx, req)
	if err != nil || a2.MAC != a1.MAC || a2.IPs[0] != a1.IPs[0] {
		t.Fatalf("allocate again: got %+v, %v; want %+v", a2, err, a1)
	}
	p, err := c.Attach(ctx, &AttachRequest{Key: key, HostIfName: "epair3a", HostIfIndex: 7, PodMAC: "02:00:00:00:00:07"})
	if err != nil || !p.Up || p.HostIfIndex != 7 || p.Name != "vale0:epair3a" {
		t.Fatalf("attach: %+v, %v", p, err)
	}
	ca, err := c.Check(ctx, &CheckRequest{Key: key})
	if err != nil || ca.Port == nil || !ca.Port.Up {
		t.Fatalf("check: %+v, %v", ca, err)
	}
	l, err := c.List(ctx)
	if err != nil || len(l.Items) != 1 || l.Items[0].Key != key {
		t.Fatalf("list: %+v, %v", l, err)
	}
	if _, err := c.Allocate(ctx, &AllocateRequest{Key: Key{ContainerID: "c2", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	gc, err := c.GC(ctx, &GCRequest{Valid: []Key{key}})
	if err != nil || len(gc.Removed) != 1 || gc.Removed[0].ContainerID != "c2" {
		t.Fatalf("gc: %+v, %v", gc, err)
	}
	r, err := c.Release(ctx, &ReleaseRequest{Key: key})
	if err != nil || !r.Released {
		t.Fatalf("release: %+v, %v", r, err)
	}
	r, err = c.Release(ctx, &ReleaseRequest{Key: key})
	if err != nil || r.Released {
		t.Fatalf("release again must succeed with released=false: %+v, %v", r, err)
	}
	_, err = c.Check(ctx, &CheckRequest{Key: key})
	if !errors.Is(err, ErrNotFound) || CodeOf(err) != CodeNotFound {
		t.Fatalf("check after release: %v, want NotFound", err)
	}
	st, err := c.Status(ctx)
	if err != nil || !st.Ready || st.Switches[0] != "vale0" {
		t.Fatalf("status: %+v, %v", st, err)
	}
}

func TestBackendErrors(t *testing.T) {
	fb := newFake()
	c, _ := serve(t, fb, 0)
	ctx := context.Background()
	req := &AllocateRequest{Key: Key{ContainerID: "c", IfName: "eth0"}}
	for _, tc := range []struct {
		err  error
		want *Error
	}{
		{fmt.Errorf("allocate: %w", NewError(CodeConflict, "10.22.0.9 is owned by x/eth0")), ErrConflict},
		{NewError(CodeExhausted, "range 10.22.0.0/24 exhausted"), ErrExhausted},
		{NewError(CodeNotReady, "store closed"), ErrNotReady},
		{errors.New("disk on fire"), ErrInternal},
	} {
		fb.mu.Lock()
		fb.failWith = tc.err
		fb.mu.Unlock()
		_, err := c.Allocate(ctx, req)
		if !errors.Is(err, tc.want) {
			t.Errorf("backend %v: client got %v, want code %s", tc.err, err, tc.want.Code)
		}
		var inner *Error
		msg := tc.err.Error()
		if errors.As(tc.err, &inner) {
			msg = inner.Message
		}
		if err != nil && !strings.Contains(err.Error(), msg) {
			t.Errorf("message lost: got %q from %q", err, tc.err)
		}
	}
}

func TestValidationNamesField(t *testing.T) {
	c, srv := serve(t, newFake(), 0)
	ctx := context.Background()
	// Client-side validation.
	for _, tc := range []struct {
		req   *AllocateRequest
		field string
	}{
		{&AllocateRequest{Key: Key{IfName: "eth0"}}, "containerID"},
		{&AllocateRequest{Key: Key{ContainerID: "c"}}, "ifName"},
		{&AllocateRequest{Key: Key{ContainerID: "c", IfName: "a-very-long-ifname"}}, "ifName"},
		{&AllocateRequest{Key: Key{ContainerID: "c", IfName: "eth0"}, MAC: "zz"}, "mac"},
		{&AllocateRequest{Key: Key{ContainerID: "c", IfName: "eth0"}, MTU: 70000}, "mtu"},
		{&AllocateRequest{Key: Key{ContainerID: "c", IfName: "eth0"}, IPs: []netip.Addr{
			netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}}, "ips"},
	} {
		_, err := c.Allocate(ctx, tc.req)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidRequest || e.Field != tc.field || !strings.Contains(e.Error(), tc.field) {
			t.Errorf("%+v: got %v, want InvalidRequest naming %s", tc.req, err, tc.field)
		}
	}
	// Server-side validation, bypassing the client's.
	hc := rawClient(srv.Addr())
	for _, tc := range []struct{ body, field string }{
		{`{"containerID":"","ifName":"eth0"}`, "containerID"},
		{`{"containerID":"c","ifName":"eth0","hostIfName":"epair0a","hostIfIndex":0}`, "hostIfIndex"},
	} {
		path := PathAllocate
		if strings.Contains(tc.body, "hostIf") {
			path = PathAttach
		}
		resp, err := hc.Post("http://agent"+path, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"field":"`+tc.field+`"`) {
			t.Errorf("%s: got %d %s, want 400 naming %s", tc.body, resp.StatusCode, b, tc.field)
		}
	}
	for _, body := range []string{`{`, `{"containerID":"c","ifName":"eth0"} {}`, `[1]`} {
		resp, err := hc.Post("http://agent"+PathAllocate, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"InvalidRequest"`) {
			t.Errorf("body %q: got %d %s", body, resp.StatusCode, b)
		}
	}
	// Unknown endpoint and wrong method get a typed error.
	resp, err := hc.Get("http://agent/v2/attachments")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), `"NotFound"`) {
		t.Errorf("unknown endpoint: %d %s", resp.StatusCode, b)
	}
	hc.CloseIdleConnections()
}

func rawClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

func TestHealthAndReady(t *testing.T) {
	fb := newFake()
	c, srv := serve(t, fb, 0)
	hc := rawClient(srv.Addr())
	defer hc.CloseIdleConnections()
	get := func(p string) int {
		resp, err := hc.Get("http://agent" + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if get(PathHealthz) != 200 || get(PathReadyz) != 200 {
		t.Fatal("healthz/readyz not 200 on a ready agent")
	}
	if err := c.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	fb.mu.Lock()
	fb.ready = false
	fb.mu.Unlock()
	if get(PathHealthz) != 200 {
		t.Error("healthz must stay 200 while not ready")
	}
	if get(PathReadyz) != http.StatusServiceUnavailable {
		t.Error("readyz must be 503 while not ready")
	}
	err := c.Ready(context.Background())
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "ipam store not open") {
		t.Errorf("Ready: %v", err)
	}
	st, err := c.Status(context.Background())
	if err != nil || st.Ready || st.Reason == "" {
		t.Errorf("status while not ready: %+v, %v", st, err)
	}
}

func TestDeadline(t *testing.T) {
	fb := newFake()
	fb.block = make(chan struct{})
	defer close(fb.block)
	c, _ := serve(t, fb, 150*time.Millisecond)
	req := &AllocateRequest{Key: Key{ContainerID: "c", IfName: "eth0"}}

	// The context's deadline wins.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Allocate(ctx, req)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want Timeout wrapping DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("deadline not honoured: %v", d)
	}
	// No context deadline: the client's default applies.
	start = time.Now()
	_, err = c.Allocate(context.Background(), req)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want Timeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Fatalf("client timeout not applied: %v", d)
	}
}

func TestServerDown(t *testing.T) {
	dir := t.TempDir()
	// No socket at all.
	c := NewClient(filepath.Join(dir, "missing.sock"), time.Second)
	defer c.Close()
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("missing socket: %v, want Unavailable wrapping ENOENT", err)
	}
	// A stale socket file nobody listens on (an agent that crashed).
	path := filepath.Join(dir, "stale.sock")
	staleSocket(t, path)
	c2 := NewClient(path, time.Second)
	defer c2.Close()
	_, err = c2.Release(context.Background(), &ReleaseRequest{Key: Key{ContainerID: "c", IfName: "eth0"}})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stale socket: %v, want Unavailable wrapping ECONNREFUSED", err)
	}
	// A server that goes away between calls.
	fb := newFake()
	path3 := filepath.Join(dir, "s3", "agent.sock")
	srv, err := ListenAndServe(path3, NewServer(fb))
	if err != nil {
		t.Fatal(err)
	}
	c3 := NewClient(path3, time.Second)
	defer c3.Close()
	if _, err := c3.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path3); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close: %v", err)
	}
	if _, err := c3.Status(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after close: %v, want Unavailable", err)
	}
}

// staleSocket leaves a bound-but-closed unix socket file at path.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
}

func TestListenPermissions(t *testing.T) {
	old := syscall.Umask(0) // the most permissive umask: perms must not depend on it
	defer syscall.Umask(old)
	base := t.TempDir()
	path := filepath.Join(base, "a", "b", "agent.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want socket 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", di.Mode())
	}
	// A second agent on the same live socket is refused.
	if _, err := Listen(path); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("live socket: %v, want EADDRINUSE", err)
	}
}

func TestListenStaleAndUnsafe(t *testing.T) {
	base := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(base, 0o700); err != nil {
		t.Fatal(err)
	}
	// A stale socket is replaced.
	path := filepath.Join(base, "agent.sock")
	staleSocket(t, path)
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
	// A regular file is never removed.
	file := filepath.Join(base, "file.sock")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("regular file: %v, want EEXIST", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("regular file was touched")
	}
	// A directory others can enter is refused.
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Listen(filepath.Join(shared, "agent.sock"))
	if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "0755") {
		t.Errorf("shared dir: %v, want EPERM naming the mode", err)
	}
	if _, err := Listen(""); err == nil {
		t.Error("empty path accepted")
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 3 {
		path := filepath.Join(t.TempDir(), "run", "agent.sock")
		srv, err := ListenAndServe(path, NewServer(newFake()))
		if err != nil {
			t.Fatal(err)
		}
		c := NewClient(path, time.Second)
		if _, err := c.Allocate(context.Background(), &AllocateRequest{Key: Key{ContainerID: "c", IfName: "eth0"}}); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestShutdownTwice: a server shut down again (the agent's Close after a Shutdown) neither
// panics nor fails.
func TestShutdownTwice(t *testing.T) {
	srv, err := ListenAndServe(filepath.Join(t.TempDir(), "run", "agent.sock"), NewServer(newFake()))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkAllocateRoundTrip(b *testing.B) {
	path := filepath.Join(b.TempDir(), "run", "agent.sock")
	srv, err := ListenAndServe(path, NewServer(newFake()))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c := NewClient(path, time.Second)
	defer c.Close()
	req := &AllocateRequest{Key: Key{ContainerID: "c", IfName: "eth0"}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := c.Allocate(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}
