package vale

import (
	"errors"
	"net"
	"sync"
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
	// b unknown: flood; a learned on port 1.
	if d := lookupOne(l, 1, ethFrame(b, a, 64), 0, 0); d != DstBroadcast {
		t.Fatalf("unknown unicast: dst %d, want broadcast", d)
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
	if d := lookupOne(l, 1, ethFrame(zero, mac(8), 64), 0, 0); d != DstBroadcast {
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
	if d := lookupOne(l, 2, ethFrame(a, b, 64), 0, int64(aging)+1); d != DstBroadcast {
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
	if err := fdb.AddStatic(mac(3), DstBroadcast); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("AddStatic to port DstBroadcast = %v, want EINVAL", err)
	}
	if !fdb.Delete(a) || fdb.Delete(a) {
		t.Fatal("Delete should report the entry once")
	}
}

func TestStaticFillsBucket(t *testing.T) {
	fdb, _ := NewFDB(16, 0) // 4 buckets of 4
	// Find 5 addresses in one bucket.
	var same []net.HardwareAddr
	want := fdb.bucket(macKey(mac(1)))
	for i := 1; len(same) < 5 && i < 1<<16; i++ {
		m := mac(byte(i>>8), byte(i))
		if fdb.bucket(macKey(m)) == want {
			same = append(same, m)
		}
	}
	for i, m := range same[:4] {
		if err := fdb.AddStatic(m, uint16(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := fdb.AddStatic(same[4], 9); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fifth static in a full bucket: %v, want ENOSPC", err)
	}
	if fdb.learn(macKey(same[4]), 1, 0) {
		t.Fatal("learned into a bucket full of static entries")
	}
	// Re-adding an existing static address updates it in place.
	if err := fdb.AddStatic(same[0], 7); err != nil {
		t.Fatal(err)
	}
	if p, _ := fdb.Lookup(same[0], 0); p != 7 {
		t.Fatalf("static update: port %d", p)
	}
}

func TestFDBEvictsOldest(t *testing.T) {
	fdb, _ := NewFDB(16, time.Hour)
	var same []uint64
	want := fdb.bucket(macKey(mac(1)))
	for i := 1; len(same) < 5; i++ {
		k := macKey(mac(byte(i>>8), byte(i)))
		if fdb.bucket(k) == want {
			same = append(same, k)
		}
	}
	for i, k := range same[:4] {
		fdb.learn(k, uint16(i), int64(10+i))
	}
	fdb.learn(same[0], 0, 100) // refresh the first: now the second is oldest
	fdb.learn(same[4], 4, 101)
	if _, ok := fdb.lookup(same[1], 101); ok {
		t.Fatal("oldest entry not evicted")
	}
	for _, k := range []uint64{same[0], same[2], same[3], same[4]} {
		if _, ok := fdb.lookup(k, 101); !ok {
			t.Fatalf("entry %x lost", k)
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
