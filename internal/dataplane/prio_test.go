package dataplane

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/pkg/linkport"
)

// TestPriorityClass overdrives a rate-limited strict-priority queue from
// two pods of different priority classes: the high class gets the link.
func TestPriorityClass(t *testing.T) {
	e := newEnv(t, 3, linkport.Auto, nil)
	e.staticNeighbors()
	a, b, c := e.pods[0], e.pods[1], e.pods[2]
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{Discipline: DiscPrioClass, RatePktsPerSec: 2000, QueueLen: 256}); err != nil {
		t.Fatal(err)
	}
	var rfd int
	if err := b.ns.Do(func() error {
		var err error
		rfd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(rfd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		_ = unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		return unix.Bind(rfd, &unix.SockaddrInet4{Port: 9})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	var fromA, fromC atomic.Uint64
	var counting, stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		ipA := [4]byte(net.ParseIP(a.ip).To4())
		for !stop.Load() {
			_, from, err := unix.Recvfrom(rfd, buf, 0)
			if err != nil || !counting.Load() {
				continue
			}
			if sa, ok := from.(*unix.SockaddrInet4); ok {
				if sa.Addr == ipA {
					fromA.Add(1)
				} else {
					fromC.Add(1)
				}
			}
		}
	}()
	blA := blast(t, a, b, 200)
	blC := blast(t, c, b, 200)
	window := func() (uint64, uint64) {
		time.Sleep(500 * time.Millisecond) // let the queue settle
		fromA.Store(0)
		fromC.Store(0)
		counting.Store(true)
		time.Sleep(2 * time.Second)
		counting.Store(false)
		return fromA.Load(), fromC.Load()
	}
	// Control: both pods in the same class share the link.
	na, nc := window()
	t.Logf("same class: %d and %d datagrams", na, nc)
	if nc*10 < na+nc || na*10 < na+nc {
		t.Fatalf("same class: %d and %d datagrams; want both to get through", na, nc)
	}
	if err := e.dp.SetPortPolicy(c.portName(), PortPolicy{Priority: 3}); err != nil {
		t.Fatal(err)
	}
	na, nc = window()
	blA.close()
	blC.close()
	stop.Store(true)
	wg.Wait()
	t.Logf("class 0: %d datagrams, class 3: %d", na, nc)
	if na < 1000 || na < 4*nc {
		t.Errorf("class 0 got %d datagrams and class 3 %d; want class 0 to take the link", na, nc)
	}
}
