package ifcore

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type rxRec struct {
	mu    sync.Mutex
	got   []string // "<ifp>:<len>"
	bad   atomic.Int64
	gate  chan struct{} // when non-nil, input waits on it
	count atomic.Int64
}

func (r *rxRec) input(w *Worker, ifp *Ifnet, p *Packet) {
	if p.Rcvif != ifp {
		r.bad.Add(1)
	}
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	r.got = append(r.got, fmt.Sprintf("%s:%d", ifp.Name(), p.Len))
	r.mu.Unlock()
	r.count.Add(1)
	p.Free()
}

func (r *rxRec) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func newEpairNet(t testing.TB, ncfg Config, ecfg EpairConfig) (*Net, *Epair, *rxRec) {
	t.Helper()
	n, _ := newTestNet(t, ncfg)
	rx := &rxRec{}
	if ecfg.Input == nil {
		ecfg.Input = rx.input
	}
	e, err := NewEpair(n, ecfg)
	if err != nil {
		t.Fatal(err)
	}
	return n, e, rx
}

func mustCreate(t testing.TB, n *Net, name string) (*Ifnet, *Ifnet) {
	t.Helper()
	got, err := n.CloneCreate(name, nil)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	a, err := n.Unit(got)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Unit(got[:len(got)-1] + "b")
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func upBoth(t testing.TB, a, b *Ifnet) {
	t.Helper()
	if err := a.Up(); err != nil {
		t.Fatal(err)
	}
	if err := b.Up(); err != nil {
		t.Fatal(err)
	}
}

// blockWorker parks worker i until the returned func is called.
func blockWorker(n *Net, i int) func() {
	block := make(chan struct{})
	blocked := make(chan struct{})
	n.Workers().Get(i).Send(NewMsg(func(*Worker) { close(blocked); <-block }))
	<-blocked
	var once sync.Once
	return func() { once.Do(func() { close(block) }) }
}

func TestET01_Match(t *testing.T) {
	_, e, _ := newEpairNet(t, Config{}, EpairConfig{})
	for _, s := range []string{"epair", "epair0", "epair42"} {
		if !e.Match(s) {
			t.Errorf("%q rejected", s)
		}
	}
	for _, s := range []string{"epair0a", "epair0b", "epairx", "epair-1", "epai", "veth0"} {
		if e.Match(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestET02_CreateNames(t *testing.T) {
	n, _, _ := newEpairNet(t, Config{}, EpairConfig{})
	for _, c := range []struct{ req, want string }{{"epair", "epair0a"}, {"epair", "epair1a"}, {"epair7", "epair7a"}} {
		got, err := n.CloneCreate(c.req, nil)
		if err != nil || got != c.want {
			t.Fatalf("create %s: %q %v", c.req, got, err)
		}
		if _, err := n.Unit(c.want[:len(c.want)-1] + "b"); err != nil {
			t.Fatal("b end missing")
		}
	}
	_, err := n.CloneCreate("epair7", nil)
	wantErrno(t, err, syscall.EEXIST)
}

func TestET03_LowestFreeUnit(t *testing.T) {
	n, _, _ := newEpairNet(t, Config{}, EpairConfig{})
	mustCreate(t, n, "epair")
	mustCreate(t, n, "epair")
	if err := n.CloneDestroy("epair0a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := n.CloneCreate("epair", nil); got != "epair0a" {
		t.Fatalf("got %s, want epair0a", got)
	}
}

func TestET04_BadUnits(t *testing.T) {
	n, _, _ := newEpairNet(t, Config{}, EpairConfig{})
	_, err := n.CloneCreate("epair05", nil)
	wantErrno(t, err, syscall.EINVAL)
	_, err = n.CloneCreate("epair2147483648", nil)
	wantErrno(t, err, syscall.EINVAL)
	if _, err := n.CloneCreate("epair0", nil); err != nil {
		t.Fatal(err)
	}
}

func TestET05_NoSpace(t *testing.T) {
	n, e, _ := newEpairNet(t, Config{}, EpairConfig{})
	_, err := n.CloneCreate("epair32768", nil)
	wantErrno(t, err, syscall.ENOSPC)
	if e.Units().InUse() != 0 {
		t.Fatal("unit leaked")
	}
	// A long base name: base+digits > 14 bytes → ENOSPC, unit released.
	n2, _ := newTestNet(t, Config{})
	e2, err := NewEpair(n2, EpairConfig{Name: "epairlongbase"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = n2.CloneCreate("epairlongbase12", nil)
	wantErrno(t, err, syscall.ENOSPC)
	if e2.Units().InUse() != 0 {
		t.Fatal("unit not released after ENOSPC")
	}
	if got, err := n2.CloneCreate("epairlongbase1", nil); err != nil || got != "epairlongbase1a" {
		t.Fatalf("retry with a smaller unit: %q %v", got, err)
	}
}

func TestET06_CreatedState(t *testing.T) {
	n, _, _ := newEpairNet(t, Config{}, EpairConfig{})
	a, b := mustCreate(t, n, "epair")
	for _, ifp := range []*Ifnet{a, b} {
		f := ifp.Flags()
		if f&(IFF_BROADCAST|IFF_SIMPLEX|IFF_MULTICAST) != IFF_BROADCAST|IFF_SIMPLEX|IFF_MULTICAST || f&IFF_UP != 0 || f&IFF_RUNNING == 0 {
			t.Fatalf("%s flags %#x", ifp.Name(), f)
		}
		if ifp.Baudrate() != 10_000_000_000 || ifp.Snd().MaxLen() != IFQ_MAXLEN {
			t.Fatalf("baudrate %d maxlen %d", ifp.Baudrate(), ifp.Snd().MaxLen())
		}
		if ml, _ := ifp.Snd().Subqueue(0).Limits(); ml != IFQ_MAXLEN {
			t.Fatalf("subqueue maxlen %d", ml)
		}
	}
}

func TestET07_MACSchemes(t *testing.T) {
	n, _, _ := newEpairNet(t, Config{}, EpairConfig{})
	attach(t, n, "pad0", &sinkDriver{}) // make indexes differ from units
	a, b := mustCreate(t, n, "epair")
	wantA := []byte{2, 0, 0, byte(a.Index() >> 8), byte(a.Index()), 0x0a}
	wantB := []byte{2, 0, 0, byte(b.Index() >> 8), byte(b.Index()), 0x0b}
	if !bytes.Equal(a.Lladdr(), wantA) || !bytes.Equal(b.Lladdr(), wantB) {
		t.Fatalf("seed scheme: %x %x", a.Lladdr(), b.Lladdr())
	}
	// Project scheme: node-unique, stable for the same input.
	mac := func(node string) ([]byte, []byte) {
		n, _ := newTestNet(t, Config{})
		if _, err := NewEpair(n, EpairConfig{NodeID: node}); err != nil {
			t.Fatal(err)
		}
		a, b := mustCreate(t, n, "epair3")
		return a.Lladdr(), b.Lladdr()
	}
	a1, b1 := mac("node-1")
	a2, _ := mac("node-1")
	a3, _ := mac("node-2")
	if a1[0]&1 != 0 || a1[0]&2 == 0 || a1[5] != 0x0a || b1[5] != 0x0b {
		t.Fatalf("project scheme bits: %x %x", a1, b1)
	}
	if !bytes.Equal(a1, a2) || bytes.Equal(a1, a3) || !bytes.Equal(a1[:5], b1[:5]) {
		t.Fatalf("stability/uniqueness: %x %x %x", a1, a2, a3)
	}
}

func TestET08_ClonerListAndUnitOnce(t *testing.T) {
	n, e, _ := newEpairNet(t, Config{}, EpairConfig{})
	mustCreate(t, n, "epair")
	if got := n.ClonedInterfaces("epair"); !slices.Equal(got, []string{"epair0a", "epair0b"}) {
		t.Fatalf("cloner list %v", got)
	}
	if e.Units().InUse() != 1 {
		t.Fatal("unit allocated more than once")
	}
	if !slices.Equal(n.CloneList(), []string{"epair"}) {
		t.Fatal("SIOCIFGCLONERS")
	}
	_ = n.CloneDestroy("epair0a")
	if e.Units().InUse() != 0 || len(n.ClonedInterfaces("epair")) != 0 {
		t.Fatal("destroy did not free exactly one unit")
	}
}

func TestET09_TransmitNotRunningOrDown(t *testing.T) {
	n, _, _ := newEpairNet(t, Config{}, EpairConfig{})
	a, _ := mustCreate(t, n, "epair")
	before := DefaultPool.Outstanding()
	wantErrno(t, a.Transmit(nil, pkt(60, 0)), syscall.ENETDOWN)
	a.ClearFlagBits(IFF_RUNNING)
	wantErrno(t, a.Transmit(nil, pkt(60, 0)), syscall.ENXIO)
	if DefaultPool.Outstanding() != before {
		t.Fatal("packet not freed")
	}
	a.SetFlagBits(IFF_RUNNING)
}

func TestET10_PeerDown(t *testing.T) {
	var tapped atomic.Int64
	n, _, rx := newEpairNet(t, Config{}, EpairConfig{Tap: func(*Ifnet, *Packet) { tapped.Add(1) }})
	a, _ := mustCreate(t, n, "epair")
	_ = a.Up()
	if err := a.Transmit(nil, pkt(60, 0)); err != nil {
		t.Fatalf("peer down must be a silent success, got %v", err)
	}
	_ = n.ServiceSync()
	if a.Stats().OErrors != 1 || rx.count.Load() != 0 || tapped.Load() != 1 {
		t.Fatalf("oerrors %d delivered %d tapped %d", a.Stats().OErrors, rx.count.Load(), tapped.Load())
	}
}

func TestET11_TransmitSuccess(t *testing.T) {
	n, e, rx := newEpairNet(t, Config{Workers: 2}, EpairConfig{})
	a, b := mustCreate(t, n, "epair")
	upBoth(t, a, b)
	release := blockWorker(n, 1) // b's receive worker
	defer release()
	if err := a.Transmit(nil, pkt(100, PktMcast)); err != nil {
		t.Fatal(err)
	}
	_ = a.Transmit(nil, pkt(50, 0))
	if e.Refcount(b) != 3 {
		t.Fatalf("refcount %d while queued", e.Refcount(b))
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.OPackets != 2 || sa.OBytes != 150 || sa.OMcasts != 1 || sb.IPackets != 2 {
		t.Fatalf("a %+v b ipackets %d", sa, sb.IPackets)
	}
	release()
	eventually(t, "delivery", func() bool { return rx.count.Load() == 2 })
	eventually(t, "references released", func() bool { return e.Refcount(b) == 1 })
	if rx.bad.Load() != 0 || !slices.Equal(rx.list(), []string{"epair0b:100", "epair0b:50"}) {
		t.Fatalf("input %v (rcvif mismatches %d)", rx.list(), rx.bad.Load())
	}
}

// overflowSetup makes a pair with a netisr queue of 4 and ifqmaxlen 5,
// with b's receive worker blocked.
func overflowSetup(t *testing.T) (*Net, *Epair, *rxRec, *Ifnet, *Ifnet, func()) {
	n, e, rx := newEpairNet(t, Config{Workers: 2, IfqMaxLen: 5}, EpairConfig{NetisrMaxLen: 4})
	a, b := mustCreate(t, n, "epair")
	upBoth(t, a, b)
	release := blockWorker(n, 1)
	t.Cleanup(release)
	return n, e, rx, a, b, release
}

func TestET12_NetisrOverflow(t *testing.T) {
	_, e, _, a, b, _ := overflowSetup(t)
	for i := 0; i < 4; i++ {
		if err := a.Transmit(nil, pkt(60, 0)); err != nil {
			t.Fatal(err)
		}
	}
	before := DefaultPool.Outstanding()
	wantErrno(t, a.Transmit(nil, pkt(60, 0)), syscall.ENOBUFS)
	if DefaultPool.Outstanding() != before-1+0 && DefaultPool.Outstanding() != before {
		t.Fatal("overflowed packet not freed")
	}
	_, oactive, drain := e.QueueState(b)
	if e.Refcount(b) != 5 || !oactive || !a.Snd().Subqueue(0).IsOActive() {
		t.Fatalf("refcount %d global %v sender %v", e.Refcount(b), oactive, a.Snd().Subqueue(0).IsOActive())
	}
	if !slices.Equal(drain, []string{"epair0a"}) { // D-E3 fix
		t.Fatalf("drain list %v", drain)
	}
}

func TestET13_ParkWhileOActive(t *testing.T) {
	_, e, _, a, b, _ := overflowSetup(t)
	for i := 0; i < 5; i++ {
		_ = a.Transmit(nil, pkt(60, 0)) // 4 queued + 1 overflow
	}
	for i := 0; i < 5; i++ {
		if err := a.Transmit(nil, pkt(60, 0)); err != nil {
			t.Fatalf("park %d: %v", i, err)
		}
	}
	wantErrno(t, a.Transmit(nil, pkt(60, 0)), syscall.ENOBUFS)
	if a.Snd().Len() != 5 {
		t.Fatalf("parked %d", a.Snd().Len())
	}
	if _, _, drain := e.QueueState(b); !slices.Equal(drain, []string{"epair0a"}) {
		t.Fatalf("drain list %v", drain)
	}
}

func TestET14_Drained(t *testing.T) {
	_, e, rx, a, b, release := overflowSetup(t)
	var sent []string
	for i := 1; i <= 10; i++ {
		if a.Transmit(nil, pkt(i, 0)) == nil {
			sent = append(sent, fmt.Sprintf("epair0b:%d", i))
		}
	}
	// 4 queued, #5 overflowed, 6..10 parked.
	if len(sent) != 9 {
		t.Fatalf("accepted %d", len(sent))
	}
	release()
	eventually(t, "all delivered", func() bool { return rx.count.Load() == 9 })
	if !slices.Equal(rx.list(), sent) {
		t.Fatalf("order %v want %v", rx.list(), sent)
	}
	eventually(t, "drained state", func() bool {
		_, oactive, drain := e.QueueState(b)
		return !oactive && len(drain) == 0 && !a.Snd().Subqueue(0).IsOActive() && a.Snd().Len() == 0
	})
	if e.Refcount(b) != 1 || a.Stats().OErrors != 0 {
		t.Fatal("refcount or drops after drain")
	}
}

func TestET14_DrainStopsOnRefill(t *testing.T) {
	// Drive drainedLocked by hand to see one pass.
	_, e, _, a, b, release := overflowSetup(t)
	for i := 1; i <= 10; i++ {
		_ = a.Transmit(nil, pkt(i, 0))
	}
	sc := b.softc.(*epairSoftc)
	q := sc.rxq
	q.mu.Lock()
	// Pretend the consumer took the 4 queued packets.
	for p := q.q.take(); p != nil; {
		nx := p.next
		p.next = nil
		p.Free()
		sc.release()
		p = nx
	}
	q.drainedLocked(nil)
	qlen, oactive, drain := q.q.n, q.oactive, len(q.drain)
	q.mu.Unlock()
	// 4 of the 5 parked moved, the 5th kept (D-E4), OACTIVE again, listed.
	if qlen != 4 || !oactive || drain != 1 || a.Snd().Len() != 1 {
		t.Fatalf("queue %d oactive %v listed %d parked %d", qlen, oactive, drain, a.Snd().Len())
	}
	release()
	eventually(t, "settled", func() bool { _, o, d := e.QueueState(b); return !o && len(d) == 0 })
}

func TestET15_NoStallAfterOverflow(t *testing.T) {
	_, e, rx, a, b, release := overflowSetup(t)
	for i := 0; i < 5; i++ {
		_ = a.Transmit(nil, pkt(60, 0)) // the 5th overflows
	}
	release()
	eventually(t, "queue drained", func() bool { return rx.count.Load() == 4 })
	eventually(t, "global OACTIVE cleared", func() bool { _, o, _ := e.QueueState(b); return !o })
	if err := a.Transmit(nil, pkt(61, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "single packet delivered", func() bool { return rx.count.Load() == 5 })
}

// TestET16_StartKeepsRemainder (D-E4): the netisr queue fills up in the
// middle of an epair_start loop that has several packets to move. The
// packet that did not fit goes back to the head of if_snd and the loop
// stops, so it and everything behind it stay parked, in order, instead of
// being dequeued and dropped as in the seed (000:259-264). All of them are
// delivered once the queue drains.
func TestET16_StartKeepsRemainder(t *testing.T) {
	_, e, rx, a, b, release := overflowSetup(t) // netisr queue 4, ifqmaxlen 5, b's worker blocked
	var want []string
	// The direct transmit path takes 2 of the 4 netisr slots.
	for i := 1; i <= 2; i++ {
		if err := a.Transmit(nil, pkt(i, 0)); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("epair0b:%d", i))
	}
	// Park 4 packets in if_snd without starting (IFQ_ENQUEUE), then
	// ifq_dispatch a 5th: one if_start (epair_start) runs with 5 packets to
	// move and room for 2 in the netisr queue.
	sq := a.Snd().Subqueue(0)
	for i := 11; i <= 14; i++ {
		if err := sq.Enqueue(pkt(i, 0)); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("epair0b:%d", i))
	}
	if err := a.Dispatch(nil, pkt(15, 0)); err != nil {
		t.Fatal(err)
	}
	want = append(want, "epair0b:15")
	qlen, oactive, drain := e.QueueState(b)
	if qlen != 4 || e.Refcount(b) != 5 {
		t.Fatalf("netisr queue %d refcount %d, want 4 and 5 (the start loop moved 11 and 12)", qlen, e.Refcount(b))
	}
	if n := sq.Len(); n != 3 {
		t.Fatalf("if_snd holds %d packets after the refill, want 3 (13, 14, 15 kept)", n)
	}
	if p := sq.Poll(); p == nil || p.Len != 13 {
		t.Fatalf("head of if_snd %v, want the packet that did not fit (13)", p)
	}
	if a.Stats().OErrors != 0 || sq.Drops() != 0 || e.Drops(b) != 0 {
		t.Fatalf("oerrors %d if_snd drops %d netisr drops %d, want none", a.Stats().OErrors, sq.Drops(), e.Drops(b))
	}
	if !oactive || !sq.IsOActive() || !slices.Equal(drain, []string{"epair0a"}) {
		t.Fatalf("global OACTIVE %v sender OACTIVE %v drain list %v", oactive, sq.IsOActive(), drain)
	}
	release()
	eventually(t, "all delivered", func() bool { return rx.count.Load() == int64(len(want)) })
	if got := rx.list(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	eventually(t, "drained state", func() bool {
		_, o, d := e.QueueState(b)
		return !o && len(d) == 0 && sq.Len() == 0 && !sq.IsOActive() && e.Refcount(b) == 1
	})
}

// TestET17_RoundRobinDrain (D-E8): two senders parked behind a netisr queue
// of 2. The drained callback serves the head of the drain list and, if it
// still has packets, moves it to the tail, so the senders take turns: while
// both still have packets to deliver, no sender gets more than one queue's
// worth of deliveries in a row. The seed retries the head first on every
// drain, so the first sender would deliver all of its packets before the
// second moved one.
func TestET17_RoundRobinDrain(t *testing.T) {
	const qmax = 2
	n, e, rx := newEpairNet(t, Config{Workers: 2, IfqMaxLen: 20}, EpairConfig{NetisrMaxLen: qmax})
	a0, b0 := mustCreate(t, n, "epair")
	a1, b1 := mustCreate(t, n, "epair")
	upBoth(t, a0, b0)
	upBoth(t, a1, b1)
	release := blockWorker(n, 1) // both b ends receive on worker 1
	defer release()
	for i := 0; i < 12; i++ {
		_ = a0.Transmit(nil, pkt(100, 0))
		_ = a1.Transmit(nil, pkt(200, 0))
	}
	// One packet each queued, a0's second overflowed (dropped), the rest
	// parked: a0 heads the drain list with 10, a1 follows with 11.
	if _, _, d := e.QueueState(b0); !slices.Equal(d, []string{"epair0a", "epair1a"}) {
		t.Fatalf("drain list %v", d)
	}
	if a0.Snd().Len() != 10 || a1.Snd().Len() != 11 {
		t.Fatalf("parked %d and %d, want 10 and 11", a0.Snd().Len(), a1.Snd().Len())
	}
	release()
	eventually(t, "all delivered", func() bool { return rx.count.Load() == 23 })
	eventually(t, "drained state", func() bool {
		_, o, d := e.QueueState(b0)
		return !o && len(d) == 0 && a0.Snd().Len() == 0 && a1.Snd().Len() == 0
	})
	got := rx.list()
	last := map[string]int{}
	for i, s := range got {
		last[s] = i
	}
	if len(last) != 2 {
		t.Fatalf("deliveries %v", got)
	}
	both := min(last["epair0b:100"], last["epair1b:200"])
	for i, run := 1, 1; i <= both; i++ {
		if got[i] == got[i-1] {
			run++
		} else {
			run = 1
		}
		if run > qmax {
			t.Fatalf("not round robin: %s delivered %d times in a row (position %d) while the other sender still had packets parked: %v", got[i], run, i, got)
		}
	}
}

// TestDE07_CountersOnEveryPath: obytes and omcasts (broadcast or multicast)
// are counted once, when a packet reaches the netisr queue, on every path:
// the direct transmit path, the parked path (parked in if_snd while the
// queue is OACTIVE, moved by the drained callback) and the if_start path
// (epair_start). The seed counts them only on the direct path (000:255-258,
// 353-356). Parking and overflow drops are not counted; peer ipackets is
// counted at enqueue (the seed's semantic, kept).
func TestDE07_CountersOnEveryPath(t *testing.T) {
	_, e, rx, a, b, release := overflowSetup(t) // netisr queue 4, ifqmaxlen 5, b's worker blocked
	check := func(when string, opackets, obytes, omcasts uint64) {
		t.Helper()
		s := a.Stats()
		if s.OPackets != opackets || s.OBytes != obytes || s.OMcasts != omcasts || s.OErrors != 0 {
			t.Fatalf("%s: opackets %d obytes %d omcasts %d oerrors %d, want %d %d %d 0",
				when, s.OPackets, s.OBytes, s.OMcasts, s.OErrors, opackets, obytes, omcasts)
		}
		if ip := b.Stats().IPackets; ip != opackets {
			t.Fatalf("%s: peer ipackets %d, want %d", when, ip, opackets)
		}
	}
	// Direct path.
	for _, p := range []*Packet{pkt(60, 0), pkt(61, PktMcast), pkt(62, PktBcast), pkt(63, 0)} {
		if err := a.Transmit(nil, p); err != nil {
			t.Fatal(err)
		}
	}
	check("direct transmit", 4, 246, 2)
	// Overflow: dropped, not counted.
	wantErrno(t, a.Transmit(nil, pkt(64, PktMcast)), syscall.ENOBUFS)
	check("after the overflow", 4, 246, 2)
	// Parked path: nothing counted while parked.
	for _, p := range []*Packet{pkt(70, PktMcast), pkt(80, PktBcast), pkt(90, 0)} {
		if err := a.Transmit(nil, p); err != nil {
			t.Fatal(err)
		}
	}
	if a.Snd().Len() != 3 {
		t.Fatalf("parked %d", a.Snd().Len())
	}
	check("while parked", 4, 246, 2)
	release()
	eventually(t, "parked packets delivered", func() bool { return rx.count.Load() == 7 })
	eventually(t, "drained state", func() bool { _, o, d := e.QueueState(b); return !o && len(d) == 0 })
	check("after the drain", 7, 486, 4)
	// if_start path: packets put in if_snd without ifq_dispatch (so no
	// enqueue-time accounting), then if_start on the owner worker.
	sq := a.Snd().Subqueue(0)
	for _, p := range []*Packet{pkt(100, PktMcast), pkt(110, PktBcast), pkt(120, 0)} {
		if err := sq.Enqueue(p); err != nil {
			t.Fatal(err)
		}
	}
	sq.DevstartSched()
	eventually(t, "started packets delivered", func() bool { return rx.count.Load() == 10 })
	check("after if_start", 10, 816, 6)
}

// TestDE07_DispatchCountsOnce: a packet sent with ifq_dispatch onto an epair
// end is counted once. Dispatch counts obytes/omcasts when it enqueues
// (ifq_dispatch, I-T30) and epair_start counts them when it moves the packet
// to the netisr queue (D-E7); the epair's driver is an OutputCounter, so
// Dispatch leaves them to it (one 100-byte multicast packet once showed
// obytes 200 and omcasts 2).
func TestDE07_DispatchCountsOnce(t *testing.T) {
	n, _, rx := newEpairNet(t, Config{Workers: 2}, EpairConfig{})
	a, b := mustCreate(t, n, "epair")
	upBoth(t, a, b)
	if err := a.Dispatch(nil, pkt(100, PktMcast)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivery", func() bool { return rx.count.Load() == 1 })
	if s := a.Stats(); s.OPackets != 1 || s.OBytes != 100 || s.OMcasts != 1 {
		t.Fatalf("opackets %d obytes %d omcasts %d, want 1 100 1", s.OPackets, s.OBytes, s.OMcasts)
	}
}

// TestDE12_CreateRollsBack: when the second end cannot be made, the seed
// panics (000:609-611). Here the error is returned and the first end is
// rolled back: end A detached (its departure follows its arrival), the unit
// freed, nothing left on the cloner list or in the epair group, and the
// same unit and names can be created once the obstacle is gone.
func TestDE12_CreateRollsBack(t *testing.T) {
	n, rec := newTestNet(t, Config{})
	e, err := NewEpair(n, EpairConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// B's name is taken by an interface the cloner did not make: attaching
	// end B fails with EEXIST after end A is attached.
	blocker := attach(t, n, "epair0b", &sinkDriver{})
	rec.reset()
	_, err = n.CloneCreate("epair", nil)
	wantErrno(t, err, syscall.EEXIST)
	if got := joinKinds(rec.kinds("epair0a")); !strings.HasPrefix(got, "attach,arrival,") || !strings.Contains(got, "detach,departure") {
		t.Fatalf("end A events %q, want it attached then detached", got)
	}
	if _, err := n.Unit("epair0a"); err == nil {
		t.Fatal("end A left attached")
	}
	if ifs := n.Interfaces(); len(ifs) != 1 || ifs[0] != blocker {
		t.Fatalf("%d interfaces left, want only the blocker", len(ifs))
	}
	if e.Units().InUse() != 0 {
		t.Fatal("unit 0 not freed")
	}
	if l := n.ClonedInterfaces("epair"); len(l) != 0 {
		t.Fatalf("cloner list %v", l)
	}
	if _, _, err := n.GroupMembers("epair", 0); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("epair group after the rollback: %v, want ENOENT", err)
	}
	if err := n.Detach(blocker); err != nil {
		t.Fatal(err)
	}
	if got, err := n.CloneCreate("epair", nil); err != nil || got != "epair0a" {
		t.Fatalf("create after the rollback: %q %v, want epair0a", got, err)
	}
	if _, err := n.Unit("epair0b"); err != nil {
		t.Fatal(err)
	}
}

func TestET18_DestroyEitherEnd(t *testing.T) {
	n, e, _ := newEpairNet(t, Config{}, EpairConfig{})
	mustCreate(t, n, "epair3")
	a, _ := n.Unit("epair3a")
	if err := n.CloneDestroy("epair3b"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Unit("epair3a"); err == nil {
		t.Fatal("a end survived")
	}
	if e.Units().InUse() != 0 {
		t.Fatal("unit 3 not free")
	}
	wantErrno(t, n.CloneDestroy("epair3b"), syscall.ENXIO)
	if err := e.Destroy(n, a); err != nil { // the recursive second half
		t.Fatalf("re-entry guard: %v", err)
	}
}

func TestET19_DestroyWaitsForInFlight(t *testing.T) {
	n, e, rx := newEpairNet(t, Config{Workers: 2, IfqMaxLen: 5}, EpairConfig{NetisrMaxLen: 4, DestroyTimeout: 100 * time.Millisecond})
	a, b := mustCreate(t, n, "epair")
	upBoth(t, a, b)
	// Queued packets are purged; parked ones too; the drain list is cleaned.
	release := blockWorker(n, 1)
	for i := 0; i < 7; i++ {
		_ = a.Transmit(nil, pkt(60, 0))
	}
	done := make(chan error, 1)
	go func() { done <- n.CloneDestroy("epair0a") }()
	// The queued packets are purged before the detach waits for workers.
	eventually(t, "queued packets purged", func() bool { return e.Refcount(b) == 1 })
	if _, _, d := e.QueueState(b); len(d) != 0 {
		t.Fatalf("drain list after destroy %v", d)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = n.ServiceSync()
	if rx.count.Load() != 0 {
		t.Fatal("input ran on a destroyed end")
	}
	// In flight inside if_input: destroy waits, then EBUSY at the deadline.
	a, b = mustCreate(t, n, "epair")
	upBoth(t, a, b)
	gate := make(chan struct{})
	rx.gate = gate
	_ = a.Transmit(nil, pkt(60, 0))
	eventually(t, "input entered", func() bool { return e.Refcount(b) == 2 && func() bool { n, _, _ := e.QueueState(b); return n == 0 }() })
	err := n.CloneDestroy("epair0a")
	wantErrno(t, err, syscall.EBUSY)
	done = make(chan error, 1)
	go func() {
		e.cfg.DestroyTimeout = 5 * time.Second
		done <- n.CloneDestroy("epair0a")
	}()
	time.Sleep(20 * time.Millisecond)
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e.Refcount(b) != 1 {
		t.Fatal("refcount")
	}
}

func TestET20_QflushKeepsRefcount(t *testing.T) {
	_, e, _, a, b, _ := overflowSetup(t)
	for i := 0; i < 8; i++ {
		_ = a.Transmit(nil, pkt(60, 0))
	}
	if a.Snd().Len() != 3 {
		t.Fatal("nothing parked")
	}
	e.Qflush(a)
	if a.Snd().Len() != 0 || e.Refcount(a) != 1 || e.Refcount(b) != 5 {
		t.Fatalf("len %d refcount a %d b %d", a.Snd().Len(), e.Refcount(a), e.Refcount(b))
	}
	if _, _, d := e.QueueState(b); len(d) != 0 {
		t.Fatal("still on the drain list")
	}
}

func TestET21_Ioctl(t *testing.T) {
	n, _, _ := newEpairNet(t, Config{}, EpairConfig{})
	a, _ := mustCreate(t, n, "epair")
	if err := n.Ioctl(root, SIOCSIFFLAGS, &Ifreq{Name: "epair0a", Flags: IFF_UP}); err != nil {
		t.Fatal(err)
	}
	if a.Flags()&IFF_RUNNING == 0 || a.Flags()&IFF_UP == 0 {
		t.Fatal("UP changed RUNNING")
	}
	grp := LinkSockaddr([]byte{1, 0, 0x5e, 0, 0, 9})
	if err := n.Ioctl(root, SIOCADDMULTI, &Ifreq{Name: "epair0a", Addr: grp}); err != nil {
		t.Fatal(err)
	}
	if err := n.Ioctl(root, SIOCDELMULTI, &Ifreq{Name: "epair0a", Addr: grp}); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, n.Ioctl(root, SIOCSIFMTU, &Ifreq{Name: "epair0a", MTU: 1501}), syscall.EINVAL)
	if err := n.Ioctl(root, SIOCSIFMTU, &Ifreq{Name: "epair0a", MTU: 1400}); err != nil {
		t.Fatal(err)
	}
	err := n.Ioctl(root, SIOCGIFMEDIA, &Ifreq{Name: "epair0a"})
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("media: %v", err)
	}
}

func TestET22_NetisrMaxLen(t *testing.T) {
	_, e, _ := newEpairNet(t, Config{}, EpairConfig{})
	if e.NetisrMaxLen() != 16*IFQ_MAXLEN {
		t.Fatalf("default %d", e.NetisrMaxLen())
	}
	_, e2, _ := newEpairNet(t, Config{}, EpairConfig{NetisrMaxLen: 123})
	if e2.NetisrMaxLen() != 123 {
		t.Fatal("tunable ignored")
	}
	n3, _ := newTestNet(t, Config{})
	_, err := NewEpair(n3, EpairConfig{NetisrMaxLen: -1})
	wantErrno(t, err, syscall.EINVAL)
}

// TestEpairLinkState: the link is UP iff both ends are admin-UP.
func TestEpairLinkState(t *testing.T) {
	n, _, _ := newEpairNet(t, Config{}, EpairConfig{})
	a, b := mustCreate(t, n, "epair")
	_ = a.Up()
	if a.LinkState() == LinkStateUp {
		t.Fatal("link up with one end down")
	}
	_ = b.Up()
	if a.LinkState() != LinkStateUp || b.LinkState() != LinkStateUp {
		t.Fatal("link not up with both ends up")
	}
	_ = a.Down()
	if a.LinkState() != LinkStateDown || b.LinkState() != LinkStateDown {
		t.Fatal("link not down")
	}
}

// TestCloseWithTraffic closes a Net while pairs carry traffic; TestMain
// then checks that no goroutine or packet is left.
func TestCloseWithTraffic(t *testing.T) {
	n, err := New(Config{Workers: 2, Clock: NewManualClock(time.Unix(1e9, 0))})
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	if _, err := NewEpair(n, EpairConfig{NetisrMaxLen: 8, Input: func(w *Worker, ifp *Ifnet, p *Packet) { got.Add(1); p.Free() }}); err != nil {
		t.Fatal(err)
	}
	var ends []*Ifnet
	for i := 0; i < 3; i++ {
		a, b := mustCreate(t, n, "epair")
		upBoth(t, a, b)
		ends = append(ends, a, b)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, ifp := range ends {
		wg.Add(1)
		go func(ifp *Ifnet) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = ifp.Dispatch(nil, pkt(60, 0))
				_ = ifp.Transmit(nil, pkt(60, 0))
			}
		}(ifp)
	}
	eventually(t, "traffic", func() bool { return got.Load() > 1000 })
	// Close while the producers are still sending; they must get errors,
	// never strand a packet.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if len(n.Interfaces()) != 0 {
		t.Fatal("interfaces left after Close")
	}
}
