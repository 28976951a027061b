package cni

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestValectlCapture captures a pod's port with valectl, named as the operator knows it
// (namespace/pod), while the pod pings another and then pings from a second address: the
// pcapng file holds the echo requests (inbound) and replies (outbound), packet by packet
// with the pods' addresses, and the spoofed requests with the comment "dropped:
// spoofed-ip", read back with a pcapng reader; an
// unknown pod is a clear error; and a capture of an idle port that its duration ends is a
// valid, empty pcap on standard output. (dataplane's TestCapture checks that a capture's
// end removes its tap.)
func TestValectlCapture(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.72.0.0/24"})
	l := e.conflist("1.0.0")
	pa, pb := netnsutil.New(t), netnsutil.New(t)
	resA := e.mustAdd(l, rt("a", pa))
	resB := e.mustAdd(l, rt("b", pb))
	ipA, ipB := podIP(resA), podIP(resB)
	if err := ping(pa, ipB); err != nil { // neighbours resolved before the capture
		t.Fatal(err)
	}
	valectl := filepath.Join(e.bin, "valectl")
	out := filepath.Join(t.TempDir(), "a.pcap")
	cmd := exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/a", "-t", "3s", "-w", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the tap is in place
	if o, err := pa.Exec("ping", "-c", "5", "-i", "0.2", "-W", "2", ipB); err != nil {
		t.Fatalf("ping: %v\n%s", err, o)
	}
	// A second address in the pod: anti-spoofing drops its pings, and the capture says so.
	if o, err := pa.Exec("ip", "addr", "add", "10.72.0.250/24", "dev", "eth0"); err != nil {
		t.Fatalf("second address: %v\n%s", err, o)
	}
	pa.Exec("ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "10.72.0.250", ipB)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("valectl capture: %v\n%s", err, stderr.String())
	}
	var req, rep, spoofed int
	for _, p := range readPcapng(t, out) {
		ip, _ := p.pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		icmp, _ := p.pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if ip == nil || icmp == nil {
			continue
		}
		typ, src, dst := icmp.TypeCode.Type(), ip.SrcIP.String(), ip.DstIP.String()
		switch {
		case typ == layers.ICMPv4TypeEchoRequest && src == "10.72.0.250" && dst == ipB:
			if p.dir != pcapgo.NgEpbFlagDirectionInbound || !slices.Equal(p.comments, []string{"dropped: spoofed-ip"}) {
				t.Errorf("spoofed echo request: direction %v, comments %q; want inbound, dropped: spoofed-ip", p.dir, p.comments)
			}
			spoofed++
		case typ == layers.ICMPv4TypeEchoRequest && src == ipA && dst == ipB && p.dir == pcapgo.NgEpbFlagDirectionInbound && len(p.comments) == 0:
			req++
		case typ == layers.ICMPv4TypeEchoReply && src == ipB && dst == ipA && p.dir == pcapgo.NgEpbFlagDirectionOutbound && len(p.comments) == 0:
			rep++
		default:
			t.Errorf("unexpected ICMP %v %s → %s, direction %v, comments %q", icmp.TypeCode, src, dst, p.dir, p.comments)
		}
	}
	if req != 5 || rep != 5 || spoofed != 2 {
		t.Fatalf("capture holds %d echo requests, %d replies and %d spoofed requests; want 5, 5 and 2", req, rep, spoofed)
	}
	// A pod the node does not have.
	o, err := exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/nosuch", "-c", "1").CombinedOutput()
	if err == nil || !strings.Contains(string(o), "no port of pod default/nosuch") {
		t.Fatalf("capture of an unknown pod: %v: %s", err, o)
	}
	// Cut short by its duration with nothing to capture: a valid, empty pcap.
	o, err = exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/b", "-d", "rx", "-t", "500ms", "-F", "pcap").Output()
	if err != nil {
		t.Fatalf("capture of an idle port: %v", err)
	}
	if _, err := pcapgo.NewReader(bytes.NewReader(o)); err != nil {
		t.Fatalf("the idle capture is no pcap file: %v", err)
	}
}

// ngPacket is a packet of a pcapng file with its direction and comments.
type ngPacket struct {
	pkt      gopacket.Packet
	dir      pcapgo.NgEpbFlag
	comments []string
}

// readPcapng reads every packet of a pcapng file.
func readPcapng(t *testing.T, path string) []ngPacket {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("%s: link type %v, want Ethernet", path, r.LinkType())
	}
	var out []ngPacket
	for {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s after %d packets: %v", path, len(out), err)
		}
		if ci.CaptureLength != len(data) || ci.Length < ci.CaptureLength {
			t.Fatalf("packet %d: capture length %d, length %d, %d bytes", len(out), ci.CaptureLength, ci.Length, len(data))
		}
		p := ngPacket{pkt: gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default), comments: opts.Comments}
		if opts.Flags != nil {
			p.dir = opts.Flags.Direction
		}
		out = append(out, p)
	}
}
