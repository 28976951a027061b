package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// maxBody bounds a request body; the largest legitimate one is a GC valid set.
const maxBody = 4 << 20

// NewServer returns the HTTP handler serving the API over backend. It validates every request
// before calling backend, and turns backend errors into ErrorBody responses.
func NewServer(backend Interface) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+PathAllocate, handle(backend.Allocate))
	mux.Handle("POST "+PathAttach, handle(backend.Attach))
	mux.Handle("POST "+PathRelease, handle(backend.Release))
	mux.Handle("POST "+PathCheck, handle(backend.Check))
	mux.Handle("POST "+PathGC, handle(backend.GC))
	mux.HandleFunc("GET "+PathAttachments, func(w http.ResponseWriter, r *http.Request) {
		resp, err := backend.List(r.Context())
		reply(w, resp, err)
	})
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, r *http.Request) {
		resp, err := backend.Status(r.Context())
		reply(w, resp, err)
	})
	mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		st, err := backend.Status(r.Context())
		switch {
		case err != nil:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
		case !st.Ready:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", st.Reason)
		default:
			io.WriteString(w, "ok\n")
		}
	})
	// Anything else under /v1 or another version gets a typed error rather than the mux's
	// plain-text 404, so a newer plugin talking to an older agent sees a clear message.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, NewError(CodeNotFound, fmt.Sprintf("no endpoint %s %s in API %s", r.Method, r.URL.Path, Version)))
	})
	return mux
}

type validator[T any] interface {
	*T
	Validate() error
}

func handle[Req any, PReq validator[Req], Resp any](fn func(context.Context, PReq) (Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := PReq(new(Req))
		if err := decode(w, r, req); err != nil {
			writeError(w, err)
			return
		}
		if err := req.Validate(); err != nil {
			writeError(w, err)
			return
		}
		resp, err := fn(r.Context(), req)
		reply(w, resp, err)
	})
}

func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		return &Error{ErrorBody: ErrorBody{Code: CodeInvalidRequest, Message: "decode request body: " + err.Error()}}
	}
	if dec.More() {
		return NewError(CodeInvalidRequest, "decode request body: trailing data after the JSON object")
	}
	return nil
}

func reply(w http.ResponseWriter, resp any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func writeError(w http.ResponseWriter, err error) {
	var e *Error
	body := ErrorBody{Code: CodeInternal, Message: err.Error()}
	if errors.As(err, &e) {
		body = e.ErrorBody
		if body.Message == "" {
			body.Message = err.Error()
		}
	}
	writeJSON(w, body.Code.HTTPStatus(), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(ErrorBody{Code: CodeInternal, Message: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
