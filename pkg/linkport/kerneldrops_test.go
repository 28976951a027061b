package linkport

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/netmap/afxdp"
)

// smallOpts are ports whose sockets hold a handful of frames, so a sender outruns them at
// once: a ring-less socket with a 16 KiB receive buffer, a TPACKET_V3 ring of two 4 KiB
// blocks, an AF_XDP socket with 8 receive frames, and the smallest offload buffer.
func smallOpts(be Backend, offload bool) Options {
	o := Options{Backend: be, Offload: offload,
		Packet: afpacket.Config{BlockSize: 4096, BlockCount: 2}, XDP: afxdp.Config{FrameCount: 16}}
	if offload {
		o.Packet.BlockSize = afpacket.MinVnetBlockSize
	}
	return o
}

// sender sends broadcast frames from eth0 of a namespace through a raw AF_PACKET socket.
type sender struct {
	fd, ifindex int
	frame       []byte
	sent        atomic.Uint64
}

func newSender(t *testing.T, ns *netnsutil.NS) *sender {
	t.Helper()
	s := &sender{frame: make([]byte, 60)}
	copy(s.frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0x77, 0x01, 0x88, 0xb5})
	err := ns.Do(func() error {
		l, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		s.ifindex = l.Index
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("sender: %v", err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// send sends n frames as fast as the socket takes them.
func (s *sender) send(t *testing.T, n int) {
	for range n {
		if err := unix.Sendto(s.fd, s.frame, 0, &unix.SockaddrLinklayer{Ifindex: s.ifindex, Halen: 6}); err != nil {
			t.Errorf("send: %v", err)
			return
		}
		s.sent.Add(1)
	}
}

// quiet turns IPv6 off on both ends of the pair and takes whatever the port already has,
// so that the frames the link counts from now on are the test's alone: a router
// solicitation of the pod counted by the link before the test's baseline but read after it
// would unbalance the sum by one.
func quiet(t *testing.T, p *netnsutil.Pods, port Port) {
	t.Helper()
	for _, ns := range []*netnsutil.NS{p.A, p.Host} {
		if out, err := ns.Exec("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"); err != nil {
			t.Fatalf("disable IPv6 in %s: %v %s", ns.Name, err, out)
		}
	}
	time.Sleep(50 * time.Millisecond)
	drain(port)
}

// rxPackets is the frames the kernel received on ifname in ns (the host end of the veth):
// what the port's socket either took or dropped, plus anything else the link carried,
// counted on both sides.
func rxPackets(t *testing.T, ns *netnsutil.NS, ifname string) uint64 {
	t.Helper()
	l, err := ns.NL.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.RxPackets
}

// drain receives every frame waiting on p and returns how many there were.
func drain(p Port) uint64 {
	bufs, lens := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, afpacket.MaxVnetFrame+afpacket.VnetHdrLen)
	}
	var got uint64
	for {
		n, _ := p.Receive(bufs, lens)
		if n == 0 {
			return got
		}
		got += uint64(n)
	}
}

// balance waits until every frame the link received is accounted for: got (received, with
// what drain still finds) plus the kernel drops of p equals the link's receive count since
// rx0. It returns the drops.
func balance(t *testing.T, ns *netnsutil.NS, ifname string, p Port, rx0 uint64, got *uint64) uint64 {
	t.Helper()
	var drops, rx uint64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		*got += drain(p)
		var err error
		drops, err = KernelDrops(p)
		if err != nil {
			t.Fatal(err)
		}
		rx = rxPackets(t, ns, ifname) - rx0
		if *got+drops == rx {
			return drops
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d frames received by the link, but %d read + %d kernel drops = %d", ifname, rx, *got, drops, *got+drops)
		}
	}
}

// TestKernelDropsBackends: on every backend, the frames a socket nobody reads cannot take
// are its kernel drops, and read + dropped is exactly what the link received (a counter
// missed or one counted twice breaks the sum).
func TestKernelDropsBackends(t *testing.T) {
	for _, c := range []struct {
		name    string
		be      Backend
		offload bool
	}{{"af_packet", Packet, false}, {"af_packet_ringless", Ringless, false}, {"af_xdp", XDP, false}, {"offload", Packet, true}} {
		t.Run(c.name, func(t *testing.T) {
			p := netnsutil.TwoPods(t)
			o, err := open(t, p.Host, p.HostA, smallOpts(c.be, c.offload))
			if err != nil {
				t.Fatal(err)
			}
			s := newSender(t, p.A)
			quiet(t, p, o.Port)
			rx0 := rxPackets(t, p.Host, p.HostA)
			var got uint64
			s.send(t, 3000)
			drops := balance(t, p.Host, p.HostA, o.Port, rx0, &got)
			if drops == 0 || got == 0 {
				t.Fatalf("%d frames sent to an unread socket: %d read afterwards, %d kernel drops; want both > 0", s.sent.Load(), got, drops)
			}
			t.Logf("%d sent, %d read, %d dropped by the kernel", s.sent.Load(), got, drops)
		})
	}
}

// TestKernelDropsAcrossUpgrade counts a FastStart port's kernel drops on its ring-less
// socket, then through an upgrade under traffic (a reader checks that the total never
// goes backwards and never fails while the ring-less socket is retired and closed), then
// on its AF_XDP socket, and after Close: every frame the link received is read or counted
// as dropped, on both sockets together.
func TestKernelDropsAcrossUpgrade(t *testing.T) {
	p := netnsutil.TwoPods(t)
	u := openFastPort(t, p.Host, p.HostA, smallOpts(Auto, false))
	t.Cleanup(func() { u.Close() })
	s := newSender(t, p.A)
	quiet(t, p, u)
	rx0 := rxPackets(t, p.Host, p.HostA)
	var got uint64

	// On the ring-less socket.
	s.send(t, 3000)
	ringless := balance(t, p.Host, p.HostA, u, rx0, &got)
	if ringless == 0 {
		t.Fatalf("no kernel drops on the ring-less socket after %d frames", s.sent.Load())
	}

	// The upgrade, with frames flowing, a receiver (which drains the old socket, so no
	// frame is left in it when it closes) and a watcher of the total.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var received atomic.Uint64
	wg.Add(3)
	go func() { // the port's one receiving goroutine
		defer wg.Done()
		bufs, lens := make([][]byte, 32), make([]int, 32)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _ := u.Receive(bufs, lens)
			received.Add(uint64(n))
			if n == 0 {
				_ = u.WaitRX(5 * time.Millisecond)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				s.send(t, 100)
			}
		}
	}()
	var readings atomic.Uint64
	go func() {
		defer wg.Done()
		last := ringless
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := u.KernelDrops()
			if err != nil {
				t.Errorf("KernelDrops during the upgrade: %v", err)
				return
			}
			if n < last {
				t.Errorf("KernelDrops went backwards during the upgrade: %d after %d", n, last)
				return
			}
			last = n
			readings.Add(1)
		}
	}()
	o, err := upgrade(t, p.Host, u)
	if err != nil || o.Backend != XDP {
		close(stop)
		wg.Wait()
		t.Fatalf("upgrade = %v, %v; want af_xdp", o.Backend, err)
	}
	time.Sleep(100 * time.Millisecond) // traffic on the AF_XDP socket
	close(stop)
	wg.Wait()
	got += received.Load()

	// Everything since the start: both sockets' drops, and every frame read.
	total := balance(t, p.Host, p.HostA, u, rx0, &got)
	xs, ok := u.ph.Load().cur.p.(*afxdp.Socket)
	if !ok {
		t.Fatalf("after the upgrade the port is on %T", u.ph.Load().cur.p)
	}
	ks, err := xs.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	if xdpDrops(ks) == 0 {
		// Make the AF_XDP socket drop: nobody reads it now.
		s.send(t, 3000)
		total = balance(t, p.Host, p.HostA, u, rx0, &got)
		if ks, err = xs.KernelStats(); err != nil || xdpDrops(ks) == 0 {
			t.Fatalf("no kernel drops on the AF_XDP socket (%+v, %v)", ks, err)
		}
	}
	if total <= ringless || total < ringless+xdpDrops(ks) {
		t.Fatalf("total kernel drops %d; want the ring-less socket's %d (or more: it dropped until it closed) plus the AF_XDP socket's %d", total, ringless, xdpDrops(ks))
	}
	t.Logf("%d frames sent: %d read, %d dropped by the kernel (%d on the ring-less socket before the upgrade, %d on the AF_XDP socket); %d readings during the upgrade",
		s.sent.Load(), got, total, ringless, xdpDrops(ks), readings.Load())

	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := u.KernelDrops(); n != total || err != nil {
		t.Fatalf("KernelDrops after Close = %d, %v; want the final %d, nil", n, err, total)
	}
}

// TestKernelDropsNoAlloc: reading a port's kernel drops (a stats scrape does it for every
// port) allocates nothing.
func TestKernelDropsNoAlloc(t *testing.T) {
	p := netnsutil.TwoPods(t)
	u := openFastPort(t, p.Host, p.HostA, Options{})
	t.Cleanup(func() { u.Close() })
	x, err := open(t, p.Host, p.HostB, Options{Backend: XDP})
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []Port{u, x.Port} {
		if n := testing.AllocsPerRun(100, func() {
			if _, err := KernelDrops(port); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("KernelDrops(%T) allocates %.1f times per call", port, n)
		}
	}
}
