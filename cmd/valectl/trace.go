package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/epair-cni/epair/pkg/agentapi"
)

// traceUsage is the trace command's synopsis.
const traceUsage = "trace <switch:port | namespace/pod[:ifname]> -to <IP | MAC | namespace/pod> [-p icmp|tcp|udp] [-sport N] [-dport N] [-src-ip IP] [-src-mac MAC]"

// runTrace is "valectl trace": what the switch and the node would do with a frame the port
// sends (nothing is sent), step by step. -to names the destination by address, MAC, or a pod
// on this node (its address of -src-ip's family, IPv4 by default).
func runTrace(ctx context.Context, w io.Writer, o options, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("trace: want a port or a pod first: %s", traceUsage)
	}
	target := args[0]
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	to := fs.String("to", "", "destination: an IP address, a MAC, or namespace/pod on this node")
	proto := fs.String("p", "icmp", "protocol: icmp (echo request), tcp (SYN) or udp")
	sport := fs.Uint("sport", 0, "source port (tcp, udp)")
	dport := fs.Uint("dport", 0, "destination port (tcp, udp)")
	srcIP := fs.String("src-ip", "", "source address (default: the port's own)")
	srcMAC := fs.String("src-mac", "", "source MAC (default: the port's own)")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("trace: %w: %s", err, traceUsage)
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("trace: unexpected %q: %s", fs.Args(), traceUsage)
	case *to == "":
		return fmt.Errorf("trace: -to is required: %s", traceUsage)
	case *sport > 65535 || *dport > 65535:
		return fmt.Errorf("trace: ports are 0 to 65535")
	}
	c := agentapi.NewClient(o.socket, 0)
	defer c.Close()
	port, err := resolvePort(ctx, c, target)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	req := &agentapi.TraceRequest{Port: port, Proto: *proto, SrcPort: uint16(*sport), DstPort: uint16(*dport), SrcIP: *srcIP, SrcMAC: *srcMAC}
	if req.Proto == "icmp" && (req.SrcPort != 0 || req.DstPort != 0) {
		return fmt.Errorf("trace: -sport and -dport are for -p tcp and udp")
	}
	switch {
	case strings.Contains(*to, "/"):
		if req.DstIP, err = podAddr(ctx, c, *to, *srcIP); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
	default:
		if _, err := netip.ParseAddr(*to); err == nil {
			req.DstIP = *to
		} else if _, err := net.ParseMAC(*to); err == nil {
			req.DstMAC = *to
		} else {
			return fmt.Errorf("trace: -to %q: want an IP address, a MAC or namespace/pod", *to)
		}
	}
	res, err := c.Trace(ctx, req)
	if err != nil {
		return fmt.Errorf("trace %s: %w", port, err)
	}
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printTrace(w, res)
	return nil
}

// podAddr is the address of a pod on this node, of the family of src when it is given
// (IPv4 first otherwise).
func podAddr(ctx context.Context, c *agentapi.Client, pod, src string) (string, error) {
	ns, name, _ := strings.Cut(pod, "/")
	l, err := c.List(ctx)
	if err != nil {
		return "", fmt.Errorf("list attachments: %w", err)
	}
	want4 := true
	if a, err := netip.ParseAddr(src); err == nil {
		want4 = a.Is4()
	}
	var other string
	for _, at := range l.Items {
		if at.PodNamespace != ns || at.PodName != name {
			continue
		}
		for _, ip := range at.IPs {
			if ip.Address.Addr().Is4() == want4 {
				return ip.Address.Addr().String(), nil
			}
			if other == "" {
				other = ip.Address.Addr().String()
			}
		}
	}
	if other == "" {
		return "", fmt.Errorf("-to %s: no pod of that name on this node (give its address)", pod)
	}
	return other, nil
}

func printTrace(w io.Writer, r *agentapi.TraceResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSTAGE\tPORT\tVERDICT\tDETAIL")
	for i, s := range r.Steps {
		port := s.Port
		if s.Pod != "" {
			port += " (" + s.Pod + ")"
		}
		if port == "" {
			port = "-"
		}
		v := s.Verdict
		if s.Reason != "" {
			v += " (" + s.Reason + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i+1, s.Stage, port, v, s.Detail)
	}
	tw.Flush()
	if len(r.DeliveredTo) > 0 {
		fmt.Fprintf(w, "result: delivered to %s\n", strings.Join(r.DeliveredTo, ", "))
	} else {
		fmt.Fprintf(w, "result: dropped (%s)\n", r.Reason)
	}
}
