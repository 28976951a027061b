package ifcore

import (
	"errors"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

func attachUp(t testing.TB, n *Net, name string, d Driver, cfg IfConfig) *Ifnet {
	t.Helper()
	cfg.Name = name
	cfg.Driver = d
	cfg.Flags |= IFF_RUNNING | IFF_UP
	if cfg.Type == 0 {
		cfg.Type = IFT_ETHER
	}
	ifp, err := n.Attach(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ifp
}

func TestIT23_IfStartInterlock(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "il0", d, IfConfig{MaxLen: 100000})
	const producers, each = 8, 2000
	var wg sync.WaitGroup
	for i := 0; i < producers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for k := 0; k < each; k++ {
				if i%2 == 0 {
					_ = ifp.Dispatch(nil, pkt(64, 0))
				} else if k%100 == 0 {
					// Half the producers run on workers, in batches.
					_ = n.Workers().Get(i % 2).Do(func(w *Worker) {
						for j := 0; j < 100; j++ {
							_ = ifp.Dispatch(w, pkt(64, 0))
						}
					})
				}
			}
		}(i)
	}
	wg.Wait()
	want := int64(producers / 2 * each * 2)
	eventually(t, "all packets delivered", func() bool { return d.pkts.Load() == want })
	eventually(t, "interlock released", func() bool { return !ifp.Snd().Subqueue(0).IsStarted() })
	if m := d.maxIn.Load(); m != 1 {
		t.Fatalf("if_start ran %d times concurrently", m)
	}
}

func TestIT24_ReleasedWhileOActive(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2})
	d := &sinkDriver{}
	d.full.Store(true)
	ifp := attachUp(t, n, "oa0", d, IfConfig{})
	sq := ifp.Snd().Subqueue(0)
	for i := 0; i < 5; i++ {
		_ = ifp.Dispatch(nil, pkt(64, 0))
	}
	if !sq.IsOActive() || sq.IsStarted() || sq.Len() != 5 {
		t.Fatalf("oactive %v started %v len %d", sq.IsOActive(), sq.IsStarted(), sq.Len())
	}
	calls := d.calls.Load()
	_ = ifp.Dispatch(nil, pkt(64, 0)) // OACTIVE: no if_start
	if d.calls.Load() != calls {
		t.Fatal("if_start called while OACTIVE")
	}
	d.full.Store(false)
	sq.TxComplete() // TX completion: devstart on the owner
	eventually(t, "drained after devstart", func() bool { return d.pkts.Load() == 6 })
	eventually(t, "interlock released", func() bool { return !sq.IsStarted() })
}

func TestIT25_ChaseOwnerChange(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "ch0", d, IfConfig{})
	sq := ifp.Snd().Subqueue(0)
	block := make(chan struct{})
	blocked := make(chan struct{})
	n.Workers().Get(0).Send(NewMsg(func(*Worker) { close(blocked); <-block }))
	<-blocked
	sq.SerializeHW()
	_ = ifp.Dispatch(nil, pkt(64, 0)) // contended: scheduled on owner 0
	sq.DeserializeHW()
	if err := sq.SetOwner(1); err != nil {
		t.Fatal(err)
	}
	close(block)
	eventually(t, "delivered", func() bool { return d.pkts.Load() == 1 })
	d.mu.Lock()
	wid := d.workers[0]
	d.mu.Unlock()
	if wid != 1 {
		t.Fatalf("if_start ran on worker %d, want the new owner 1", wid)
	}
	if n.Workers().Get(0).Stats().IfStartChaseSched == 0 {
		t.Fatal("no chase counted on the old owner")
	}
	wantErrno(t, sq.SetOwner(5), syscall.EINVAL)
}

func TestIT26_TrySerializeContention(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "ts0", d, IfConfig{})
	sq := ifp.Snd().Subqueue(0)
	_ = sq.SetOwner(1)
	sq.SerializeHW()
	done := make(chan error, 1)
	go func() { done <- ifp.Dispatch(nil, pkt(64, 0)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("dispatch blocked on a held serializer")
	}
	time.Sleep(20 * time.Millisecond)
	if d.calls.Load() != 0 {
		t.Fatal("if_start ran while the serializer was held")
	}
	sq.DeserializeHW()
	eventually(t, "start after release", func() bool { return d.pkts.Load() == 1 })
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.workers[0] != 1 {
		t.Fatalf("started on %d, want owner 1", d.workers[0])
	}
}

func TestIT27_StagingCountAndSize(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2, StageCntMax: 4})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "sg0", d, IfConfig{MaxLen: 100})
	sq := ifp.Snd().Subqueue(0)
	w := n.Workers().Get(1)
	var after3, after4 int64
	var staged3 bool
	_ = w.Do(func(w *Worker) {
		for i := 0; i < 3; i++ {
			_ = ifp.Dispatch(w, pkt(60, 0))
		}
		after3 = d.calls.Load()
		staged3 = sq.stagedOn(w) && sq.stages[w.id].cnt == 3
		_ = ifp.Dispatch(w, pkt(60, 0))
		after4 = d.calls.Load()
	})
	if after3 != 0 || !staged3 {
		t.Fatalf("3 small packets: %d if_start calls, staged %v", after3, staged3)
	}
	if after4 != 1 || d.pkts.Load() != 4 {
		t.Fatalf("4th packet: %d calls, %d packets", after4, d.pkts.Load())
	}
	// A packet of MTU - max_protohdr bytes starts at once.
	var big int64
	_ = w.Do(func(w *Worker) {
		_ = ifp.Dispatch(w, pkt(ETHERMTU-MaxProtoHdr, 0))
		big = d.calls.Load()
	})
	if big != 2 {
		t.Fatalf("large packet did not start immediately (%d calls)", big)
	}
	// Staged bytes add up: 2 × 800 >= 1446.
	var two int64
	_ = w.Do(func(w *Worker) {
		_ = ifp.Dispatch(w, pkt(800, 0))
		_ = ifp.Dispatch(w, pkt(800, 0))
		two = d.calls.Load()
	})
	if two != 3 {
		t.Fatalf("staged bytes over MTU-hdr did not start (%d calls)", two)
	}
}

func TestIT28_RollupFlushesStages(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2, StageCntMax: 4})
	d1, d2 := &sinkDriver{}, &sinkDriver{}
	a := attachUp(t, n, "ru0", d1, IfConfig{})
	b := attachUp(t, n, "ru1", d2, IfConfig{})
	w := n.Workers().Get(0)
	_ = w.Do(func(w *Worker) {
		_ = a.Dispatch(w, pkt(60, 0))
		_ = b.Dispatch(w, pkt(60, 0))
		_ = a.Dispatch(w, pkt(60, 0))
	})
	// The rollup ran when the port emptied.
	eventually(t, "staged packets started", func() bool { return d1.pkts.Load() == 2 && d2.pkts.Load() == 1 })
	var clean bool
	_ = w.Do(func(w *Worker) {
		clean = len(w.stages) == 0 && !a.Snd().Subqueue(0).stagedOn(w) && !b.Snd().Subqueue(0).stagedOn(w)
		st := &a.Snd().Subqueue(0).stages[w.id]
		clean = clean && !st.sched && st.cnt == 0 && st.len == 0
	})
	if !clean {
		t.Fatal("stage flags not clear after rollup")
	}
	if w.Stats().IfStartAvoid < 3 {
		t.Fatalf("avoid counter %d", w.Stats().IfStartAvoid)
	}
}

func TestIT29_StagingDisabledAndOutsideWorkers(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "nd0", d, IfConfig{})
	n.SetStageCntMax(0)
	var calls int64
	_ = n.Workers().Get(0).Do(func(w *Worker) {
		_ = ifp.Dispatch(w, pkt(60, 0))
		calls = d.calls.Load()
	})
	if calls != 1 {
		t.Fatalf("cntmax 0: %d calls after one dispatch", calls)
	}
	n.SetStageCntMax(4)
	_ = ifp.Dispatch(nil, pkt(60, 0))
	if d.calls.Load() != 2 {
		t.Fatal("dispatch outside a worker did not start at once")
	}
}

// refuseDisc is a classic discipline that can be told to refuse.
type refuseDisc struct {
	Classic
	refuse bool
}

func (r *refuseDisc) Enqueue(p *Packet, st QueueState) (*Packet, error) {
	if r.refuse {
		return nil, syscall.ENOBUFS
	}
	return r.Classic.Enqueue(p, st)
}

func TestIT30_DispatchStatistics(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 1})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "ds0", d, IfConfig{})
	sq := ifp.Snd().Subqueue(0)
	rd := &refuseDisc{}
	sq.SetDiscipline(rd)
	_ = ifp.Dispatch(nil, pkt(100, PktMcast))
	_ = ifp.Dispatch(nil, pkt(50, 0))
	st := ifp.Stats()
	if st.OBytes != 150 || st.OMcasts != 1 {
		t.Fatalf("obytes %d omcasts %d", st.OBytes, st.OMcasts)
	}
	rd.refuse = true
	calls := d.calls.Load()
	err := ifp.Dispatch(nil, pkt(70, PktMcast))
	if !errors.Is(err, syscall.ENOBUFS) || d.calls.Load() != calls {
		t.Fatalf("error with empty queue: err %v, calls %d->%d", err, calls, d.calls.Load())
	}
	rd.refuse = false
	_ = sq.Enqueue(pkt(10, 0)) // queued without a start
	rd.refuse = true
	err = ifp.Dispatch(nil, pkt(70, 0))
	if !errors.Is(err, syscall.ENOBUFS) || d.calls.Load() != calls+1 || sq.Len() != 0 {
		t.Fatalf("error with data: err %v, calls %d, len %d", err, d.calls.Load()-calls, sq.Len())
	}
	st = ifp.Stats()
	if st.OBytes != 150 || st.OMcasts != 1 || st.OQDrops != 2 {
		t.Fatalf("after errors: obytes %d omcasts %d oqdrops %d", st.OBytes, st.OMcasts, st.OQDrops)
	}
}

func TestIT31_DetachRemovesStages(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2, StageCntMax: 4})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "dt0", d, IfConfig{})
	sq := ifp.Snd().Subqueue(0)
	w := n.Workers().Get(0)
	var staged, after bool
	_ = w.Do(func(w *Worker) {
		_ = ifp.Dispatch(w, pkt(60, 0))
		staged = sq.stagedOn(w)
		removeStages(w, ifp) // what Detach forwards to every worker
		after = sq.stagedOn(w) || len(w.stages) != 0
	})
	if !staged || after {
		t.Fatalf("staged %v, left after removal %v", staged, after)
	}
	if d.calls.Load() != 0 {
		t.Fatal("rollup started a subqueue whose stage was removed")
	}
	// A stage that survives into a rollup after detach is skipped.
	_ = w.Do(func(w *Worker) { _ = ifp.Dispatch(w, pkt(60, 0)); ifp.dead.Store(true) })
	if d.calls.Load() != 0 {
		t.Fatal("rollup touched a detached subqueue")
	}
	ifp.dead.Store(false)
	if err := n.Detach(ifp); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, ifp.Dispatch(nil, pkt(1, 0)), syscall.ENXIO)
}

type wdDriver struct {
	sinkDriver
	fired int
}

func (d *wdDriver) Watchdog(ifp *Ifnet) { d.fired++ }

func TestIT32_WatchdogsAndSlowTimer(t *testing.T) {
	clk := NewManualClock(time.Unix(1e9, 0))
	n, _ := newTestNet(t, Config{Workers: 2, Clock: clk})
	d := &wdDriver{}
	ifp := attachUp(t, n, "wd0", d, IfConfig{})
	tick := func() { clk.Advance(time.Second); _ = n.ServiceSync() }
	ifp.SetTimer(3)
	tick()
	tick()
	if d.fired != 0 {
		t.Fatal("fired early")
	}
	tick()
	if d.fired != 1 {
		t.Fatalf("fired %d after 3 ticks", d.fired)
	}
	tick()
	tick()
	if d.fired != 1 {
		t.Fatal("rearmed without the driver")
	}
	// Busy serializer at expiry: retried next tick.
	ifp.SetTimer(1)
	ifp.Serializer().Lock()
	tick()
	ifp.Serializer().Unlock()
	if d.fired != 1 || ifp.Timer() != 1 {
		t.Fatalf("busy: fired %d timer %d", d.fired, ifp.Timer())
	}
	tick()
	if d.fired != 2 {
		t.Fatal("not retried after the serializer was released")
	}
	// A slow tick suppresses the next ones: block worker 0 for 3 s.
	ifp.SetTimer(5)
	block := make(chan struct{})
	blocked := make(chan struct{})
	n.Workers().Get(0).Send(NewMsg(func(*Worker) { close(blocked); <-block }))
	<-blocked
	clk.Advance(time.Second)
	clk.Advance(time.Second)
	clk.Advance(time.Second)
	close(block)
	_ = n.ServiceSync()
	if ifp.Timer() != 4 {
		t.Fatalf("overlapping ticks: timer %d, want 4", ifp.Timer())
	}

	// Subqueue watchdog on the owner worker.
	sq := ifp.Snd().Subqueue(0)
	_ = sq.SetOwner(1)
	var sqFired []int
	var mu sync.Mutex
	wd := sq.NewWatchdog(func(w *Worker, sq *Subqueue) { mu.Lock(); sqFired = append(sqFired, w.ID()); mu.Unlock() })
	wd.Start()
	wd.Set(3)
	for i := 0; i < 6; i++ {
		tick()
		_ = n.ServiceSync()
	}
	mu.Lock()
	if len(sqFired) != 1 || sqFired[0] != 1 {
		t.Fatalf("subqueue watchdog fired %v (worker ids), want once on owner 1", sqFired)
	}
	mu.Unlock()
	wd.Set(1)
	sq.SerializeHW()
	tick()
	_ = n.ServiceSync()
	sq.DeserializeHW()
	if wd.Timer() != 1 {
		t.Fatal("busy subqueue watchdog not retried")
	}
	tick()
	_ = n.ServiceSync()
	mu.Lock()
	if len(sqFired) != 2 {
		t.Fatalf("retry did not fire (%d)", len(sqFired))
	}
	mu.Unlock()
	wd.Stop()
}

// TestRegulatorRestartsStart checks that a throttled queue is restarted by
// the regulator's callout (the TBR path of need_schedule).
// TestRegulatorRestartsStart: when the token-bucket regulator throttles,
// if_start gives up the interlock (nothing may leave, so nobody may hold it)
// and the regulator's callout restarts the subqueue on its owner worker when
// tokens are back. The clock moves in 10 ms steps; after each step and a
// worker barrier the interlock is free again, the rate holds, and the queue
// empties with no further dispatch.
func TestRegulatorRestartsStart(t *testing.T) {
	clk := NewManualClock(time.Unix(1e9, 0))
	n, _ := newTestNet(t, Config{Workers: 2, Clock: clk})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "rr0", d, IfConfig{Rate: &Rate{PktsPerSec: 10, BurstPkts: 1}, MaxLen: 100})
	sq := ifp.Snd().Subqueue(0)
	if err := sq.SetOwner(1); err != nil {
		t.Fatal(err)
	}
	armed := func() bool {
		sq.mu.Lock()
		defer sq.mu.Unlock()
		return sq.tbrTimer != nil
	}
	for i := 0; i < 20; i++ {
		_ = ifp.Dispatch(nil, pkt(64, 0))
	}
	if d.pkts.Load() != 1 || sq.Len() != 19 {
		t.Fatalf("burst of 1: %d delivered, %d queued", d.pkts.Load(), sq.Len())
	}
	if sq.IsStarted() {
		t.Fatal("if_start interlock still held while the regulator throttles")
	}
	if !armed() {
		t.Fatal("throttled with packets queued but no regulator callout armed")
	}
	const step, period = 10 * time.Millisecond, 100 * time.Millisecond
	var elapsed time.Duration
	for d.pkts.Load() < 20 {
		if elapsed >= 3*time.Second { // 19 packets at 10/s need about 1.9 s
			t.Fatalf("stalled: %d of 20 delivered after %v", d.pkts.Load(), elapsed)
		}
		clk.Advance(step)
		elapsed += step
		if err := n.ServiceSync(); err != nil {
			t.Fatal(err)
		}
		// A packet leaves while the balance is positive, so the second
		// leaves right after the first; after that one per 100 ms.
		if got, most := d.pkts.Load(), 2+int64(elapsed/period); got > most {
			t.Fatalf("rate exceeded: %d delivered after %v, at most %d", got, elapsed, most)
		}
		if sq.IsStarted() {
			t.Fatalf("if_start interlock still held after the restart at %v (%d delivered)", elapsed, d.pkts.Load())
		}
		if sq.Len() > 0 && !armed() {
			t.Fatalf("at %v: %d packets queued and no regulator callout armed", elapsed, sq.Len())
		}
	}
	if sq.Len() != 0 || armed() {
		t.Fatalf("after the drain: %d queued, callout armed %v", sq.Len(), armed())
	}
	// Only the first packet left from the dispatching goroutine; every other
	// one was sent by a restart on the owner worker.
	d.mu.Lock()
	ws := slices.Clone(d.workers)
	d.mu.Unlock()
	for i, w := range ws[1:] {
		if w != 1 {
			t.Fatalf("packet %d sent from worker %d, want the owner (1): %v", i+2, w, ws)
		}
	}
}

func TestHandoffAndSubqueueMapping(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 2})
	d := &sinkDriver{}
	ifp := attachUp(t, n, "ho0", d, IfConfig{})
	ifp.Serializer().Lock()
	if err := ifp.Handoff(nil, pkt(80, PktMcast)); err != nil {
		t.Fatal(err)
	}
	ifp.Serializer().Unlock()
	if d.pkts.Load() != 1 || ifp.Stats().OBytes != 80 || ifp.Stats().OMcasts != 1 {
		t.Fatal("handoff did not start or count")
	}
	_, err := n.Attach(IfConfig{Name: "mq", Driver: d, Subqueues: 3})
	wantErrno(t, err, syscall.EINVAL)
	for _, m := range []SubqMap{MapWorker, MapHash} {
		d := &sinkDriver{}
		d.full.Store(true)
		ifp := attachUp(t, n, "mq"+string(rune('0'+m)), d, IfConfig{Subqueues: 2, SubqMap: m})
		for i := 0; i < 4; i++ {
			p := pkt(60, 0)
			p.Hash = uint32(i)
			if m == MapWorker {
				_ = n.Workers().Get(i % 2).Do(func(w *Worker) { _ = ifp.Dispatch(w, p) })
			} else {
				_ = ifp.Dispatch(nil, p)
			}
		}
		if a, b := ifp.Snd().Subqueue(0).Len(), ifp.Snd().Subqueue(1).Len(); a != 2 || b != 2 {
			t.Fatalf("map %d: subqueue lengths %d/%d", m, a, b)
		}
		ifp.Snd().PurgeAll()
	}
}

func TestApplyQueuePolicy(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 1, StageCntMax: -1})
	d := &sinkDriver{}
	d.full.Store(true)
	ifp := attachUp(t, n, "pol0", d, IfConfig{})
	q := ifp.Snd()
	bad := DisciplineKind(7)
	wantErrno(t, q.Apply(QueuePolicy{Discipline: &bad, MaxLen: 10}), syscall.EINVAL)
	if q.MaxLen() != IFQ_MAXLEN {
		t.Fatal("a rejected policy changed the queue length")
	}
	wantErrno(t, q.Apply(QueuePolicy{Rate: &Rate{BurstBytes: -1, BitsPerSec: 1}}), syscall.EINVAL)
	k := DiscPrioClass
	if err := q.Apply(QueuePolicy{Discipline: &k, MaxLen: 10, Rate: &Rate{BitsPerSec: 1e9}}); err != nil {
		t.Fatal(err)
	}
	sq := q.Subqueue(0)
	sq.mu.Lock()
	_, ok := sq.disc.(*PrioClass)
	hasTBR := sq.tbr != nil
	sq.mu.Unlock()
	if !ok || q.MaxLen() != 10 || !hasTBR {
		t.Fatal("policy not applied")
	}
	if err := q.Apply(QueuePolicy{ClearRate: true}); err != nil {
		t.Fatal(err)
	}
	sq.mu.Lock()
	hasTBR = sq.tbr != nil
	sq.mu.Unlock()
	if hasTBR {
		t.Fatal("rate not cleared")
	}
	// Input can be replaced on a live interface.
	var got int
	ifp.SetInput(func(w *Worker, ifp *Ifnet, p *Packet) { got++; p.Free() })
	ifp.Input(nil, pkt(1, 0))
	if got != 1 {
		t.Fatal("SetInput")
	}
}
