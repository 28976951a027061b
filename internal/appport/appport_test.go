package appport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/leakcheck"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/nmport"
	"github.com/epair-cni/epair/pkg/vale"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		child()
		return
	}
	leakcheck.Main(m)
}

// world is a netmap instance with VALE and a server on a socket in a temp
// directory.
type world struct {
	nm   *netmap.Netmap
	reg  *vale.Registry
	srv  *Server
	sock string
}

func newWorld(t testing.TB, o Options) *world {
	t.Helper()
	nm := netmap.New(netmap.Config{})
	reg, err := vale.New(nm, vale.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "netmap.sock")
	if path := os.Getenv("APPPORT_LOG"); o.Log == nil && path != "" {
		// Debugging aid: the server's log, appended to a file (fuzz
		// workers' output is not shown).
		lf, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lf.Close() })
		o.Log = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := Listen(sock, nm, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		reg.Close()
	})
	return &world{nm: nm, reg: reg, srv: srv, sock: sock}
}

func (w *world) open(t testing.TB, name string) *nmport.Port {
	t.Helper()
	p, err := nmport.Open(w.sock, name, 0)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// frame builds an Ethernet frame from src to dst (MACs ending in the given
// bytes) with a payload carrying seq.
func frame(dst, src byte, seq uint32, size int) []byte {
	f := make([]byte, size)
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, dst})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, src})
	binary.BigEndian.PutUint16(f[12:], 0x88b5) // local experimental ethertype
	binary.BigEndian.PutUint32(f[14:], seq)
	for i := 18; i < size; i++ {
		f[i] = byte(seq + uint32(i))
	}
	return f
}

// send puts frames on p's first TX ring and syncs, waiting for space.
func send(t testing.TB, p *nmport.Port, frames ...[]byte) {
	t.Helper()
	if err := sendErr(p, frames...); err != nil {
		t.Fatal(err)
	}
}

// recv waits for n frames on p's first RX ring and returns copies.
func recv(t testing.TB, p *nmport.Port, n int, timeout time.Duration) [][]byte {
	t.Helper()
	out, err := recvErr(p, n, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sendErr and recvErr are send and recv for goroutines other than the
// test's (which must not call t.Fatal).
func sendErr(p *nmport.Port, frames ...[]byte) error {
	r := p.TxRing(0)
	for _, f := range frames {
		for r.Space() == 0 {
			if _, err := p.Poll(nmport.PollOut, time.Second); err != nil {
				return fmt.Errorf("poll out: %w", err)
			}
		}
		i := r.Cur()
		n := copy(r.Buf(i), f)
		r.Slot(i).Len = uint16(n)
		r.Advance(r.Next(i))
	}
	if err := p.TxSync(); err != nil {
		return fmt.Errorf("txsync: %w", err)
	}
	return nil
}

func recvErr(p *nmport.Port, n int, timeout time.Duration) ([][]byte, error) {
	var out [][]byte
	deadline := time.Now().Add(timeout)
	r := p.RxRing(0)
	for len(out) < n {
		left := time.Until(deadline)
		if left <= 0 {
			return out, fmt.Errorf("received %d of %d frames in %v", len(out), n, timeout)
		}
		if _, err := p.Poll(nmport.PollIn, left); err != nil {
			return out, fmt.Errorf("poll in: %w", err)
		}
		for !r.Empty() && len(out) < n {
			i := r.Cur()
			out = append(out, append([]byte(nil), r.Buf(i)[:r.Slot(i).Len]...))
			r.Advance(r.Next(i))
		}
		if err := p.RxSync(); err != nil {
			return out, fmt.Errorf("rxsync: %w", err)
		}
	}
	return out, nil
}

func TestFramesBetweenTwoApplications(t *testing.T) {
	w := newWorld(t, Options{})
	a := w.open(t, "vale0:a")
	b := w.open(t, "vale0:b")
	// b announces itself so the switch learns its MAC; then a sends unicast.
	send(t, b, frame(0xff, 0xb, 0, 60))
	recv(t, a, 1, 2*time.Second)
	const n = 3000
	var want [][]byte
	for i := 0; i < n; i++ {
		want = append(want, frame(0xb, 0xa, uint32(i+1), 60+i%1455))
	}
	// Batches that fit the receiver's ring: VALE drops what does not fit
	// (it never blocks a sender on a slow receiver).
	var got [][]byte
	for i := 0; i < n; i += 500 {
		send(t, a, want[i:i+500]...)
		got = append(got, recv(t, b, 500, 5*time.Second)...)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d differs: got %d bytes %x..., want %d bytes %x...", i, len(got[i]), got[i][:20], len(want[i]), want[i][:20])
		}
	}
	infos := w.srv.Ports()
	if len(infos) != 2 {
		t.Fatalf("server lists %d ports, want 2: %+v", len(infos), infos)
	}
	sw, err := w.reg.Switch("vale0")
	if err != nil {
		t.Fatal(err)
	}
	names := fmt.Sprint(sw.Ports())
	if !strings.Contains(names, "a") || !strings.Contains(names, "b") {
		t.Fatalf("switch ports %s lack a and b", names)
	}
}

// TestRegistrationErrors is the registration contract over the socket: what
// netmap's NIOCREGIF answers, with its errno, and a message naming the
// problem.
func TestRegistrationErrors(t *testing.T) {
	w := newWorld(t, Options{Authorize: func(r *nmport.Request) error {
		if strings.HasPrefix(r.Name, "vale9:") {
			return fmt.Errorf("switch vale9 is not yours")
		}
		return nil
	}})
	w.open(t, "vale0:busy") // exists, for the pipe and monitor cases
	cases := []struct {
		name  string
		req   func() nmport.Request
		errno syscall.Errno
		msg   string
	}{
		{"rings already registered", func() nmport.Request { return req("vale0:busy", nmport.RegAllNIC) }, syscall.EBUSY, ""},
		{"no such interface", func() nmport.Request { return req("eth0", nmport.RegAllNIC) }, syscall.ENXIO, "no such interface"},
		{"bad version", func() nmport.Request { r := req("vale0:x", nmport.RegAllNIC); r.Version = 99; return r }, syscall.EINVAL, "version"},
		{"host rings", func() nmport.Request { return req("vale0:x", nmport.RegNICSW) }, syscall.EINVAL, "host rings"},
		{"ring out of range", func() nmport.Request {
			r := req("vale0:x", nmport.RegOneNIC)
			r.RingID = 7
			return r
		}, syscall.EINVAL, ""},
		{"not authorized", func() nmport.Request { return req("vale9:x", nmport.RegAllNIC) }, syscall.EACCES, "not yours"},
		{"bad vale name", func() nmport.Request { return req("vale0:", nmport.RegAllNIC) }, syscall.EINVAL, ""},
		{"too many slots", func() nmport.Request { r := req("vale0:x", nmport.RegAllNIC); r.TxSlots = 1 << 20; return r }, syscall.EINVAL, "slots"},
		{"monitor of nothing", func() nmport.Request { return req("vale0:none", nmport.RegAllNIC|nmport.MonitorRX) }, syscall.ENXIO, ""},
		{"too many extra buffers", func() nmport.Request { r := req("vale0:x", nmport.RegAllNIC); r.ExtraBufs = 1 << 20; return r }, syscall.EINVAL, "extra buffers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := nmport.OpenRequest(w.sock, c.req())
			if err == nil {
				p.Close()
				t.Fatalf("registered, want %v", c.errno)
			}
			if !errors.Is(err, c.errno) {
				t.Fatalf("err %v (errno %d), want %v", err, errnoOf(err), c.errno)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %q does not say %q", err, c.msg)
			}
		})
	}
	// Malformed requests on the raw socket: EINVAL with a reason.
	raw := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"short", make([]byte, 10), "request of 10 bytes"},
		{"bad magic", make([]byte, nmport.RequestSize), "magic"},
	}
	for _, c := range raw {
		t.Run("raw "+c.name, func(t *testing.T) {
			resp := rawRequest(t, w.sock, c.b)
			if resp.Errno != syscall.EINVAL || !strings.Contains(resp.Message, c.msg) {
				t.Fatalf("response %v %q, want EINVAL saying %q", resp.Errno, resp.Message, c.msg)
			}
		})
	}
	if n := len(w.srv.Ports()); n != 1 {
		t.Fatalf("%d registrations after refusals, want 1", n)
	}
}

func req(name string, flags uint32) nmport.Request {
	return nmport.Request{Name: name, Version: nmport.Version, Flags: flags}
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	errors.As(err, &e)
	return e
}

func rawRequest(t *testing.T, sock string, b []byte) nmport.Response {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, nmport.ResponseSize)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r nmport.Response
	if err := r.UnmarshalBinary(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return r
}

const childEnv = "APPPORT_TEST_CHILD"

// child is the test binary run as another process: an application with a
// port. Modes: "hold" opens the port, says "ready" and waits to be killed;
// "echo" sends every frame it receives back, until stdin closes.
func child() {
	sock, name := os.Getenv("APPPORT_SOCK"), os.Getenv("APPPORT_NAME")
	p, err := nmport.Open(sock, name, 0)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	switch os.Getenv(childEnv) {
	case "hold":
		select {}
	case "echo":
		go func() {
			io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}()
		rx, tx := p.RxRing(0), p.TxRing(0)
		for {
			if _, err := p.Poll(nmport.PollIn, -1); err != nil {
				fmt.Println("poll:", err)
				os.Exit(1)
			}
			for !rx.Empty() {
				for tx.Space() == 0 {
					p.Poll(nmport.PollOut, -1)
				}
				i, j := rx.Cur(), tx.Cur()
				n := copy(tx.Buf(j), rx.Buf(i)[:rx.Slot(i).Len])
				tx.Slot(j).Len = uint16(n)
				tx.Advance(tx.Next(j))
				rx.Advance(rx.Next(i))
			}
			p.TxSync()
			p.RxSync()
		}
	}
}

// startChild runs the test binary as an application holding name.
func startChild(t *testing.T, mode, sock, name string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "APPPORT_SOCK="+sock, "APPPORT_NAME="+name)
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child %s %s: %q %v", mode, name, line, err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, stdin
}

// TestPipeBetweenProcesses: a netmap pipe between this process (master end)
// and another (slave end, echoing): every frame comes back intact.
func TestPipeBetweenProcesses(t *testing.T) {
	w := newWorld(t, Options{})
	m := w.open(t, "vale0:pp{3")
	startChild(t, "echo", w.sock, "vale0:pp}3")
	for round := 0; round < 10; round++ {
		var want [][]byte
		for i := 0; i < 200; i++ {
			want = append(want, frame(1, 2, uint32(round*1000+i), 60+(i*7)%1455))
		}
		send(t, m, want...)
		got := recv(t, m, len(want), 5*time.Second)
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("round %d frame %d differs", round, i)
			}
		}
	}
}

// TestKilledApplicationLosesPort: an application killed with SIGKILL while
// registered loses its port within a second, and the agent keeps no
// descriptor, mapping or goroutine of it.
func TestKilledApplicationLosesPort(t *testing.T) {
	w := newWorld(t, Options{})
	w.open(t, "vale0:keep")
	fds0, maps0 := countFDs(t), countMaps(t)
	for i := 0; i < 3; i++ {
		cmd, _ := startChild(t, "hold", w.sock, "vale0:victim")
		if n := len(w.srv.Ports()); n != 2 {
			t.Fatalf("%d registrations with the child up, want 2", n)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		killed := time.Now()
		cmd.Wait()
		for len(w.srv.Ports()) != 1 {
			if time.Since(killed) > time.Second {
				t.Fatalf("the killed application's port still registered after 1s: %+v", w.srv.Ports())
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("port gone %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
		sw, _ := w.reg.Switch("vale0")
		for _, pi := range sw.Ports() {
			if pi.Name == "vale0:victim" {
				t.Fatalf("vale0:victim still on the switch after its application died")
			}
		}
	}
	// The descriptors and mappings of the dead registrations are gone.
	deadline := time.Now().Add(2 * time.Second)
	for countFDs(t) > fds0 || countMaps(t) > maps0 {
		if time.Now().After(deadline) {
			t.Fatalf("agent holds %d descriptors and %d memfd mappings, %d and %d before", countFDs(t), countMaps(t), fds0, maps0)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// countMaps counts the process's mappings of port regions (memfd "nmport").
func countMaps(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "memfd:nmport")
}

// TestExtraBuffers: nr_arg3 extra buffers come as a chain from BufsHead
// (ni_bufs_head), distinct from the rings' buffers, and an application can
// swap one into a TX slot (NS_BUF_CHANGED) and send from it.
func TestExtraBuffers(t *testing.T) {
	w := newWorld(t, Options{})
	a, err := nmport.Open(w.sock, "vale0:a", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := w.open(t, "vale0:b")
	inRings := map[uint32]bool{}
	for _, r := range []*nmport.Ring{a.TxRing(0), a.RxRing(0)} {
		for i := uint32(0); i < r.NumSlots(); i++ {
			inRings[r.Slot(i).BufIdx] = true
		}
	}
	var chain []uint32
	for idx := a.BufsHead(); idx != 0; idx = binary.LittleEndian.Uint32(a.Buf(idx)) {
		if a.Buf(idx) == nil || inRings[idx] || slices.Contains(chain, idx) || len(chain) > 16 {
			t.Fatalf("extra buffer chain %v then %d: invalid, a ring's, repeated or too long", chain, idx)
		}
		chain = append(chain, idx)
	}
	if len(chain) != 16 {
		t.Fatalf("%d extra buffers, want 16", len(chain))
	}
	// Swap the first extra buffer into the next TX slot and send from it.
	f := frame(0xff, 0xa, 7, 200)
	copy(a.Buf(chain[0]), f)
	r := a.TxRing(0)
	i := r.Cur()
	s := r.Slot(i)
	s.BufIdx, s.Len, s.Flags = chain[0], uint16(len(f)), nmport.BufChanged
	r.Advance(r.Next(i))
	if err := a.TxSync(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, b, 1, 2*time.Second); !bytes.Equal(got[0], f) {
		t.Fatalf("b received %x..., want the frame written into the swapped-in buffer", got[0][:20])
	}
}
