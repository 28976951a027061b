// Command epair-cni is the test build of the plugin binary for the libcni end-to-end test:
// the same few lines cmd/epair-cni holds (flags-free main around skel).
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/epair-cni/epair/internal/cniplugin"
)

func init() { runtime.LockOSThread() }

func main() {
	skel.PluginMainFuncs(cniplugin.New().Funcs(), cniplugin.VersionInfo, cniplugin.About)
}
