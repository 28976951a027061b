package linkport

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/hostport"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/vale"
	"golang.org/x/sys/unix"
)

func TestOffloadOptions(t *testing.T) {
	if _, err := Open("lo", Options{Backend: XDP, Offload: true}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Offload with af_xdp: err = %v; want EINVAL", err)
	}
	if _, err := Open("lo", Options{Backend: Backend(9), Offload: true}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Offload with backend 9: err = %v; want EINVAL", err)
	}
}

// enableTxOffload turns pod eth0's transmit checksum offload (and with it TSO) back on.
func enableTxOffload(tb testing.TB, n *netnsutil.NS) {
	tb.Helper()
	fd, err := sys.SocketAt(n.Handle, unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(fd)
	if err := sys.SetTxChecksum(fd, "eth0", true); err != nil {
		tb.Fatalf("in %s: %v", n.Name, err)
	}
}

// tcpTransfer sends size bytes from a socket dialled in from to a listener on to at
// addr and returns what the receiver counted.
func tcpTransfer(tb testing.TB, from, to *netnsutil.NS, addr string, size int) int64 {
	tb.Helper()
	var ln net.Listener
	if err := to.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		tb.Fatalf("listen on %s: %v", addr, err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	var c net.Conn
	if err := from.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	}); err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for left := size; left > 0; {
		n, err := c.Write(buf[:min(left, len(buf))])
		if err != nil {
			c.Close()
			tb.Fatalf("write: %v", err)
		}
		left -= n
	}
	c.Close()
	select {
	case n := <-got:
		return n
	case <-time.After(60 * time.Second):
		tb.Fatal("receiver did not finish")
		return 0
	}
}

// TestOffloadSwitch: two pods with TSO and checksum offload on, their host ends as
// offload ports (AF_PACKET + PACKET_VNET_HDR) and an offload TAP host port on a VALE
// switch with 10-byte virtio-net headers. TCP between the pods and to the host moves
// super-frames (slot chains, counted), ping and UDP still work, and detaching the ports
// closes their sockets and stops their goroutines.
func TestOffloadSwitch(t *testing.T) {
	p := netnsutil.TwoPods(t)
	enableTxOffload(t, p.A)
	enableTxOffload(t, p.B)
	p.StaticNeighbors(t)
	before := runtime.NumGoroutine()

	nm := netmap.New(netmap.Config{})
	reg, err := vale.New(nm, vale.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	cfg := vale.DefaultConfig()
	cfg.VnetHdrLen = OffloadHdrLen
	cfg.MaxFrame = vale.MaxFrameHi
	if _, err := reg.CreateSwitch("vale7", cfg); err != nil {
		t.Fatal(err)
	}
	type port struct {
		name string
		ad   *netmap.GenericAdapter
	}
	var ports []port
	attach := func(name string, be netmap.GenericBackend) {
		ad, err := netmap.NewGenericAdapter(name, be, netmap.GenericConfig{Slots: 256})
		if err != nil {
			be.Close()
			t.Fatal(err)
		}
		if err := reg.AttachAdapter(vale.JoinName("vale7", name), ad, false); err != nil {
			ad.Dtor()
			t.Fatal(err)
		}
		ports = append(ports, port{name, ad})
	}
	detached := false
	detach := func() {
		if detached {
			return
		}
		detached = true
		for _, pt := range ports {
			if err := reg.Detach(vale.JoinName("vale7", pt.name)); err != nil {
				t.Errorf("detach %s: %v", pt.name, err)
			}
		}
		if err := reg.Close(); err != nil {
			t.Errorf("close registry: %v", err)
		}
	}
	defer detach()
	// A's port comes from a pool of prepared sockets, B's sets its ring up itself.
	pool, err := NewRingPool(afpacket.Config{}, 1, p.Host.Do, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	waitPool(t, pool, 1)
	var socks []*afpacket.Socket
	for i, l := range []string{p.HostA, p.HostB} {
		var o Opened
		if err := p.Host.Do(func() error {
			var err error
			o, err = Open(l, Options{Offload: true, Rings: pool})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := pool.Close(); err != nil || pool.Taken() != 1 {
				t.Fatalf("pool after the first port: %d taken, close: %v; want 1", pool.Taken(), err)
			}
		}
		if o.Backend != Packet || o.Port.FrameSize() != afpacket.MaxVnetFrame {
			t.Fatalf("offload port %s: backend %v, frame size %d", l, o.Backend, o.Port.FrameSize())
		}
		socks = append(socks, o.Port.(*afpacket.Socket))
		attach(l, o.Port)
	}
	var hp *hostport.Port
	if err := p.Host.Do(func() error {
		var err error
		hp, err = hostport.Open(hostport.Config{
			Name: "hp7", MTU: 1500, MAC: net.HardwareAddr{0x02, 0, 0, 0x77, 0, 0xfe}, TXQueueLen: 4096,
			Addrs: []netip.Prefix{netip.MustParsePrefix("10.77.0.254/24")}, VnetHdr: true,
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	attach("hp7", hp)

	if out, err := p.A.Exec("ping", "-c", "3", "-i", "0.2", "-W", "2", p.IPB); err != nil {
		t.Fatalf("ping A → B: %v\n%s", err, out)
	}
	if out, err := p.A.Exec("ping", "-c", "2", "-i", "0.2", "-W", "2", "10.77.0.254"); err != nil {
		t.Fatalf("ping A → host: %v\n%s", err, out)
	}
	n := porttest.Frames(t) / 10
	if got := porttest.UDPStream(t, p, n, 96); got != n {
		t.Fatalf("UDP A → B: %d of %d datagrams arrived", got, n)
	}
	const size = 64 << 20
	start := time.Now()
	if got := tcpTransfer(t, p.A, p.B, p.IPB+":5201", size); got != size {
		t.Fatalf("TCP A → B: %d of %d bytes arrived", got, size)
	}
	el := time.Since(start)
	if got := tcpTransfer(t, p.B, p.Host, "10.77.0.254:5202", size/4); got != size/4 {
		t.Fatalf("TCP B → host: %d of %d bytes arrived", got, size/4)
	}
	if got := tcpTransfer(t, p.Host, p.A, p.IPA+":5203", size/4); got != size/4 {
		t.Fatalf("TCP host → A: %d of %d bytes arrived", got, size/4)
	}
	for _, pt := range ports {
		t.Logf("%s: RxChains %d TxChains %d TxDropped %d", pt.name, pt.ad.RxChains.Load(), pt.ad.TxChains.Load(), pt.ad.TxDropped.Load())
	}
	for i, pt := range ports[:2] {
		st := socks[i].Stats()
		t.Logf("%s socket: %+v", pt.name, st)
		if pt.ad.RxChains.Load() == 0 {
			t.Errorf("%s received no super-frame (RxChains 0): pod offloads did not reach the switch", pt.name)
		}
		if pt.ad.TxChains.Load() == 0 {
			t.Errorf("%s sent no super-frame (TxChains 0)", pt.name)
		}
		if st.TxRejected != 0 {
			t.Errorf("%s: kernel rejected %d frames", pt.name, st.TxRejected)
		}
	}
	if ports[2].ad.TxChains.Load() == 0 || ports[2].ad.RxChains.Load() == 0 {
		t.Errorf("host port moved no super-frames (TxChains %d, RxChains %d)", ports[2].ad.TxChains.Load(), ports[2].ad.RxChains.Load())
	}
	t.Logf("TCP A → B: %d MiB in %v (%.2f Gbit/s)", size>>20, el, float64(size)*8/el.Seconds()/1e9)

	detach()
	for _, s := range socks {
		if _, err := s.Transmit([][]byte{make([]byte, 64)}); !errors.Is(err, afpacket.ErrClosed) {
			t.Errorf("socket of %s still open after detach: %v", s.Name(), err)
		}
	}
	if _, err := hp.Transmit([][]byte{make([]byte, 64)}); !errors.Is(err, hostport.ErrClosed) {
		t.Errorf("host port still open after detach: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after detach, %d before:\n%s", g, before, buf[:runtime.Stack(buf, true)])
	}
}
