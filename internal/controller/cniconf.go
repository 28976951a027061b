package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// CNIConfig says where and when the agent installs its CNI configuration.
type CNIConfig struct {
	// Dir is the CNI config dir as the agent sees it (the node's
	// /etc/cni/net.d through a hostPath mount).
	Dir string
	// FileName of the conflist, e.g. "10-epair.conflist".
	FileName string
	// ConfList is the file's content: a CNI network configuration list.
	ConfList []byte
	// Switch, if set, must be applied on this node before the file is
	// written (the switch the conflist's epair-cni entry names).
	Switch string
	// RemoveOnStop is asked when the agent stops; true removes the file
	// (uninstall). Nil keeps it. DaemonSetGone is the usual choice.
	RemoveOnStop func(ctx context.Context) bool
	// PluginPath, if set, is the installed epair-cni binary (as the agent
	// sees it), removed together with the conflist on uninstall.
	PluginPath string
	// NetworksDir is where the conflists of the secondary switches go; empty:
	// none are written. Once the agent is ready, every switch applied on the
	// node other than Switch gets <network>-<switch>.conflist there, <network>
	// being ConfList's name: a conflist named <network>-<switch> with
	// ConfList's cniVersion and one plugin, a copy of ConfList's first
	// epair-cni plugin with "switch" set to the switch (chained plugins are not
	// copied). Multus NetworkAttachmentDefinitions name it. The writer owns
	// every <network>-<switch name>.conflist in the dir: it removes those of
	// switches no longer applied, and all of them on uninstall. It must be an
	// absolute path other than Dir (the runtime would take any conflist there
	// for its network).
	NetworksDir string
}

// Validate checks the fields and that ConfList is a conflist with a name
// and at least one plugin.
func (c CNIConfig) Validate() error {
	switch {
	case !filepath.IsAbs(c.Dir):
		return fmt.Errorf("validate cni config: %w", &FieldError{"dir", c.Dir, "an absolute path"})
	case c.PluginPath != "" && !filepath.IsAbs(c.PluginPath):
		return fmt.Errorf("validate cni config: %w", &FieldError{"pluginPath", c.PluginPath, "an absolute path"})
	case c.FileName == "" || filepath.Base(c.FileName) != c.FileName ||
		(filepath.Ext(c.FileName) != ".conflist" && filepath.Ext(c.FileName) != ".conf"):
		return fmt.Errorf("validate cni config: %w", &FieldError{"fileName", c.FileName, "a file name ending in .conflist"})
	}
	var l struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(c.ConfList, &l); err != nil {
		return fmt.Errorf("validate cni config: conflist: %w", err)
	}
	if l.CNIVersion == "" || l.Name == "" || len(l.Plugins) == 0 {
		return fmt.Errorf("validate cni config: %w", &FieldError{"confList", truncate(string(c.ConfList), 80), "a conflist with cniVersion, name and at least one plugin"})
	}
	if c.NetworksDir != "" {
		switch {
		case !filepath.IsAbs(c.NetworksDir):
			return fmt.Errorf("validate cni config: %w", &FieldError{"networksDir", c.NetworksDir, "an absolute path"})
		case filepath.Clean(c.NetworksDir) == filepath.Clean(c.Dir):
			return fmt.Errorf("validate cni config: %w", &FieldError{"networksDir", c.NetworksDir,
				"a directory other than the CNI config dir (the runtime would take a secondary conflist for its network)"})
		}
		if _, err := parseNetworkTemplate(c.ConfList); err != nil {
			return fmt.Errorf("validate cni config: %w", err)
		}
	}
	return nil
}

// networkName is a CNI network name (the spec's rule), safe in a file name.
var networkName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// networkTemplate makes the secondary switches' conflists from the primary.
type networkTemplate struct {
	network    string                     // the primary conflist's name
	cniVersion string                     // and cniVersion
	plugin     map[string]json.RawMessage // its first epair-cni plugin
}

// parseNetworkTemplate takes the name, cniVersion and first epair-cni plugin
// of a conflist.
func parseNetworkTemplate(confList []byte) (*networkTemplate, error) {
	var l struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(confList, &l); err != nil {
		return nil, fmt.Errorf("conflist: %w", err)
	}
	if !networkName.MatchString(l.Name) {
		return nil, &FieldError{"confList name", l.Name, "a CNI network name (letters, digits, _ . -) to name the secondary networks' files after"}
	}
	for _, raw := range l.Plugins {
		var p map[string]json.RawMessage
		if json.Unmarshal(raw, &p) != nil {
			continue
		}
		var typ string
		if json.Unmarshal(p["type"], &typ) == nil && typ == "epair-cni" {
			return &networkTemplate{network: l.Name, cniVersion: l.CNIVersion, plugin: p}, nil
		}
	}
	return nil, &FieldError{"confList plugins", truncate(string(confList), 80), `an epair-cni plugin ("type": "epair-cni") to copy into the secondary networks' conflists`}
}

// fileName of switch sw's conflist.
func (t *networkTemplate) fileName(sw string) string { return t.network + "-" + sw + ".conflist" }

// owned reports whether name is a secondary conflist this template names
// (<network>-<switch name>.conflist), and whose.
func (t *networkTemplate) owned(name string) (sw string, ok bool) {
	sw, ok = strings.CutPrefix(name, t.network+"-")
	if !ok {
		return "", false
	}
	sw, ok = strings.CutSuffix(sw, ".conflist")
	return sw, ok && switchName.MatchString(sw)
}

// confList is switch sw's conflist: named <network>-<sw>, the primary's
// cniVersion, its epair-cni plugin attaching to sw.
func (t *networkTemplate) confList(sw string) ([]byte, error) {
	p := maps.Clone(t.plugin)
	p["switch"], _ = json.Marshal(sw)
	b, err := json.MarshalIndent(struct {
		CNIVersion string                       `json:"cniVersion"`
		Name       string                       `json:"name"`
		Plugins    []map[string]json.RawMessage `json:"plugins"`
	}{t.cniVersion, t.network + "-" + sw, []map[string]json.RawMessage{p}}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("secondary conflist of %s: %w", sw, err)
	}
	return append(b, '\n'), nil
}

// cniConfWriter writes the conflist once the agent is ready and keeps it
// there, and with NetworksDir set the secondary switches' conflists too; on
// stop it removes them if RemoveOnStop says so.
type cniConfWriter struct {
	cfg       CNIConfig
	uninstall *atomic.Bool // set when stop found an uninstall
	ready     func() bool
	status    *nodeStatus
	poll      time.Duration
}

func (w *cniConfWriter) NeedLeaderElection() bool { return false }

func (w *cniConfWriter) path() string { return filepath.Join(w.cfg.Dir, w.cfg.FileName) }

func (w *cniConfWriter) Start(ctx context.Context) error {
	lg := log.FromContext(ctx).WithName("cniconf")
	t := time.NewTicker(w.poll)
	defer t.Stop()
	written := false
	for {
		if w.ready() {
			// Rewrite when missing or changed behind our back.
			cur, err := os.ReadFile(w.path())
			if err != nil || !bytes.Equal(cur, w.cfg.ConfList) {
				if err := WriteFileAtomic(w.path(), w.cfg.ConfList, 0o644); err != nil {
					lg.Error(err, "write cni config")
					w.status.setCNIConf(false, err)
				} else {
					if !written {
						lg.Info("cni config installed", "path", w.path())
					}
					written = true
					w.status.setCNIConf(true, nil)
				}
			} else if !written {
				written = true
				w.status.setCNIConf(true, nil)
			}
			if w.cfg.NetworksDir != "" {
				w.syncNetworks(lg)
			}
		}
		select {
		case <-ctx.Done():
			return w.stop(lg)
		case <-t.C:
		case <-w.status.cniWake:
		}
	}
}

func (w *cniConfWriter) stop(lg interface{ Info(string, ...any) }) error {
	if w.cfg.RemoveOnStop == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !w.cfg.RemoveOnStop(ctx) {
		return nil
	}
	w.uninstall.Store(true)
	// The conflist first: from here on the runtime sends no new pod to us.
	if err := os.Remove(w.path()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cni config: %w", err)
	}
	lg.Info("cni config removed (uninstall)", "path", w.path())
	var netErr error
	if w.cfg.NetworksDir != "" {
		// The plugin goes even if some of these cannot: report both.
		removed, err := w.removeNetworks(nil)
		if err != nil {
			netErr = fmt.Errorf("remove secondary cni configs: %w", err)
		}
		lg.Info("secondary cni configs removed (uninstall)", "dir", w.cfg.NetworksDir, "files", removed)
	}
	if w.cfg.PluginPath != "" {
		if err := os.Remove(w.cfg.PluginPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return errors.Join(netErr, fmt.Errorf("remove cni plugin: %w", err))
		}
		lg.Info("cni plugin removed (uninstall)", "path", w.cfg.PluginPath)
	}
	return netErr
}

// syncNetworks makes NetworksDir hold exactly the conflists of the applied
// switches other than cfg.Switch: it writes the missing or changed ones
// (atomically) and removes those of switches no longer applied. The result
// goes to the status (CNIConfigInstalled).
func (w *cniConfWriter) syncNetworks(lg logr.Logger) {
	var nets, errs []string
	defer func() { w.status.setCNINetworks(nets, joinMsgs(errs)) }()
	t, err := parseNetworkTemplate(w.cfg.ConfList)
	if err != nil { // Validate refuses such a conflist
		errs = append(errs, err.Error())
		return
	}
	if err := os.MkdirAll(w.cfg.NetworksDir, 0o755); err != nil {
		errs = append(errs, err.Error())
		lg.Error(err, "create secondary cni config dir")
		return
	}
	keep := map[string]bool{}
	for _, sw := range w.status.appliedSwitches() {
		if sw == w.cfg.Switch || !switchName.MatchString(sw) {
			continue
		}
		keep[sw] = true
		path := filepath.Join(w.cfg.NetworksDir, t.fileName(sw))
		want, err := t.confList(sw)
		if err == nil {
			if cur, rerr := os.ReadFile(path); rerr == nil && bytes.Equal(cur, want) {
				nets = append(nets, sw)
				continue
			}
			err = WriteFileAtomic(path, want, 0o644)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("switch %s: %v", sw, err))
			lg.Error(err, "write secondary cni config", "switch", sw)
			continue
		}
		lg.Info("secondary cni config installed", "switch", sw, "path", path)
		nets = append(nets, sw)
	}
	removed, err := w.removeNetworks(keep)
	for _, f := range removed {
		lg.Info("secondary cni config removed", "path", filepath.Join(w.cfg.NetworksDir, f))
	}
	if err != nil {
		errs = append(errs, err.Error())
		lg.Error(err, "remove secondary cni configs")
	}
}

// removeNetworks removes the secondary conflists in NetworksDir (files named
// <network>-<switch name>.conflist) of the switches not in keep, and returns
// the names of the files it removed.
func (w *cniConfWriter) removeNetworks(keep map[string]bool) ([]string, error) {
	t, err := parseNetworkTemplate(w.cfg.ConfList)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(w.cfg.NetworksDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		sw, ok := t.owned(e.Name())
		if !ok || keep[sw] || e.IsDir() {
			continue
		}
		err := os.Remove(filepath.Join(w.cfg.NetworksDir, e.Name()))
		switch {
		case err == nil:
			removed = append(removed, e.Name())
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// DaemonSetGone returns a RemoveOnStop function that reports an uninstall:
// the agent's DaemonSet is gone or being deleted, or the agent's credentials
// no longer work (its ServiceAccount or RBAC were removed with it). A
// rolling update keeps the DaemonSet, so the conflist stays and new pods can
// still be set up while the agent restarts.
func DaemonSetGone(r client.Reader, namespace, name string) func(context.Context) bool {
	return func(ctx context.Context) bool {
		var ds appsv1.DaemonSet
		err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &ds)
		switch {
		case err == nil:
			return !ds.DeletionTimestamp.IsZero()
		case apierrors.IsNotFound(err), apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
			return true
		}
		return false
	}
}

// WriteFileAtomic writes data to a temporary file in path's directory,
// syncs it and renames it over path, so readers see the old or the new
// content, never a partial one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(dir)
	return nil
}

// InstallFile copies src into dir/name atomically with mode 0755: the init
// step that puts epair-cni into the node's CNI bin dir. A runtime executing
// the plugin during an upgrade runs the old or the new binary, never a
// half-written one.
func InstallFile(src, dir, name string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("install %s: %w", name, &FieldError{"dir", dir, "an existing directory"})
	}
	return WriteFileAtomic(filepath.Join(dir, name), data, 0o755)
}

func syncDir(dir string) {
	if dir == "" {
		dir = "."
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: the rename is already visible
		d.Close()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
