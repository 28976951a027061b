package nmport_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/epair-cni/epair/internal/appport"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/nmport"
	"github.com/epair-cni/epair/pkg/vale"
)

// agents numbers the agents started by this process, so that each gets its
// own abstract socket name.
var agents atomic.Uint32

// startAgent stands in for the node agent: a netmap instance of this
// process with VALE switches, served on an abstract unix socket whose name
// is unique to this process and call (abstract names are shared by the
// whole network namespace). The switches belong to this netmap instance
// alone, so "vale0" cannot clash with anything else. No privilege is needed.
// stop closes the server, which waits for its connections to end.
func startAgent() (addr string, stop func()) {
	nm := netmap.New(netmap.Config{})
	reg, err := vale.New(nm, vale.DefaultOptions())
	if err != nil {
		panic(err)
	}
	addr = fmt.Sprintf("@epair-nmport-example-%d-%d", os.Getpid(), agents.Add(1))
	srv, err := appport.Listen(addr, nm, appport.Options{})
	if err != nil {
		reg.Close()
		panic(err)
	}
	return addr, func() {
		srv.Close()
		reg.Close()
	}
}

// ethFrame is a minimal Ethernet frame: dst, src, a local experimental
// EtherType and payload, padded to the 60-byte minimum.
func ethFrame(dst, src net.HardwareAddr, payload string) []byte {
	f := make([]byte, 60)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	f[12], f[13] = 0x88, 0xb5
	copy(f[14:], payload)
	return f
}

// Two applications on the same VALE switch: a sends a broadcast frame from
// its TX ring, b waits for it with Poll and reads it from its RX ring.
func ExampleOpen() {
	sock, stop := startAgent() // the agent's netmap socket, e.g. "/run/epair/netmap.sock"
	defer stop()

	a, err := nmport.Open(sock, "vale0:a", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	b, err := nmport.Open(sock, "vale0:b", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	fmt.Println(a.Name(), "and", b.Name(), "open")

	// Fill the slot at cur of a's first TX ring and hand it to the switch.
	srcMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	tx := a.TxRing(0)
	i := tx.Cur()
	tx.Slot(i).Len = uint16(copy(tx.Buf(i), ethFrame(bcast, srcMAC, "hello from a")))
	tx.Advance(tx.Next(i)) // head = cur = the next slot
	if err := a.TxSync(); err != nil {
		fmt.Println(err)
		return
	}

	// Wait until b has something to read; Poll syncs b's rings.
	ev, err := b.Poll(nmport.PollIn, 5*time.Second)
	if err != nil || ev&nmport.PollIn == 0 {
		fmt.Println("nothing received:", ev, err)
		return
	}
	if err := b.RxSync(); err != nil {
		fmt.Println(err)
		return
	}

	// The frames are in [cur, tail) of b's RX ring.
	rx := b.RxRing(0)
	for j := rx.Cur(); j != rx.Tail(); j = rx.Next(j) {
		f := rx.Buf(j)[:rx.Slot(j).Len]
		payload, _, _ := bytes.Cut(f[14:], []byte{0})
		fmt.Printf("b received %d bytes from %v to %v: %q\n",
			len(f), net.HardwareAddr(f[6:12]), net.HardwareAddr(f[0:6]), payload)
		rx.Advance(rx.Next(j)) // done with slot j
	}
	// Give the read slots back to the agent.
	if err := b.RxSync(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("b's RX ring empty:", rx.Empty())

	// Output:
	// vale0:a and vale0:b open
	// b received 60 bytes from 02:00:00:00:00:0a to ff:ff:ff:ff:ff:ff: "hello from a"
	// b's RX ring empty: true
}

// Poll waits for a port to become readable (PollIn) or writable (PollOut),
// and returns 0 when the timeout passes first. Here b announces itself, so
// the switch learns its address, and a then sends a unicast frame to it.
func ExamplePort_Poll() {
	sock, stop := startAgent()
	defer stop()

	a, err := nmport.Open(sock, "vale0:a", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	b, err := nmport.Open(sock, "vale0:b", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	macA := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

	// send puts one frame on p's first TX ring, polling for space first.
	send := func(p *nmport.Port, f []byte) error {
		if _, err := p.Poll(nmport.PollOut, time.Second); err != nil {
			return err
		}
		tx := p.TxRing(0)
		i := tx.Cur()
		tx.Slot(i).Len = uint16(copy(tx.Buf(i), f))
		tx.Advance(tx.Next(i))
		return p.TxSync()
	}
	// recv waits for one frame on p's first RX ring and releases its slot.
	recv := func(p *nmport.Port) ([]byte, error) {
		ev, err := p.Poll(nmport.PollIn, 5*time.Second)
		if err != nil {
			return nil, err
		}
		if ev&nmport.PollIn == 0 {
			return nil, fmt.Errorf("%s: nothing received", p.Name())
		}
		rx := p.RxRing(0)
		i := rx.Cur()
		f := bytes.Clone(rx.Buf(i)[:rx.Slot(i).Len])
		rx.Advance(rx.Next(i))
		return f, p.RxSync()
	}

	// Nothing was sent yet: a's TX ring has room, b has nothing to read.
	ev, _ := a.Poll(nmport.PollOut, 0)
	fmt.Println("a writable:", ev&nmport.PollOut != 0)
	ev, _ = b.Poll(nmport.PollIn, 20*time.Millisecond)
	fmt.Println("b readable after 20ms:", ev&nmport.PollIn != 0)

	// b announces itself; a sees the broadcast and answers b directly.
	if err := send(b, ethFrame(bcast, macB, "who is there?")); err != nil {
		fmt.Println(err)
		return
	}
	f, err := recv(a)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("a got a broadcast from %v\n", net.HardwareAddr(f[6:12]))
	if err := send(a, ethFrame(macB, macA, "a is here")); err != nil {
		fmt.Println(err)
		return
	}
	f, err = recv(b)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("b got %d bytes from %v to %v\n", len(f), net.HardwareAddr(f[6:12]), net.HardwareAddr(f[0:6]))

	// Output:
	// a writable: true
	// b readable after 20ms: false
	// a got a broadcast from 02:00:00:00:00:0b
	// b got 60 bytes from 02:00:00:00:00:0a to 02:00:00:00:00:0b
}
