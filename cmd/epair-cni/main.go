// Command epair-cni is the epair CNI plugin: the runtime executes it with a network
// configuration on stdin (see internal/cniplugin for the verbs and the configuration).
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/epair-cni/epair/internal/cniplugin"
)

// The plugin switches namespaces through netlink handles, but exec'ed children (none
// today) and netns.Do callers need the thread to stay put.
func init() { runtime.LockOSThread() }

func main() {
	skel.PluginMainFuncs(cniplugin.New().Funcs(), cniplugin.VersionInfo, cniplugin.About)
}
