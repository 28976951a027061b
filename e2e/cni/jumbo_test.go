package cni

import (
	"bytes"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestJumboFrames: a switch with a 9000-byte MTU (the data centre's jumbo frames) gives its
// pods that MTU, and whole 9000-byte packets cross it, between pods and to the node, with
// DF set: pings of 8972 bytes (one byte more is refused as too long, so the MTU is exactly
// 9000), 100 UDP datagrams of 8972 bytes echoed back intact, and a TCP transfer whose
// content is verified.
func TestJumboFrames(t *testing.T) {
	e := newEnv(t, envOpts{subnet: "10.74.0.0/24", mtu: 9000})
	l := e.conflist("1.1.0")
	a, b := netnsutil.New(t), netnsutil.New(t)
	e.mustAdd(l, rt("jumbo-a", a))
	rb := e.mustAdd(l, rt("jumbo-b", b))
	ipB := podIP(rb)
	for _, ns := range []*netnsutil.NS{a, b} {
		out, err := ns.Exec("ip", "-o", "link", "show", "eth0")
		if err != nil || !strings.Contains(out, " mtu 9000 ") {
			t.Fatalf("pod %s: eth0 (want mtu 9000): %v %s", ns.Name, err, out)
		}
	}
	for _, dst := range []string{ipB, "10.74.0.1"} { // a pod, and the node through the host port
		if out, err := a.Exec("ping", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", "8972", dst); err != nil {
			t.Fatalf("ping -M do -s 8972 %s: %v\n%s", dst, err, out)
		}
	}
	if out, err := a.Exec("ping", "-c", "1", "-W", "1", "-M", "do", "-s", "8973", ipB); err == nil {
		t.Fatalf("ping -M do -s 8973 went through: the pod's MTU is above 9000\n%s", out)
	}

	// UDP: 8972-byte datagrams (9000-byte IP packets), echoed by pod B.
	var srv *net.UDPConn
	if err := b.Do(func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ipB), Port: 7009})
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 9100)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:n], from)
		}
	}()
	var cl *net.UDPConn
	if err := a.Do(func() (err error) {
		cl, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(ipB), Port: 7009})
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	msg, got := make([]byte, 8972), make([]byte, 9100)
	for i := range 100 {
		for j := range msg {
			msg[j] = byte(i*7 + j)
		}
		binary.BigEndian.PutUint32(msg, uint32(i))
		if _, err := cl.Write(msg); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		cl.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := cl.Read(got)
		if err != nil || !bytes.Equal(got[:n], msg) {
			t.Fatalf("datagram %d: echo %d bytes, %v; want the 8972 bytes sent", i, n, err)
		}
	}
	rate := netnsutil.TCPTransfer(t, a, b, ipB, 5209, 16<<20)
	t.Logf("9000-byte MTU: pings and 100 UDP echoes of 8972 bytes, TCP %.2f Gbit/s", rate/1e9)
}
