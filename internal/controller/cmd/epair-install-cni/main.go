// Command epair-install-cni is the chart's init step: it copies the epair-cni
// binary into the node's CNI bin dir atomically (controller.InstallFile), so a
// container runtime never executes a half-written plugin. The agent image is a
// scratch image without a shell or cp, hence a binary of its own.
//
//	epair-install-cni -from /epair-cni -to /host/opt/cni/bin [-name epair-cni]
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/epair-cni/epair/internal/controller"
)

func main() {
	from := flag.String("from", "/epair-cni", "the plugin binary to install")
	to := flag.String("to", "/host/opt/cni/bin", "the node's CNI bin dir (mounted)")
	name := flag.String("name", "epair-cni", "the installed file's name")
	flag.Parse()
	if err := controller.InstallFile(*from, *to, *name); err != nil {
		fmt.Fprintf(os.Stderr, "epair-install-cni: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("epair-install-cni: installed %s as %s/%s\n", *from, *to, *name)
}
