package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

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
	return nil
}

// cniConfWriter writes the conflist once the agent is ready and keeps it
// there; on stop it removes it if RemoveOnStop says so.
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
	if w.cfg.PluginPath != "" {
		if err := os.Remove(w.cfg.PluginPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove cni plugin: %w", err)
		}
		lg.Info("cni plugin removed (uninstall)", "path", w.cfg.PluginPath)
	}
	return nil
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
