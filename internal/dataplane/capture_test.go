package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

// icmpEcho parses an Ethernet/IPv4/ICMP echo frame: its type (8 request, 0 reply) and
// addresses; ok is false for any other frame.
func icmpEcho(b []byte) (typ byte, src, dst string, ok bool) {
	if len(b) < 14+20+8 || binary.BigEndian.Uint16(b[12:]) != 0x0800 || b[14+9] != 1 {
		return 0, "", "", false
	}
	ihl := int(b[14]&0x0f) * 4
	if len(b) < 14+ihl+8 {
		return 0, "", "", false
	}
	return b[14+ihl], net.IP(b[14+12 : 14+16]).String(), net.IP(b[14+16 : 14+20]).String(), true
}

// TestCapture captures a pod's port while it pings another pod: the echo requests come
// from the pod (rx), the replies go to it (tx), whole and in order, each with its length;
// a snap length cuts the data but not Len; a direction filter keeps only that direction;
// Close removes the tap (nothing more is captured) and Next then ends.
func TestCapture(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, nil)
	a, b := e.pods[0], e.pods[1]
	e.ping(a, b.ip) // ARP resolved, FDB static anyway
	if _, err := e.dp.Capture("vale0:nosuch", CaptureOptions{}); !errors.Is(err, ErrNoPort) {
		t.Fatalf("capture of an unknown port: %v, want ErrNoPort", err)
	}
	if _, err := e.dp.Capture("nosuch", CaptureOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("capture of a bad name: %v, want ErrInvalid", err)
	}
	all, err := e.dp.Capture(a.portName(), CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	short, err := e.dp.Capture(a.portName(), CaptureOptions{TX: true, SnapLen: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	if out, err := a.ns.Exec("ping", "-c", "3", "-i", "0.2", "-s", "100", "-W", "2", b.ip); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var req, rep int
	for req < 3 || rep < 3 {
		f, err := all.Next(ctx)
		if err != nil {
			t.Fatalf("after %d requests and %d replies: %v", req, rep, err)
		}
		typ, src, dst, ok := icmpEcho(f.Data)
		switch {
		case !ok:
		case typ == 8 && !f.TX && src == a.ip && dst == b.ip && f.Len == 14+20+8+100 && !f.Dropped:
			req++
		case typ == 0 && f.TX && src == b.ip && dst == a.ip && f.Len == 14+20+8+100:
			rep++
		default:
			t.Fatalf("unexpected echo type %d tx %v %s → %s len %d", typ, f.TX, src, dst, f.Len)
		}
	}
	replies := 0
	for replies < 3 {
		f, err := short.Next(ctx)
		if err != nil {
			t.Fatalf("tx-only capture after %d replies: %v", replies, err)
		}
		if !f.TX || len(f.Data) > 40 {
			t.Fatalf("tx-only capture with snap length 40: tx %v, %d bytes", f.TX, len(f.Data))
		}
		if d := f.Data; len(d) > 34 && binary.BigEndian.Uint16(d[12:]) == 0x0800 && d[23] == 1 && d[34] == 0 && f.Len == 142 {
			replies++
		}
	}
	// A frame port security refuses is captured as dropped, with its reason.
	drops, err := e.dp.Capture(a.portName(), CaptureOptions{RX: true})
	if err != nil {
		t.Fatal(err)
	}
	defer drops.Close()
	sendRaw(t, a, udpFrame(a.pair.PodMAC, b.pair.PodMAC, "10.78.0.200", b.ip))
	for {
		f, err := drops.Next(ctx)
		if err != nil {
			t.Fatalf("no refused frame captured: %v", err)
		}
		if len(f.Data) > 30 && net.IP(f.Data[26:30]).String() == "10.78.0.200" {
			if !f.Dropped || !f.Refused || f.Reason != "spoofed-ip" || f.TX {
				t.Fatalf("spoofed frame captured as dropped %v refused %v reason %q tx %v", f.Dropped, f.Refused, f.Reason, f.TX)
			}
			break
		}
		if f.Dropped {
			t.Fatalf("a legitimate frame captured as dropped (%s)", f.Reason)
		}
	}
	all.Close()
	all.Close()
	if _, err := all.Next(ctx); !errors.Is(err, ErrCaptureClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	before := len(all.ready)
	e.ping(a, b.ip)
	if n := len(all.ready); n != before {
		t.Fatalf("a closed capture took %d more frames", n-before)
	}
}

// TestCaptureCount: PortInfo.Captures counts a port's open captures, in Port and in
// Switches alike: two captures of one port are 2 (the other port stays 0), closing one
// leaves 1 however often it is closed, closing both 0. A capture of the host port counts
// for no pod port. The port detached and attached again under its name starts from 0
// while a capture of the old one is still open, and that capture's Close leaves no count
// behind.
func TestCaptureCount(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, nil)
	a, b := e.pods[0], e.pods[1]
	want := func(p *pod, n int) {
		t.Helper()
		pi, err := e.dp.Port(p.portName())
		if err != nil {
			t.Fatal(err)
		}
		listed := -1
		for _, q := range e.dp.Switches()[0].Ports {
			if q.Name == p.portName() {
				listed = q.Captures
			}
		}
		if pi.Captures != n || listed != n {
			t.Fatalf("%s: Port has %d captures, Switches %d; want %d", p.portName(), pi.Captures, listed, n)
		}
	}
	c1, err := e.dp.Capture(a.portName(), CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := e.dp.Capture(a.portName(), CaptureOptions{TX: true, SnapLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	want(a, 2)
	want(b, 0)
	c1.Close()
	want(a, 1)
	c1.Close()
	want(a, 1)
	c2.Close()
	want(a, 0)

	hc, err := e.dp.Capture(e.dp.Switches()[0].HostPort, CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want(a, 0)
	want(b, 0)
	hc.Close()

	cb, err := e.dp.Capture(b.portName(), CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	want(b, 1)
	if err := e.dp.DetachPort(context.Background(), b.portName()); err != nil {
		t.Fatal(err)
	}
	e.attach(b)
	want(b, 0)
	cb.Close()
	want(b, 0)
}
