package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/epair-cni/epair/pkg/epair"
)

// RunOptions wire the standalone agent.
type RunOptions struct {
	Config *Config
	// NewDataplane builds the dataplane for cfg (cmd/node-agent passes internal/dataplane's).
	NewDataplane func(cfg *Config, log *slog.Logger) (Dataplane, error)
	Logger       *slog.Logger
	// Uninstall, when set, removes everything from the node on shutdown instead of leaving
	// the pods running for the next agent.
	Uninstall bool
	// ReconcileInterval is the period of the stale-link sweep (default 30s).
	ReconcileInterval time.Duration
	// Started, if set, is called once the agent serves and is ready.
	Started func(*Agent)
}

// Run is the standalone agent: open the stores, build the dataplane, recover, serve the
// socket (and metrics) until ctx is done, then shut down (or uninstall).
func Run(ctx context.Context, o RunOptions) (err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := enableForwarding(o.Config); err != nil {
		return fmt.Errorf("run agent: %w", err)
	}
	links, err := epair.New(epair.Options{NodeID: o.Config.NodeID})
	if err != nil {
		return fmt.Errorf("run agent: %w", err)
	}
	dp, err := o.NewDataplane(o.Config, log)
	if err != nil {
		links.Close()
		return fmt.Errorf("run agent: %w", err)
	}
	a, err := New(Options{Config: o.Config, Dataplane: dp, Links: links, Logger: log})
	if err != nil {
		return errors.Join(fmt.Errorf("run agent: %w", err), dp.Close(false), links.Close())
	}
	defer func() {
		var cerr error
		if o.Uninstall {
			cerr = a.Uninstall()
		} else {
			cerr = a.Close()
		}
		err = errors.Join(err, cerr)
	}()

	return serve(ctx, a, serveOptions{reconcileInterval: o.ReconcileInterval, started: o.Started})
}

// serveOptions are what Run and RunCluster tell serve.
type serveOptions struct {
	reconcileInterval time.Duration
	started           func(*Agent)
}

// serve runs agent a until ctx is done: the socket server first (healthz answers, Status
// says "recovering"), then the metrics server, Recover, and the stale-link sweep. It
// returns Recover's error or the first server's.
func serve(ctx context.Context, a *Agent, o serveOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	start := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	ready := make(chan struct{})
	start("socket server", (&SocketServer{Agent: a, Ready: ready}).Start)
	select {
	case <-ready:
	case <-ctx.Done():
		wg.Wait()
		return firstErr(errc)
	}
	if a.cfg.MetricsAddr != "" {
		start("metrics server", (&MetricsServer{Agent: a, Addr: a.cfg.MetricsAddr}).Start)
	}
	if _, err := a.Recover(ctx); err != nil {
		cancel()
		wg.Wait()
		return errors.Join(err, firstErr(errc))
	}
	start("reconcile loop", (&ReconcileLoop{Agent: a, Interval: o.reconcileInterval}).Start)
	a.log.Info("agent ready", "socket", a.cfg.Socket, "switches", a.SwitchNames(), "version", Version)
	if o.started != nil {
		o.started(a)
	}
	<-ctx.Done()
	wg.Wait()
	return firstErr(errc)
}

func firstErr(c chan error) error {
	var errs []error
	for {
		select {
		case err := <-c:
			errs = append(errs, err)
		default:
			return errors.Join(errs...)
		}
	}
}
