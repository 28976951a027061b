package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/epair-cni/epair/pkg/agentapi"
)

// Handler is the agent's HTTP API: agentapi's endpoints, the inspection endpoints and
// /metrics.
func (a *Agent) Handler() http.Handler {
	// pprof is served on the root-only socket only, never on the metrics address.
	return agentapi.NewAgentServer(a, a, map[string]http.Handler{
		"GET /metrics":             a.MetricsHandler(),
		"GET /debug/pprof/":        http.HandlerFunc(pprof.Index),
		"GET /debug/pprof/profile": http.HandlerFunc(pprof.Profile),
	})
}

// SocketServer serves the agent API on its unix socket. It is a controller-runtime
// Runnable (Start blocks until ctx is done, then shuts down), so a manager can own it.
type SocketServer struct {
	Agent *Agent
	// Path is the socket; "" means the agent's configured one.
	Path string
	// Ready, if set, is closed once the socket listens.
	Ready chan struct{}
}

// Start listens, serves until ctx is done and shuts down with a 5-second grace period.
func (s *SocketServer) Start(ctx context.Context) error {
	path := s.Path
	if path == "" {
		path = s.Agent.cfg.Socket
	}
	srv, err := agentapi.ListenAndServe(path, s.Agent.Handler())
	if err != nil {
		return fmt.Errorf("serve agent api: %w", err)
	}
	if s.Ready != nil {
		close(s.Ready)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// MetricsServer serves /metrics (and /healthz, /readyz) over TCP; a Runnable like
// SocketServer.
type MetricsServer struct {
	Agent *Agent
	Addr  string
}

// Start serves until ctx is done.
func (m *MetricsServer) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", m.Addr)
	if err != nil {
		return fmt.Errorf("serve metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Agent.MetricsHandler())
	h := m.Agent.Handler()
	mux.Handle("GET "+agentapi.PathHealthz, h)
	mux.Handle("GET "+agentapi.PathReadyz, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// ReconcileLoop runs Reconcile every Interval until ctx is done; a Runnable.
type ReconcileLoop struct {
	Agent    *Agent
	Interval time.Duration
}

// Start loops until ctx is done.
func (l *ReconcileLoop) Start(ctx context.Context) error {
	iv := l.Interval
	if iv <= 0 {
		iv = 30 * time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := l.Agent.Reconcile(ctx); err != nil {
				l.Agent.log.Warn("reconcile", "err", err)
			}
		}
	}
}
