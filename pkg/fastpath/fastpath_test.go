package fastpath

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

func TestMain(m *testing.M) { netnsutil.Main(m) }

// pods is netnsutil's two pods with the fast path serving their host-side interfaces.
type pods struct {
	*netnsutil.Pods
	f      *FastPath
	ha, hb int
	pa, pb Port
}

func newPods(t *testing.T) *pods {
	t.Helper()
	netnsutil.RequireRoot(t)
	p := &pods{Pods: netnsutil.TwoPods(t)}
	p.StaticNeighbors(t)
	for _, l := range []struct {
		name string
		idx  *int
	}{{p.HostA, &p.ha}, {p.HostB, &p.hb}} {
		ln, err := p.Host.NL.LinkByName(l.name)
		if err != nil {
			t.Fatal(err)
		}
		*l.idx = ln.Attrs().Index
	}
	if err := p.Host.Do(func() (err error) { p.f, err = New(); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.f.Close(); err != nil {
			t.Error(err)
		}
	})
	p.pa = Port{Ifindex: p.ha, Switch: 1, MAC: p.MACA, IPv4: netip.MustParseAddr(p.IPA), Source: true, Dest: true}
	p.pb = Port{Ifindex: p.hb, Switch: 1, MAC: p.MACB, IPv4: netip.MustParseAddr(p.IPB), Source: true, Dest: true}
	p.set(t, p.pa)
	p.set(t, p.pb)
	return p
}

func (p *pods) set(t *testing.T, port Port) {
	t.Helper()
	if err := p.Host.Do(func() error { return p.f.Set(port) }); err != nil {
		t.Fatal(err)
	}
}

// programs is how many tcx ingress programs interface ifindex of the host namespace has.
func (p *pods) programs(t *testing.T, ifindex int) int {
	t.Helper()
	return p.programsAt(t, ifindex, ebpf.AttachTCXIngress)
}

// programsAt is how many tcx programs interface ifindex of the host namespace has at the
// attach point at.
func (p *pods) programsAt(t *testing.T, ifindex int, at ebpf.AttachType) int {
	t.Helper()
	var n int
	err := p.Host.Do(func() error {
		r, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		if err == nil {
			n = len(r.Programs)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tap opens a packet socket on interface ifindex of the host namespace, as the switch
// does, with the fast path's filter attached before it is bound.
func (p *pods) tap(t *testing.T, ifindex int) int {
	t.Helper()
	fd, err := sys.SocketAt(p.Host.Handle, unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, p.f.Filter().FD()); err != nil {
		t.Fatalf("attach the filter: %v", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

const udpPort = 5000

// tapped counts the UDP frames to udpPort the tap reads until it has been quiet for
// 100 ms.
func tapped(t *testing.T, fd int) int {
	t.Helper()
	buf := make([]byte, 2048)
	n := 0
	for {
		m, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		if m >= 38 && binary.BigEndian.Uint16(buf[12:]) == 0x0800 && buf[23] == protoUDP &&
			binary.BigEndian.Uint16(buf[36:]) == udpPort {
			n++
		}
	}
}

// listen opens a UDP socket on pod B.
func (p *pods) listen(t *testing.T) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := p.B.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(p.IPB), Port: udpPort})
		return
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	return c
}

// send sends n datagrams from pod A (from address from) to pod B, each carrying its
// sequence number.
func (p *pods) send(t *testing.T, from string, n int, pace func(i int)) {
	t.Helper()
	var c *net.UDPConn
	if err := p.A.Do(func() (err error) {
		c, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.ParseIP(p.IPB), Port: udpPort})
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, 64)
	for i := range n {
		binary.BigEndian.PutUint32(b, uint32(i))
		if _, err := c.Write(b); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		if pace != nil {
			pace(i)
		}
	}
}

// received reads datagrams on c until it has been quiet for quiet, and returns how often
// each sequence number arrived.
func received(t *testing.T, c *net.UDPConn, n int, quiet time.Duration) []int {
	t.Helper()
	seen := make([]int, n)
	b := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(quiet))
		m, err := c.Read(b)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return seen
		}
		if err != nil {
			t.Fatal(err)
		}
		if s := binary.BigEndian.Uint32(b); m >= 4 && int(s) < n {
			seen[s]++
		}
	}
}

func count(seen []int) (got int) {
	for _, s := range seen {
		if s > 0 {
			got++
		}
	}
	return got
}

// TestRedirect: frames between the two pods go through the fast path (the switch's
// socket never sees them, the counters do), spoofed frames and frames of a port whose
// Source is off reach the switch's socket instead, and removing and closing leave no
// program on the interfaces.
func TestRedirect(t *testing.T) {
	p := newPods(t)
	if n := p.programs(t, p.ha); n != 1 {
		t.Fatalf("%s has %d tcx programs at ingress, want 1", p.HostA, n)
	}
	tap := p.tap(t, p.ha)
	rx := p.listen(t)
	const n = 200

	p.send(t, p.IPA, n, nil)
	if got := count(received(t, rx, n, 300*time.Millisecond)); got != n {
		t.Fatalf("pod B received %d of %d datagrams through the fast path", got, n)
	}
	if got := tapped(t, tap); got != 0 {
		t.Errorf("the switch's socket saw %d datagrams the fast path moved", got)
	}
	sa, err := p.f.Stats(p.ha)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := p.f.Stats(p.hb)
	if err != nil {
		t.Fatal(err)
	}
	if sa.InFrames < n || sb.OutFrames < n || sa.InBytes < n*(14+28+64) {
		t.Errorf("counters: %s %+v, %s %+v; want at least %d frames in and out", p.HostA, sa, p.HostB, sb, n)
	}

	// A source address that is not the pod's: the switch decides.
	addr, err := p.A.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	spoof := "10.77.0.9"
	a, err := netlink.ParseAddr(spoof + "/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.A.NL.AddrAdd(addr, a); err != nil {
		t.Fatal(err)
	}
	p.send(t, spoof, n, nil)
	if got := tapped(t, tap); got != n {
		t.Errorf("spoofed source: the switch's socket saw %d of %d datagrams", got, n)
	}
	if got := count(received(t, rx, n, 100*time.Millisecond)); got != 0 {
		t.Errorf("spoofed source: pod B received %d datagrams past the switch", got)
	}

	// Source off: every frame the pod sends goes to the switch.
	off := p.pa
	off.Source = false
	p.set(t, off)
	p.send(t, p.IPA, n, nil)
	if got := tapped(t, tap); got != n {
		t.Errorf("Source off: the switch's socket saw %d of %d datagrams", got, n)
	}
	if got := count(received(t, rx, n, 100*time.Millisecond)); got != 0 {
		t.Errorf("Source off: pod B received %d datagrams past the switch", got)
	}

	// Removed: the program is gone from the interface, frames reach the switch.
	p.set(t, p.pa)
	if err := p.f.Remove(p.ha); err != nil {
		t.Fatal(err)
	}
	if n := p.programs(t, p.ha); n != 0 {
		t.Errorf("%s keeps %d tcx programs after Remove", p.HostA, n)
	}
	p.send(t, p.IPA, n, nil)
	if got := tapped(t, tap); got != n {
		t.Errorf("removed: the switch's socket saw %d of %d datagrams", got, n)
	}
	if err := p.f.Remove(p.ha); err != nil {
		t.Errorf("Remove of a removed port: %v", err)
	}
	if err := p.f.Close(); err != nil {
		t.Fatal(err)
	}
	if n := p.programs(t, p.hb); n != 0 {
		t.Errorf("%s keeps %d tcx programs after Close", p.HostB, n)
	}
}

// TestTCPOffloaded: a TCP transfer with pod A's offloads on (TSO, checksum offload)
// crosses the fast path whole and intact, as GSO super-frames.
func TestTCPOffloaded(t *testing.T) {
	p := newPods(t)
	fd, err := sys.SocketAt(p.A.Handle, unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := sys.SetTxChecksum(fd, "eth0", true); err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	netnsutil.TCPTransfer(t, p.A, p.B, p.IPB, 5001, size)
	s, err := p.f.Stats(p.ha)
	if err != nil {
		t.Fatal(err)
	}
	if s.InBytes < size {
		t.Fatalf("the fast path moved %d bytes from pod A, want at least %d", s.InBytes, size)
	}
	// Super-frames: far fewer frames than 1500-byte ones would take.
	if s.InFrames > size/1500/4 {
		t.Errorf("%d frames for %d bytes: no GSO super-frames", s.InFrames, s.InBytes)
	}
}

// TestNoLossWhileChanging: a stream of datagrams from pod A to pod B while B's port goes
// in and out of the fast path hundreds of times; a relay stands in for the switch (what
// its socket on A's interface receives, it sends to B). Every datagram arrives: a frame
// is always moved by the fast path or kept for the switch.
func TestNoLossWhileChanging(t *testing.T) {
	p := newPods(t)
	tap := p.tap(t, p.ha)
	out, err := sys.SocketAt(p.Host.Handle, unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(out)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: p.hb}
	var stop atomic.Bool
	var relayed atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for !stop.Load() {
			m, err := unix.Read(tap, buf)
			if err != nil {
				continue
			}
			if err := unix.Sendto(out, buf[:m], 0, to); err == nil {
				relayed.Add(1)
			}
		}
	}()
	var toggles atomic.Int64
	sending := make(chan struct{})
	go func() {
		defer wg.Done()
		pb := p.pb
		for {
			select {
			case <-sending:
				return
			default:
			}
			pb.Dest = !pb.Dest
			if err := p.Host.Do(func() error { return p.f.Set(pb) }); err != nil {
				t.Error(err)
				return
			}
			toggles.Add(1)
		}
	}()
	rx := p.listen(t)
	const n = 20000
	got := make(chan []int, 1)
	go func() { got <- received(t, rx, n, time.Second) }()
	p.send(t, p.IPA, n, func(i int) {
		if i%10 == 9 {
			time.Sleep(time.Millisecond)
		}
	})
	close(sending)
	seen := <-got
	stop.Store(true)
	wg.Wait()
	st, err := unix.GetsockoptTpacketStats(tap, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops > 0 {
		t.Fatalf("the relay's socket dropped %d frames: the test cannot tell", st.Drops)
	}
	dups := 0
	var missing []int
	for i, s := range seen {
		if s == 0 {
			missing = append(missing, i)
		}
		if s > 1 {
			dups += s - 1
		}
	}
	t.Logf("%d toggles, %d frames relayed by the switch's stand-in, %d duplicates", toggles.Load(), relayed.Load(), dups)
	if toggles.Load() < 20 || relayed.Load() == 0 {
		t.Fatalf("only %d toggles, %d frames relayed: the test did not exercise the change", toggles.Load(), relayed.Load())
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d datagrams lost while the port changed (first %v)", len(missing), n, missing[:min(len(missing), 10)])
	}
}

// TestHostPort: a TAP in the host namespace without a reader stands in for a switch's
// TAP (its reader, the switch, would get what it transmits; here it is dropped): with the host port
// on the fast path, pod A reaches the node's address on it (into its ingress) and the
// node answers (out of its egress, redirected to the pod), by ping and a TCP transfer;
// with the host port off, nothing gets through.
func TestHostPort(t *testing.T) {
	p := newPods(t)
	gwMAC := net.HardwareAddr{0x02, 0, 0, 0x77, 0, 0xfe}
	const gwIP = "10.77.0.254"
	gw := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "gw0", HardwareAddr: gwMAC}, Mode: netlink.TUNTAP_MODE_TAP}
	// The TAP is made by an ioctl in the calling thread's namespace, not netlink's.
	if err := p.Host.Do(func() error { return netlink.LinkAdd(gw) }); err != nil {
		t.Fatal(err)
	}
	l, err := p.Host.NL.LinkByName("gw0")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Host.NL.LinkSetHardwareAddr(l, gwMAC); err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr(gwIP + "/24")
	if err := p.Host.NL.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	if err := p.Host.NL.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	neigh := func(ns *netnsutil.NS, link int, ip string, mac net.HardwareAddr) {
		t.Helper()
		if err := ns.NL.NeighSet(&netlink.Neigh{LinkIndex: link, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4,
			IP: net.ParseIP(ip), HardwareAddr: mac}); err != nil {
			t.Fatal(err)
		}
	}
	neigh(p.Host, l.Attrs().Index, p.IPA, p.MACA)
	eth0, err := p.A.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	neigh(p.A, eth0.Attrs().Index, gwIP, gwMAC)
	host := Port{Ifindex: l.Attrs().Index, Switch: 1, MAC: gwMAC, Host: true, Source: true, Dest: true}
	p.set(t, host)
	if n := p.programsAt(t, host.Ifindex, ebpf.AttachTCXEgress); n != 1 {
		t.Fatalf("the host port has %d tcx egress programs, want 1", n)
	}

	if out, err := p.A.Exec("ping", "-c", "3", "-i", "0.2", "-W", "2", gwIP); err != nil {
		sa, _ := p.f.Stats(p.ha)
		sh, _ := p.f.Stats(host.Ifindex)
		t.Fatalf("ping the node through the fast path: %v\n%s\ncounters: pod A %+v, host port %+v", err, out, sa, sh)
	}
	netnsutil.TCPTransfer(t, p.A, p.Host, gwIP, 5002, 16<<20)
	netnsutil.TCPTransfer(t, p.Host, p.A, p.IPA, 5003, 16<<20)
	s, err := p.f.Stats(host.Ifindex)
	if err != nil {
		t.Fatal(err)
	}
	if s.InBytes < 16<<20 || s.OutBytes < 16<<20 {
		t.Errorf("host port counters %+v: want both ways at least 16 MiB", s)
	}

	off := host
	off.Source, off.Dest = false, false
	p.set(t, off)
	if out, err := p.A.Exec("ping", "-c", "1", "-W", "1", gwIP); err == nil {
		t.Fatalf("ping the node with the host port off the fast path went through:\n%s", out)
	}
	if err := p.f.Remove(host.Ifindex); err != nil {
		t.Fatal(err)
	}
	if n := p.programsAt(t, host.Ifindex, ebpf.AttachTCXEgress); n != 0 {
		t.Fatalf("the host port keeps %d tcx egress programs after Remove", n)
	}
}
