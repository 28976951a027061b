// Command epair-cni is the epair CNI plugin: the runtime executes it with a network
// configuration on stdin (see internal/cniplugin for the verbs and the configuration).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/epair-cni/epair/internal/cniplugin"
)

// The plugin switches namespaces through netlink handles, but exec'ed children (none
// today) and netns.Do callers need the thread to stay put.
func init() { runtime.LockOSThread() }

func main() {
	if e := requireVersion(); e != nil {
		_ = e.Print()
		os.Exit(1)
	}
	skel.PluginMainFuncs(cniplugin.New().Funcs(), cniplugin.VersionInfo, cniplugin.About)
}

// maxConfig bounds the network configuration read from standard input.
const maxConfig = 1 << 20

// requireVersion reads the configuration of a verb that takes one and refuses it when it
// has no cniVersion: skel would take it for 0.1.0 and answer "incompatible CNI versions;
// config is 0.1.0", which hides what is wrong. Standard input is handed on to skel as it
// was read; anything else (a configuration that is not JSON, a version not supported) is
// skel's and the plugin's to answer.
func requireVersion() *types.Error {
	switch os.Getenv("CNI_COMMAND") {
	case "ADD", "DEL", "CHECK", "GC", "STATUS":
	default:
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(os.Stdin, maxConfig+1))
	if err != nil {
		return types.NewError(types.ErrIOFailure, "read the network configuration from standard input", err.Error())
	}
	if len(data) > maxConfig {
		return types.NewError(types.ErrInvalidNetworkConfig, "network configuration too long", fmt.Sprintf("more than %d bytes", maxConfig))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return types.NewError(types.ErrIOFailure, "hand on the network configuration", err.Error())
	}
	go func() {
		_, _ = w.Write(data)
		_ = w.Close()
	}()
	os.Stdin = r
	var v struct {
		CNIVersion *string `json:"cniVersion"`
	}
	if json.Unmarshal(data, &v) == nil && (v.CNIVersion == nil || *v.CNIVersion == "") {
		return types.NewError(types.ErrIncompatibleCNIVersion, "cniVersion: required",
			"the network configuration has no cniVersion; this plugin supports "+strings.Join(cniplugin.SupportedVersions, ", "))
	}
	return nil
}
