package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Listen creates the root-only unix socket at path: the parent directory is created 0700
// (an existing one must not be accessible by group or others), a stale socket from a dead
// agent is removed, and the socket is chmod'ed 0600 after bind whatever the umask.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, fmt.Errorf("listen socket: path must not be empty")
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("listen socket: create directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("listen socket: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("listen socket: %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("listen socket: directory %s has mode %04o, want no group/other access (0700): use a dedicated directory: %w",
			dir, fi.Mode().Perm(), syscall.EPERM)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen socket: %w", err)
	}
	// The listener removes the file on Close; a crash leaves it for removeStale.
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen socket: chmod: %w", err)
	}
	return ln, nil
}

// removeStale removes path if it is a socket nobody listens on. A live socket means another
// agent runs (EADDRINUSE); a regular file or directory is never removed (EEXIST).
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen socket: %s exists and is not a socket (mode %v), not removing it: %w", path, fi.Mode(), syscall.EEXIST)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen socket: another process is serving %s: %w", path, syscall.EADDRINUSE)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("listen socket: probe existing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen socket: remove stale socket: %w", err)
	}
	return nil
}

// SocketServer serves a handler on a root-only unix socket. Close stops it and waits.
type SocketServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}

	mu  sync.Mutex
	err error
}

// ListenAndServe listens on path (see Listen) and serves h in a goroutine owned by the
// returned server until Close.
func ListenAndServe(path string, h http.Handler) (*SocketServer, error) {
	ln, err := Listen(path)
	if err != nil {
		return nil, err
	}
	return Serve(ln, h), nil
}

// Serve serves h on ln in a goroutine owned by the returned server until Close.
func Serve(ln net.Listener, h http.Handler) *SocketServer {
	s := &SocketServer{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       60 * time.Second,
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	// Shutdown waits for the requests in flight, but a capture streams until its client
	// goes: it ends when the shutdown starts (streamStopping).
	stopping := make(chan struct{})
	s.srv.BaseContext = func(net.Listener) context.Context {
		return context.WithValue(context.Background(), stoppingKey{}, (<-chan struct{})(stopping))
	}
	var once sync.Once // Shutdown may run more than once (Close after a timed-out Shutdown)
	s.srv.RegisterOnShutdown(func() { once.Do(func() { close(stopping) }) })
	go func() {
		defer close(s.done)
		err := s.srv.Serve(ln)
		if !errors.Is(err, http.ErrServerClosed) {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
		}
	}()
	return s
}

// Addr is the socket path.
func (s *SocketServer) Addr() string { return s.ln.Addr().String() }

// Shutdown stops accepting, waits for in-flight requests until ctx expires (then closes them),
// waits for the serving goroutine and removes the socket file.
func (s *SocketServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(err, s.err)
}

// Close is Shutdown with a 5-second grace period.
func (s *SocketServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// stoppingKey is the request context's value, closed when the server shuts down.
type stoppingKey struct{}

// streamStopping is ctx that also ends when the server serving its request shuts down.
func streamStopping(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	if stop, ok := ctx.Value(stoppingKey{}).(<-chan struct{}); ok {
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	return ctx, cancel
}
