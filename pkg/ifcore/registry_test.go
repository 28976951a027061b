package ifcore

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestIT01_IndexAllocation(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	d := &sinkDriver{}
	a := attach(t, n, "a", d)
	b := attach(t, n, "b", d)
	c := attach(t, n, "c", d)
	if a.Index() != 1 || b.Index() != 2 || c.Index() != 3 {
		t.Fatalf("indexes %d %d %d", a.Index(), b.Index(), c.Index())
	}
	if err := n.Detach(b); err != nil {
		t.Fatal(err)
	}
	if n.IfIndex() != 3 {
		t.Fatalf("if_index %d after detaching a hole, want 3", n.IfIndex())
	}
	dd := attach(t, n, "d", d)
	if dd.Index() != 4 {
		t.Fatalf("d index %d, want 4 (max+1)", dd.Index())
	}
	if err := n.Detach(dd); err != nil {
		t.Fatal(err)
	}
	if err := n.Detach(c); err != nil {
		t.Fatal(err)
	}
	if n.IfIndex() != 1 {
		t.Fatalf("if_index %d, want 1 (shrinks at the top)", n.IfIndex())
	}
	e := attach(t, n, "e", d)
	if e.Index() != 2 {
		t.Fatalf("e index %d, want 2", e.Index())
	}
	if n.ByIndex(3) != nil || n.ByIndex(0) != nil || n.ByIndex(2) != e || n.ByIndex(1) != a {
		t.Fatal("ByIndex mismatch")
	}
}

func TestIT02_IndexTableGrowthAndOrdering(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	d := &sinkDriver{}
	var stop atomic.Bool
	var bad atomic.Int64
	var wg sync.WaitGroup
	// Readers on every worker: a published index must always resolve.
	for i := 0; i < n.Workers().N(); i++ {
		wg.Add(1)
		w := n.Workers().Get(i)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				_ = w.Do(func(*Worker) {
					for k := 0; k < 200; k++ {
						if idx := n.IfIndex(); idx > 0 && n.ByIndex(idx) == nil {
							bad.Add(1)
						}
					}
				})
			}
		}()
	}
	var ifs []*Ifnet
	for i := 0; i < 20; i++ {
		ifs = append(ifs, attach(t, n, "g"+string(rune('a'+i)), d))
		if i == 14 && n.indexLimit() != 16 {
			t.Errorf("index table %d entries at 15 interfaces, want 16", n.indexLimit())
		}
	}
	stop.Store(true)
	wg.Wait()
	if n.indexLimit() != 32 {
		t.Fatalf("index table %d entries after 20 attaches, want 32", n.indexLimit())
	}
	for i, ifp := range ifs {
		if n.ByIndex(uint32(i+1)) != ifp {
			t.Fatalf("index %d does not resolve after growth", i+1)
		}
	}
	if bad.Load() != 0 {
		t.Fatalf("%d reads saw a published index with an unset slot", bad.Load())
	}
}

func TestIT03_ArrayCopyOnWriteAndDetachBarrier(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	d := &sinkDriver{}
	x := attach(t, n, "x", d)
	snap := n.Interfaces()
	y := attach(t, n, "y", d)
	if len(snap) != 1 || snap[0] != x {
		t.Fatal("old snapshot changed after attach")
	}
	if len(n.Interfaces()) != 2 {
		t.Fatal("new snapshot missing y")
	}
	// A slow worker iteration that began before Detach must finish before
	// Detach returns, and nothing after it may see y.
	started := make(chan struct{})
	var sawAfter atomic.Bool
	var iterDone atomic.Bool
	w := n.Workers().Get(1)
	w.Send(NewMsg(func(*Worker) {
		arr := n.Interfaces()
		close(started)
		time.Sleep(50 * time.Millisecond)
		_ = arr
		iterDone.Store(true)
	}))
	<-started
	if err := n.Detach(y); err != nil {
		t.Fatal(err)
	}
	if !iterDone.Load() {
		t.Fatal("Detach returned before a worker iteration that started earlier finished")
	}
	_ = w.Do(func(*Worker) {
		for _, ifp := range n.Interfaces() {
			if ifp == y {
				sawAfter.Store(true)
			}
		}
	})
	if sawAfter.Load() {
		t.Fatal("worker saw y after Detach")
	}
}

func TestIT04_AttachDetachEventsAndCleanup(t *testing.T) {
	n, rec := newTestNet(t, Config{})
	d := &sinkDriver{}
	d.full.Store(true) // keep packets queued
	ifp := attach(t, n, "ev0", d)
	if got := joinKinds(rec.kinds("ev0")); got != "attach,arrival" {
		t.Fatalf("attach events %q", got)
	}
	ifp.SetFlagBits(IFF_UP)
	if err := ifp.AddAddr(Ifaddr{Addr: IPSockaddr(netip.MustParseAddr("10.0.0.1")), Prefix: netip.MustParsePrefix("10.0.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		_ = ifp.Dispatch(nil, pkt(100, 0))
	}
	if ifp.Snd().Len() != 3 {
		t.Fatalf("queued %d", ifp.Snd().Len())
	}
	rec.reset()
	if err := n.Detach(ifp); err != nil {
		t.Fatal(err)
	}
	if got := joinKinds(rec.kinds("ev0")); got != "detach,departure,ifmsg" {
		t.Fatalf("detach events %q", got)
	}
	if ifp.Snd().Len() != 0 || ifp.Flags()&IFF_UP != 0 || len(ifp.Addrs()) != 0 {
		t.Fatal("detach left queue, UP or addresses")
	}
	if ifp.Name() != "ev0" { // the object survives
		t.Fatal("ifnet unusable after detach")
	}
	wantErrno(t, n.Detach(ifp), syscall.ENXIO)
}

func TestIT05_SerializerSetup(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	d := &sinkDriver{}
	var mu sync.Mutex
	_, err := n.Attach(IfConfig{Name: "s0", Driver: d, SerializeFuncs: &SerializeFuncs{Serialize: mu.Lock, Deserialize: mu.Unlock}})
	wantErrno(t, err, syscall.EINVAL)
	full := &SerializeFuncs{Serialize: mu.Lock, Deserialize: mu.Unlock, TrySerialize: mu.TryLock, AssertSerialized: func(bool) {}}
	_, err = n.Attach(IfConfig{Name: "s1", Driver: d, SerializeFuncs: full, Serializer: &mu})
	wantErrno(t, err, syscall.EINVAL)
	a, err := n.Attach(IfConfig{Name: "s2", Driver: d})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Serializer().(*sync.Mutex); !ok {
		t.Fatalf("default serializer %T, want *sync.Mutex", a.Serializer())
	}
	b, err := n.Attach(IfConfig{Name: "s3", Driver: d, Serializer: &mu})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if b.Serializer().TryLock() {
		t.Fatal("external serializer not shared")
	}
	mu.Unlock()
	c, err := n.Attach(IfConfig{Name: "s4", Driver: d, SerializeFuncs: full})
	if err != nil {
		t.Fatal(err)
	}
	c.Serializer().Lock()
	if mu.TryLock() {
		t.Fatal("callback serializer not used")
	}
	c.Serializer().Unlock()
}

func TestIT06_UnitExactMatchAndWorkerLock(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	attach(t, n, "epair0a", &sinkDriver{})
	if _, err := n.Unit("ep"); err == nil {
		t.Fatal("prefix matched")
	}
	if ifp, err := n.Unit("epair0a"); err != nil || ifp.Name() != "epair0a" {
		t.Fatal("exact name not found")
	}
	var got *Ifnet
	var lockErr error
	_ = n.Workers().Get(0).Do(func(*Worker) {
		got = n.UnitNetisr("epair0a")
		_, lockErr = n.Unit("epair0a")
	})
	if got == nil {
		t.Fatal("lock-free lookup failed on a worker")
	}
	wantErrno(t, lockErr, syscall.EDEADLK)
}

func TestIT17_AddressLookups(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	b := attach(t, n, "bc0", &sinkDriver{})
	p := attach(t, n, "nb0", &sinkDriver{})
	p.ClearFlagBits(IFF_BROADCAST)
	mk := func(ifp *Ifnet, a, pfx, bc string) {
		ia := Ifaddr{Addr: IPSockaddr(netip.MustParseAddr(a)), Prefix: netip.MustParsePrefix(pfx)}
		if bc != "" {
			ia.Broadaddr = netip.MustParseAddr(bc)
		}
		if err := ifp.AddAddr(ia); err != nil {
			t.Fatal(err)
		}
	}
	mk(b, "10.1.0.1", "10.1.0.0/16", "10.1.255.255")
	mk(b, "10.1.2.1", "10.1.2.0/24", "10.1.2.255")
	mk(p, "10.2.0.1", "10.2.0.0/24", "10.2.0.255")
	if ifp, _ := n.IfaWithAddr(IPSockaddr(netip.MustParseAddr("10.1.255.255"))); ifp != b {
		t.Fatal("broadcast not matched on an IFF_BROADCAST interface")
	}
	if ifp, _ := n.IfaWithAddr(IPSockaddr(netip.MustParseAddr("10.2.0.255"))); ifp != nil {
		t.Fatal("broadcast matched on a non-broadcast interface")
	}
	if _, a := n.IfaWithNet(IPSockaddr(netip.MustParseAddr("10.1.2.9"))); a == nil || a.Prefix.Bits() != 24 {
		t.Fatal("most specific netmask not chosen")
	}
	if ifp, _ := n.IfaWithNet(Sockaddr{Family: AF_LINK, Index: 99}); ifp != nil {
		t.Fatal("AF_LINK index hole did not return nil (D-I1)")
	}
	if ifp, a := n.IfaWithNet(Sockaddr{Family: AF_LINK, Index: b.Index()}); ifp != b || a.Addr.Family != AF_LINK {
		t.Fatal("AF_LINK lookup by index")
	}
	if b.Addrs()[0].Addr.Family != AF_LINK {
		t.Fatal("AF_LINK address not first")
	}
	if b.IfaOfIfpForAddr(Sockaddr{Family: AF_MAX}) != nil {
		t.Fatal("af >= AF_MAX not nil")
	}
	if a := b.IfaOfIfpForAddr(IPSockaddr(netip.MustParseAddr("10.1.2.7"))); a == nil || a.Addr.IP().String() != "10.1.0.1" {
		t.Fatalf("ifaof_ifpforaddr: first masked match expected, got %+v", a)
	}
	if mac, err := n.GetAnyEtherMAC(6); err != nil || len(mac) != 6 {
		t.Fatal("if_getanyethermac")
	}
	_, err := n.GetAnyEtherMAC(7)
	wantErrno(t, err, syscall.ENOENT)
}

func TestIT18_RingCount2(t *testing.T) {
	for _, c := range []struct{ cnt, max, want int }{{0, 8, 4}, {3, 8, 2}, {5, 4, 4}, {1, 1, 1}, {-7, 2, 2}} {
		got, err := RingCount2(c.cnt, c.max, 4)
		if err != nil || got != c.want {
			t.Errorf("RingCount2(%d,%d) = %d, %v; want %d", c.cnt, c.max, got, err, c.want)
		}
	}
	_, err := RingCount2(1, 6, 4)
	wantErrno(t, err, syscall.EINVAL)
}

func TestIT19_SetMaxLenHeadroom(t *testing.T) {
	n, _ := newTestNet(t, Config{Workers: 4, StageCntMax: 4})
	ifp := attach(t, n, "ml0", &sinkDriver{})
	if err := ifp.Snd().SetMaxLen(50); err != nil {
		t.Fatal(err)
	}
	ml, mb := ifp.Snd().Subqueue(0).Limits()
	if ml != 66 || mb != 66*2048 || ifp.Snd().MaxLen() != 66 {
		t.Fatalf("maxlen %d maxbcnt %d", ml, mb)
	}
}

// ifdataCounters lists the counter fields of an IfData in declaration order.
func ifdataCounters(d IfData) [12]uint64 {
	return [12]uint64{d.IPackets, d.IErrors, d.OPackets, d.OErrors, d.Collisions, d.IBytes, d.OBytes,
		d.IMcasts, d.OMcasts, d.IQDrops, d.NoProto, d.OQDrops}
}

// TestIT33_StatsCompat (D-I15): SIOCGIFDATA and Stats sum the per-worker
// counters on every read, whether or not stats_compat is on; the legacy copy
// is refreshed only by a stats_compat tick. Every counter gets a different
// amount in every shard, so a read that misses a shard or a counter, or
// returns the legacy copy, cannot match: the reads happen before any tick
// (legacy all zero) and after new traffic following a tick (legacy stale).
func TestIT33_StatsCompat(t *testing.T) {
	clk := NewManualClock(time.Unix(1e9, 0))
	n, _ := newTestNet(t, Config{Clock: clk})
	ifp := attach(t, n, "st0", &sinkDriver{})
	shards := []*Counters{ifp.Counters(n.Workers().Get(0)), ifp.Counters(n.Workers().Get(1)), ifp.Counters(nil)}
	var want [12]uint64
	// add puts (field+1)*scale*100^shard into every field of every shard.
	add := func(scale uint64) {
		for i, s := range shards {
			m := scale
			for range i {
				m *= 100
			}
			fs := []*atomic.Uint64{&s.IPackets, &s.IErrors, &s.OPackets, &s.OErrors, &s.Collisions, &s.IBytes, &s.OBytes,
				&s.IMcasts, &s.OMcasts, &s.IQDrops, &s.NoProto, &s.OQDrops}
			for j, f := range fs {
				f.Add(uint64(j+1) * m)
				want[j] += uint64(j+1) * m
			}
		}
	}
	gifdata := func(when string) {
		t.Helper()
		r := Ifreq{Name: "st0"}
		if err := n.Ioctl(Cred{}, SIOCGIFDATA, &r); err != nil {
			t.Fatal(err)
		}
		if got := ifdataCounters(r.Data); got != want {
			t.Fatalf("%s: SIOCGIFDATA counters %v, want the sums %v", when, got, want)
		}
		if got := ifdataCounters(ifp.Stats()); got != want {
			t.Fatalf("%s: Stats counters %v, want the sums %v", when, got, want)
		}
	}
	legacy := func(when string, exp [12]uint64) {
		t.Helper()
		if got := ifdataCounters(ifp.LegacyStats()); got != exp {
			t.Fatalf("%s: legacy counters %v, want %v", when, got, exp)
		}
	}
	tick := func() {
		clk.Advance(time.Second)
		_ = n.ServiceSync()
	}
	add(1)
	gifdata("before any tick")
	legacy("before any tick", [12]uint64{})
	tick()
	legacy("after a tick without stats_compat", [12]uint64{})
	gifdata("after a tick without stats_compat")
	n.SetStatsCompat(true)
	tick()
	legacy("after a stats_compat tick", want)
	snap := want
	add(3)
	gifdata("new traffic after a stats_compat tick")
	legacy("new traffic after a stats_compat tick", snap)
	tick()
	legacy("after the next stats_compat tick", want)
	n.SetStatsCompat(false)

	// Live reads while three writers (one per shard) count: every read
	// sums all shards, so a counter never goes backwards, and once the
	// writers stop the read is exact.
	const per = 2000
	base := want[2]
	var wg sync.WaitGroup
	for _, s := range shards {
		wg.Add(1)
		go func(s *Counters) {
			defer wg.Done()
			for range per {
				s.OPackets.Add(1)
			}
		}(s)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	prev := base
	for stop := false; !stop; {
		select {
		case <-done:
			stop = true
		default:
		}
		r := Ifreq{Name: "st0"}
		if err := n.Ioctl(Cred{}, SIOCGIFDATA, &r); err != nil {
			t.Fatal(err)
		}
		if r.Data.OPackets < prev || r.Data.OPackets > base+3*per {
			t.Fatalf("live read: opackets %d after %d (range %d..%d)", r.Data.OPackets, prev, base, base+3*per)
		}
		prev = r.Data.OPackets
	}
	r := Ifreq{Name: "st0"}
	if err := n.Ioctl(Cred{}, SIOCGIFDATA, &r); err != nil || r.Data.OPackets != base+3*per {
		t.Fatalf("after the writers: opackets %d %v, want %d", r.Data.OPackets, err, base+3*per)
	}
}

func TestIT34_LinkState(t *testing.T) {
	n, rec := newTestNet(t, Config{})
	ifp := attach(t, n, "ls0", &sinkDriver{})
	rec.reset()
	ifp.SetLinkState(LinkStateUp)
	ifp.SetLinkState(LinkStateDown)
	ifp.SetLinkState(LinkStateUnknown)
	if got := joinKinds(rec.kinds("ls0")); got != "ifmsg,link-up,ifmsg,link-down,ifmsg,link-down" {
		t.Fatalf("events %q", got)
	}
}
