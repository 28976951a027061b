package cni

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestValectlCapture captures a pod's port with valectl, named as the operator knows it
// (namespace/pod), while the pod pings another and then pings from a second address. The
// pcapng stream on standard output is read twice, by a pcapng reader and by tshark fed
// through a pipe, and both see the same packets: the echo requests (inbound) and replies
// (outbound) with the pods' MAC and IP addresses, whole, and the spoofed requests with the
// comment "dropped: spoofed-ip". A -F pcap capture is read by tshark too. An unknown pod
// is a clear error, and a capture of an idle port that its duration ends is a valid pcap
// file on standard output. (dataplane's TestCapture checks that a capture's end removes
// its tap; TestValectlCaptureEnds that the agent's count of captures goes back to 0
// however a capture ends.)
func TestValectlCapture(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.72.0.0/24"})
	tshark := requireTshark(t)
	l := e.conflist("1.0.0")
	pa, pb := netnsutil.New(t), netnsutil.New(t)
	resA := e.mustAdd(l, rt("a", pa))
	resB := e.mustAdd(l, rt("b", pb))
	ipA, ipB := podIP(resA), podIP(resB)
	macA, macB := podMAC(t, resA), podMAC(t, resB)
	if err := ping(pa, ipB); err != nil { // neighbours resolved before the capture
		t.Fatal(err)
	}
	valectl := filepath.Join(e.bin, "valectl")
	out := filepath.Join(t.TempDir(), "a.pcapng")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts := startTshark(t, tshark, icmpFields...)
	cmd := exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/a", "-t", "3s", "-w", "-")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(f, ts.in), &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitCaptures(t, e, "default/a", 1, 2*time.Second) // the tap is in place
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
	rows := ts.rows(t)
	pkts := readPcapng(t, out)
	var req, rep, spoofed int
	for _, p := range pkts {
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

	// tshark's reading, on its own: the same echoes, now with their Ethernet addresses too.
	want := map[echoRow]int{
		{"inbound", macA, macB, ipA, ipB, "8", ""}:                              5,
		{"outbound", macB, macA, ipB, ipA, "0", ""}:                             5,
		{"inbound", macA, macB, "10.72.0.250", ipB, "8", "dropped: spoofed-ip"}: 2,
	}
	got := map[echoRow]int{}
	for i, r := range rows {
		if r["frame.len"] != r["frame.cap_len"] || r["frame.len"] == "" {
			t.Errorf("tshark packet %d: frame.len %s, frame.cap_len %s; want the whole frame", i+1, r["frame.len"], r["frame.cap_len"])
		}
		if r["icmp.type"] != "" {
			got[echoOf(r)]++
			if r["frame.len"] != "98" {
				t.Errorf("tshark packet %d (%v): frame.len %s, want 98", i+1, r, r["frame.len"])
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("tshark read the echoes\n%v\nwant\n%v", got, want)
	}
	// Packet by packet, tshark and the pcapng reader agree.
	if len(rows) != len(pkts) {
		t.Fatalf("tshark read %d packets, the pcapng reader %d", len(rows), len(pkts))
	}
	for i, p := range pkts {
		r, dir := rows[i], map[pcapgo.NgEpbFlag]string{pcapgo.NgEpbFlagDirectionInbound: "inbound", pcapgo.NgEpbFlagDirectionOutbound: "outbound"}[p.dir]
		if r["frame.len"] != strconv.Itoa(p.length) || direction(r) != dir || r["frame.comment"] != strings.Join(p.comments, ";") {
			t.Errorf("packet %d: tshark has length %s, direction %q, comment %q; the pcapng reader %d, %q, %q",
				i+1, r["frame.len"], direction(r), r["frame.comment"], p.length, dir, p.comments)
		}
	}
	t.Logf("pcapng: %d packets, the same for tshark and the pcapng reader", len(rows))

	// A classic pcap file: the same echoes, without directions or comments (the pods and
	// the host port may add IPv6 neighbour discovery, hence a duration rather than a count).
	ts = startTshark(t, tshark, icmpFields...)
	cmd = exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/a", "-F", "pcap", "-t", "1500ms", "-w", "-")
	stderr.Reset()
	cmd.Stdout, cmd.Stderr = ts.in, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitCaptures(t, e, "default/a", 1, 2*time.Second)
	if o, err := pa.Exec("ping", "-c", "2", "-i", "0.2", "-W", "1", ipB); err != nil {
		t.Fatalf("ping: %v\n%s", err, o)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("valectl capture -F pcap: %v\n%s", err, stderr.String())
	}
	rows = ts.rows(t)
	want = map[echoRow]int{{"", macA, macB, ipA, ipB, "8", ""}: 2, {"", macB, macA, ipB, ipA, "0", ""}: 2}
	got = map[echoRow]int{}
	for i, r := range rows {
		if r["frame.len"] != r["frame.cap_len"] || r["frame.packet_flags_direction"] != "" || r["frame.comment"] != "" {
			t.Errorf("tshark pcap packet %d: %v; want it whole, without direction or comment", i+1, r)
		}
		if r["icmp.type"] != "" && r["frame.len"] == "98" {
			got[echoOf(r)]++
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("tshark read %d packets of the pcap capture, echoes %v; want %v", len(rows), got, want)
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
	pr, err := pcapgo.NewReader(bytes.NewReader(o))
	if err != nil {
		t.Fatalf("the idle capture is no pcap file: %v", err)
	}
	n := 0 // none, or a stray IPv6 neighbour discovery frame
	for ; ; n++ {
		_, _, err := pr.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the idle capture after %d packets: %v", n, err)
		}
	}
	ts = startTshark(t, tshark, icmpFields...)
	ts.in.Write(o)
	if rows := ts.rows(t); len(rows) != n {
		t.Fatalf("tshark read %d packets from the idle capture, the pcap reader %d", len(rows), n)
	}
}

// icmpFields are the tshark fields TestValectlCapture reads: lengths, the pcapng
// direction, addresses, ICMP type and the pcapng packet comments (tshark 4.0, as
// `tshark -G fields` lists them: frame.comment; pkt_comment is a protocol there).
var icmpFields = []string{"frame.len", "frame.cap_len", "frame.packet_flags_direction", "eth.src", "eth.dst", "ip.src", "ip.dst", "icmp.type", "frame.comment"}

// echoRow is an ICMP echo as tshark shows it.
type echoRow struct{ dir, ethSrc, ethDst, ipSrc, ipDst, icmpType, comment string }

func echoOf(r map[string]string) echoRow {
	return echoRow{direction(r), r["eth.src"], r["eth.dst"], r["ip.src"], r["ip.dst"], r["icmp.type"], r["frame.comment"]}
}

// direction is the packet's pcapng direction as tshark shows it (frame.packet_flags_direction,
// 0x00000001 inbound and 0x00000002 outbound in tshark 4.0), "" when the file has none
// (pcap).
func direction(r map[string]string) string {
	switch r["frame.packet_flags_direction"] {
	case "":
		return ""
	case "0x00000001", "0x1", "1":
		return "inbound"
	case "0x00000002", "0x2", "2":
		return "outbound"
	}
	return "direction " + r["frame.packet_flags_direction"]
}

// requireTshark is tshark's path. hack/deps.sh installs it for the test command (root);
// without root it may be missing, and the test is skipped.
func requireTshark(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("tshark")
	switch {
	case err == nil:
		return p
	case os.Geteuid() != 0:
		t.Skip("skipping: tshark not found on PATH (apt-get install tshark, or hack/deps.sh's epair_deps test as root)")
	}
	t.Fatal("tshark not found on PATH: the test command installs it (. hack/deps.sh; epair_deps test), or apt-get install tshark")
	return ""
}

// tsharkRun is tshark reading a capture file from its standard input, in, and printing
// the fields of each packet.
type tsharkRun struct {
	cmd         *exec.Cmd
	in          io.WriteCloser
	fields      []string
	out, stderr bytes.Buffer
}

func startTshark(t *testing.T, path string, fields ...string) *tsharkRun {
	t.Helper()
	// -n: no name resolution; the comment last, as it may hold the separator.
	args := []string{"-n", "-r", "-", "-T", "fields", "-E", "separator=,", "-E", "aggregator=;", "-E", "quote=n"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	r := &tsharkRun{cmd: exec.Command(path, args...), fields: fields}
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.stderr
	var err error
	if r.in, err = r.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.in.Close(); r.cmd.Wait() })
	return r
}

// rows ends tshark's input, waits for it and returns each packet's fields by name ("" for
// a field the packet has not).
func (r *tsharkRun) rows(t *testing.T) []map[string]string {
	t.Helper()
	r.in.Close()
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("tshark: %v\n%s", err, r.stderr.String())
	}
	var out []map[string]string
	for line := range strings.Lines(r.out.String()) {
		vals := strings.SplitN(strings.TrimSuffix(line, "\n"), ",", len(r.fields))
		if len(vals) != len(r.fields) {
			t.Fatalf("tshark line %q: %d fields, want %d", line, len(vals), len(r.fields))
		}
		m := make(map[string]string, len(vals))
		for i, f := range r.fields {
			m[f] = vals[i]
		}
		out = append(out, m)
	}
	return out
}

// podMAC is the pod interface's MAC in an ADD result.
func podMAC(t *testing.T, res *current.Result) string {
	t.Helper()
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox != "" {
			return ifc.Mac
		}
	}
	t.Fatalf("no pod interface in the ADD result %+v", res)
	return ""
}

// portCaptures is the number of captures the agent counts on the pod's port.
func portCaptures(t *testing.T, e *env, pod string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sl, err := e.agent.client.Switches(ctx)
	if err != nil {
		t.Fatalf("list ports: %v", err)
	}
	for _, s := range sl.Items {
		for _, p := range s.Ports {
			if p.Pod == pod {
				return p.Captures
			}
		}
	}
	t.Fatalf("the agent has no port of pod %s", pod)
	return 0
}

// column is one column of valectl's ports table by the ports' POD column.
func column(t *testing.T, table, name string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(table), "\n")
	head := strings.Fields(lines[0])
	col, pod := slices.Index(head, name), slices.Index(head, "POD")
	if col < 0 || pod < 0 {
		t.Fatalf("no %s or POD column in\n%s", name, table)
	}
	out := map[string]string{}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) == len(head) {
			out[f[pod]] = f[col]
		}
	}
	return out
}

// waitCaptures waits until the agent counts n captures on the pod's port, at most within.
func waitCaptures(t *testing.T, e *env, pod string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := portCaptures(t, e, pod)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent counts %d captures of %s's port after %v, want %d", got, pod, within, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ngPacket is a packet of a pcapng file with its direction and comments.
type ngPacket struct {
	pkt      gopacket.Packet
	length   int // on the wire
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
		p := ngPacket{pkt: gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default), length: ci.Length, comments: opts.Comments}
		if opts.Flags != nil {
			p.dir = opts.Flags.Direction
		}
		out = append(out, p)
	}
}

// TestValectlCaptureEnds: however a capture ends, the agent keeps no tap behind (its port's
// count of captures is back to 0 within 2 s) and valectl ends promptly.
//   - Ctrl-C (SIGINT) of a capture without a limit while frames flow: valectl exits 0,
//     quietly, and the file it wrote is a valid pcapng file with the frames; on an idle
//     port valectl exits 0 as well.
//   - The reader goes away mid-stream (valectl -w - | head -c 200) while the pod pings:
//     valectl ends at its next write, of SIGPIPE (status 141) as a Unix filter does, and
//     says nothing.
//   - valectl killed (SIGKILL) on an idle port: the agent notices that the connection went
//     away though it has nothing to write to it.
//   - The agent killed and started again under a capture: valectl exits 1 with an error
//     that names the agent, the file it wrote is valid up to the last whole packet, and
//     the new agent counts no capture.
func TestValectlCaptureEnds(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.74.0.0/24"})
	l := e.conflist("1.1.0")
	pa, pb, pc := netnsutil.New(t), netnsutil.New(t), netnsutil.New(t)
	e.mustAdd(l, rt("a", pa))
	ipB := podIP(e.mustAdd(l, rt("b", pb)))
	e.mustAdd(l, rt("idle", pc)) // nothing pings it
	if err := ping(pa, ipB); err != nil {
		t.Fatal(err)
	}
	valectl := filepath.Join(e.bin, "valectl")
	// capture starts valectl capture and waits for the agent to count it.
	capture := func(pod string, args ...string) (*exec.Cmd, *bytes.Buffer) {
		t.Helper()
		cmd := exec.Command(valectl, append([]string{"-socket", e.agent.socket, "capture", pod}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitCaptures(t, e, pod, 1, 2*time.Second)
		// The agent counts the capture as its tap goes in, just before it sends the
		// file's header: wait for valectl to have written it, so that a signal sent now
		// finds a valid (if empty) file to end.
		if i := slices.Index(args, "-w"); i >= 0 && i+1 < len(args) && args[i+1] != "-" {
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(2 * time.Millisecond) {
				if st, err := os.Stat(args[i+1]); err == nil && st.Size() > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("valectl wrote no file header to %s within 2 s", args[i+1])
				}
			}
		}
		return cmd, &stderr
	}
	// wait waits at most within for cmd and returns how long it took.
	wait := func(cmd *exec.Cmd, within time.Duration) (time.Duration, error) {
		t.Helper()
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return time.Since(start), err
		case <-time.After(within):
			cmd.Process.Kill()
			<-done
			t.Fatalf("%v still running %v after it should have ended", cmd.Args, within)
		}
		return 0, nil
	}
	pingAB := func(n int) {
		t.Helper()
		if o, err := pa.Exec("ping", "-c", strconv.Itoa(n), "-i", "0.2", "-W", "2", ipB); err != nil {
			t.Fatalf("ping: %v\n%s", err, o)
		}
		time.Sleep(100 * time.Millisecond) // the last reply through valectl
	}
	echoes := func(path string) int {
		t.Helper()
		n := 0
		for _, p := range readPcapng(t, path) {
			if p.pkt.Layer(layers.LayerTypeICMPv4) != nil {
				n++
			}
		}
		return n
	}

	// Ctrl-C.
	out := filepath.Join(t.TempDir(), "sigint.pcapng")
	cmd, stderr := capture("default/a", "-w", out)
	pingAB(3)
	// valectl ports shows it too.
	table, err := exec.Command(valectl, "-socket", e.agent.socket, "ports", "vale0").CombinedOutput()
	if err != nil {
		t.Fatalf("valectl ports: %v\n%s", err, table)
	}
	if got := column(t, string(table), "CAPTURES"); got["default/a"] != "1" || got["default/idle"] != "0" {
		t.Fatalf("valectl ports, CAPTURES by pod: %v; want 1 for default/a and 0 for default/idle\n%s", got, table)
	}
	cmd.Process.Signal(os.Interrupt)
	took, err := wait(cmd, 5*time.Second)
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("valectl after SIGINT: %v\n%s", err, stderr)
	}
	if n := echoes(out); n != 6 {
		t.Fatalf("the pcapng file valectl wrote until SIGINT holds %d ICMP packets, want 6", n)
	}
	waitCaptures(t, e, "default/a", 0, 2*time.Second)
	t.Logf("SIGINT: valectl exited 0 after %v", took)
	idle := filepath.Join(t.TempDir(), "idle.pcapng")
	cmd, stderr = capture("default/idle", "-w", idle)
	cmd.Process.Signal(os.Interrupt)
	if _, err := wait(cmd, 5*time.Second); err != nil || stderr.Len() > 0 {
		t.Fatalf("valectl on an idle port after SIGINT: %v\n%s", err, stderr)
	}
	if n := echoes(idle); n != 0 {
		t.Fatalf("idle: %d", n)
	}
	waitCaptures(t, e, "default/idle", 0, 2*time.Second)

	// The reader goes away mid-stream.
	pinging := exec.Command("ip", "netns", "exec", pa.Name, "ping", "-i", "0.05", "-W", "1", ipB)
	if err := pinging.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pinging.Process.Kill(); pinging.Wait() }()
	errFile := filepath.Join(t.TempDir(), "stderr")
	sh := exec.Command("bash", "-c", `"$0" -socket "$1" capture default/a -w - 2>"$2" | head -c 200 >/dev/null; echo "${PIPESTATUS[0]}"`,
		valectl, e.agent.socket, errFile)
	var status bytes.Buffer
	sh.Stdout = &status
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	if took, err = wait(sh, 5*time.Second); err != nil {
		t.Fatalf("valectl | head: %v", err)
	}
	if msg, _ := os.ReadFile(errFile); strings.TrimSpace(status.String()) != "141" || len(msg) > 0 {
		t.Fatalf("valectl -w - | head -c 200: valectl's status %s, want 141 (SIGPIPE); stderr %q", strings.TrimSpace(status.String()), msg)
	}
	waitCaptures(t, e, "default/a", 0, 2*time.Second)
	t.Logf("valectl | head -c 200: valectl ended of SIGPIPE after %v", took)
	pinging.Process.Kill()
	pinging.Wait()

	// valectl killed on an idle port.
	cmd, _ = capture("default/idle", "-w", "-")
	cmd.Process.Kill()
	cmd.Wait()
	waitCaptures(t, e, "default/idle", 0, 2*time.Second)

	// The agent killed and started again.
	out = filepath.Join(t.TempDir(), "restart.pcapng")
	cmd, stderr = capture("default/a", "-w", out)
	pingAB(2)
	e.agent.kill9()
	took, err = wait(cmd, 5*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "agent") {
		t.Fatalf("valectl when the agent was killed: %v: %s; want exit status 1 and an error naming the agent", err, stderr)
	}
	t.Logf("agent killed: valectl exited after %v: %s", took, strings.TrimSpace(stderr.String()))
	if n := echoes(out); n != 4 {
		t.Fatalf("the pcapng file valectl wrote until the agent was killed holds %d ICMP packets, want 4", n)
	}
	e.agent.start()
	if n := portCaptures(t, e, "default/a"); n != 0 {
		t.Fatalf("the restarted agent counts %d captures, want 0", n)
	}

	// The agent stopped gracefully and started again.
	out = filepath.Join(t.TempDir(), "graceful.pcapng")
	cmd, stderr = capture("default/a", "-w", out)
	pingAB(2)
	start := time.Now()
	e.agent.signal(syscall.SIGTERM)
	if stopped := time.Since(start); stopped > 2*time.Second {
		t.Errorf("the agent took %v to stop under a capture", stopped)
	}
	took, err = wait(cmd, 5*time.Second)
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "the agent ended the capture") {
		t.Fatalf("valectl when the agent stopped: %v: %s", err, stderr)
	}
	t.Logf("agent stopped: valectl exited after %v: %s", took, strings.TrimSpace(stderr.String()))
	if n := echoes(out); n != 4 {
		t.Fatalf("graceful: %d ICMP packets, want 4", n)
	}
	e.agent.start()
	if n := portCaptures(t, e, "default/a"); n != 0 {
		t.Fatalf("the restarted agent counts %d captures, want 0", n)
	}
}

// TestValectlCaptureFilter captures with tcpdump filter expressions while pod a pings pod b
// and sends it UDP datagrams: "icmp and dst host <b>" keeps exactly the echo requests (read
// back with tshark: every packet an ICMP echo request to b, as many as were sent), "udp
// dst port 7777" exactly the datagrams; a bad expression is refused before anything is
// written, naming the word.
func TestValectlCaptureFilter(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.74.0.0/24"})
	tshark := requireTshark(t)
	l := e.conflist("1.0.0")
	pa, pb := netnsutil.New(t), netnsutil.New(t)
	ipA := podIP(e.mustAdd(l, rt("a", pa)))
	ipB := podIP(e.mustAdd(l, rt("b", pb)))
	if err := ping(pa, ipB); err != nil {
		t.Fatal(err)
	}
	valectl := filepath.Join(e.bin, "valectl")
	fields := []string{"ip.src", "ip.dst", "icmp.type", "udp.dstport"}
	for _, tc := range []struct {
		filter []string
		want   string // what every packet must be
		n      int
	}{
		{[]string{"icmp", "and", "dst", "host", ipB}, ipA + "," + ipB + ",8,", 5},
		{[]string{"udp dst port 7777"}, ipA + "," + ipB + ",,7777", 4},
	} {
		ts := startTshark(t, tshark, fields...)
		args := append([]string{"-socket", e.agent.socket, "capture", "default/a", "-t", "2500ms", "-w", "-"}, tc.filter...)
		cmd := exec.Command(valectl, args...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = ts.in, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitCaptures(t, e, "default/a", 1, 2*time.Second)
		if o, err := pa.Exec("ping", "-c", "5", "-i", "0.1", "-W", "2", ipB); err != nil {
			t.Fatalf("ping: %v\n%s", err, o)
		}
		if o, err := pa.Exec("python3", "-c", "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor p in (7777,7777,7777,7777,7778,53):\n  s.sendto(b'x'*20,(sys.argv[1],p))", ipB); err != nil {
			t.Fatalf("udp: %v\n%s", err, o)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("valectl capture %q: %v\n%s", tc.filter, err, stderr.String())
		}
		rows := ts.rows(t)
		for i, r := range rows {
			if got := r["ip.src"] + "," + r["ip.dst"] + "," + r["icmp.type"] + "," + r["udp.dstport"]; got != tc.want {
				t.Errorf("filter %q, packet %d: %s, want %s", tc.filter, i+1, got, tc.want)
			}
		}
		if len(rows) != tc.n {
			t.Errorf("filter %q kept %d packets, want %d", tc.filter, len(rows), tc.n)
		}
	}
	out := filepath.Join(t.TempDir(), "bad.pcapng")
	o, err := exec.Command(valectl, "-socket", e.agent.socket, "capture", "default/a", "-w", out, "tcp", "prot", "80").CombinedOutput()
	if err == nil || !strings.Contains(string(o), `unknown word "prot"`) {
		t.Fatalf("bad filter: %v\n%s", err, o)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused capture wrote %s (%v)", out, err)
	}
}
