package controller

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Flags are the node agent's cluster-mode command-line flags, the ones
// charts/epair/templates/daemonset.yaml passes (TestChartArgsParse keeps the
// two in step). cmd/node-agent registers them next to its own (-mode,
// -socket, -state-dir, -backend, -masquerade, -log-level) and turns them into
// Options with its Dataplane:
//
//	var cf controller.Flags
//	cf.Register(flag.CommandLine)
//	flag.Parse()
//	opts, err := cf.Options(dp)
//	c, err := controller.New(ctrl.GetConfigOrDie(), opts)
type Flags struct {
	NodeName       string
	StatusInterval time.Duration
	CNIConfDir     string
	CNIConflist    string
	CNISwitch      string
	CNIPlugin      string
	DaemonSet      string
	HealthAddr     string
	MetricsAddr    string
	// CNINetworksDir (-cni-networks-dir) is CNIConfig.NetworksDir: where the
	// secondary switches' conflists go; only together with -cni-conf-dir.
	CNINetworksDir string
}

// Register defines the flags on fs; -node-name defaults to $NODE_NAME.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (cluster mode; default $NODE_NAME)")
	fs.DurationVar(&f.StatusInterval, "status-interval", 10*time.Second, "interval between updates of the node's NodeState")
	fs.StringVar(&f.CNIConfDir, "cni-conf-dir", "", "CNI config dir to install the conflist into once ready (empty: do not install)")
	fs.StringVar(&f.CNIConflist, "cni-conflist", "", "file holding the conflist to install (its base name is the installed name)")
	fs.StringVar(&f.CNISwitch, "cni-switch", "", "switch that must be applied before the conflist is installed")
	fs.StringVar(&f.CNIPlugin, "cni-plugin", "", "installed epair-cni binary, removed with the conflist on uninstall")
	fs.StringVar(&f.CNINetworksDir, "cni-networks-dir", "", "dir to write a conflist per secondary switch into once ready, <network>-<switch>.conflist, e.g. for Multus (empty: none)")
	fs.StringVar(&f.DaemonSet, "daemonset", "", "namespace/name of the agent's DaemonSet: its absence at shutdown means uninstall")
	fs.StringVar(&f.HealthAddr, "health-addr", ":9876", "address of /healthz and /readyz (0: off)")
	fs.StringVar(&f.MetricsAddr, "metrics-addr", "0", "address of the controller metrics (0: off)")
}

// Options validates the flags, reads the conflist and returns the
// Controller's Options for dp.
func (f *Flags) Options(dp Dataplane) (Options, error) {
	o := Options{
		NodeName:       f.NodeName,
		Dataplane:      dp,
		StatusInterval: f.StatusInterval,
		HealthAddr:     f.HealthAddr,
		MetricsAddr:    f.MetricsAddr,
	}
	if f.NodeName == "" {
		return Options{}, fmt.Errorf("cluster flags: %w", &FieldError{"-node-name", "", "the node's name (or $NODE_NAME)"})
	}
	if f.DaemonSet != "" {
		ns, name, ok := strings.Cut(f.DaemonSet, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return Options{}, fmt.Errorf("cluster flags: %w", &FieldError{"-daemonset", f.DaemonSet, "namespace/name"})
		}
		o.DaemonSet = types.NamespacedName{Namespace: ns, Name: name}
	}
	if f.CNIConfDir == "" {
		if f.CNIConflist != "" || f.CNIPlugin != "" {
			return Options{}, fmt.Errorf("cluster flags: %w", &FieldError{"-cni-conf-dir", "", "set with -cni-conflist and -cni-plugin"})
		}
		if f.CNINetworksDir != "" {
			return Options{}, fmt.Errorf("cluster flags: %w", &FieldError{"-cni-networks-dir", f.CNINetworksDir, "only together with -cni-conf-dir"})
		}
		return o, nil
	}
	if f.CNINetworksDir != "" && !filepath.IsAbs(f.CNINetworksDir) {
		return Options{}, fmt.Errorf("cluster flags: %w", &FieldError{"-cni-networks-dir", f.CNINetworksDir, "an absolute path"})
	}
	if f.CNIConflist == "" {
		return Options{}, fmt.Errorf("cluster flags: %w", &FieldError{"-cni-conflist", "", "the conflist file to install into -cni-conf-dir"})
	}
	conf, err := os.ReadFile(f.CNIConflist)
	if err != nil {
		return Options{}, fmt.Errorf("cluster flags: read conflist: %w", err)
	}
	o.CNI = CNIConfig{
		Dir:         f.CNIConfDir,
		FileName:    baseName(f.CNIConflist),
		ConfList:    conf,
		Switch:      f.CNISwitch,
		PluginPath:  f.CNIPlugin,
		NetworksDir: f.CNINetworksDir,
	}
	if err := o.CNI.Validate(); err != nil {
		return Options{}, fmt.Errorf("cluster flags: %w", err)
	}
	return o, nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
