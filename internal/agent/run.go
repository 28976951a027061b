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
	// Serve first (healthz answers, Status says "recovering"), then recover.
	ready := make(chan struct{})
	start("socket server", (&SocketServer{Agent: a, Ready: ready}).Start)
	select {
	case <-ready:
	case <-ctx.Done():
		wg.Wait()
		return firstErr(errc)
	}
	if o.Config.MetricsAddr != "" {
		start("metrics server", (&MetricsServer{Agent: a, Addr: o.Config.MetricsAddr}).Start)
	}
	if _, err := a.Recover(ctx); err != nil {
		cancel()
		wg.Wait()
		return errors.Join(err, firstErr(errc))
	}
	start("reconcile loop", (&ReconcileLoop{Agent: a, Interval: o.ReconcileInterval}).Start)
	log.Info("agent ready", "socket", o.Config.Socket, "switches", a.switchNames(), "version", Version)
	if o.Started != nil {
		o.Started(a)
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
