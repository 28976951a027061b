package ifcore

import (
	"fmt"
	"syscall"
)

// errDetached is preallocated: the packet path does not format errors.
var errDetached = fmt.Errorf("dispatch: interface detached: %w", syscall.ENXIO)

// MaxProtoHdr is max_protohdr: the largest protocol header (40-byte IPv6 +
// 14-byte Ethernet). Staging stops once the staged bytes reach
// MTU - MaxProtoHdr, i.e. one more packet could not fit in a full frame.
const MaxProtoHdr = 40 + 14

// Dispatch is ifq_dispatch: enqueue p on the subqueue mapped for this
// worker and get if_start going, staging the start while called from a
// worker w (nil means "not a netisr thread": start at once). It returns the
// enqueue error (ENOBUFS, the packet freed and counted) even when a start
// was attempted; obytes/omcasts count only enqueued packets.
func (ifp *Ifnet) Dispatch(w *Worker, p *Packet) error {
	if ifp.dead.Load() {
		p.Free()
		return errDetached
	}
	cpu := 0
	if w != nil {
		cpu = w.id
	}
	sq := ifp.snd.MapSubq(cpu, p)
	plen := p.Len
	mcast := p.Flags&PktMcast != 0

	var stg *ifsqStage
	avoidStart := false
	if w != nil {
		stg = &sq.stages[w.id]
		stg.cnt++
		stg.len += plen
		if stg.cnt < int(ifp.net.stageCntMax.Load()) && stg.len < int(ifp.mtu.Load())-MaxProtoHdr {
			avoidStart = true
		}
	}

	start := false
	sq.mu.Lock()
	err := sq.enqueueLocked(p)
	if err != nil {
		if err == errDetached || !sq.dataReadyLocked() {
			sq.mu.Unlock()
			return err
		}
		avoidStart = false
	}
	if !sq.started {
		if avoidStart {
			sq.mu.Unlock()
			if !stg.qued {
				w.stageInsert(stg)
			}
			ifp.countOut(w, plen, mcast)
			w.c.avoid.Add(1)
			return nil
		}
		sq.started = true // hold the if_start interlock
		start = true
	}
	sq.mu.Unlock()

	if err == nil {
		ifp.countOut(w, plen, mcast)
	}
	if stg != nil {
		if !start && stg.sched {
			if !avoidStart {
				w.stageRemove(stg)
				sq.schedule(w, true)
			}
			return err
		}
		if stg.qued {
			w.stageRemove(stg)
		} else {
			stg.cnt, stg.len = 0, 0
		}
	}
	if !start {
		return err
	}
	sq.ifstartTry(w, false)
	return err
}

// Handoff is ifq_handoff for callers that already hold the hardware
// serializer of subqueue 0: enqueue, count, and call if_start directly
// unless OACTIVE.
func (ifp *Ifnet) Handoff(w *Worker, p *Packet) error {
	sq := ifp.snd.subqs[0]
	plen, mcast := p.Len, p.Flags&PktMcast != 0
	if err := sq.Enqueue(p); err != nil {
		return err
	}
	ifp.countOut(w, plen, mcast)
	if !sq.IsOActive() {
		ifp.callStart(w, sq)
	}
	return nil
}

func (ifp *Ifnet) countOut(w *Worker, n int, mcast bool) {
	if ifp.selfCounting {
		return // the driver counts when the packet leaves (OutputCounter)
	}
	s := ifp.shard(w)
	s.OBytes.Add(uint64(n))
	if mcast {
		s.OMcasts.Add(1)
	}
}

func (ifp *Ifnet) callStart(w *Worker, sq *Subqueue) {
	if w != nil {
		w.c.run.Add(1)
	}
	ifp.driver.Start(w, sq)
}

// runningNotOActive is "(if_flags & IFF_RUNNING) && !ifsq_is_oactive".
func (sq *Subqueue) runningNotOActive() bool {
	return sq.ifp.Flags()&IFF_RUNNING != 0 && !sq.oactive.Load() && !sq.ifp.dead.Load()
}

// needSchedule is ifsq_ifstart_need_schedule: it releases the interlock
// when there is nothing (more) to do, re-checking under the subqueue lock
// to close the race with an enqueuer that saw started and backed off.
func (sq *Subqueue) needSchedule(running bool) bool {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	if !running || !sq.dataReadyLocked() {
		sq.started = false
		return false
	}
	return true
}

// schedule is ifsq_ifstart_schedule: defer to the rollup when called on a
// worker with staging on, else send the if_start message to the owner.
func (sq *Subqueue) schedule(w *Worker, force bool) {
	if !force && w != nil && sq.ifp.net.stageCntMax.Load() > 0 {
		stg := &sq.stages[w.id]
		stg.cnt, stg.len = 0, 0
		if !stg.qued {
			w.stageInsert(stg)
		}
		stg.sched = true
		return
	}
	owner := int(sq.cpuid.Load())
	m := &sq.startMsgs[owner]
	if m.inflight.CompareAndSwap(false, true) {
		ow := sq.ifp.net.workers.Get(owner)
		ow.c.sched.Add(1)
		ow.Send(&m.msg)
	}
}

// ifstartTry is ifsq_ifstart_try: never blocks on the hardware serializer;
// on contention the start is scheduled on the owner (the interlock stays
// held and travels with it).
func (sq *Subqueue) ifstartTry(w *Worker, forceSched bool) {
	if !sq.hw.TryLock() {
		if w != nil {
			w.c.contend.Add(1)
		}
		sq.schedule(w, true)
		return
	}
	running := false
	if sq.runningNotOActive() {
		sq.ifp.callStart(w, sq)
		running = sq.runningNotOActive()
	}
	need := sq.needSchedule(running)
	sq.hw.Unlock()
	if need {
		sq.schedule(w, forceSched)
	}
}

// ifstartDispatch is ifsq_ifstart_dispatch, run on worker w.
func (sq *Subqueue) ifstartDispatch(w *Worker, m *startMsg) {
	m.inflight.Store(false) // reply first, so it can be re-sent
	if sq.ifp.dead.Load() {
		return
	}
	if w.id != int(sq.cpuid.Load()) {
		w.c.chase.Add(1)
		sq.schedule(w, true) // chase the owner change
		return
	}
	sq.hw.Lock()
	running := false
	if sq.runningNotOActive() {
		sq.ifp.callStart(w, sq)
		running = sq.runningNotOActive()
	}
	need := sq.needSchedule(running)
	sq.hw.Unlock()
	if need {
		sq.schedule(w, false)
	}
}

// DevstartLocked is ifsq_devstart, for a driver that holds the hardware
// serializer (TX completion): if nobody holds the interlock and there is
// data, take it and call if_start without checking RUNNING/OACTIVE (the
// caller just cleared OACTIVE). w is the calling worker or nil.
func (sq *Subqueue) DevstartLocked(w *Worker) {
	sq.mu.Lock()
	if sq.started || !sq.dataReadyLocked() {
		sq.mu.Unlock()
		return
	}
	sq.started = true
	sq.mu.Unlock()
	sq.ifp.callStart(w, sq)
	if sq.needSchedule(sq.runningNotOActive()) {
		sq.schedule(w, false)
	}
}

// DevstartSched is ifsq_devstart_sched for callers that do not hold the
// serializer (a TX-completion callback on another goroutine, the
// regulator's callout): a devstart runs on the owner worker. At most one is
// pending per subqueue.
func (sq *Subqueue) DevstartSched() {
	if sq.ifp.dead.Load() {
		return
	}
	if sq.devMsg.inflight.CompareAndSwap(false, true) {
		sq.ifp.net.workers.Get(int(sq.cpuid.Load())).Send(&sq.devMsg.msg)
	}
}

func (sq *Subqueue) devstartDispatch(w *Worker) {
	sq.devMsg.inflight.Store(false)
	if sq.ifp.dead.Load() {
		return
	}
	if w.id != int(sq.cpuid.Load()) {
		w.c.chase.Add(1)
		sq.DevstartSched()
		return
	}
	sq.hw.Lock()
	if sq.runningNotOActive() {
		sq.DevstartLocked(w)
	}
	sq.hw.Unlock()
}

func (w *Worker) stageInsert(stg *ifsqStage) {
	if stg.qued || stg.sched {
		panic("ifcore: stage insert of a queued stage")
	}
	stg.qued = true
	w.stages = append(w.stages, stg)
}

func (w *Worker) stageRemove(stg *ifsqStage) {
	if !stg.qued {
		panic("ifcore: stage remove of an unqueued stage")
	}
	for i, s := range w.stages {
		if s == stg {
			copy(w.stages[i:], w.stages[i+1:])
			w.stages[len(w.stages)-1] = nil
			w.stages = w.stages[:len(w.stages)-1]
			break
		}
	}
	stg.qued, stg.sched = false, false
	stg.cnt, stg.len = 0, 0
}

// ifstartRollup is if_start_rollup: when the worker goes idle every staged
// subqueue is started (or its deferred schedule is sent), in FIFO order.
func ifstartRollup(w *Worker) {
	for len(w.stages) > 0 {
		stg := w.stages[0]
		sched := stg.sched
		w.stageRemove(stg)
		sq := stg.sq
		if sq.ifp.dead.Load() {
			continue
		}
		if sched {
			sq.schedule(w, true)
			continue
		}
		start := false
		sq.mu.Lock()
		if !sq.started {
			sq.started = true
			start = true
		}
		sq.mu.Unlock()
		if start {
			sq.ifstartTry(w, true)
		}
	}
}

// StagedOn reports whether sq has a stage queued on worker w (for tests and
// diagnostics; call it on w, e.g. through Worker.Do).
func (sq *Subqueue) stagedOn(w *Worker) bool { return sq.stages[w.id].qued }
