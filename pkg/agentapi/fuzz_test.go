package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzServerDecode feeds arbitrary bodies to every POST endpoint of a real handler: the
// server must answer 200 or a typed error body, never panic, and call the backend only with
// requests that pass Validate.
func FuzzServerDecode(f *testing.F) {
	for _, s := range []string{
		`{"containerID":"c","ifName":"eth0"}`,
		`{"containerID":"c","ifName":"eth0","ips":["10.0.0.1","fd00::1"],"mac":"02:00:00:00:00:01","mtu":1500}`,
		`{"containerID":"c","ifName":"eth0","hostIfName":"epair0a","hostIfIndex":3}`,
		`{"valid":[{"containerID":"c","ifName":"eth0"},{"containerID":"","ifName":"x"}]}`,
		`{"containerID":"c","ifName":"eth0","ips":["10.0.0.1","10.0.0.2"]}`,
		`{"ips":["::ffff:1.2.3.4"]}`, `{`, `null`, `[]`, `{"mtu":1e400}`,
	} {
		f.Add(s)
	}
	fb := newFake()
	h := NewServer(&validatingBackend{fb})
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{PathAllocate, PathAttach, PathRelease, PathCheck, PathGC} {
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code == http.StatusOK {
				continue
			}
			var eb ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Code == "" || eb.Message == "" {
				t.Fatalf("%s %q: status %d with untyped body %q", path, body, rec.Code, rec.Body.String())
			}
			if eb.Code.HTTPStatus() != rec.Code {
				t.Fatalf("%s: code %s sent with status %d", path, eb.Code, rec.Code)
			}
		}
	})
}

// validatingBackend fails the test (via a panic the fuzzer reports) if the server ever hands
// it a request that does not validate.
type validatingBackend struct{ *fakeBackend }

func mustValid(v interface{ Validate() error }) {
	if err := v.Validate(); err != nil {
		panic("server passed an invalid request to the backend: " + err.Error())
	}
}

func (b *validatingBackend) Allocate(ctx context.Context, r *AllocateRequest) (*Attachment, error) {
	mustValid(r)
	return b.fakeBackend.Allocate(ctx, r)
}

func (b *validatingBackend) Attach(ctx context.Context, r *AttachRequest) (*Port, error) {
	mustValid(r)
	p, err := b.fakeBackend.Attach(ctx, r)
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return p, err
}

func (b *validatingBackend) Release(ctx context.Context, r *ReleaseRequest) (*ReleaseResponse, error) {
	mustValid(r)
	return b.fakeBackend.Release(ctx, r)
}

func (b *validatingBackend) Check(ctx context.Context, r *CheckRequest) (*Attachment, error) {
	mustValid(r)
	return b.fakeBackend.Check(ctx, r)
}

func (b *validatingBackend) GC(ctx context.Context, r *GCRequest) (*GCResponse, error) {
	mustValid(r)
	// Never really collect: the fuzzer's valid sets would empty the fake.
	return &GCResponse{}, nil
}
