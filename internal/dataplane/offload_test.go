package dataplane

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
)

func TestOffloadConfigRejected(t *testing.T) {
	for _, c := range []OffloadConfig{
		{Switch: SwitchConfig{Name: "vale0"}, RingSlots: 100},
		{Switch: SwitchConfig{Name: "not-a-switch"}},
		{Switch: SwitchConfig{Name: "vale0", MTU: 10}},
	} {
		if _, err := NewOffloadSwitch(c); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("NewOffloadSwitch(%+v) = %v; want EINVAL", c, err)
		}
	}
}

// offloadTCP sends size bytes over TCP from a socket made in from to a
// listener made in to, and returns what arrived.
func offloadTCP(t *testing.T, from, to *netnsutil.NS, addr string, size int) int64 {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func() error { var err error; ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
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
	if err := from.Do(func() error { var err error; c, err = net.DialTimeout("tcp4", addr, 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n, err := c.Write(buf[:min(left, len(buf))])
		if err != nil {
			c.Close()
			t.Fatalf("write: %v", err)
		}
		left -= n
	}
	c.Close()
	return <-got
}

// TestOffloadSwitchTraffic: pods with TSO and checksum offload on, through an
// OffloadSwitch: ping, UDP, TCP pod to pod and pod to host move, the TCP
// super-frames cross as chains (counted), and Close leaves nothing behind.
func TestOffloadSwitchTraffic(t *testing.T) {
	p := netnsutil.TwoPods(t)
	for _, ns := range []*netnsutil.NS{p.A, p.B} {
		fd, err := sys.SocketAt(ns.Handle, unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = sys.SetTxChecksum(fd, "eth0", true)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
	}
	p.StaticNeighbors(t)
	before := runtime.NumGoroutine()
	var o *OffloadSwitch
	err := p.Host.Do(func() error {
		var err error
		o, err = NewOffloadSwitch(OffloadConfig{Switch: SwitchConfig{Name: "vale3", HostPort: HostPortConfig{
			Gateways: []netip.Prefix{netip.MustParsePrefix("10.77.0.254/24")},
		}}})
		if err != nil {
			return err
		}
		for _, l := range []string{p.HostA, p.HostB} {
			if err := o.AttachLink(l); err != nil {
				return err
			}
		}
		return o.AttachLink(p.HostA)
	})
	if !errors.Is(err, ErrBusy) {
		if o != nil {
			o.Close()
		}
		t.Fatalf("set up offload switch: %v; want the second attach of %s refused with ErrBusy", err, p.HostA)
	}
	defer o.Close()
	if out, err := p.A.Exec("ping", "-c", "2", "-i", "0.2", "-W", "2", p.IPB); err != nil {
		t.Fatalf("ping A → B: %v\n%s", err, out)
	}
	if out, err := p.B.Exec("ping", "-c", "2", "-i", "0.2", "-W", "2", "10.77.0.254"); err != nil {
		t.Fatalf("ping B → host: %v\n%s", err, out)
	}
	n := porttest.Frames(t) / 10
	if got := porttest.UDPStream(t, p, n, 96); got != n {
		t.Fatalf("UDP A → B: %d of %d", got, n)
	}
	if got := offloadTCP(t, p.A, p.B, p.IPB+":5301", 32<<20); got != 32<<20 {
		t.Fatalf("TCP A → B: %d bytes", got)
	}
	if got := offloadTCP(t, p.A, p.Host, "10.77.0.254:5302", 8<<20); got != 8<<20 {
		t.Fatalf("TCP A → host: %d bytes", got)
	}
	st := o.Stats()
	rx := map[string]uint64{}
	for _, s := range st {
		rx[s.Name] = s.RxChains
		t.Logf("%+v", s)
	}
	if rx[p.HostA] == 0 {
		t.Errorf("no super-frame from pod A reached the switch: %+v", st)
	}
	if c, err := o.Counters(); err != nil {
		t.Errorf("switch counters: %v", err)
	} else {
		t.Logf("switch counters %+v", c)
	}
	for _, s := range st {
		if s.Name == p.HostB && s.TxChains == 0 {
			t.Errorf("no super-frame was sent to pod B: %+v", s)
		}
	}
	if err := o.DetachLink(p.HostB); err != nil {
		t.Fatal(err)
	}
	if err := o.DetachLink(p.HostB); !errors.Is(err, ErrNoPort) {
		t.Errorf("second detach: %v; want ErrNoPort", err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if links := p.Host.LinkNames(t); len(links) != 3 { // lo, ha, hb: the TAP is gone
		t.Errorf("links left in the host namespace: %v", links)
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("%d goroutines after Close, %d before", g, before)
	}
}
