package ifcore

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

// Msg is a message for a worker's port (an lwkt netmsg). Long-lived
// messages (the per-subqueue if_start messages, the slow timer) are
// allocated once and re-sent; their owner keeps the "in flight" flag that
// stands for MSGF_DONE, so the same Msg is never queued twice.
type Msg struct {
	next *Msg
	fn   func(w *Worker)
	done chan struct{} // synchronous messages only
}

// NewMsg returns a reusable message that runs fn on the worker it is sent
// to.
func NewMsg(fn func(w *Worker)) *Msg { return &Msg{fn: fn} }

// WorkerStats are a worker's counters. The if_start names follow the seed's
// KTR tracepoints (if_start run/sched/avoid/contend_sched/chase_sched).
type WorkerStats struct {
	Msgs              uint64 // messages dispatched
	Rollups           uint64 // rollup passes (inbox went idle)
	IfStartRun        uint64 // if_start called
	IfStartSched      uint64 // if_start message sent to an owner
	IfStartAvoid      uint64 // dispatch staged the packet instead of starting
	IfStartContend    uint64 // try-serialize failed, start scheduled
	IfStartChaseSched uint64 // start message arrived on a non-owner and was forwarded
}

type workerCounters struct {
	msgs, rollups, run, sched, avoid, contend, chase atomic.Uint64
	_                                                [64]byte
}

// Worker is a netisr-like worker: one goroutine with a message port, rollup
// hooks run whenever the port goes idle, the per-worker stage list used by
// ifq_dispatch, and counters.
type Worker struct {
	id   int
	ws   *Workers
	mu   sync.Mutex
	head *Msg
	tail *Msg
	wake chan struct{}
	goid atomic.Uint64

	// Only the worker goroutine touches these.
	rollups []func(w *Worker)
	stages  []*ifsqStage

	c workerCounters
}

// ID returns the worker's index (the "cpuid").
func (w *Worker) ID() int { return w.id }

// Stats returns a snapshot of the worker's counters.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{
		Msgs: w.c.msgs.Load(), Rollups: w.c.rollups.Load(), IfStartRun: w.c.run.Load(),
		IfStartSched: w.c.sched.Load(), IfStartAvoid: w.c.avoid.Load(),
		IfStartContend: w.c.contend.Load(), IfStartChaseSched: w.c.chase.Load(),
	}
}

// Send queues m on the worker's port without waiting (lwkt_sendmsg).
func (w *Worker) Send(m *Msg) {
	w.mu.Lock()
	m.next = nil
	if w.tail == nil {
		w.head = m
	} else {
		w.tail.next = m
	}
	w.tail = m
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Do runs fn on the worker and waits for it (lwkt_domsg). It fails with
// EDEADLK when called from a worker goroutine, which could deadlock.
func (w *Worker) Do(fn func(w *Worker)) error {
	if w.ws.onWorker() != nil {
		return fmt.Errorf("do message on worker %d: called from a worker: %w", w.id, syscall.EDEADLK)
	}
	m := &Msg{fn: fn, done: make(chan struct{})}
	w.Send(m)
	select {
	case <-m.done:
		return nil
	case <-w.ws.quit:
		return fmt.Errorf("do message on worker %d: workers closed: %w", w.id, syscall.ENXIO)
	}
}

// AddRollup registers fn to run after every batch the worker takes from its
// port (netisr_register_rollup). Called from outside the worker it waits
// for the worker to register it; from another worker it fails (EDEADLK).
func (w *Worker) AddRollup(fn func(w *Worker)) error {
	if w.ws.onWorker() == w {
		w.rollups = append(w.rollups, fn)
		return nil
	}
	return w.Do(func(w *Worker) { w.rollups = append(w.rollups, fn) })
}

func (w *Worker) takeAll() *Msg {
	w.mu.Lock()
	h := w.head
	w.head, w.tail = nil, nil
	w.mu.Unlock()
	return h
}

func (w *Worker) loop(ready *sync.WaitGroup) {
	defer w.ws.wg.Done()
	w.goid.Store(curGoid())
	ready.Done()
	for {
		if m := w.takeAll(); m != nil {
			for m != nil {
				nx := m.next
				m.next = nil
				w.c.msgs.Add(1)
				m.fn(w)
				if m.done != nil {
					close(m.done)
				}
				m = nx
			}
			// Every message that was on the port has been handled: this
			// is where netisr runs its rollups (if_start_rollup flushes
			// the stages). Running them per batch rather than only when
			// the port stays empty keeps a self-rescheduling consumer
			// (the epair queue) from starving them.
			w.c.rollups.Add(1)
			for _, fn := range w.rollups {
				fn(w)
			}
			continue
		}
		select {
		case <-w.wake:
		case <-w.ws.quit:
			return
		}
	}
}

// Workers is the set of netisr workers, one per CPU by default.
type Workers struct {
	ws   []*Worker
	wg   sync.WaitGroup
	quit chan struct{}
	once sync.Once
}

// NewWorkers starts n workers (n <= 0 means runtime.NumCPU()). Every rollup
// in rollups is registered on every worker before it starts.
func NewWorkers(n int, rollups ...func(w *Worker)) *Workers {
	if n <= 0 {
		n = runtime.NumCPU()
	}
	s := &Workers{quit: make(chan struct{})}
	var ready sync.WaitGroup
	for i := 0; i < n; i++ {
		w := &Worker{id: i, ws: s, wake: make(chan struct{}, 1)}
		w.rollups = append(w.rollups, rollups...)
		s.ws = append(s.ws, w)
	}
	for _, w := range s.ws {
		s.wg.Add(1)
		ready.Add(1)
		go w.loop(&ready)
	}
	ready.Wait()
	return s
}

// N returns the number of workers (ncpus).
func (s *Workers) N() int { return len(s.ws) }

// Get returns worker i (netisr_cpuport(i)).
func (s *Workers) Get(i int) *Worker { return s.ws[i] }

// ServiceSync waits until every worker has processed every message queued
// before the call (netmsg_service_sync): after it returns, no worker is
// still inside an iteration that started before.
func (s *Workers) ServiceSync() error {
	for _, w := range s.ws {
		if err := w.Do(func(*Worker) {}); err != nil {
			return fmt.Errorf("service sync: %w", err)
		}
	}
	return nil
}

// ForwardAll runs fn on worker 0, 1, …, n-1 in turn (ifnet_forwardmsg) and
// waits for the last one.
func (s *Workers) ForwardAll(fn func(w *Worker)) error {
	for _, w := range s.ws {
		if err := w.Do(fn); err != nil {
			return fmt.Errorf("forward message: %w", err)
		}
	}
	return nil
}

// Close stops every worker and waits for their goroutines.
func (s *Workers) Close() {
	s.once.Do(func() { close(s.quit) })
	s.wg.Wait()
}

// onWorker returns the worker whose goroutine is calling, or nil. It parses
// the goroutine id, so it is for control-plane assertions only, never for
// the packet path (which passes its *Worker explicitly).
func (s *Workers) onWorker() *Worker {
	id := curGoid()
	for _, w := range s.ws {
		if w.goid.Load() == id {
			return w
		}
	}
	return nil
}

func curGoid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
