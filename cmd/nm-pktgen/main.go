// Command nm-pktgen is a packet generator and sink for netmap ports served by
// the node agent (pkg/nmport), in the style of netmap's pkt-gen:
//
//	nm-pktgen -socket /run/epair/netmap.sock -i vale0:a -f tx -l 60
//	nm-pktgen -socket /run/epair/netmap.sock -i vale0:b -f rx
//	nm-pktgen -i vale0:b -f pong &  nm-pktgen -i vale0:a -f ping -n 10000
//
// tx sends frames of -l bytes (60-1514, Ethernet header included) in batches
// of -b as fast as the ring allows; rx counts what arrives; ping sends one
// frame and waits for it to come back (pong echoes every frame it receives),
// printing round-trip percentiles. -busy polls the rings instead of sleeping
// in poll. Rates are printed every second and at the end, as frames per second
// counted by this process.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/epair-cni/epair/pkg/nmport"
)

func main() {
	sock := flag.String("socket", "/run/epair/netmap.sock", "the agent's netmap socket (a path, or @name for an abstract socket)")
	name := flag.String("i", "", "port name (netmap syntax: vale0:p, vale0:p{1, vale0:p/r, ...)")
	mode := flag.String("f", "rx", "function: tx, rx, ping or pong")
	length := flag.Int("l", 60, "frame length in bytes (60-1514)")
	batch := flag.Int("b", 256, "frames per sync")
	count := flag.Int("n", 0, "frames to send or receive (0: until -d or interrupted)")
	dur := flag.Duration("d", 0, "run time (0: until -n or interrupted)")
	busy := flag.Bool("busy", false, "busy-poll the rings instead of sleeping in poll")
	src := flag.String("src", "02:6e:6d:00:00:01", "source MAC of the frames (rx and pong announce it once at start, so the switch learns it)")
	dst := flag.String("dst", "ff:ff:ff:ff:ff:ff", "destination MAC of the frames (broadcast floods every port, the host port included)")
	hdr := flag.Int("vnet", 10, "virtio-net header length the switch carries in front of each frame (0 or 10)")
	flag.Parse()
	if *name == "" || *length < 60 || *length > 1514 || *batch < 1 || (*hdr != 0 && *hdr != 10) {
		flag.Usage()
		os.Exit(2)
	}
	srcMAC, err1 := net.ParseMAC(*src)
	dstMAC, err2 := net.ParseMAC(*dst)
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintln(os.Stderr, "nm-pktgen:", err)
		os.Exit(2)
	}
	p, err := nmport.Open(*sock, *name, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nm-pktgen:", err)
		os.Exit(1)
	}
	defer p.Close()
	g := &gen{p: p, src: srcMAC, dst: dstMAC, length: *length, hdr: *hdr, batch: *batch, busy: *busy, count: uint64(*count)}
	if *dur > 0 {
		g.until = time.Now().Add(*dur)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-stop
		g.stopped.Store(true)
	}()
	switch *mode {
	case "tx":
		err = g.tx()
	case "rx":
		err = g.rx(false)
	case "pong":
		err = g.rx(true)
	case "ping":
		err = g.ping()
	default:
		err = fmt.Errorf("unknown function %q (want tx, rx, ping or pong)", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nm-pktgen:", err)
		os.Exit(1)
	}
}

type gen struct {
	p      *nmport.Port
	src    net.HardwareAddr
	dst    net.HardwareAddr
	length int
	hdr    int
	batch  int
	busy   bool
	count  uint64
	until  time.Time

	stopped atomic.Bool
	frames  uint64
	start   time.Time
	last    time.Time
	lastN   uint64
}

func (g *gen) done() bool {
	if g.stopped.Load() || (g.count > 0 && g.frames >= g.count) {
		return true
	}
	return !g.until.IsZero() && time.Now().After(g.until)
}

// wait makes room (tx) or waits for frames (rx).
func (g *gen) wait(ev int16) error {
	if g.busy {
		if err := g.p.TxSync(); err != nil {
			return err
		}
		return g.p.RxSync()
	}
	_, err := g.p.Poll(ev, 300*time.Millisecond)
	return err
}

func (g *gen) report(final bool) {
	now := time.Now()
	if !final && now.Sub(g.last) < time.Second {
		return
	}
	if !g.last.IsZero() && !final {
		rate := float64(g.frames-g.lastN) / now.Sub(g.last).Seconds()
		fmt.Printf("%.3f Mpps  %.2f Gbit/s\n", rate/1e6, rate*float64(g.length)*8/1e9)
	}
	if final {
		el := now.Sub(g.start).Seconds()
		rate := float64(g.frames) / el
		fmt.Printf("total %d frames in %.2fs: %.3f Mpps  %.2f Gbit/s\n", g.frames, el, rate/1e6, rate*float64(g.length)*8/1e9)
	}
	g.last, g.lastN = now, g.frames
}

// frame writes a frame to -dst of the local experimental ethertype with seq
// (and a timestamp) into b, after a zero virtio-net header; it returns the
// length.
func (g *gen) frame(b []byte, seq uint64) int { return g.frameTo(b, g.dst, seq) }

func (g *gen) frameTo(b []byte, dst net.HardwareAddr, seq uint64) int {
	n := g.hdr + g.length
	clear(b[:g.hdr])
	e := b[g.hdr:n]
	copy(e[0:6], dst)
	copy(e[6:12], g.src)
	binary.BigEndian.PutUint16(e[12:], 0x88b5)
	binary.BigEndian.PutUint64(e[14:], seq)
	binary.BigEndian.PutUint64(e[22:], uint64(time.Now().UnixNano()))
	return n
}

func (g *gen) tx() error {
	r := g.p.TxRing(0)
	g.start, g.last = time.Now(), time.Now()
	// Fill every slot's buffer once; only the sequence number changes.
	for i := uint32(0); i < r.NumSlots(); i++ {
		if b := r.Buf(i); b != nil {
			r.Slot(i).Len = uint16(g.frame(b, 0))
		}
	}
	for !g.done() {
		n := 0
		for n < g.batch && r.Space() > 0 && !(g.count > 0 && g.frames >= g.count) {
			i := r.Cur()
			b := r.Buf(i)
			binary.BigEndian.PutUint64(b[g.hdr+14:], g.frames)
			r.Slot(i).Len = uint16(g.hdr + g.length)
			r.Advance(r.Next(i))
			n++
			g.frames++
		}
		if err := g.p.TxSync(); err != nil {
			return err
		}
		if r.Space() == 0 {
			if err := g.wait(nmport.PollOut); err != nil {
				return err
			}
		}
		g.report(false)
	}
	// Let the last frames go.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		g.p.TxSync()
		if r.Space() == r.NumSlots()-1 {
			break
		}
		g.p.Poll(nmport.PollOut, 10*time.Millisecond)
	}
	g.report(true)
	return nil
}

func (g *gen) rx(echo bool) error {
	r := g.p.RxRing(0)
	var t *nmport.Ring
	if echo {
		t = g.p.TxRing(0)
	}
	// Announce our MAC: one broadcast frame, so unicast to it is not flooded.
	at := g.p.TxRing(0)
	j := at.Cur()
	at.Slot(j).Len = uint16(g.frameTo(at.Buf(j), net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1<<63))
	at.Advance(at.Next(j))
	if err := g.p.TxSync(); err != nil {
		return err
	}
	g.start, g.last = time.Now(), time.Now()
	for !g.done() {
		if r.Empty() {
			if err := g.wait(nmport.PollIn); err != nil {
				return err
			}
		}
		for !r.Empty() {
			i := r.Cur()
			if echo {
				for t.Space() == 0 {
					if err := g.wait(nmport.PollOut); err != nil {
						return err
					}
				}
				j := t.Cur()
				b := t.Buf(j)
				n := copy(b, r.Buf(i)[:r.Slot(i).Len])
				if n >= g.hdr+12 {
					// Back to the sender: swap the MAC addresses.
					e := b[g.hdr:]
					var tmp [6]byte
					copy(tmp[:], e[0:6])
					copy(e[0:6], e[6:12])
					copy(e[6:12], tmp[:])
				}
				t.Slot(j).Len = uint16(n)
				t.Advance(t.Next(j))
			}
			r.Advance(r.Next(i))
			g.frames++
		}
		if echo {
			if err := g.p.TxSync(); err != nil {
				return err
			}
		}
		if err := g.p.RxSync(); err != nil {
			return err
		}
		if !echo {
			g.report(false)
		}
	}
	g.report(true)
	return nil
}

func (g *gen) ping() error {
	r, t := g.p.RxRing(0), g.p.TxRing(0)
	var rtts []time.Duration
	g.start = time.Now()
	if g.count == 0 && g.until.IsZero() {
		g.count = 10000
	}
	for !g.done() {
		j := t.Cur()
		t.Slot(j).Len = uint16(g.frame(t.Buf(j), g.frames))
		t.Advance(t.Next(j))
		sent := time.Now()
		if err := g.p.TxSync(); err != nil {
			return err
		}
		got := false
		for !got && time.Since(sent) < time.Second {
			if err := g.wait(nmport.PollIn); err != nil {
				return err
			}
			for !r.Empty() {
				i := r.Cur()
				b := r.Buf(i)
				if int(r.Slot(i).Len) >= g.hdr+22 && binary.BigEndian.Uint64(b[g.hdr+14:]) == g.frames {
					got = true
				}
				r.Advance(r.Next(i))
			}
			g.p.RxSync()
		}
		if got {
			rtts = append(rtts, time.Since(sent))
		}
		g.frames++
	}
	if len(rtts) == 0 {
		return fmt.Errorf("no reply to %d frames", g.frames)
	}
	slices.Sort(rtts)
	pct := func(q float64) time.Duration { return rtts[int(q*float64(len(rtts)-1))] }
	fmt.Printf("%d of %d replies; rtt p50 %v p90 %v p99 %v max %v\n", len(rtts), g.frames,
		pct(0.5), pct(0.9), pct(0.99), rtts[len(rtts)-1])
	return nil
}
