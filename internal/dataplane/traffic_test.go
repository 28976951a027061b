package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

func TestUDPNoLoss(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t, 2, v.be, v.mod(nil))
			e.staticNeighbors()
			a, b := e.pods[0], e.pods[1]
			n := porttest.Frames(t)
			before, _ := e.dp.Port(b.portName())
			start := time.Now()
			if got := porttest.UDPStream(t, pairOf(a, b), n, 256); got != n {
				pi, _ := e.dp.Port(b.portName())
				t.Fatalf("%d of %d datagrams arrived; port %+v", got, n, pi)
			}
			el := time.Since(start)
			// The counter is added after the link took the batch, so the
			// last frames may arrive before it is.
			waitFor(t, "the queue's counters", 2*time.Second, func() bool {
				after, _ := e.dp.Port(b.portName())
				return after.Queue.TxFrames-before.Queue.TxFrames >= uint64(n)
			})
			t.Logf("%d datagrams in %v (%.0f/s), no loss", n, el.Round(time.Millisecond), float64(n)/el.Seconds())
		})
	}
}

// blaster sends UDP datagrams of size bytes from pod a to pod b as fast as
// the socket allows until stopped.
type blaster struct {
	fd   int
	stop atomic.Bool
	sent atomic.Uint64
	wg   sync.WaitGroup
}

func blast(t *testing.T, a, b *pod, size int) *blaster {
	t.Helper()
	bl := &blaster{}
	err := a.ns.Do(func() error {
		var err error
		bl.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Connect(bl.fd, &unix.SockaddrInet4{Port: 9, Addr: [4]byte(net.ParseIP(b.ip).To4())})
	})
	if err != nil {
		t.Fatalf("blaster socket: %v", err)
	}
	buf := make([]byte, size)
	bl.wg.Add(1)
	go func() {
		defer bl.wg.Done()
		for !bl.stop.Load() {
			if err := unix.Send(bl.fd, buf, unix.MSG_DONTWAIT); err != nil {
				if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ECONNREFUSED) {
					time.Sleep(20 * time.Microsecond)
					continue
				}
				return
			}
			bl.sent.Add(1)
		}
	}()
	t.Cleanup(bl.close)
	return bl
}

func (bl *blaster) close() {
	if bl.stop.CompareAndSwap(false, true) {
		bl.wg.Wait()
		unix.Close(bl.fd)
	}
}

// measure returns the bits and frames per second the port's queue sends to
// its link over d, and the frames per second the switch offered to the
// queue (accepted or dropped as no space).
func measure(t *testing.T, dp *Dataplane, port string, d time.Duration) (bps, pps, offered float64) {
	t.Helper()
	p0, err := dp.Port(port)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	time.Sleep(d)
	p1, _ := dp.Port(port)
	el := time.Since(t0).Seconds()
	in := func(p PortInfo) uint64 { return p.Counters.OutFrames + p.Counters.Drops[vale.DropNoSpace] }
	return float64(p1.Queue.TxBytes-p0.Queue.TxBytes) * 8 / el, float64(p1.Queue.TxFrames-p0.Queue.TxFrames) / el, float64(in(p1)-in(p0)) / el
}

// limited measures a rate-limited port until a window in which the switch
// offered the queue at least twice the limit (on a loaded machine the
// sender or the switch may not keep up) and returns that window's rates.
func limited(t *testing.T, dp *Dataplane, port string, limitPPS float64) (bps, pps float64) {
	t.Helper()
	for try := 0; try < 6; try++ {
		bps, pps, off := measure(t, dp, port, 2*time.Second)
		if off >= 2*limitPPS {
			return bps, pps
		}
		t.Logf("window %d: %.0f frames/s offered to the queue, under twice the limit %.0f: measuring again", try, off, limitPPS)
	}
	t.Fatalf("the queue was never offered twice the limit of %.0f frames/s (machine overloaded?)", limitPPS)
	return 0, 0
}

func within(got, want, tol float64) bool { return got >= want*(1-tol) && got <= want*(1+tol) }

func TestSetPortPolicyRate(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, nil)
	e.staticNeighbors()
	a, b := e.pods[0], e.pods[1]
	bl := blast(t, a, b, 1000)
	defer bl.close()
	time.Sleep(200 * time.Millisecond)
	free, _, _ := measure(t, e.dp, b.portName(), 500*time.Millisecond)
	t.Logf("unlimited: %.1f Mbit/s", free/1e6)

	const bitRate = 20e6
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{RateBitsPerSec: bitRate}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	got, _ := limited(t, e.dp, b.portName(), bitRate/8/1042)
	t.Logf("limited to %.0f Mbit/s: %.2f Mbit/s", bitRate/1e6, got/1e6)
	if !within(got, bitRate, 0.10) {
		t.Errorf("bit rate %.2f Mbit/s, want %.0f ± 10%%", got/1e6, bitRate/1e6)
	}

	const pktRate = 3000
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{RatePktsPerSec: pktRate, Discipline: DiscFair, QueueLen: 4096}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	_, gotp := limited(t, e.dp, b.portName(), pktRate)
	t.Logf("limited to %d pkt/s: %.0f pkt/s", pktRate, gotp)
	if !within(gotp, pktRate, 0.10) {
		t.Errorf("packet rate %.0f/s, want %d ± 10%%", gotp, pktRate)
	}
	pi, _ := e.dp.Port(b.portName())
	if pi.Queue.Drops == 0 || pi.Counters.Drops[0] == 0 {
		t.Errorf("an overdriven limited queue shows no drops: %+v %+v", pi.Queue, pi.Counters)
	}

	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	lifted, _, _ := measure(t, e.dp, b.portName(), 500*time.Millisecond)
	t.Logf("lifted: %.1f Mbit/s", lifted/1e6)
	if lifted < 3*bitRate {
		t.Errorf("after lifting the limit: %.1f Mbit/s, want well above %.0f", lifted/1e6, bitRate/1e6)
	}
	bl.close()
	e.ping(a, b.ip)
}

func TestDetachUnderTraffic(t *testing.T) {
	for _, be := range backends {
		t.Run(be.String(), func(t *testing.T) {
			e := newEnv(t, 3, be, nil)
			e.staticNeighbors()
			a, b, c := e.pods[0], e.pods[1], e.pods[2]
			bl1 := blast(t, a, b, 200)
			bl2 := blast(t, c, a, 200)
			time.Sleep(300 * time.Millisecond)
			done := make(chan error, 1)
			go func() { done <- e.dp.DetachPort(context.Background(), b.portName()) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("detach under traffic: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("detach under traffic did not return")
			}
			// The sender's port too, while it sends.
			if err := e.dp.DetachPort(context.Background(), a.pair.HostName); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			bl1.close()
			bl2.close()
			if n := len(e.dp.Ports()); n != 1 {
				t.Fatalf("%d ports left, want 1", n)
			}
			e.attach(a)
			e.attach(b)
			e.ping(a, b.ip)
			e.ping(c, b.ip)
		})
	}
}

func TestRestartAdopt(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, nil)
	e.staticNeighbors()
	a, b := e.pods[0], e.pods[1]
	e.ping(a, b.ip)
	// The agent goes away without uninstalling: links stay as they are.
	if err := e.dp.Close(CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range e.pods {
		l, err := e.host.NL.LinkByName(p.pair.HostName)
		if err != nil || l.Attrs().Index != p.pair.HostIndex {
			t.Fatalf("host link %s after a restart close: %v", p.pair.HostName, err)
		}
	}
	if x := e.xdpProgs(); len(x) != 0 {
		t.Fatalf("XDP programs left after close: %v", x)
	}
	e.start()
	for _, p := range e.pods {
		if _, err := e.dp.Adopt(context.Background(), p.req()); err != nil {
			t.Fatalf("adopt %s: %v", p.pair.HostName, err)
		}
	}
	_, err := e.dp.Adopt(context.Background(), a.reqAs("someone/else"))
	if Errno(err) != ErrNotOwned.Errno() {
		t.Fatalf("adopt with the wrong owner: %v, want EPERM", err)
	}
	e.ping(a, b.ip)
	e.ping(b, testGW)
	n := porttest.Frames(t) / 10
	if got := porttest.UDPStream(t, pairOf(a, b), n, 256); got != n {
		t.Fatalf("after adopt: %d of %d datagrams", got, n)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	requireTool(t, "nft")
	for _, v := range []variant{variants[0], variants[2]} {
		t.Run(v.name, func(t *testing.T) { testCloseLeavesNothing(t, v) })
	}
}

func testCloseLeavesNothing(t *testing.T, v variant) {
	e := newEnv(t, -1, v.be, v.mod(func(c *Config) { c.Masquerade = true }))
	a, b := e.makePod(), e.makePod()
	g0, fd0 := runtime.NumGoroutine(), fdCount(t)
	e.start()
	e.attach(a)
	e.attach(b)
	e.ping(a, b.ip)
	e.ping(a, testGW)
	if !e.hasLink(testTap) {
		t.Fatal("no TAP while running")
	}
	settle(t, e.dp)
	wantProgs := 2 // offload ports are AF_PACKET: no XDP
	if v.offload {
		wantProgs = 0
	}
	if len(e.xdpProgs()) != wantProgs {
		t.Fatalf("XDP programs while running: %v, want %d", e.xdpProgs(), wantProgs)
	}
	tbl, err := e.host.Exec("nft", "list", "table", "inet", "epair")
	if err != nil || !strings.Contains(tbl, "masquerade") {
		t.Fatalf("nft table while running: %v\n%s", err, tbl)
	}
	if err := e.dp.Close(CloseOptions{Uninstall: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.dp.Close(CloseOptions{Uninstall: true}); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if e.hasLink(testTap) {
		t.Error("TAP left after close")
	}
	if x := e.xdpProgs(); len(x) != 0 {
		t.Errorf("XDP programs left after close: %v", x)
	}
	if s := e.nftTables(); strings.Contains(s, "epair") {
		t.Errorf("nft table left after close: %s", s)
	}
	for _, p := range e.pods {
		if !e.hasLink(p.pair.HostName) {
			t.Errorf("close removed the pod link %s", p.pair.HostName)
		}
	}
	waitFor(t, "goroutines to exit", 5*time.Second, func() bool { return runtime.NumGoroutine() <= g0 })
	if fd1 := fdCount(t); fd1 > fd0 {
		t.Errorf("%d descriptors open before New, %d after Close", fd0, fd1)
	}
	if _, err := e.dp.AttachPort(context.Background(), a.req()); Errno(err) != ErrClosed.Errno() {
		t.Errorf("attach after close: %v, want ENXIO", err)
	}
}

func TestHairpinAndMasquerade(t *testing.T) {
	requireTool(t, "nft")
	for _, v := range []variant{{"plain", linkport.Auto, false}, variants[2]} {
		t.Run(v.name, func(t *testing.T) { testHairpinAndMasquerade(t, v) })
	}
}

func testHairpinAndMasquerade(t *testing.T, v variant) {
	e := newEnv(t, 2, v.be, v.mod(func(c *Config) { c.Masquerade = true }))
	a, b := e.pods[0], e.pods[1]
	if _, err := e.host.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	// A "service" 10.96.0.10 whose only endpoint is pod A (what kube-proxy
	// would install), in a table of the test's own.
	rules := "table ip eptestsvc {\n chain pre {\n  type nat hook prerouting priority dstnat;\n  ip daddr 10.96.0.10 dnat to " + a.ip + "\n }\n}\n"
	f := filepath.Join(t.TempDir(), "svc.nft")
	if err := os.WriteFile(f, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := e.host.Exec("nft", "-f", f); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	e.ping(b, "10.96.0.10") // another pod through the service
	e.ping(a, "10.96.0.10") // hairpin: the endpoint itself

	// Masquerade on the way out: a network beyond the node that has no
	// route back to the pod CIDR answers only if the pod's address was
	// replaced by the node's.
	out := netnsutil.New(t)
	netnsutil.Veth(t, e.host, "up0", "10.99.1.1/24", out, "eth0", "10.99.1.2/24")
	e.ping(a, "10.99.1.2")
	// The control: without the table the same ping goes unanswered.
	if o, err := e.host.Exec("nft", "delete", "table", "inet", "epair"); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	if _, err := a.ns.Exec("ping", "-c", "1", "-W", "1", "10.99.1.2"); err == nil {
		t.Error("the outside network answered without masquerade: the test proves nothing")
	}
	si, _ := e.dp.Switch("vale0")
	for _, p := range si.Ports {
		if p.Kind == KindHost && (p.Counters.InFrames == 0 || p.Counters.OutFrames == 0) {
			t.Errorf("host port counters %+v", p.Counters)
		}
	}
	pn := e.dp.podNetwork()
	if r := pn.rules(); len(r) != 4 || !strings.Contains(r[0], testCIDR) || !strings.Contains(r[1], "ct status dnat") || !strings.Contains(r[2], "ip6 saddr { fd00:78::/64 }") {
		t.Errorf("rules %q", r)
	}
}

// TestBurstDrains sends bursts larger than one kernel transmit batch (32
// frames in AF_XDP copy mode) and checks that every datagram arrives
// without later traffic to push it out.
func TestBurstDrains(t *testing.T) {
	for _, be := range backends {
		t.Run(be.String(), func(t *testing.T) {
			e := newEnv(t, 2, be, nil)
			e.staticNeighbors()
			a, b := e.pods[0], e.pods[1]
			var sfd, rfd int
			if err := b.ns.Do(func() error {
				var err error
				rfd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
				if err != nil {
					return err
				}
				_ = unix.SetsockoptInt(rfd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
				return unix.Bind(rfd, &unix.SockaddrInet4{Port: 9977})
			}); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(rfd)
			if err := a.ns.Do(func() error {
				var err error
				sfd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				return unix.Connect(sfd, &unix.SockaddrInet4{Port: 9977, Addr: [4]byte(net.ParseIP(b.ip).To4())})
			}); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(sfd)
			buf := make([]byte, 64)
			for _, burst := range []int{40, 100, 300} {
				for i := 0; i < burst; i++ {
					if err := unix.Send(sfd, buf, 0); err != nil {
						t.Fatal(err)
					}
				}
				got := 0
				waitFor(t, fmt.Sprintf("a burst of %d datagrams to arrive", burst), 3*time.Second, func() bool {
					for {
						if _, _, err := unix.Recvfrom(rfd, buf, 0); err != nil {
							return got >= burst
						}
						got++
					}
				})
				if got != burst {
					t.Fatalf("burst of %d: %d arrived", burst, got)
				}
			}
		})
	}
}

func fdCount(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
