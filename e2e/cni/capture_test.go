package cni

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestValectlCapture captures a pod's port with valectl, named as the operator knows it
// (namespace/pod), while the pod pings another: the pcap file holds the echo requests and
// replies, packet by packet with the pods' addresses, read back with a pcap reader; an
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
	if err := cmd.Wait(); err != nil {
		t.Fatalf("valectl capture: %v\n%s", err, stderr.String())
	}
	var req, rep int
	for _, p := range readPcap(t, out) {
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if ip == nil || icmp == nil {
			continue
		}
		switch typ := icmp.TypeCode.Type(); {
		case typ == layers.ICMPv4TypeEchoRequest && ip.SrcIP.String() == ipA && ip.DstIP.String() == ipB:
			req++
		case typ == layers.ICMPv4TypeEchoReply && ip.SrcIP.String() == ipB && ip.DstIP.String() == ipA:
			rep++
		default:
			t.Errorf("unexpected ICMP %v %s → %s", icmp.TypeCode, ip.SrcIP, ip.DstIP)
		}
	}
	if req != 5 || rep != 5 {
		t.Fatalf("capture holds %d echo requests and %d replies, want 5 and 5", req, rep)
	}
	// A pod the node does not have.
	o, err := exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/nosuch", "-c", "1").CombinedOutput()
	if err == nil || !strings.Contains(string(o), "no port of pod default/nosuch") {
		t.Fatalf("capture of an unknown pod: %v: %s", err, o)
	}
	// Cut short by its duration with nothing to capture: a valid, empty pcap.
	o, err = exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/b", "-d", "rx", "-t", "500ms").Output()
	if err != nil {
		t.Fatalf("capture of an idle port: %v", err)
	}
	if _, err := pcapgo.NewReader(bytes.NewReader(o)); err != nil {
		t.Fatalf("the idle capture is no pcap file: %v", err)
	}
}

// readPcap reads every packet of a pcap file.
func readPcap(t *testing.T, path string) []gopacket.Packet {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("%s: link type %v, want Ethernet", path, r.LinkType())
	}
	var out []gopacket.Packet
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s after %d packets: %v", path, len(out), err)
		}
		if ci.CaptureLength != len(data) || ci.Length < ci.CaptureLength {
			t.Fatalf("packet %d: capture length %d, length %d, %d bytes", len(out), ci.CaptureLength, ci.Length, len(data))
		}
		out = append(out, gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default))
	}
}
