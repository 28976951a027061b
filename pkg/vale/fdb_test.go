package vale

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func mac(b ...byte) net.HardwareAddr {
	m := net.HardwareAddr{0x02, 0, 0, 0, 0, 0}
	copy(m[6-len(b):], b)
	return m
}

var bcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ethFrame returns an Ethernet frame of n bytes (at least 14).
func ethFrame(dst, src net.HardwareAddr, n int) []byte {
	b := make([]byte, n)
	copy(b, dst)
	copy(b[6:], src)
	b[12], b[13] = 0x08, 0x00
	for i := 14; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func newLearning(t testing.TB, size int, aging time.Duration, ports int) *Learning {
	t.Helper()
	fdb, err := NewFDB(size, aging)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLearning(fdb, ports)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func lookupOne(l *Learning, src uint16, data []byte, flags uint16, now int64) uint16 {
	fr := []Frame{{Data: data, Len: int32(len(data)), Flags: flags}}
	l.Lookup(src, fr, now)
	return fr[0].Dst
}

func TestLearningBasics(t *testing.T) {
	l := newLearning(t, 1024, time.Minute, 8)
	a, b := mac(1), mac(2)
	// b unknown: unknown unicast (flooded); a learned on port 1.
	if d := lookupOne(l, 1, ethFrame(b, a, 64), 0, 0); d != DstUnknown {
		t.Fatalf("unknown unicast: dst %#x, want DstUnknown", d)
	}
	if p, ok := l.FDB().Lookup(a, 0); !ok || p != 1 {
		t.Fatalf("a not learned on port 1: %d %v", p, ok)
	}
	// Reply from b on port 2 to a goes to port 1, and b is learned.
	if d := lookupOne(l, 2, ethFrame(a, b, 64), 0, 1); d != 1 {
		t.Fatalf("known unicast: dst %d, want 1", d)
	}
	if d := lookupOne(l, 1, ethFrame(b, a, 64), 0, 2); d != 2 {
		t.Fatalf("known unicast: dst %d, want 2", d)
	}
	// Broadcast and multicast are flooded even when "known".
	if d := lookupOne(l, 1, ethFrame(bcast, a, 64), 0, 3); d != DstBroadcast {
		t.Fatalf("broadcast: dst %d", d)
	}
	mc := net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1}
	if d := lookupOne(l, 1, ethFrame(mc, a, 64), 0, 3); d != DstBroadcast {
		t.Fatalf("multicast: dst %d", d)
	}
	// Station move: a now appears on port 3.
	lookupOne(l, 3, ethFrame(b, a, 64), 0, 4)
	if p, _ := l.FDB().Lookup(a, 4); p != 3 {
		t.Fatalf("station move not learned: port %d", p)
	}
	// A short frame is dropped.
	if d := lookupOne(l, 1, make([]byte, 13), 0, 5); d != DstDrop {
		t.Fatalf("short frame: dst %d", d)
	}
}

func TestLearningOnlyValidUnicastSources(t *testing.T) {
	l := newLearning(t, 1024, 0, 8)
	mcSrc := net.HardwareAddr{0x03, 0, 0, 0, 0, 9} // group bit set
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	lookupOne(l, 1, ethFrame(bcast, mcSrc, 64), 0, 0)
	lookupOne(l, 1, ethFrame(bcast, zero, 64), 0, 0)
	lookupOne(l, 1, ethFrame(bcast, mac(7), 64), FlagNoLearn, 0)
	if n := len(l.FDB().Entries(0)); n != 0 {
		t.Fatalf("learned %d entries from invalid or NoLearn sources: %v", n, l.FDB().Entries(0))
	}
	// A zero destination is unicast and unknown: flooded, never matched.
	if d := lookupOne(l, 1, ethFrame(zero, mac(8), 64), 0, 0); d != DstUnknown {
		t.Fatalf("zero dst: %d", d)
	}
}

func TestLearningAging(t *testing.T) {
	aging := 10 * time.Second
	l := newLearning(t, 64, aging, 4)
	a, b := mac(1), mac(2)
	lookupOne(l, 1, ethFrame(b, a, 64), 0, 0)
	if d := lookupOne(l, 2, ethFrame(a, b, 64), 0, int64(aging)); d != 1 {
		t.Fatalf("entry expired too early: dst %d", d)
	}
	if d := lookupOne(l, 2, ethFrame(a, b, 64), 0, int64(aging)+1); d != DstUnknown {
		t.Fatalf("entry not aged out: dst %d", d)
	}
	if n := l.FDB().Expire(int64(aging) + 1); n != 1 {
		t.Fatalf("Expire removed %d, want 1 (a)", n)
	}
	if es := l.FDB().Entries(int64(aging) + 1); len(es) != 1 || es[0].MAC.String() != b.String() {
		t.Fatalf("entries after expire: %v", es)
	}
}

// The repeated-source shortcut must still refresh the entry's timestamp
// once per batch, and re-learn an entry that was flushed meanwhile.
func TestLearningRepeatedSourceRefresh(t *testing.T) {
	aging := 10 * time.Second
	l := newLearning(t, 64, aging, 4)
	a, b := mac(1), mac(2)
	batch := func(now int64) {
		fr := make([]Frame, 4)
		for i := range fr {
			d := ethFrame(b, a, 64)
			fr[i] = Frame{Data: d, Len: 64}
		}
		l.Lookup(1, fr, now)
	}
	batch(0)
	batch(int64(aging)) // only repeats of a
	if p, ok := l.FDB().Lookup(a, int64(aging)+int64(aging/2)); !ok || p != 1 {
		t.Fatalf("repeated source not refreshed: %d %v", p, ok)
	}
	l.FDB().FlushPort(1)
	batch(int64(2 * aging))
	if p, ok := l.FDB().Lookup(a, int64(2*aging)); !ok || p != 1 {
		t.Fatalf("flushed repeated source not re-learned: %d %v", p, ok)
	}
}

func TestStaticEntries(t *testing.T) {
	l := newLearning(t, 16, time.Second, 8)
	fdb := l.FDB()
	a := mac(1)
	if err := fdb.AddStatic(a, 5); err != nil {
		t.Fatal(err)
	}
	// Learning a on another port does not move a static entry, and it never ages.
	lookupOne(l, 2, ethFrame(bcast, a, 64), 0, 0)
	if p, ok := fdb.Lookup(a, int64(time.Hour)); !ok || p != 5 {
		t.Fatalf("static entry moved or aged: %d %v", p, ok)
	}
	if d := lookupOne(l, 1, ethFrame(a, mac(2), 64), 0, int64(time.Hour)); d != 5 {
		t.Fatalf("lookup to static: %d", d)
	}
	es := fdb.Entries(int64(time.Hour))
	found := false
	for _, e := range es {
		if e.MAC.String() == a.String() {
			found = e.Static && e.Port == 5 && e.Age == 0
		}
	}
	if !found {
		t.Fatalf("static entry not dumped as static: %v", es)
	}
	for _, bad := range []net.HardwareAddr{bcast, {0, 0, 0, 0, 0, 0}, {1, 2, 3}} {
		if err := fdb.AddStatic(bad, 1); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("AddStatic(%v) = %v, want EINVAL", bad, err)
		}
	}
	for _, port := range []uint16{DstRefused, DstUnknown, DstBroadcast, DstDrop} {
		if err := fdb.AddStatic(mac(3), port); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("AddStatic to port %#x = %v, want EINVAL", port, err)
		}
	}
	if !fdb.Delete(a) || fdb.Delete(a) {
		t.Fatal("Delete should report the entry once")
	}
}

// macsWhere returns n addresses (searched in order) for which ok holds of
// their primary and secondary buckets.
func macsWhere(t *testing.T, fdb *FDB, n int, ok func(b1, b2 int) bool) []net.HardwareAddr {
	t.Helper()
	var out []net.HardwareAddr
	for i := 1; len(out) < n; i++ {
		if i >= 1<<20 {
			t.Fatalf("found only %d of %d addresses", len(out), n)
		}
		m := mac(byte(i>>16), byte(i>>8), byte(i))
		if k := macKey(m); ok(fdb.bucket(k), fdb.bucket2(k)) {
			out = append(out, m)
		}
	}
	return out
}

// bucketOf returns the first entry of the bucket that holds m, or −1.
func bucketOf(fdb *FDB, m net.HardwareAddr) int {
	key := macKey(m)
	for i := range fdb.ents {
		if k := fdb.ents[i].key.Load(); k != 0 && k&macMask == key {
			return i / fdbWays * fdbWays
		}
	}
	return -1
}

// Two-choice hashing for static entries: a static address whose primary
// bucket is full of static entries goes to its secondary bucket, where
// lookups find it; only both buckets full is ENOSPC.
func TestStaticTwoChoice(t *testing.T) {
	fdb, _ := NewFDB(16, 0) // 4 buckets of 4
	p := fdb.bucket(macKey(mac(1)))
	// Four addresses with only bucket p (both hashes agree) fill it.
	only := macsWhere(t, fdb, 6, func(b1, b2 int) bool { return b1 == p && b2 == p })
	for i, m := range only[:4] {
		if err := fdb.AddStatic(m, uint16(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The fifth static for bucket p lands in its secondary bucket.
	other := macsWhere(t, fdb, 1, func(b1, b2 int) bool { return b1 == p && b2 != p })[0]
	s := fdb.bucket2(macKey(other))
	if err := fdb.AddStatic(other, 9); err != nil {
		t.Fatalf("fifth static for a full primary bucket: %v", err)
	}
	if b := bucketOf(fdb, other); b != s {
		t.Fatalf("fifth static in bucket %d, want its secondary %d", b, s)
	}
	if port, ok := fdb.Lookup(other, 0); !ok || port != 9 {
		t.Fatalf("lookup of the static in its secondary bucket: %d %v", port, ok)
	}
	for i, m := range only[:4] {
		if port, ok := fdb.Lookup(m, 0); !ok || port != uint16(i) {
			t.Fatalf("static %v: %d %v", m, port, ok)
		}
	}
	// A bucket with a single choice is full now.
	if err := fdb.AddStatic(only[4], 9); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("static for a full bucket without a second choice: %v, want ENOSPC", err)
	}
	if fdb.learn(macKey(only[4]), 1, 0) {
		t.Fatal("learned into a bucket full of static entries")
	}
	// Fill s too (it holds other already), then {p, s} is full.
	for i, m := range macsWhere(t, fdb, 3, func(b1, b2 int) bool { return b1 == s && b2 == s }) {
		if err := fdb.AddStatic(m, uint16(10+i)); err != nil {
			t.Fatal(err)
		}
	}
	both := macsWhere(t, fdb, 2, func(b1, b2 int) bool { return b1 == p && b2 == s }) // both[0] is other
	if err := fdb.AddStatic(both[1], 9); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("static with both buckets full: %v, want ENOSPC", err)
	}
	if fdb.learn(macKey(both[1]), 1, 0) {
		t.Fatal("learned with both buckets full of static entries")
	}
	if n := len(fdb.Entries(0)); n != 8 {
		t.Fatalf("%d entries, want 8", n)
	}
	// With room in its primary bucket again, learning must still find the
	// static entry in the secondary one and leave it alone.
	if !fdb.Delete(only[0]) {
		t.Fatal("Delete of a primary-bucket static failed")
	}
	if fdb.learn(macKey(other), 2, 0) {
		t.Fatal("learned over a static entry in the secondary bucket")
	}
	if port, ok := fdb.Lookup(other, 0); !ok || port != 9 {
		t.Fatalf("static in the secondary bucket after a learn: %d %v", port, ok)
	}
	if err := fdb.AddStatic(other, 3); !errors.Is(err, ErrExists) {
		t.Fatalf("AddStatic over another port's static in the secondary bucket: %v", err)
	}
	// Delete finds it there.
	if !fdb.Delete(other) {
		t.Fatal("Delete of the static in the secondary bucket failed")
	}
	if _, ok := fdb.Lookup(other, 0); ok || bucketOf(fdb, other) >= 0 {
		t.Fatal("static in the secondary bucket survived Delete")
	}
}

// AddStatic places a new address in the bucket of its two with fewer
// static entries (the primary on a tie), not in the primary whenever it
// has room: that is what makes 255 pod addresses fit.
func TestStaticLeastLoadedBucket(t *testing.T) {
	fdb, _ := NewFDB(16, 0)
	p := fdb.bucket(macKey(mac(1)))
	first := macsWhere(t, fdb, 1, func(b1, b2 int) bool { return b1 == p && b2 == p })[0]
	ms := macsWhere(t, fdb, 2, func(b1, b2 int) bool { return b1 == p && b2 != p })
	// Tie (0 and 0 statics): primary.
	if err := fdb.AddStatic(ms[0], 1); err != nil {
		t.Fatal(err)
	}
	if b := bucketOf(fdb, ms[0]); b != p {
		t.Fatalf("static placed in bucket %d on a tie, want primary %d", b, p)
	}
	if err := fdb.AddStatic(first, 2); err != nil {
		t.Fatal(err)
	}
	// Primary has 2 statics, the secondary of ms[1] none.
	if err := fdb.AddStatic(ms[1], 3); err != nil {
		t.Fatal(err)
	}
	if b, s := bucketOf(fdb, ms[1]), fdb.bucket2(macKey(ms[1])); b != s {
		t.Fatalf("static placed in bucket %d, want the less loaded secondary %d", b, s)
	}
}

// A static address belongs to its port: AddStatic for another port is
// EEXIST and changes nothing; for the same port it is a no-op. A learned
// entry for the address is replaced where it is.
func TestStaticOwnership(t *testing.T) {
	fdb, _ := NewFDB(64, time.Minute)
	a, b := mac(1), mac(2)
	if err := fdb.AddStatic(a, 3); err != nil {
		t.Fatal(err)
	}
	if err := fdb.AddStatic(a, 4); !errors.Is(err, ErrExists) || !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("static of port 3 added for port 4: %v, want EEXIST", err)
	}
	if err := fdb.AddStatic(a, 3); err != nil {
		t.Fatalf("same static again: %v", err)
	}
	es := fdb.Entries(0)
	if len(es) != 1 || es[0].Port != 3 || !es[0].Static {
		t.Fatalf("entries %v", es)
	}
	// Learned on port 5, then made static on port 6: one static entry.
	if !fdb.learn(macKey(b), 5, 0) {
		t.Fatal("not learned")
	}
	at := bucketOf(fdb, b)
	if err := fdb.AddStatic(b, 6); err != nil {
		t.Fatal(err)
	}
	if es := fdb.Entries(0); len(es) != 2 || es[1].Port != 6 || !es[1].Static || bucketOf(fdb, b) != at {
		t.Fatalf("entries %v (bucket %d, was %d)", es, bucketOf(fdb, b), at)
	}
	// After Delete another port may have it.
	fdb.Delete(a)
	if err := fdb.AddStatic(a, 4); err != nil {
		t.Fatal(err)
	}
}

// A new address takes an empty slot (in either bucket), else an expired
// one, else the oldest of its own port's entries; never another port's
// live entry.
func TestFDBLearnEvictsOnlyOwnOrExpired(t *testing.T) {
	const hour = int64(time.Hour)
	fdb, _ := NewFDB(16, time.Hour)
	p := fdb.bucket(macKey(mac(1)))
	same := macsWhere(t, fdb, 7, func(b1, b2 int) bool { return b1 == p && b2 == p })
	for i, port := range []uint16{0, 1, 2, 0} {
		if !fdb.learn(macKey(same[i]), port, int64(10+i)) {
			t.Fatalf("learn %d into an empty bucket failed", i)
		}
	}
	has := func(m net.HardwareAddr, port uint16, now int64) bool {
		got, ok := fdb.lookup(macKey(m), now)
		return ok && got == port
	}
	// Port 3 has nothing to give up in the full bucket.
	if fdb.learn(macKey(same[4]), 3, 20) || has(same[4], 3, 20) {
		t.Fatal("port 3 learned into a bucket full of other ports' live entries")
	}
	// Port 0 gives up its oldest entry (same[0]), not same[3].
	if !fdb.learn(macKey(same[5]), 0, 21) {
		t.Fatal("port 0 could not reuse its own entry")
	}
	if has(same[0], 0, 21) || !has(same[3], 0, 21) || !has(same[5], 0, 21) {
		t.Fatal("port 0 did not replace its oldest entry")
	}
	if !has(same[1], 1, 21) || !has(same[2], 2, 21) {
		t.Fatal("another port's entry was evicted")
	}
	// same[1] (seen at 11) expires first: port 3 takes its slot.
	now := 11 + hour + 1
	if !fdb.learn(macKey(same[6]), 3, now) {
		t.Fatal("expired entry not reused")
	}
	if !has(same[6], 3, now) || !has(same[2], 2, now) || bucketOf(fdb, same[1]) >= 0 {
		t.Fatal("port 3 did not take the expired slot")
	}
	// An address whose primary bucket is full goes to its secondary one.
	spill := macsWhere(t, fdb, 1, func(b1, b2 int) bool { return b1 == p && b2 != p })[0]
	if !fdb.learn(macKey(spill), 3, now) || !has(spill, 3, now) || bucketOf(fdb, spill) != fdb.bucket2(macKey(spill)) {
		t.Fatal("not learned into the secondary bucket")
	}
	// And is refreshed there, not learned twice.
	if !fdb.learn(macKey(spill), 4, now+1) || !has(spill, 4, now+1) {
		t.Fatal("station move in the secondary bucket not learned")
	}
	n := 0
	for _, e := range fdb.Entries(now + 1) {
		if e.MAC.String() == spill.String() {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d entries for the moved address", n)
	}
}

// A port sending from thousands of random source addresses (to make the
// switch forget its neighbours, so their traffic floods to it) leaves
// every other port's live entries and every static entry in place; once
// they expire, the slots it filled are reusable by others.
func TestLearningFloodKeepsOtherPorts(t *testing.T) {
	const aging = 300 * time.Second
	l := newLearning(t, DefaultFDBSize, aging, 64)
	fdb := l.FDB()
	rng := rand.New(rand.NewPCG(1, 2))
	randMAC := func() net.HardwareAddr {
		m := make(net.HardwareAddr, 6)
		v := rng.Uint64()
		for i := range m {
			m[i] = byte(v >> (8 * i))
		}
		m[0] = m[0]&^1 | 2 // unicast, locally administered
		return m
	}
	for i := 0; i < 64; i++ {
		if err := fdb.AddStatic(randMAC(), uint16(20+i%40)); err != nil {
			t.Fatal(err)
		}
	}
	for p := 2; p < 10; p++ {
		for i := 0; i < 40; i++ {
			lookupOne(l, uint16(p), ethFrame(bcast, randMAC(), 64), 0, 0)
		}
	}
	before := fdb.Entries(0)
	if len(before) < 64+8*40-4 {
		t.Fatalf("only %d entries after setup", len(before))
	}
	// Port 1 floods 10000 random sources, in batches, over 100 s.
	fr := make([]Frame, 100)
	now := int64(0)
	for b := 0; b < 100; b++ {
		now = int64(b) * int64(time.Second)
		for i := range fr {
			d := ethFrame(mac(0xee), randMAC(), 64)
			fr[i] = Frame{Data: d, Len: 64}
		}
		l.Lookup(1, fr, now)
	}
	after := map[string]FDBEntry{}
	mine := 0
	for _, e := range fdb.Entries(now) {
		after[e.MAC.String()] = e
		if e.Port == 1 {
			mine++
		}
	}
	for _, e := range before {
		if got, ok := after[e.MAC.String()]; !ok || got.Port != e.Port || got.Static != e.Static {
			t.Fatalf("entry %v lost or changed by port 1's flood: %+v %v", e, got, ok)
		}
	}
	if mine == 0 || len(after) > fdb.Size() {
		t.Fatalf("port 1 holds %d entries of %d", mine, len(after))
	}
	// Everything dynamic expires: port 5 learns 300 new addresses.
	now += int64(aging) + 1
	var fresh []net.HardwareAddr
	for i := 0; i < 300; i++ {
		m := randMAC()
		fresh = append(fresh, m)
		lookupOne(l, 5, ethFrame(bcast, m, 64), 0, now)
	}
	for _, m := range fresh {
		if p, ok := fdb.Lookup(m, now); !ok || p != 5 {
			t.Fatalf("%v not learned over expired entries: %d %v", m, p, ok)
		}
	}
}

func TestFDBFlushPortAndDetach(t *testing.T) {
	l := newLearning(t, 1024, 0, 8)
	for i := 0; i < 100; i++ {
		lookupOne(l, uint16(i%3), ethFrame(bcast, mac(byte(i>>8), byte(i+1)), 64), 0, 0)
	}
	if err := l.FDB().AddStatic(mac(0xaa, 0xbb), 1); err != nil {
		t.Fatal(err)
	}
	l.PortDetached(1)
	for _, e := range l.FDB().Entries(0) {
		if e.Port == 1 {
			t.Fatalf("entry %v survived the detach of port 1", e)
		}
	}
	if n := len(l.FDB().Entries(0)); n != 67 {
		t.Fatalf("%d entries left, want 67", n)
	}
}

func TestNewFDBRejects(t *testing.T) {
	for _, n := range []int{0, 8, 100, 1 << 21} {
		if _, err := NewFDB(n, 0); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("NewFDB(%d) = %v", n, err)
		}
	}
	if _, err := NewFDB(16, -1); !errors.Is(err, syscall.EINVAL) {
		t.Error("negative aging accepted")
	}
	fdb, _ := NewFDB(16, 0)
	if _, err := NewLearning(fdb, 0); !errors.Is(err, syscall.EINVAL) {
		t.Error("0 ports accepted")
	}
	if _, err := NewLearning(nil, 4); !errors.Is(err, syscall.EINVAL) {
		t.Error("nil fdb accepted")
	}
}

// spinBarrier releases two goroutines together without parking either, so
// that what follows runs at the same time on two Ps.
type spinBarrier struct{ count, gen atomic.Int32 }

func (b *spinBarrier) wait() {
	g := b.gen.Load()
	if b.count.Add(1) == 2 {
		b.count.Store(0)
		b.gen.Add(1)
		return
	}
	for b.gen.Load() == g {
	}
}

// Learners of different ports filling empty slots at once never overwrite
// each other: every address a learn reported as stored is in the table.
// Two learners race on a 16-entry table, round after round, released
// together so that they pick the same empty slots.
func TestFDBConcurrentInsert(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs two Ps to race")
	}
	// A busy machine (or -race) runs fewer rounds: stop at the budget.
	const rounds, per, budget = 20000, 8, 500 * time.Millisecond
	start := time.Now()
	fdb, _ := NewFDB(16, 0)
	// The i-th address of either port has the same primary bucket, so
	// learners in step go for the same empty slot.
	var keys [2][per]uint64
	for p := range keys {
		j := 0
		for i := range keys[p] {
			for ; fdb.bucket(macKey(mac(byte(p+1), byte(j>>8), byte(j)))) != i%4*fdbWays; j++ {
			}
			keys[p][i] = macKey(mac(byte(p+1), byte(j>>8), byte(j)))
			j++
		}
	}
	var stored [2][per]bool
	var bar spinBarrier
	var stop atomic.Bool
	var failure string
	var wg sync.WaitGroup
	for p := range keys {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for round := 0; round < rounds; round++ {
				bar.wait()
				if stop.Load() {
					return
				}
				// Port 1 rotates its start, so that whatever head start
				// the barrier gives port 0, some rounds put them in step.
				for n := range keys[p] {
					i := (n + p*round) % per
					stored[p][i] = fdb.learn(keys[p][i], uint16(p), 0)
				}
				bar.wait()
				if p != 0 {
					continue
				}
				// Alone until the next barrier: check, then empty the table.
				for q := range keys {
					for i, k := range keys[q] {
						if got, ok := fdb.lookup(k, 0); stored[q][i] && (!ok || got != uint16(q)) {
							failure = fmt.Sprintf("round %d: port %d's entry %x, stored, was overwritten by the other learner", round, q, k)
							stop.Store(true)
						}
					}
				}
				for i := range fdb.ents {
					fdb.ents[i].key.Store(0)
					fdb.ents[i].seen.Store(0)
				}
				if time.Since(start) > budget {
					stop.Store(true)
				}
			}
		}(p)
	}
	wg.Wait()
	if failure != "" {
		t.Fatal(failure)
	}
}

// Concurrent learners and readers on one table (run with -race).
func TestFDBConcurrent(t *testing.T) {
	l := newLearning(t, 1024, time.Second, 16)
	var wg sync.WaitGroup
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			fr := make([]Frame, 16)
			for it := 0; it < 200; it++ {
				for i := range fr {
					d := ethFrame(mac(byte(i), 1), mac(byte(i), byte(p+2)), 64)
					fr[i] = Frame{Data: d, Len: 64}
				}
				l.Lookup(uint16(p), fr, int64(it)*int64(time.Millisecond))
			}
		}(p)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			l.FDB().Expire(int64(i) * int64(time.Second))
			_ = l.FDB().Entries(0)
		}
	}()
	wg.Wait()
}
