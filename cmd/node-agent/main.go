// Command node-agent is the epair node agent in standalone mode: it serves the plugin API
// on a root-only unix socket and switches the pods' frames (see internal/agent).
//
//	node-agent [-config file] [-socket path] [-state-dir dir] [-uninstall] [-log-level info]
//
// SIGINT/SIGTERM shut it down gracefully: ports are detached and the pods keep their links
// and addresses for the next agent; with -uninstall every link, port, rule and store the
// agent and the plugin created is removed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/epair-cni/epair/internal/agent"
)

func main() {
	cfgPath := flag.String("config", "", "standalone configuration file (default: the embedded one)")
	socket := flag.String("socket", "", "override the configuration's agent socket")
	stateDir := flag.String("state-dir", "", "override the configuration's state directory")
	uninstall := flag.Bool("uninstall", false, "on shutdown, remove every link, port, rule and store instead of keeping the pods running")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	printDefault := flag.Bool("print-default-config", false, "print the embedded configuration and exit")
	flag.Parse()
	// The agent's heap is mostly long-lived packet buffers (noscan): collecting at 50%
	// growth instead of 100% costs little CPU and keeps RSS near the live heap.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	if *printDefault {
		os.Stdout.Write(agent.DefaultConfigJSON())
		return
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "node-agent: -log-level %q: want debug, info, warn or error\n", *logLevel)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg, err := agent.LoadConfig(*cfgPath)
	if err == nil && (*socket != "" || *stateDir != "") {
		if *socket != "" {
			cfg.Socket = *socket
		}
		if *stateDir != "" {
			cfg.StateDir = *stateDir
		}
		err = cfg.Validate()
	}
	if err != nil {
		log.Error("load configuration", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = agent.Run(ctx, agent.RunOptions{Config: cfg, NewDataplane: agent.NewDataplane, Logger: log, Uninstall: *uninstall})
	if err != nil {
		log.Error("agent stopped", "err", err)
		os.Exit(1)
	}
	log.Info("agent stopped")
}
