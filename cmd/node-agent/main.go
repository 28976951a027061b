// Command node-agent is the epair node agent: it serves the plugin API on a root-only unix
// socket and switches the pods' frames (see internal/agent).
//
//	node-agent [-mode standalone] [-config file] [-socket path] [-state-dir dir] [-uninstall] [-log-level info]
//	node-agent -mode=cluster -node-name=$(NODE_NAME) [-backend auto] [-masquerade=false] [cluster flags]
//
// Standalone mode takes its switches and address ranges from the configuration file.
// Cluster mode (the chart's DaemonSet) runs internal/controller: the address ranges are the
// Node's pod CIDRs, the switch is the VirtualSwitch named by -cni-switch, PortPolicies are
// applied to the pods' live ports and NodeState reports the dataplane (agent.RunCluster).
//
// SIGINT/SIGTERM shut it down gracefully: ports are detached and the pods keep their links
// and addresses for the next agent; with -uninstall (standalone) or when the agent's
// DaemonSet is gone (cluster) every link, port, rule and store the agent and the plugin
// created is removed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/epair-cni/epair/internal/agent"
	"github.com/epair-cni/epair/internal/controller"
)

func main() {
	mode := flag.String("mode", "standalone", "standalone (configuration file) or cluster (Kubernetes: pod CIDRs, VirtualSwitch, PortPolicy, NodeState)")
	backend := flag.String("backend", "", "deprecated: every switch is an offload switch (AF_PACKET with virtio-net headers); auto and packet are accepted, xdp and ringless with a warning")
	masquerade := flag.String("masquerade", "", "override the configuration's masquerade: true or false")
	podNetmap := flag.String("pod-netmap-ports", "", "override the configuration's podNetmapPorts (pods may ask for netmap application ports): true or false")
	fastPath := flag.String("fast-path", "", "override the configuration's fastPath (known-unicast frames between pods moved in the kernel): auto (where the kernel can), true or false")
	peerMode := flag.String("peer-mode", "", "override the configuration's peerMode: auto (routed to nodes on a subnet of this one, VXLAN to the others), routed or vxlan")
	vxlanPort := flag.Int("vxlan-port", 0, "override the configuration's vxlanPort (the VXLAN tunnel's UDP port, the same on every node)")
	var cf controller.Flags
	cf.Register(flag.CommandLine)
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
	if *mode != "standalone" && *mode != "cluster" {
		fmt.Fprintf(os.Stderr, "node-agent: -mode %q: want standalone or cluster\n", *mode)
		os.Exit(2)
	}
	if err == nil {
		if *socket != "" {
			cfg.Socket = *socket
		}
		if *stateDir != "" {
			cfg.StateDir = *stateDir
		}
		if *backend != "" {
			cfg.Backend = *backend
		}
		if *peerMode != "" {
			cfg.PeerMode = *peerMode
		}
		if *vxlanPort != 0 {
			cfg.VXLANPort = *vxlanPort
		}
		if b, ok := boolOverride("masquerade", *masquerade); ok {
			cfg.Masquerade = b
		}
		if *fastPath == "auto" {
			cfg.FastPath = nil
		} else if b, ok := boolOverride("fast-path", *fastPath); ok {
			cfg.FastPath = &b
		}
		if b, ok := boolOverride("pod-netmap-ports", *podNetmap); ok {
			cfg.PodNetmapPorts = &b
		}
		err = cfg.Validate()
	}
	if err != nil {
		log.Error("load configuration", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *mode == "cluster" {
		if *uninstall {
			fmt.Fprintln(os.Stderr, "node-agent: -uninstall is for standalone mode; in cluster mode the agent uninstalls when its DaemonSet is gone")
			os.Exit(2)
		}
		// controller-runtime's and client-go's own messages (a reconcile that failed, a
		// watch that lost the API server and retries) go to the agent's log, marked as
		// theirs; without this controller-runtime drops them and klog writes its own format.
		kl := logr.FromSlogHandler(log.Handler().WithAttrs([]slog.Attr{slog.String("component", "controller")}))
		ctrllog.SetLogger(kl)
		klog.SetLogger(kl)
		rc, err := ctrlconfig.GetConfig()
		if err != nil {
			log.Error("cluster mode: API server configuration", "err", err)
			os.Exit(2)
		}
		err = agent.RunCluster(ctx, agent.ClusterOptions{Config: cfg, Flags: cf, RestConfig: rc, Logger: log})
		if err != nil {
			log.Error("agent stopped", "err", err)
			stop()
			os.Exit(1)
		}
		log.Info("agent stopped")
		return
	}
	err = agent.Run(ctx, agent.RunOptions{Config: cfg, NewDataplane: agent.NewDataplane, Logger: log, Uninstall: *uninstall})
	if err != nil {
		log.Error("agent stopped", "err", err)
		os.Exit(1)
	}
	log.Info("agent stopped")
}

// boolOverride parses the value of a flag that overrides a boolean of the configuration:
// ok is false for the empty value (no override); anything but true or false ends the
// program with a message naming the flag.
func boolOverride(name, v string) (b, ok bool) {
	if v == "" {
		return false, false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		want := "true or false"
		if name == "fast-path" {
			want = "auto, true or false"
		}
		fmt.Fprintf(os.Stderr, "node-agent: -%s %q: want %s\n", name, v, want)
		os.Exit(2)
	}
	return b, true
}
