// Command valectl shows the node agent's switches, ports with their counters, and FDBs over
// the agent socket, in the spirit of vale-ctl.
//
//	valectl [-socket path] [-o json] switches|ports [switch]|drops [switch]|fdb <switch>|attachments|status
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/epair-cni/epair/pkg/agentapi"
)

func main() {
	socket := flag.String("socket", agentapi.DefaultSocket, "agent API socket")
	output := flag.String("o", "table", "output format: table or json")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of the call")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: valectl [flags] switches | ports [switch] | drops [switch] | fdb <switch> | attachments | status\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, os.Stdout, options{socket: *socket, output: *output}, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "valectl:", err)
		os.Exit(1)
	}
}
