package ifcore

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// countRing is a TxRing that accepts everything: one "doorbell" (an atomic
// store, standing in for the MMIO write / sendto kick) per Transmit call,
// and the packets go back to the pool as a real ring's completion would.
type countRing struct {
	doorbells atomic.Uint64
	pkts      atomic.Uint64
	tail      atomic.Uint64
}

func (r *countRing) Transmit(w *Worker, batch []*Packet) int {
	for _, p := range batch {
		p.Free()
	}
	r.pkts.Add(uint64(len(batch)))
	r.tail.Store(r.pkts.Load()) // doorbell
	r.doorbells.Add(1)
	return len(batch)
}

// benchDispatch drives ifq_dispatch → if_start → TxRing from worker 0 in
// batches of 64 (the switch's pass two hands over one batch per
// destination), with staging at cntmax (0 = off).
func benchDispatch(b *testing.B, cntmax int) {
	n, err := New(Config{Workers: 2, StageCntMax: cntmax})
	if err != nil {
		b.Fatal(err)
	}
	if cntmax == 0 {
		n.SetStageCntMax(0)
	}
	defer n.Close()
	ring := &countRing{}
	ifp, err := n.Attach(IfConfig{Name: "bench0", Type: IFT_ETHER, Driver: &RingDriver{Ring: ring, Batch: 64},
		Flags: IFF_RUNNING | IFF_UP, MaxLen: 1024})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 64
	var remaining int
	done := make(chan struct{}, 1)
	msg := NewMsg(func(w *Worker) {
		k := min(batch, remaining)
		for i := 0; i < k; i++ {
			p := DefaultPool.Get()
			p.Len = 60
			_ = ifp.Dispatch(w, p)
		}
		remaining -= k
		done <- struct{}{}
	})
	w := n.Workers().Get(0)
	// Warm the pool and the stage lists.
	remaining = 4096
	for remaining > 0 {
		w.Send(msg)
		<-done
	}
	for ring.pkts.Load() != 4096 {
		runtime.Gosched()
	}
	ring.pkts.Store(0)
	ring.doorbells.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	remaining = b.N
	for remaining > 0 {
		w.Send(msg)
		<-done
	}
	for ring.pkts.Load() != uint64(b.N) {
		runtime.Gosched()
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
	b.ReportMetric(float64(b.N)/float64(max(ring.doorbells.Load(), 1)), "pkts/doorbell")
}

func BenchmarkDispatchToRing(b *testing.B) {
	b.Run("staging=off", func(b *testing.B) { benchDispatch(b, 0) })
	b.Run("staging=on", func(b *testing.B) { benchDispatch(b, DefaultStageCntMax) })
}

// BenchmarkEpairPair measures one epair pair between two workers: worker 0
// dispatches on epair0a (if_snd → epair_start → the netisr queue of
// worker 1), worker 1 delivers to epair0b's if_input. In-flight packets are
// bounded so nothing is dropped.
func BenchmarkEpairPair(b *testing.B) {
	n, err := New(Config{Workers: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	var got atomic.Uint64
	e, err := NewEpair(n, EpairConfig{Input: func(w *Worker, ifp *Ifnet, p *Packet) { p.Free(); got.Add(1) }})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := n.CloneCreate("epair", nil); err != nil {
		b.Fatal(err)
	}
	a, _ := n.Unit("epair0a")
	bb, _ := n.Unit("epair0b")
	_ = a.Up()
	_ = bb.Up()
	_ = e
	const batch = 64
	var remaining int
	done := make(chan struct{}, 1)
	var dropped atomic.Uint64
	msg := NewMsg(func(w *Worker) {
		k := min(batch, remaining)
		for i := 0; i < k; i++ {
			p := DefaultPool.Get()
			p.Len = 60
			if a.Dispatch(w, p) != nil {
				dropped.Add(1)
			}
		}
		remaining -= k
		done <- struct{}{}
	})
	w := n.Workers().Get(0)
	run := func(total int) time.Duration {
		got.Store(0)
		dropped.Store(0)
		start := time.Now()
		remaining = total
		sent := 0
		for remaining > 0 {
			for uint64(sent)-got.Load()-dropped.Load() > 512 {
				runtime.Gosched()
			}
			sent += min(batch, remaining)
			w.Send(msg)
			<-done
		}
		for got.Load()+dropped.Load() != uint64(total) {
			runtime.Gosched()
		}
		return time.Since(start)
	}
	run(4096)
	b.ReportAllocs()
	b.ResetTimer()
	el := run(b.N)
	b.StopTimer()
	b.ReportMetric(float64(got.Load())/el.Seconds(), "pps")
	b.ReportMetric(float64(dropped.Load()), "drops")
}
