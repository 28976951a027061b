package cni

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestValectlCaptureOffload captures a pod's port on an offload switch while the pod sends
// 4 MiB over TCP to another: the pod's TSO super-frames (longer than the 1514 bytes of its
// MTU) are captured whole, as the pod sent them, without the port's virtio-net header. In
// tshark's reading each is inbound with frame.len = frame.cap_len = 14 + ip.len, and in the
// pcapng reader's each TCP payload is the stream's bytes at its sequence number. A second
// capture of the same transfer with -s 128 keeps 128 bytes of each super-frame and its
// length on the wire. A capture interrupted (SIGINT) in the middle of the super-frames
// leaves a file that ends with a whole packet.
func TestValectlCaptureOffload(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.73.0.0/24", offload: true})
	tshark := requireTshark(t)
	l := e.conflist("1.1.0")
	pa, pb := netnsutil.New(t), netnsutil.New(t)
	ipA, ipB := podIP(e.mustAdd(l, rt("a", pa))), podIP(e.mustAdd(l, rt("b", pb)))
	if err := ping(pa, ipB); err != nil {
		t.Fatal(err)
	}
	valectl := filepath.Join(e.bin, "valectl")
	dir := t.TempDir()
	whole, short := filepath.Join(dir, "whole.pcapng"), filepath.Join(dir, "short.pcapng")
	var cmds []*exec.Cmd
	var stderrs []*bytes.Buffer
	for _, args := range [][]string{{"-w", whole}, {"-s", "128", "-w", short}} {
		cmd := exec.Command(valectl, append([]string{"-socket", e.agent.socket, "capture", "default/a", "-t", "3s"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, stderrs = append(cmds, cmd), append(stderrs, &stderr)
	}
	waitCaptures(t, e, "default/a", 2, 2*time.Second)
	const port = 5301
	data := tcpSend(t, pa, pb, ipB, port, 4<<20)
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("valectl capture %v: %v\n%s", cmd.Args[4:], err, stderrs[i])
		}
	}

	fields := []string{"frame.len", "frame.cap_len", "frame.packet_flags_direction", "ip.src", "ip.dst", "ip.len", "tcp.dstport", "tcp.len"}
	sport := strconv.Itoa(port)
	for _, c := range []struct {
		file string
		snap int
	}{{whole, 0}, {short, 128}} {
		f, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		ts := startTshark(t, tshark, fields...)
		ts.in.Write(f)
		var super, longest, segs int
		for i, r := range ts.rows(t) {
			if r["ip.src"] != ipA || r["ip.dst"] != ipB || r["tcp.dstport"] != sport {
				continue
			}
			segs++
			n, _ := strconv.Atoi(r["frame.len"])
			capLen, _ := strconv.Atoi(r["frame.cap_len"])
			ipLen, _ := strconv.Atoi(r["ip.len"])
			wantCap := n
			if c.snap > 0 {
				wantCap = min(n, c.snap)
			}
			if n != 14+ipLen || capLen != wantCap || direction(r) != "inbound" {
				t.Errorf("%s, packet %d: frame.len %d, frame.cap_len %d, ip.len %d, direction %q; want frame.len = 14 + ip.len, frame.cap_len %d, inbound",
					filepath.Base(c.file), i+1, n, capLen, ipLen, direction(r), wantCap)
			}
			if n > 1514 {
				super++
				longest = max(longest, n)
			}
		}
		t.Logf("%s: %d TCP segments from the pod, %d super-frames, the longest %d bytes", filepath.Base(c.file), segs, super, longest)
		if super == 0 {
			t.Errorf("%s: no frame longer than 1514 bytes among the pod's %d TCP segments: the offload switch passed no TSO super-frame whole", filepath.Base(c.file), segs)
		}
	}

	// The bytes themselves: each segment's payload is the stream's at its sequence number.
	var isn uint32
	var synSeen bool
	var checked, superChecked int
	for i, p := range readPcapng(t, whole) {
		ip, _ := p.pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip == nil || tcp == nil || ip.SrcIP.String() != ipA || int(tcp.DstPort) != port {
			continue
		}
		if tcp.SYN {
			isn, synSeen = tcp.Seq, true
			continue
		}
		if len(tcp.Payload) == 0 {
			continue
		}
		if !synSeen {
			t.Fatalf("packet %d: payload before the SYN was captured", i+1)
		}
		off := int(tcp.Seq - isn - 1)
		if off < 0 || off+len(tcp.Payload) > len(data) || !bytes.Equal(tcp.Payload, data[off:off+len(tcp.Payload)]) {
			t.Fatalf("packet %d (%d bytes): %d bytes of TCP payload at stream offset %d differ from what the pod sent", i+1, p.length, len(tcp.Payload), off)
		}
		checked += len(tcp.Payload)
		if p.length > 1514 {
			superChecked++
		}
	}
	t.Logf("%d bytes of the stream checked, %d super-frames among them", checked, superChecked)
	if superChecked == 0 {
		t.Fatal("no super-frame's payload checked")
	}

	// Ctrl-C in the middle of a stream of super-frames, each of which valectl reads in
	// several parts: the file still ends with a whole packet, for tshark and the pcapng
	// reader alike. (Cut anywhere, it ended inside a frame nine times out of ten.)
	for i := range 2 {
		out := filepath.Join(dir, "sigint-"+strconv.Itoa(i)+".pcapng")
		cmd := exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/a", "-w", out)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitCaptures(t, e, "default/a", 1, 2*time.Second)
		interrupted := make(chan struct{})
		go func() { // once 4 MiB are written, while the transfer goes on
			defer close(interrupted)
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if st, err := os.Stat(out); err == nil && st.Size() > 4<<20 {
					break
				}
			}
			cmd.Process.Signal(os.Interrupt)
		}()
		tcpSend(t, pa, pb, ipB, port+1+i, 32<<20)
		<-interrupted
		if err := cmd.Wait(); err != nil {
			t.Fatalf("valectl after SIGINT: %v\n%s", err, stderr.String())
		}
		ts := startTshark(t, tshark, "frame.len")
		f, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		ts.in.Write(f)
		rows := ts.rows(t) // fails on a file cut inside a packet
		if pkts := readPcapng(t, out); len(pkts) != len(rows) || len(rows) == 0 {
			t.Fatalf("file cut by SIGINT: tshark read %d packets, the pcapng reader %d", len(rows), len(pkts))
		}
		t.Logf("cut by SIGINT after %d bytes: %d packets", len(f), len(rows))
	}
}

// tcpSend sends n random bytes from one pod to another over TCP (the receiver listening
// in to on port) and returns them once the receiver has them all.
func tcpSend(t *testing.T, from, to *netnsutil.NS, toIP string, port, n int) []byte {
	t.Helper()
	addr := net.JoinHostPort(toIP, strconv.Itoa(port))
	var ln net.Listener
	if err := to.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 73))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var c net.Conn
	if err := from.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatalf("send to %s: %v", addr, err)
	}
	c.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, data) {
			t.Fatalf("TCP transfer to %s: %d of %d bytes arrived intact", addr, len(b), n)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("TCP transfer to %s: the receiver did not finish", addr)
	}
	return data
}
