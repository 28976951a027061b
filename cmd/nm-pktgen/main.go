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
//
// Frames are IPv4/UDP (port 9 to 9, no UDP checksum) from -srcip to -dstip,
// with a sequence number and a timestamp as payload, like pkt-gen's. A pod's
// application port (the agent gave it a MAC and addresses, printed at start)
// sends as itself by default: the switch's anti-spoofing refuses any other
// source. pong answers from its own MAC and address to the sender's.
//
// In a pod with application ports, the socket is the abstract @epair-netmap:
//
//	nm-pktgen -socket @epair-netmap -i vale0:app -f pong
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	src := flag.String("src", "", "source MAC of the frames (default: the port's, else 02:6e:6d and a hash of the port name; rx and pong announce it once at start, so the switch learns it)")
	dst := flag.String("dst", "ff:ff:ff:ff:ff:ff", "destination MAC of the frames (broadcast floods every port, the host port included)")
	srcIP := flag.String("srcip", "", "source IPv4 address (default: the port's, else 10.0.0.1)")
	dstIP := flag.String("dstip", "10.1.0.1", "destination IPv4 address")
	hdr := flag.Int("vnet", 10, "virtio-net header length the switch carries in front of each frame (0 or 10)")
	flag.Parse()
	if *name == "" || *length < 60 || *length > 1514 || *batch < 1 || (*hdr != 0 && *hdr != 10) {
		flag.Usage()
		os.Exit(2)
	}
	dstMAC, err := net.ParseMAC(*dst)
	dip, err2 := netip.ParseAddr(*dstIP)
	if err = errors.Join(err, err2); err != nil || !dip.Is4() {
		fmt.Fprintln(os.Stderr, "nm-pktgen: -dst, -dstip:", err, dip)
		os.Exit(2)
	}
	p, err := nmport.Open(*sock, *name, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nm-pktgen:", err)
		os.Exit(1)
	}
	defer p.Close()
	srcMAC, sip, err := identity(p, *src, *srcIP)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nm-pktgen:", err)
		os.Exit(2)
	}
	g := &gen{p: p, src: srcMAC, dst: dstMAC, srcIP: sip.As4(), dstIP: dip.As4(), length: *length, hdr: *hdr, batch: *batch, busy: *busy, count: uint64(*count)}
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

// identity is the frames' source: the flags, else the port's own MAC and
// IPv4 address when the agent gave it some (printed), else the defaults.
func identity(p *nmport.Port, src, srcIP string) (net.HardwareAddr, netip.Addr, error) {
	mac, ip := p.MAC(), netip.Addr{}
	for _, a := range p.Addrs() {
		if a.Prefix.Addr().Is4() {
			ip = a.Prefix.Addr()
		}
	}
	if mac != nil {
		fmt.Fprintf(os.Stderr, "nm-pktgen: port %s: MAC %s addresses %v\n", p.Name(), mac, p.Addrs())
	}
	var err error
	switch {
	case src != "":
		mac, err = net.ParseMAC(src)
	case mac == nil:
		// Two generators on one switch must not share a MAC (the switch
		// would learn one on the other's port): derive it from the name.
		h := fnv.New32a()
		h.Write([]byte(p.Name()))
		s := h.Sum32()
		mac = net.HardwareAddr{0x02, 0x6e, 0x6d, byte(s >> 16), byte(s >> 8), byte(s)}
	}
	if err != nil {
		return nil, ip, fmt.Errorf("-src: %w", err)
	}
	switch {
	case srcIP != "":
		ip, err = netip.ParseAddr(srcIP)
		if err == nil && !ip.Is4() {
			err = errors.New("not an IPv4 address")
		}
	case !ip.IsValid():
		ip = netip.AddrFrom4([4]byte{10, 0, 0, 1})
	}
	if err != nil {
		return nil, ip, fmt.Errorf("-srcip %q: %w", srcIP, err)
	}
	return mac, ip, nil
}

// Offsets in a frame (after the virtio-net header).
const (
	offIP    = 14
	offUDP   = offIP + 20
	offSeq   = offUDP + 8
	offStamp = offSeq + 8
	udpPort  = 9 // discard
)

type gen struct {
	p            *nmport.Port
	src          net.HardwareAddr
	dst          net.HardwareAddr
	srcIP, dstIP [4]byte
	length       int
	hdr          int
	batch        int
	busy         bool
	count        uint64
	until        time.Time

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
		if err := g.p.RxSync(); err != nil {
			return err
		}
		// Nothing to do yet: let another thread of this CPU run (the agent's
		// loop, or the peer) rather than spin out the time slice.
		unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		return nil
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

// frame writes an IPv4/UDP frame to -dst/-dstip with seq (and a timestamp)
// into b, after a zero virtio-net header; it returns the length.
func (g *gen) frame(b []byte, seq uint64) int { return g.frameTo(b, g.dst, g.dstIP, seq) }

func (g *gen) frameTo(b []byte, dst net.HardwareAddr, dip [4]byte, seq uint64) int {
	n := g.hdr + g.length
	clear(b[:n])
	e := b[g.hdr:n]
	copy(e[0:6], dst)
	copy(e[6:12], g.src)
	binary.BigEndian.PutUint16(e[12:], 0x0800)
	ip := e[offIP:offUDP]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(e)-offIP))
	ip[8], ip[9] = 64, 17
	copy(ip[12:16], g.srcIP[:])
	copy(ip[16:20], dip[:])
	binary.BigEndian.PutUint16(ip[10:], ipSum(ip))
	u := e[offUDP:offSeq]
	binary.BigEndian.PutUint16(u[0:], udpPort)
	binary.BigEndian.PutUint16(u[2:], udpPort)
	binary.BigEndian.PutUint16(u[4:], uint16(len(e)-offUDP))
	binary.BigEndian.PutUint64(e[offSeq:], seq)
	binary.BigEndian.PutUint64(e[offStamp:], uint64(time.Now().UnixNano()))
	return n
}

// ipSum is the IPv4 header checksum of h (its checksum field zero).
func ipSum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
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
			binary.BigEndian.PutUint64(b[g.hdr+offSeq:], g.frames)
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
	at.Slot(j).Len = uint16(g.frameTo(at.Buf(j), net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, [4]byte{255, 255, 255, 255}, 1<<63))
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
				if n >= g.hdr+offSeq && binary.BigEndian.Uint16(b[g.hdr+12:]) == 0x0800 {
					// Back to the sender, from us: its MAC and address
					// become the destination, ours the source.
					e := b[g.hdr:]
					copy(e[0:6], e[6:12])
					copy(e[6:12], g.src)
					ip := e[offIP:offUDP]
					copy(ip[16:20], ip[12:16])
					copy(ip[12:16], g.srcIP[:])
					ip[10], ip[11] = 0, 0
					binary.BigEndian.PutUint16(ip[10:], ipSum(ip[:20]))
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
				if int(r.Slot(i).Len) >= g.hdr+offStamp && binary.BigEndian.Uint64(b[g.hdr+offSeq:]) == g.frames {
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
