package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/epair-cni/epair/pkg/agentapi"
)

type options struct {
	socket string
	output string
}

// run executes one valectl command against the agent at o.socket and prints to w.
func run(ctx context.Context, w io.Writer, o options, args []string) error {
	if o.output != "table" && o.output != "json" {
		return fmt.Errorf("-o %q: want table or json", o.output)
	}
	if len(args) == 0 {
		return fmt.Errorf("missing command: want switches, ports, drops, fdb, peers, attachments or status")
	}
	c := agentapi.NewClient(o.socket, 0)
	defer c.Close()
	var (
		v   any
		err error
	)
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "switches", "ports", "drops":
		if len(rest) > 1 || (cmd == "switches" && len(rest) > 0) {
			return fmt.Errorf("%s: too many arguments %q", cmd, rest)
		}
		var sl *agentapi.SwitchList
		if sl, err = c.Switches(ctx); err != nil {
			return fmt.Errorf("list switches: %w", err)
		}
		if len(rest) == 1 {
			var keep []agentapi.SwitchInfo
			for _, s := range sl.Items {
				if s.Name == rest[0] {
					keep = append(keep, s)
				}
			}
			if keep == nil {
				return fmt.Errorf("%s: no switch %q", cmd, rest[0])
			}
			sl.Items = keep
		}
		if o.output == "json" {
			v = sl
		} else if cmd == "switches" {
			return printSwitches(w, sl)
		} else if cmd == "drops" {
			return printDrops(w, sl)
		} else {
			return printPorts(w, sl)
		}
	case "fdb":
		if len(rest) != 1 {
			return fmt.Errorf("fdb: want exactly one switch name")
		}
		var f *agentapi.FDB
		if f, err = c.FDB(ctx, rest[0]); err != nil {
			return fmt.Errorf("fdb %s: %w", rest[0], err)
		}
		if o.output == "json" {
			v = f
		} else {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MAC\tPORT\tSTATIC\tAGE")
			for _, e := range f.Entries {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%.1fs\n", e.MAC, e.Port, e.Static, e.AgeSeconds)
			}
			return tw.Flush()
		}
	case "peers":
		var pl *agentapi.PeerList
		if pl, err = c.Peers(ctx); err != nil {
			return fmt.Errorf("peers: %w", err)
		}
		if o.output == "json" {
			v = pl
		} else {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tADDRESSES\tPOD CIDRS\tMODE\tROUTES\tTX FRAMES\tTX BYTES\tRX FRAMES\tRX BYTES\tREASON")
			for _, p := range pl.Items {
				counters := "-\t-\t-\t-" // not counted (no nftables table: masquerading off)
				if c := p.Counters; c != nil {
					counters = fmt.Sprintf("%d\t%d\t%d\t%d", c.TxFrames, c.TxBytes, c.RxFrames, c.RxBytes)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.Name, strings.Join(p.Addresses, ","), strings.Join(p.PodCIDRs, ","), p.Mode, p.Routes, counters, p.Reason)
			}
			return tw.Flush()
		}
	case "attachments":
		var l *agentapi.AttachmentList
		if l, err = c.List(ctx); err != nil {
			return fmt.Errorf("list attachments: %w", err)
		}
		if o.output == "json" {
			v = l
		} else {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CONTAINER\tIFNAME\tSWITCH\tADDRESSES\tPORT\tUP")
			for _, a := range l.Items {
				var ips []string
				for _, ip := range a.IPs {
					ips = append(ips, ip.Address.String())
				}
				port, up := "-", false
				if a.Port != nil {
					port, up = a.Port.HostIfName, a.Port.Up
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", a.ContainerID, a.IfName, a.Switch, strings.Join(ips, ","), port, up)
			}
			return tw.Flush()
		}
	case "status":
		var st *agentapi.Status
		if st, err = c.Status(ctx); err != nil {
			return fmt.Errorf("status: %w", err)
		}
		if o.output == "json" {
			v = st
		} else {
			if st.Ready {
				fmt.Fprintf(w, "ready (agent %s, switches %s)\n", st.AgentVersion, strings.Join(st.Switches, ", "))
			} else {
				fmt.Fprintf(w, "not ready: %s\n", st.Reason)
			}
			return nil
		}
	default:
		return fmt.Errorf("unknown command %q: want switches, ports, drops, fdb, peers, attachments or status", cmd)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printSwitches(w io.Writer, sl *agentapi.SwitchList) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SWITCH\tKIND\tMTU\tPORTS\tIN-FRAMES\tOUT-FRAMES\tDROPPED")
	for _, s := range sl.Items {
		kind := "plain"
		if s.Offload {
			kind = "offload"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", s.Name, kind, s.MTU, len(s.Ports), s.Stats.InFrames, s.Stats.OutFrames, s.Stats.Dropped)
	}
	return tw.Flush()
}

func printPorts(w io.Writer, sl *agentapi.SwitchList) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tKIND\tBACKEND\tOWNER\tPOD\tACTIVE\tCAPTURES\tIN-FRAMES\tIN-BYTES\tOUT-FRAMES\tOUT-BYTES\tDROPPED\tSPOOFED\tSTORM\tSOCKET-FULL\tFAST-IN\tFAST-OUT")
	for _, s := range sl.Items {
		for _, p := range s.Ports {
			owner, pod := p.Owner, p.Pod
			if owner == "" {
				owner = "-"
			}
			if pod == "" {
				pod = "-"
			}
			// SPOOFED and STORM are the parts of DROPPED that port security refused:
			// anti-spoofing (every spoofed-* reason) and storm control. SOCKET-FULL is the
			// part the kernel dropped before the switch saw it (the pod sent faster than
			// the switch read the port's socket): IN-FRAMES does not count those frames,
			// and no capture or trace shows them.
			var spoofed uint64
			for r, n := range p.Stats.Drops {
				if strings.HasPrefix(r, "spoofed-") {
					spoofed += n
				}
			}
			// FAST-IN and FAST-OUT: the frames the kernel fast path moved from and to the
			// pod, which never crossed the switch ("-": the port is not on it).
			fastIn, fastOut := "-", "-"
			if f := p.FastPath; f != nil {
				fastIn, fastOut = strconv.FormatUint(f.InFrames, 10), strconv.FormatUint(f.OutFrames, 10)
			}
			// CAPTURES: valectl captures (GET /v1/capture) tapping the port now.
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", p.Name, p.Kind, p.Backend, owner, pod, p.Active, p.Captures,
				p.Stats.InFrames, p.Stats.InBytes, p.Stats.OutFrames, p.Stats.OutBytes, p.Stats.Dropped, spoofed, p.Stats.Drops["storm"], p.Stats.Drops["socket-full"], fastIn, fastOut)
		}
	}
	return tw.Flush()
}

// printDrops lists every port's drops by reason, one reason a line (socket-full: what the
// kernel dropped before the switch saw it).
func printDrops(w io.Writer, sl *agentapi.SwitchList) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tREASON\tFRAMES")
	for _, s := range sl.Items {
		for _, p := range s.Ports {
			for _, r := range slices.Sorted(maps.Keys(p.Stats.Drops)) {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", p.Name, r, p.Stats.Drops[r])
			}
		}
	}
	return tw.Flush()
}
