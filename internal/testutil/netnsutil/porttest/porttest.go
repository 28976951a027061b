// Package porttest is the one conformance suite that every Linux frame-port backend
// (pkg/netmap/afxdp, pkg/netmap/afpacket, and pkg/linkport's selection of either) passes.
// It runs in namespaces it creates (netnsutil.TwoPods): a small forwarder moves frames from
// the port on HostA to the port on HostB and back, and the suite checks that ping crosses,
// that a long UDP stream arrives with no loss and no duplicates, that an idle waiting port
// costs no CPU, that Close wakes waiters, and that nothing (descriptors, links, backend
// objects) is left after Close.
package porttest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"golang.org/x/sys/unix"
)

// Port is the batch interface both backends offer.
type Port interface {
	Receive(bufs [][]byte, lens []int) (int, error)
	Transmit(frames [][]byte) (int, error)
	WaitRX(timeout time.Duration) error
	WaitTX(timeout time.Duration) error
	Close() error
}

// Backend describes the implementation under test.
type Backend struct {
	// Open opens a port on ifname inside ns.
	Open func(tb testing.TB, ns *netnsutil.NS, ifname string) Port
	// IsClosed recognises the backend's "closed" error.
	IsClosed func(error) bool
	// CheckGone, if set, verifies after Close that the backend's kernel objects are gone.
	CheckGone func(tb testing.TB, p Port)
	// Snapshot, if set, is called before the suite and its result passed to CheckClean at
	// the end (for example a list of XDP programs).
	Snapshot   func(tb testing.TB) any
	CheckClean func(tb testing.TB, before any)
	// Ringless says the backend maps no shared memory (the suite then checks that
	// open maps none).
	Ringless bool
}

// Frames returns the number of UDP frames the stream test sends: EPAIR_TEST_FRAMES, or
// 100000 by default (set EPAIR_TEST_FRAMES=1000000 for the long run).
func Frames(tb testing.TB) int {
	if s := os.Getenv("EPAIR_TEST_FRAMES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			tb.Fatalf("EPAIR_TEST_FRAMES=%q is not a positive integer", s)
		}
		return n
	}
	return 100000
}

// Forwarder moves frames between two ports, one goroutine per direction.
type Forwarder struct {
	stop atomic.Bool
	wg   sync.WaitGroup
	errs [2]error
	// Frames counts frames forwarded in each direction.
	Frames [2]atomic.Uint64
}

// Forward starts forwarding a→b and b→a.
func Forward(a, b Port, isClosed func(error) bool) *Forwarder {
	f := &Forwarder{}
	f.wg.Add(2)
	go f.run(0, a, b, isClosed)
	go f.run(1, b, a, isClosed)
	return f
}

func (f *Forwarder) run(dir int, src, dst Port, isClosed func(error) bool) {
	defer f.wg.Done()
	const batch = 64
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	lens := make([]int, batch)
	frames := make([][]byte, 0, batch)
	for !f.stop.Load() {
		err := src.WaitRX(50 * time.Millisecond)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if !isClosed(err) {
				f.errs[dir] = err
			}
			return
		}
		n, err := src.Receive(bufs, lens)
		if err != nil {
			f.errs[dir] = err
			return
		}
		frames = frames[:0]
		for i := range n {
			frames = append(frames, bufs[i][:lens[i]])
		}
		f.Frames[dir].Add(uint64(n))
		for len(frames) > 0 && !f.stop.Load() {
			k, err := dst.Transmit(frames)
			if err != nil {
				f.errs[dir] = err
				return
			}
			frames = frames[k:]
			if len(frames) > 0 {
				if err := dst.WaitTX(50 * time.Millisecond); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					if !isClosed(err) {
						f.errs[dir] = err
					}
					return
				}
			}
		}
	}
}

// Stop stops both goroutines and returns their errors.
func (f *Forwarder) Stop() error {
	f.stop.Store(true)
	f.wg.Wait()
	return errors.Join(f.errs[0], f.errs[1])
}

// FDCount counts the process's open descriptors.
func FDCount(tb testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// Run runs the suite against a backend.
func Run(t *testing.T, be Backend) {
	netnsutil.RequireRoot(t)
	var before any
	if be.Snapshot != nil {
		before = be.Snapshot(t)
	}
	rootLinks := linkNames(t)

	t.Run("PingAndUDPStream", func(t *testing.T) {
		p := netnsutil.TwoPods(t)
		a := be.Open(t, p.Host, p.HostA)
		b := be.Open(t, p.Host, p.HostB)
		fw := Forward(a, b, be.IsClosed)
		defer func() {
			if err := fw.Stop(); err != nil {
				t.Errorf("forwarder: %v", err)
			}
			a.Close()
			b.Close()
		}()
		if _, err := os.Stat("/usr/bin/ping"); err == nil {
			out, err := p.A.Exec("ping", "-c", "3", "-i", "0.2", "-W", "2", p.IPB)
			if err != nil {
				t.Fatalf("ping A→B through the ports: %v", err)
			}
			t.Logf("ping: %s", lastLine(out))
		} else {
			t.Log("ping not installed (apt-get install iputils-ping): skipping the ping part")
		}
		p.StaticNeighbors(t)
		n := Frames(t)
		start := time.Now()
		got := UDPStream(t, p, n, 96) // below the smallest default receive ring (128 frames)
		el := time.Since(start)
		if got != n {
			t.Fatalf("UDP stream: %d of %d frames arrived", got, n)
		}
		t.Logf("UDP stream: %d frames A→B in %v (%.0f pps), forwarded %d/%d frames", n, el.Round(time.Millisecond),
			float64(n)/el.Seconds(), fw.Frames[0].Load(), fw.Frames[1].Load())
	})

	t.Run("IdleCostsNoCPU", func(t *testing.T) {
		p := netnsutil.TwoPods(t)
		a := be.Open(t, p.Host, p.HostA)
		defer a.Close()
		done := make(chan error, 1)
		go func() {
			// Stray frames (IPv6 ND from the pod) may wake it: drain and wait again.
			bufs, lens := [][]byte{make([]byte, 2048)}, []int{0}
			for {
				if err := a.WaitRX(0); err != nil {
					done <- err
					return
				}
				if _, err := a.Receive(bufs, lens); err != nil {
					done <- err
					return
				}
			}
		}()
		time.Sleep(50 * time.Millisecond)
		c0 := cpuTime(t)
		time.Sleep(500 * time.Millisecond)
		used := cpuTime(t) - c0
		// Close must wake the parked waiter.
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !be.IsClosed(err) {
				t.Fatalf("WaitRX after Close = %v; want the closed error", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Close did not wake a goroutine parked in WaitRX")
		}
		if used > 50*time.Millisecond {
			t.Fatalf("an idle port waiting for frames used %v of CPU in 500ms", used)
		}
		t.Logf("idle: %v CPU in 500ms (whole test process)", used)
	})

	t.Run("NothingLeftAfterClose", func(t *testing.T) {
		p := netnsutil.TwoPods(t)
		warm := be.Open(t, p.Host, p.HostA) // first use creates the runtime's epoll fd
		warm.Close()
		fds := FDCount(t)
		maps := SharedMappings(t)
		a := be.Open(t, p.Host, p.HostA)
		if got := FDCount(t); got <= fds {
			t.Fatalf("open did not take a descriptor (%d → %d)", fds, got)
		}
		var ours []string
		for m := range SharedMappings(t) {
			if !maps[m] {
				ours = append(ours, m)
			}
		}
		switch {
		case be.Ringless && len(ours) > 0:
			t.Fatalf("a ring-less open mapped shared memory: %v", ours)
		case !be.Ringless && len(ours) == 0:
			t.Fatal("open mapped no shared ring memory")
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if got := FDCount(t); got != fds {
			t.Fatalf("descriptors: %d before open, %d after close", fds, got)
		}
		after := SharedMappings(t)
		for _, m := range ours {
			if after[m] {
				t.Fatalf("ring mapping %q still mapped after Close", m)
			}
		}
		if _, err := a.Receive(make([][]byte, 1), make([]int, 1)); !be.IsClosed(err) {
			t.Fatalf("Receive after Close = %v; want the closed error", err)
		}
		if be.CheckGone != nil {
			be.CheckGone(t, a)
		}
	})

	t.Run("NoAllocsOnBatchPath", func(t *testing.T) { noAllocs(t, be) })

	t.Cleanup(func() {
		if got := linkNames(t); fmt.Sprint(got) != fmt.Sprint(rootLinks) {
			t.Errorf("links in the test's own namespace changed: %v → %v", rootLinks, got)
		}
		if be.CheckClean != nil {
			be.CheckClean(t, before)
		}
	})
}

// SharedMappings returns the process's MAP_SHARED mappings (lines of /proc/self/maps whose
// permissions end in 's'): the kernel rings live there.
func SharedMappings(tb testing.TB) map[string]bool {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && len(f[1]) == 4 && f[1][3] == 's' {
			out[f[0]+" "+strings.Join(f[5:], " ")] = true
		}
	}
	return out
}

func linkNames(tb testing.TB) []string {
	ifs, err := net.Interfaces()
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

func cpuTime(tb testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func lastLine(s string) string {
	for i := len(s) - 2; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}

// UDPStream sends n numbered UDP datagrams from pod A to pod B, keeping at most window of
// them unacknowledged (the receiver is in this process, so "acknowledged" is "counted"):
// the rate adapts to the forwarder, and any loss stalls the sender, which then gives up
// after 5 s without progress. It returns how many distinct datagrams arrived.
func UDPStream(tb testing.TB, p *netnsutil.Pods, n, window int) int {
	tb.Helper()
	const port = 9977
	var rfd, sfd int
	err := p.B.Do(func() error {
		var err error
		rfd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(rfd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		_ = unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		return unix.Bind(rfd, &unix.SockaddrInet4{Port: port, Addr: [4]byte(net.ParseIP(p.IPB).To4())})
	})
	if err != nil {
		tb.Fatalf("receiver socket in B: %v", err)
	}
	defer unix.Close(rfd)
	err = p.A.Do(func() error {
		var err error
		sfd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Connect(sfd, &unix.SockaddrInet4{Port: port, Addr: [4]byte(net.ParseIP(p.IPB).To4())})
	})
	if err != nil {
		tb.Fatalf("sender socket in A: %v", err)
	}
	defer unix.Close(sfd)

	var received atomic.Int64
	seen := make([]bool, n)
	var dups atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, _, err := unix.Recvfrom(rfd, buf, 0)
			if err != nil {
				if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
					continue
				}
				return
			}
			if m < 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(buf)
			if seq < uint64(n) {
				if seen[seq] {
					dups.Add(1)
				} else {
					seen[seq] = true
					received.Add(1)
				}
			}
			if received.Load() == int64(n) {
				return
			}
		}
	}()
	payload := make([]byte, 64)
	lastProgress, lastCount := time.Now(), int64(0)
	for i := 0; i < n; {
		if int64(i)-received.Load() >= int64(window) {
			if r := received.Load(); r != lastCount {
				lastCount, lastProgress = r, time.Now()
			} else if time.Since(lastProgress) > 5*time.Second {
				break
			}
			time.Sleep(20 * time.Microsecond)
			continue
		}
		binary.BigEndian.PutUint64(payload, uint64(i))
		if err := unix.Send(sfd, payload, 0); err != nil {
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			tb.Fatalf("send datagram %d: %v", i, err)
		}
		i++
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	close(stop)
	<-done
	if d := dups.Load(); d != 0 {
		tb.Errorf("UDP stream: %d duplicate datagrams", d)
	}
	return int(received.Load())
}
