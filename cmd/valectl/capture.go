package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/epair-cni/epair/pkg/agentapi"
)

// captureUsage is the capture command's synopsis.
const captureUsage = "capture <switch:port | namespace/pod[:ifname]> [-d rx|tx|both] [-c count] [-t duration] [-s snaplen] [-F pcapng|pcap] [-w file|-]"

// runCapture is "valectl capture": the port's frames as pcapng (or pcap) into -w (stdout by default)
// until -c frames, -t time or ctx (Ctrl-C) ends it. A pod is named as namespace/name, with
// :ifname when it has several interfaces.
func runCapture(ctx context.Context, stdout io.Writer, o options, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("capture: want a port or a pod first: %s", captureUsage)
	}
	target := args[0]
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("d", "both", "direction: rx (from the port), tx (to the port) or both")
	count := fs.Int("c", 0, "stop after this many frames (0: no limit)")
	dur := fs.Duration("t", 0, "stop after this long (0: until interrupted)")
	snap := fs.Int("s", 0, "bytes kept of each frame (0: whole frames)")
	out := fs.String("w", "-", "file to write, - for standard output")
	format := fs.String("F", "pcapng", "pcapng (each frame's direction, and why the switch dropped it) or pcap")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("capture: %w: %s", err, captureUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("capture: unexpected %q: %s", fs.Args(), captureUsage)
	}
	c := agentapi.NewClient(o.socket, 0)
	defer c.Close()
	port, err := resolvePort(ctx, c, target)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	w := stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		defer f.Close()
		w = f
	}
	req := &agentapi.CaptureRequest{Port: port, Direction: *dir, Count: *count, Duration: *dur, SnapLen: *snap, Format: *format}
	if err := c.Capture(ctx, req, w); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("capture %s: %w", port, err)
	}
	return nil
}

// resolvePort turns a capture target into a switch port name: "switch:port" as it is, a
// pod "namespace/name[:ifname]" by the ports' pods (and owners' interface names).
func resolvePort(ctx context.Context, c *agentapi.Client, target string) (string, error) {
	if !strings.Contains(target, "/") {
		if !strings.Contains(target, ":") {
			return "", fmt.Errorf("%q: want switch:port or namespace/pod[:ifname]", target)
		}
		return target, nil
	}
	pod, ifname, _ := strings.Cut(target, ":")
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sl, err := c.Switches(lctx)
	if err != nil {
		return "", fmt.Errorf("list ports: %w", err)
	}
	var found []string
	for _, s := range sl.Items {
		for _, p := range s.Ports {
			if p.Pod == pod && (ifname == "" || strings.HasSuffix(p.Owner, "/"+ifname)) {
				found = append(found, p.Name)
			}
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no port of pod %s on this node", target)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("pod %s has ports %s: name the interface (%s:eth0) or the port", pod, strings.Join(found, ", "), pod)
}
