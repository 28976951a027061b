package dataplane

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

// TestConcurrentControl changes policies, lists, dumps the FDB and
// detaches/re-attaches a port, all at once and under traffic, for a fixed
// number of rounds; afterwards every pod still reaches the others.
func TestConcurrentControl(t *testing.T) {
	e := newEnv(t, 3, linkport.Auto, nil)
	e.staticNeighbors()
	a, b, c := e.pods[0], e.pods[1], e.pods[2]
	bl := blast(t, a, b, 300)
	bl2 := blast(t, b, c, 300)
	const rounds = 30
	var wg sync.WaitGroup
	var errs atomic.Int64
	run := func(f func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				if err := f(i); err != nil {
					t.Error(err)
					errs.Add(1)
					return
				}
			}
		}()
	}
	discs := []Discipline{DiscClassic, DiscPrioClass, DiscFair}
	run(func(i int) error {
		p := PortPolicy{Discipline: discs[i%3], QueueLen: 64 << (i % 5), Priority: uint8(i % 4)}
		if i%2 == 1 {
			p.RateBitsPerSec = 50e6
		}
		return e.dp.SetPortPolicy(b.portName(), p)
	})
	run(func(int) error {
		_ = e.dp.Ports()
		_ = e.dp.Switches()
		_, err := e.dp.FDB("vale0")
		return err
	})
	run(func(i int) error {
		if err := e.dp.DetachPort(context.Background(), c.portName()); err != nil {
			return err
		}
		_, err := e.dp.AttachPort(context.Background(), c.req())
		return err
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("control operations under traffic did not finish (deadlock?)")
	}
	bl.close()
	bl2.close()
	if errs.Load() != 0 {
		return
	}
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{}); err != nil {
		t.Fatal(err)
	}
	e.ping(a, b.ip)
	e.ping(b, c.ip)
	e.ping(c, a.ip)
}
