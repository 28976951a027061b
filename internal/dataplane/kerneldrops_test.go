package dataplane

import (
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/vale"
)

// flooder sends one frame over and over from a pod's eth0, sendmmsg(2) batches on a raw
// AF_PACKET socket opened in the pod's namespace.
type flooder struct {
	fd   int
	sa   unix.RawSockaddrLinklayer
	iov  unix.Iovec
	msgs [64]unix.Mmsghdr
	sent uint64
}

func newFlooder(t *testing.T, p *pod, frame []byte) *flooder {
	t.Helper()
	f := &flooder{}
	err := p.ns.Do(func() error {
		l, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		f.sa = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Ifindex: int32(l.Index), Halen: 6}
		f.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("flooder: %v", err)
	}
	t.Cleanup(func() { unix.Close(f.fd) })
	f.iov.Base = &frame[0]
	f.iov.SetLen(len(frame))
	for i := range f.msgs {
		h := &f.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&f.sa))
		h.Namelen = uint32(unsafe.Sizeof(f.sa))
		h.Iov = &f.iov
		h.SetIovlen(1)
	}
	return f
}

// batch sends one sendmmsg batch (64 frames) and counts what the socket took.
func (f *flooder) batch(t *testing.T) {
	t.Helper()
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(f.fd), uintptr(unsafe.Pointer(&f.msgs[0])), uintptr(len(f.msgs)), 0, 0, 0)
	if e != 0 && e != unix.ENOBUFS && e != unix.EAGAIN {
		t.Fatalf("sendmmsg: %v", e)
	}
	f.sent += uint64(n)
}

// linkRx is the frames the kernel received on a pod's host link: each one either reached
// the port's socket, where the switch read it or the socket's full queue dropped it, or
// is still queued there.
func (e *env) linkRx(p *pod) uint64 {
	e.t.Helper()
	l, err := e.host.NL.LinkByName(p.pair.HostName)
	if err != nil {
		e.t.Fatal(err)
	}
	return l.Attrs().Statistics.RxPackets
}

// TestKernelDrops floods a pod's port from inside the pod (a raw socket, sendmmsg) faster
// than the switch drains its link, on sockets shrunk to a handful of frames (an AF_XDP
// socket with 8 receive frames after the FastStart upgrade, a TPACKET_V3 ring of two
// 4 KiB blocks, the smallest offload buffer), so the kernel drops frames before the
// switch sees them. PortInfo.KernelDrops counts them, and every frame the pod sent is
// accounted for exactly once: the link received it, then the switch read it (In) or the
// socket dropped it (KernelDrops); what the switch read went to the other pod's output
// queue (its Out), was refused by it (its queue-full), or was dropped at the sender.
func TestKernelDrops(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t, 2, v.be, v.mod(func(c *Config) {
				c.Link.XDP.FrameCount = 16
				c.Link.Packet.BlockSize, c.Link.Packet.BlockCount = 4096, 2
				if v.offload {
					c.Link.Packet.BlockSize = afpacket.MinVnetBlockSize
				}
			}))
			settle(t, e.dp)
			a, b := e.pods[0], e.pods[1]
			// The counters before, taken while nothing is in flight (the same twice).
			var pa0, pb0 PortInfo
			var rx0 uint64
			var last PortInfo
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				var err error
				if pa0, err = e.dp.Port(a.portName()); err != nil {
					t.Fatal(err)
				}
				pb0, _ = e.dp.Port(b.portName())
				rx := e.linkRx(a)
				if rx == rx0 && pa0.Counters == last.Counters && pa0.KernelDrops == last.KernelDrops {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the pod's port never went quiet")
				}
				rx0, last = rx, pa0
			}
			if pa0.Backend != v.be.String() {
				t.Fatalf("port on %s, want %s", pa0.Backend, v.be)
			}

			f := newFlooder(t, a, udpFrame(a.pair.PodMAC, b.pair.PodMAC, a.ip, b.ip))
			start := time.Now()
			for {
				for range 32 {
					f.batch(t)
				}
				pa, _ := e.dp.Port(a.portName())
				if f.sent >= 20000 && pa.KernelDrops > pa0.KernelDrops {
					break
				}
				if time.Since(start) > 20*time.Second {
					t.Fatalf("%d frames sent in %v, and the kernel dropped none before the switch (port %+v)", f.sent, time.Since(start), pa)
				}
			}

			// Once the switch has read what is still queued, every frame is counted once.
			var pa, pb PortInfo
			var rx uint64
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				pa, _ = e.dp.Port(a.portName())
				pb, _ = e.dp.Port(b.portName())
				rx = e.linkRx(a) - rx0
				in, kd := pa.Counters.InFrames-pa0.Counters.InFrames, pa.KernelDrops-pa0.KernelDrops
				if rx == in+kd {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s received %d frames, but the switch read %d and the kernel dropped %d: %d", a.pair.HostName, rx, in, kd, in+kd)
				}
			}
			in := pa.Counters.InFrames - pa0.Counters.InFrames
			kdrops := pa.KernelDrops - pa0.KernelDrops
			if kdrops == 0 || in == 0 {
				t.Fatalf("%d frames: %d read by the switch, %d dropped by the kernel; want both > 0", rx, in, kdrops)
			}
			// What the pod sent is what the link received (give or take the pod's own
			// few frames: neighbour discovery and the like).
			if rx < f.sent || rx > f.sent+50 {
				t.Fatalf("the pod sent %d frames, its host link received %d", f.sent, rx)
			}
			// What the switch read from a: forwarded to b's output queue, refused by it,
			// or dropped at a (give or take a few frames a's stack sends to the host port,
			// and b gets from it).
			toB := pb.Counters.OutFrames - pb0.Counters.OutFrames + pb.Counters.Drops[vale.DropNoSpace] - pb0.Counters.Drops[vale.DropNoSpace]
			atA := pa.Counters.Dropped() - pa0.Counters.Dropped()
			if toB+atA+50 < in || toB+atA > in+50 {
				t.Fatalf("the switch read %d frames from %s, but %d went to %s's queue or were refused by it and %d were dropped at %s",
					in, a.portName(), toB, b.portName(), atA, a.portName())
			}
			t.Logf("%d frames sent by the pod in %v: %d dropped by the kernel before the switch, %d read by it (%d forwarded, %d queue-full at %s, %d dropped at %s)",
				f.sent, time.Since(start).Round(time.Millisecond), kdrops, in,
				pb.Counters.OutFrames-pb0.Counters.OutFrames, pb.Counters.Drops[vale.DropNoSpace]-pb0.Counters.Drops[vale.DropNoSpace], b.portName(), atA, a.portName())

			// The host port has no socket to count.
			si, err := e.dp.Switch("vale0")
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range si.Ports {
				if p.Kind == KindHost && p.KernelDrops != 0 {
					t.Errorf("host port %s: KernelDrops %d", p.Name, p.KernelDrops)
				}
				if p.Name == a.portName() && p.KernelDrops < pa.KernelDrops {
					t.Errorf("Switch's %s: KernelDrops %d, below Port's %d", p.Name, p.KernelDrops, pa.KernelDrops)
				}
			}
		})
	}
}
