// Command valectl shows the node agent's switches, ports with their counters, and FDBs over
// the agent socket, in the spirit of vale-ctl.
//
// ports and drops count a port's drops by reason, with the names of the agent API, NodeState
// and the metrics; one of them, socket-full, is what the kernel dropped before the switch
// saw it (the pod sent faster than the switch read the port's socket), so a capture never
// shows those frames, and a switch's own DROPPED (switches) does not count them.
//
//	valectl [-socket path] [-o json] switches|ports [switch]|drops [switch]|fdb <switch>|peers|attachments|status
//	valectl [-socket path] capture <switch:port | namespace/pod[:ifname]> [-d rx|tx|both] [-c count] [-t duration] [-s snaplen] [-F pcapng|pcap] [-w file|-]
//	valectl [-socket path] [-o json] trace <switch:port | namespace/pod[:ifname]> -to <IP | MAC | namespace/pod> [-p icmp|tcp|udp] [-sport N] [-dport N] [-src-ip IP] [-src-mac MAC]
//
// capture writes the port's frames as a pcapng file (each frame's direction, and a comment
// with the reason of a frame the switch dropped) or a pcap file (standard output by default, so that
// "valectl capture ns/pod | tcpdump -r -" works) until its count or duration, or Ctrl-C.
//
// trace describes a frame the port sends (to an address, a MAC or a pod on this node; ICMP
// echo, TCP SYN or UDP; the port's own source addresses unless given) and prints each
// decision the switch and the node would take for it, in order: neighbour resolution,
// port security, the FDB lookup or flood, each destination's output queue, the kernel's
// route for what the host port takes; ending in delivered or dropped with the reason.
// Nothing is sent: the decisions come from the forwarding code run on the frame.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/epair-cni/epair/pkg/agentapi"
)

func main() {
	socket := flag.String("socket", agentapi.DefaultSocket, "agent API socket")
	output := flag.String("o", "table", "output format: table or json")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of the call")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: valectl [flags] switches | ports [switch] | drops [switch] | fdb <switch> | peers | attachments | status\n       valectl [flags] %s\n       valectl [flags] %s\n", captureUsage, traceUsage)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.Arg(0) == "capture" {
		// No deadline: a capture runs until its count or duration, or Ctrl-C.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := runCapture(ctx, os.Stdout, options{socket: *socket, output: *output}, flag.Args()[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "valectl:", err)
			os.Exit(1)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if flag.Arg(0) == "trace" {
		if err := runTrace(ctx, os.Stdout, options{socket: *socket, output: *output}, flag.Args()[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "valectl:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Stdout, options{socket: *socket, output: *output}, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "valectl:", err)
		os.Exit(1)
	}
}
