package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/pcapfilter"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// captureUsage is the capture command's synopsis.
const captureUsage = "capture <switch:port | namespace/pod[:ifname]> [-d rx|tx|both] [-c count] [-t duration] [-s snaplen] [-F pcapng|pcap] [-w file|-] [filter expression]"

// runCapture is "valectl capture": the port's frames as pcapng (or pcap) into -w (stdout by default)
// until -c frames, -t time or ctx (Ctrl-C) ends it, of the frames a filter expression after
// the flags selects (tcpdump's syntax, pkg/pcapfilter's subset). A pod is named as
// namespace/name, with :ifname when it has several interfaces. Whatever ends it, the output ends with a whole
// packet; an end that is neither its count, its duration nor ctx (the agent stopped or
// went away) is an error. A reader of standard output that goes away ends valectl at its
// next write, of SIGPIPE, as any filter.
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
	// What follows the flags is a filter, in tcpdump's syntax (and place).
	filter := strings.Join(fs.Args(), " ")
	if _, err := pcapfilter.Compile(filter); err != nil {
		return fmt.Errorf("capture: filter: %w", err)
	}
	c := agentapi.NewClient(o.socket, 0)
	defer c.Close()
	port, err := resolvePort(ctx, c, target)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	w := stdout
	var f *os.File
	if *out != "-" {
		if f, err = os.Create(*out); err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		defer f.Close()
		w = f
	}
	req := &agentapi.CaptureRequest{Port: port, Direction: *dir, Count: *count, Duration: *dur, SnapLen: *snap, Format: *format, Filter: filter}
	bw := &blockWriter{w: w}
	start := time.Now()
	err = c.Capture(ctx, req, bw)
	switch {
	case bw.err != nil:
		return fmt.Errorf("capture %s: after %d packets: %w", port, bw.packets, bw.err)
	case ctx.Err() != nil:
		// Ctrl-C or SIGTERM: the capture ends here, and the file with the last whole packet;
		// ended before the agent's first byte (the tap was still being put in place), it is
		// still a file that readers take, with no packets.
		if !bw.wrote {
			if err := emptyCapture(w, *format, *snap); err != nil {
				return fmt.Errorf("capture %s: %w", port, err)
			}
		}
	case err != nil:
		return fmt.Errorf("capture %s: after %d packets: %w", port, bw.packets, err)
	case (*count == 0 || bw.packets < *count) && (*dur == 0 || time.Since(start) < *dur):
		// Only the agent ends a capture before its count and its duration: it stopped.
		return fmt.Errorf("capture %s: the agent ended the capture after %d packets, before its count or duration (stopped or restarted?)", port, bw.packets)
	}
	if f != nil {
		if err := f.Close(); err != nil {
			return fmt.Errorf("capture %s: %w", port, err)
		}
	}
	return nil
}

// emptyCapture writes a capture file with no packets in format ("pcapng" or "pcap"), with
// the header the agent's would have had (Ethernet; nanoseconds in pcapng).
func emptyCapture(w io.Writer, format string, snap int) error {
	if snap <= 0 {
		snap = 262144 // tcpdump's default
	}
	if format == "pcap" {
		return pcapgo.NewWriter(w).WriteFileHeader(uint32(snap), layers.LinkTypeEthernet)
	}
	nw, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{Name: "epair", LinkType: layers.LinkTypeEthernet,
		SnapLength: uint32(snap), TimestampResolution: 9}, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		return err
	}
	return nw.Flush()
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

// blockWriter passes a pcapng stream to w in whole blocks, and a pcap stream in whole
// records, counting the packets: a capture cut short (Ctrl-C, the agent gone) in the
// middle of a frame (a 64 KiB super-frame arrives in several reads) leaves a file that
// ends with the last whole packet, which readers take, rather than with part of one, which
// they refuse. A stream it cannot parse is passed on as it comes.
type blockWriter struct {
	w       io.Writer
	err     error // w's first error
	buf     []byte
	ng      bool             // pcapng, else pcap once order is known
	order   binary.ByteOrder // of the pcap file, or of the pcapng section
	pcapHdr bool             // the pcap file header is next
	raw     bool             // not parsed: passed on as it comes
	packets int
	wrote   bool // something reached w
}

func (b *blockWriter) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	b.buf = append(b.buf, p...)
	n := b.whole()
	if n > 0 {
		if _, err := b.w.Write(b.buf[:n]); err != nil {
			b.err = err
			return 0, err
		}
		b.wrote = true
		b.buf = b.buf[:copy(b.buf, b.buf[n:])]
	}
	return len(p), nil
}

// Block types, magic numbers and lengths of pcapng and pcap.
const (
	ngSectionHeader  = 0x0a0d0d0a // reads the same in either byte order
	ngByteOrderMagic = 0x1a2b3c4d
	ngPacket         = 2 // the obsolete Packet Block
	ngSimplePacket   = 3
	ngEnhancedPacket = 6
	ngMinBlockLen    = 12 // type, length, length
	pcapMagic        = 0xa1b2c3d4
	pcapMagicNano    = 0xa1b23c4d
	pcapHeaderLen    = 24
	pcapRecordHdrLen = 16
	maxCaptureRecord = 1 << 20 // beyond any frame (64 KiB) with its options: not a capture
)

// whole is how many bytes at the start of b.buf are whole blocks (records), all of them
// once the stream turned out to be neither pcapng nor pcap.
func (b *blockWriter) whole() int {
	off := 0
	for !b.raw {
		n, packet := b.next(b.buf[off:])
		if n == 0 && !b.raw {
			return off
		}
		off += n
		if packet {
			b.packets++
		}
	}
	return len(b.buf)
}

// next is the length of the block, record or file header that rest starts with, 0 while
// it is incomplete or when rest is no capture stream (b.raw).
func (b *blockWriter) next(rest []byte) (n int, packet bool) {
	if len(rest) < 4 {
		return 0, false
	}
	if !b.ng && b.order == nil {
		switch le, be := binary.LittleEndian.Uint32(rest), binary.BigEndian.Uint32(rest); {
		case le == ngSectionHeader:
			b.ng = true
		case le == pcapMagic || le == pcapMagicNano:
			b.order, b.pcapHdr = binary.LittleEndian, true
		case be == pcapMagic || be == pcapMagicNano:
			b.order, b.pcapHdr = binary.BigEndian, true
		default:
			b.raw = true
			return 0, false
		}
	}
	if !b.ng {
		if b.pcapHdr {
			if len(rest) < pcapHeaderLen {
				return 0, false
			}
			b.pcapHdr = false
			return pcapHeaderLen, false
		}
		if len(rest) < pcapRecordHdrLen {
			return 0, false
		}
		incl := b.order.Uint32(rest[8:])
		if incl > maxCaptureRecord {
			b.raw = true
			return 0, false
		}
		if n = pcapRecordHdrLen + int(incl); len(rest) < n {
			return 0, false
		}
		return n, true
	}
	if len(rest) < ngMinBlockLen {
		return 0, false
	}
	typ := binary.LittleEndian.Uint32(rest)
	if typ == ngSectionHeader { // a new section may change the byte order
		switch uint32(ngByteOrderMagic) {
		case binary.LittleEndian.Uint32(rest[8:]):
			b.order = binary.LittleEndian
		case binary.BigEndian.Uint32(rest[8:]):
			b.order = binary.BigEndian
		default:
			b.raw = true
			return 0, false
		}
	} else {
		typ = b.order.Uint32(rest)
	}
	l := b.order.Uint32(rest[4:])
	if l < ngMinBlockLen || l%4 != 0 || l > maxCaptureRecord {
		b.raw = true
		return 0, false
	}
	if n = int(l); len(rest) < n {
		return 0, false
	}
	return n, typ == ngEnhancedPacket || typ == ngSimplePacket || typ == ngPacket
}
