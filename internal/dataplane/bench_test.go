package dataplane

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

// flood sends 18-byte UDP payloads (64-byte frames) from pod a to pod b
// with sendmmsg until stop is closed.
func flood(b *testing.B, a, dst *pod, stop *atomic.Bool, wg *sync.WaitGroup) {
	var fd int
	err := a.ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: [4]byte(net.ParseIP(dst.ip).To4())})
	})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 64
	payload := make([]byte, 18)
	iov := make([]unix.Iovec, batch)
	msgs := make([]unix.Mmsghdr, batch)
	for i := range msgs {
		iov[i].Base = &payload[0]
		iov[i].SetLen(len(payload))
		msgs[i].Hdr.Iov = &iov[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer unix.Close(fd)
		for !stop.Load() {
			_, _, _ = unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), batch, 0, 0, 0)
		}
	}()
}

// BenchmarkPodToPodUDP64 floods 64-byte UDP frames from one pod to another
// through the switch and reports the frames per second the destination
// port's queue hands to its link (b.N frames).
//
// The sender's port has the default port security (anti-spoofing) or, in
// the "allowspoofing" runs, none: the difference is the checks' cost.
func BenchmarkPodToPodUDP64(b *testing.B) {
	for _, be := range backends {
		for _, pol := range []struct {
			name string
			p    PortPolicy
		}{{"antispoofing", PortPolicy{}}, {"allowspoofing", PortPolicy{AllowSpoofing: true}}} {
			b.Run(be.String()+"/"+pol.name, func(b *testing.B) { benchPodToPod(b, be, pol.p) })
		}
	}
}

func benchPodToPod(b *testing.B, be linkport.Backend, pol PortPolicy) {
	e := newBenchEnv(b, be)
	a, dst := e.pods[0], e.pods[1]
	if err := e.dp.SetPortPolicy(a.portName(), pol); err != nil {
		b.Fatal(err)
	}
	e.staticNeighbors()
	var stop atomic.Bool
	var wg sync.WaitGroup
	b.ReportAllocs()
	p0, _ := e.dp.Port(dst.portName())
	b.ResetTimer()
	start := time.Now()
	flood(b, a, dst, &stop, &wg)
	for {
		p, _ := e.dp.Port(dst.portName())
		if p.Queue.TxFrames-p0.Queue.TxFrames >= uint64(b.N) {
			break
		}
		if time.Since(start) > 60*time.Second {
			b.Fatalf("only %d of %d frames in 60 s", p.Queue.TxFrames-p0.Queue.TxFrames, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	stop.Store(true)
	wg.Wait()
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
}

// BenchmarkGuardLookup measures the lookup of a switch's pod port alone
// (port security, then the FDB) over 1024-frame batches of 64-byte IPv4/UDP
// frames from the pod: a learning port (the host port's path), a pod port
// without checks, with anti-spoofing, with anti-spoofing and storm control
// (unicast: not limited), and a broadcast flood over the storm limit.
func BenchmarkGuardLookup(b *testing.B) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	peer := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	id := podIdentity{mac: mac, ips: []netip.Addr{netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("fd00::10")}}
	frames := func(dst net.HardwareAddr) []vale.Frame {
		f := append(udpFrame(mac, dst, "10.0.0.10", "10.0.0.11"), make([]byte, 6)...) // 64 bytes
		fs := make([]vale.Frame, 1024)
		for i := range fs {
			fs[i] = vale.Frame{Data: f, Len: 64}
		}
		return fs
	}
	for _, c := range []struct {
		name string
		ps   func(*refusedCounters) *portSec
		dst  net.HardwareAddr
	}{
		{"learning", func(*refusedCounters) *portSec { return &portSec{learn: true} }, peer},
		{"nochecks", func(r *refusedCounters) *portSec { return newPodSec(id, PortPolicy{AllowSpoofing: true}, r) }, peer},
		{"antispoofing", func(r *refusedCounters) *portSec { return newPodSec(id, PortPolicy{}, r) }, peer},
		{"antispoofing+storm", func(r *refusedCounters) *portSec {
			return newPodSec(id, PortPolicy{BroadcastRate: 1000, MulticastRate: 5000}, r)
		}, peer},
		{"broadcastflood", func(r *refusedCounters) *portSec {
			return newPodSec(id, PortPolicy{BroadcastRate: 1000, MulticastRate: 5000}, r)
		}, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	} {
		b.Run(c.name, func(b *testing.B) {
			fdb, _ := vale.NewFDB(vale.DefaultFDBSize, time.Minute)
			lrn, _ := vale.NewLearning(fdb, 4)
			if err := fdb.AddStatic(peer, 2); err != nil {
				b.Fatal(err)
			}
			gl := newGuardLookup(lrn, 4, 0)
			var refused refusedCounters
			gl.set(1, c.ps(&refused))
			fs := frames(c.dst)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for done := 0; done < b.N; done += len(fs) {
				gl.Lookup(1, fs, int64(done))
			}
			el := time.Since(start).Seconds()
			n := (b.N + len(fs) - 1) / len(fs) * len(fs)
			b.ReportMetric(float64(n)/el, "pps")
		})
	}
}
