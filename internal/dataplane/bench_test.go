package dataplane

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
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
func BenchmarkPodToPodUDP64(b *testing.B) {
	for _, be := range backends {
		b.Run(be.String(), func(b *testing.B) {
			e := newBenchEnv(b, be)
			a, dst := e.pods[0], e.pods[1]
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
		})
	}
}
