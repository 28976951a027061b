package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func mustRanges(t testing.TB, cfgs ...RangeConfig) []Range {
	t.Helper()
	r, err := ParseRanges(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func open(t testing.TB, path string, r []Range) *Store {
	t.Helper()
	s, err := Open(path, r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func verify(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
}

func own(i int) Owner { return Owner{ContainerID: fmt.Sprintf("c%03d", i), IfName: "eth0"} }

func TestParseRangesDefaults(t *testing.T) {
	r := mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"}, RangeConfig{Subnet: "fd00:22::/64"})
	v4, v6 := r[0], r[1]
	if v4.Gateway != netip.MustParseAddr("10.22.0.1") || v4.Start != netip.MustParseAddr("10.22.0.1") || v4.End != netip.MustParseAddr("10.22.0.254") {
		t.Errorf("v4 defaults: %v", v4)
	}
	if v6.Gateway != netip.MustParseAddr("fd00:22::1") || v6.Start != netip.MustParseAddr("fd00:22::1") ||
		v6.End != netip.MustParseAddr("fd00:22::ffff:ffff:ffff:ffff") {
		t.Errorf("v6 defaults: %v", v6)
	}
	if v4.Contains(v4.Gateway) || v4.Contains(netip.MustParseAddr("10.22.0.0")) || v4.Contains(netip.MustParseAddr("10.22.0.255")) ||
		!v4.Contains(netip.MustParseAddr("10.22.0.2")) || v4.Contains(netip.MustParseAddr("fd00:22::2")) {
		t.Error("Contains must exclude gateway, network, broadcast and other families")
	}
	r = mustRanges(t, RangeConfig{Subnet: "10.9.0.0/16", Gateway: "10.9.255.254", RangeStart: "10.9.1.0", RangeEnd: "10.9.1.9"})
	if r[0].Gateway != netip.MustParseAddr("10.9.255.254") || r[0].Start != netip.MustParseAddr("10.9.1.0") {
		t.Errorf("explicit: %v", r[0])
	}
}

func TestParseRangesInvalid(t *testing.T) {
	for _, tc := range []struct {
		cfgs  []RangeConfig
		field string
	}{
		{nil, "ranges"},
		{[]RangeConfig{{}}, "ranges[0].subnet"},
		{[]RangeConfig{{Subnet: "10.0.0.0"}}, "ranges[0].subnet"},
		{[]RangeConfig{{Subnet: "10.0.0.300/24"}}, "ranges[0].subnet"},
		{[]RangeConfig{{Subnet: "10.0.0.5/24"}}, "ranges[0].subnet"},
		{[]RangeConfig{{Subnet: "10.0.0.0/31"}}, "ranges[0].subnet"},
		{[]RangeConfig{{Subnet: "fd00::/127"}}, "ranges[0].subnet"},
		{[]RangeConfig{{Subnet: "::ffff:10.0.0.0/120"}}, "ranges[0].subnet"},
		{[]RangeConfig{{Subnet: "10.0.0.0/24", Gateway: "10.0.1.1"}}, "ranges[0].gateway"},
		{[]RangeConfig{{Subnet: "10.0.0.0/24", Gateway: "10.0.0.255"}}, "ranges[0].gateway"},
		{[]RangeConfig{{Subnet: "10.0.0.0/24", Gateway: "bogus"}}, "ranges[0].gateway"},
		{[]RangeConfig{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.0"}}, "ranges[0].rangeStart"},
		{[]RangeConfig{{Subnet: "10.0.0.0/24", RangeEnd: "fd00::1"}}, "ranges[0].rangeEnd"},
		{[]RangeConfig{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.9", RangeEnd: "10.0.0.8"}}, "ranges[0].rangeEnd"},
		{[]RangeConfig{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.1", RangeEnd: "10.0.0.1"}}, "ranges[0].rangeStart"},
		{[]RangeConfig{{Subnet: "10.0.0.0/16"}, {Subnet: "10.0.3.0/24"}}, "ranges[1].subnet"},
	} {
		_, err := ParseRanges(tc.cfgs)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: got %v, want an error naming %s", tc.cfgs, err, tc.field)
		}
	}
}

func TestAllocateIdempotentAndPersistent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db", "ipam.db")
	r := mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"})
	s := open(t, path, r)
	a1, err := s.Allocate(own(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(a1.Addrs) != 1 || a1.Addrs[0].Prefix != netip.MustParsePrefix("10.22.0.2/24") || a1.Addrs[0].Gateway != netip.MustParseAddr("10.22.0.1") {
		t.Fatalf("first allocation: %+v", a1)
	}
	again, err := s.Allocate(own(1), nil)
	if err != nil || again.Addrs[0] != a1.Addrs[0] {
		t.Fatalf("same owner, other address: %+v %v", again, err)
	}
	for i := 2; i <= 10; i++ {
		if _, err := s.Allocate(own(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := s.List()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("db mode: %v %v", fi.Mode(), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Allocate(own(99), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("allocate on closed store: %v", err)
	}
	s = open(t, path, r)
	defer s.Close()
	after, _ := s.List()
	if len(after) != len(before) || len(after) != 10 {
		t.Fatalf("reopen: %d allocations, had %d", len(after), len(before))
	}
	for i := range before {
		if before[i].Owner != after[i].Owner || before[i].Addrs[0] != after[i].Addrs[0] {
			t.Fatalf("reopen changed %+v to %+v", before[i], after[i])
		}
	}
	a11, err := s.Allocate(own(11), nil)
	if err != nil || a11.Addrs[0].Prefix.Addr() != netip.MustParseAddr("10.22.0.12") {
		t.Fatalf("after reopen the cursor must continue: %+v %v", a11, err)
	}
	got, ok, err := s.Get(own(1))
	if err != nil || !ok || got.Addrs[0] != a1.Addrs[0] {
		t.Fatalf("get after reopen: %+v %v %v", got, ok, err)
	}
	verify(t, s)
}

// TestCrashKeepsCommitted simulates a crash: the database file is copied while the store is
// still open (never closed, so no clean shutdown), and the copy is opened as a rebooted node
// would. Everything Allocate returned must be there; nothing may be duplicated.
func TestCrashKeepsCommitted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.db")
	r := mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"}, RangeConfig{Subnet: "fd00:22::/120"})
	s := open(t, path, r)
	defer s.Close()
	want := map[Owner]Allocation{}
	for i := range 20 {
		a, err := s.Allocate(own(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		want[a.Owner] = a
	}
	if _, _, err := s.Release(own(3)); err != nil {
		t.Fatal(err)
	}
	delete(want, own(3))
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(dir, "after-crash.db")
	if err := os.WriteFile(crashed, img, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, crashed, r)
	defer s2.Close()
	verify(t, s2)
	got, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("after crash: %d allocations, want %d", len(got), len(want))
	}
	for _, a := range got {
		w, ok := want[a.Owner]
		if !ok || len(a.Addrs) != 2 || a.Addrs[0] != w.Addrs[0] || a.Addrs[1] != w.Addrs[1] {
			t.Fatalf("after crash %+v, want %+v", a, w)
		}
	}
	// New allocations on the recovered store do not collide with recovered ones.
	for i := 100; i < 110; i++ {
		if _, err := s2.Allocate(own(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	verify(t, s2)
}

func TestConcurrentAllocationsDistinct(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ipam.db"), mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"}, RangeConfig{Subnet: "fd00:22::/64"}))
	defer s.Close()
	const n = 100
	res := make([]Allocation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { res[i], errs[i] = s.Allocate(own(i), nil) })
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if len(res[i].Addrs) != 2 || !res[i].Addrs[0].Prefix.Addr().Is4() || !res[i].Addrs[1].Prefix.Addr().Is6() {
			t.Fatalf("owner %d: want one v4 and one v6: %+v", i, res[i])
		}
		for _, a := range res[i].Addrs {
			if j, dup := seen[a.Prefix.Addr()]; dup {
				t.Fatalf("%s given to %d and %d", a.Prefix, j, i)
			}
			seen[a.Prefix.Addr()] = i
		}
	}
	verify(t, s)
}

func TestExhaustion(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ipam.db"), mustRanges(t, RangeConfig{Subnet: "10.22.0.0/29"}))
	defer s.Close()
	// /29: .0 network, .1 gateway, .7 broadcast → .2-.6 are five pod addresses.
	got := map[string]bool{}
	for i := range 5 {
		a, err := s.Allocate(own(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		got[a.Addrs[0].Prefix.Addr().String()] = true
	}
	for _, a := range []string{"10.22.0.2", "10.22.0.3", "10.22.0.4", "10.22.0.5", "10.22.0.6"} {
		if !got[a] {
			t.Errorf("%s not handed out; got %v", a, got)
		}
	}
	_, err := s.Allocate(own(5), nil)
	if !errors.Is(err, ErrExhausted) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "10.22.0.0/29") {
		t.Fatalf("exhausted: %v, want ErrExhausted naming the range", err)
	}
	if _, ok, _ := s.Get(own(5)); ok {
		t.Fatal("failed allocation left a record")
	}
	verify(t, s)
	// Freeing one makes room again.
	if _, ok, err := s.Release(own(2)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := s.Allocate(own(5), nil); err != nil {
		t.Fatal(err)
	}
}

func TestDualStackPartialFailureRollsBack(t *testing.T) {
	// v4 has room, v6 (a /126: ::1 gateway, ::2 and ::3 usable) runs out first: the v4 address
	// taken in the same transaction must not leak.
	s := open(t, filepath.Join(t.TempDir(), "ipam.db"), mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"}, RangeConfig{Subnet: "fd00::/126"}))
	defer s.Close()
	for i := range 2 {
		if _, err := s.Allocate(own(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Allocate(own(2), nil); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "fd00::/126") {
		t.Fatalf("%v", err)
	}
	l, _ := s.List()
	if len(l) != 2 {
		t.Fatalf("%d owners", len(l))
	}
	verify(t, s)
}

func TestCursorDoesNotReuseJustReleased(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ipam.db"), mustRanges(t, RangeConfig{Subnet: "10.22.0.0/29"}))
	defer s.Close()
	a, _ := s.Allocate(own(0), nil)
	s.Release(own(0))
	b, err := s.Allocate(own(1), nil)
	if err != nil || b.Addrs[0] == a.Addrs[0] {
		t.Fatalf("just-released %s reused at once: %+v %v", a.Addrs[0].Prefix, b, err)
	}
	// Walk to the end of the window; the search wraps to the start.
	for i := 2; i <= 4; i++ {
		if _, err := s.Allocate(own(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.Allocate(own(5), nil)
	if err != nil || c.Addrs[0] != a.Addrs[0] {
		t.Fatalf("after wrap want %s, got %+v %v", a.Addrs[0].Prefix, c, err)
	}
}

func TestRequestedIPs(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ipam.db"), mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"}, RangeConfig{Subnet: "fd00:22::/64"}))
	defer s.Close()
	ip4, ip6 := netip.MustParseAddr("10.22.0.77"), netip.MustParseAddr("fd00:22::77")
	a, err := s.Allocate(own(1), []netip.Addr{ip4})
	if err != nil || a.Addrs[0].Prefix != netip.MustParsePrefix("10.22.0.77/24") || !a.Addrs[1].Prefix.Addr().Is6() {
		t.Fatalf("requested v4: %+v %v", a, err)
	}
	if again, err := s.Allocate(own(1), []netip.Addr{ip4}); err != nil || again.Addrs[0] != a.Addrs[0] {
		t.Fatalf("repeat with the same request: %+v %v", again, err)
	}
	if _, err := s.Allocate(own(1), []netip.Addr{netip.MustParseAddr("10.22.0.78")}); !errors.Is(err, ErrConflict) {
		t.Fatalf("same owner, different request: %v", err)
	}
	_, err = s.Allocate(own(2), []netip.Addr{ip4})
	if !errors.Is(err, ErrConflict) || !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), own(1).String()) {
		t.Fatalf("taken: %v, want ErrConflict naming the holder", err)
	}
	b, err := s.Allocate(own(2), []netip.Addr{ip6, netip.MustParseAddr("10.22.0.78")})
	if err != nil || b.Addrs[0].Prefix.Addr() != netip.MustParseAddr("10.22.0.78") || b.Addrs[1].Prefix != netip.MustParsePrefix("fd00:22::77/64") {
		t.Fatalf("both requested: %+v %v", b, err)
	}
	for _, c := range []struct{ bad, says string }{
		{"10.23.0.5", "outside every configured range"},
		{"10.22.0.1", "is the gateway of 10.22.0.0/24"},
		{"10.22.0.0", "is the network address of 10.22.0.0/24"},
		{"10.22.0.255", "is the broadcast address of 10.22.0.0/24"},
		{"fd00:23::1", "outside every configured range"},
	} {
		_, err := s.Allocate(own(3), []netip.Addr{netip.MustParseAddr(c.bad)})
		if !errors.Is(err, ErrOutOfRange) || !errors.Is(err, syscall.EADDRNOTAVAIL) || !strings.Contains(err.Error(), c.bad) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("request %s: %v, want ErrOutOfRange saying %q", c.bad, err, c.says)
		}
	}
	if _, err := s.Allocate(own(3), []netip.Addr{netip.MustParseAddr("10.22.0.5"), netip.MustParseAddr("10.22.0.6")}); err == nil {
		t.Error("two v4 requested: accepted")
	}
	v4only := open(t, filepath.Join(t.TempDir(), "v4.db"), mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"}))
	defer v4only.Close()
	if _, err := v4only.Allocate(own(1), []netip.Addr{ip6}); !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), "IPv6") {
		t.Errorf("v6 on a v4-only store: %v", err)
	}
	verify(t, s)
}

func TestReleaseAndGC(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ipam.db"), mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"}))
	defer s.Close()
	for i := range 6 {
		if _, err := s.Allocate(own(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := s.Release(own(0)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, ok, err := s.Release(own(0)); ok || err != nil {
		t.Fatalf("second release: %v %v, want ok=false, nil", ok, err)
	}
	removed, err := s.GC([]Owner{own(1), own(3), {ContainerID: "unknown", IfName: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range removed {
		names = append(names, a.Owner.ContainerID)
	}
	if strings.Join(names, ",") != "c002,c004,c005" {
		t.Fatalf("gc removed %v", names)
	}
	l, _ := s.List()
	if len(l) != 2 || l[0].Owner != own(1) || l[1].Owner != own(3) {
		t.Fatalf("after gc: %+v", l)
	}
	verify(t, s)
	if _, err := s.Allocate(Owner{IfName: "eth0"}, nil); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "containerID") {
		t.Errorf("empty containerID: %v", err)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the lock timeout")
	}
	path := filepath.Join(t.TempDir(), "ipam.db")
	r := mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"})
	s := open(t, path, r)
	defer s.Close()
	start := time.Now()
	if _, err := Open(path, r); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("second open: %v, want EWOULDBLOCK", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("second open hung")
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range [][4]string{
		{"10.22.0.0/24", "", "", ""},
		{"10.22.0.0/24", "10.22.0.10", "10.22.0.20", "10.22.0.1"},
		{"fd00:22::/64", "", "", "fd00:22::ffff"},
		{"10.0.0.0/30", "", "", ""},
		{"::ffff:1.2.3.0/120", "", "", ""},
		{"0.0.0.0/0", "", "", ""},
		{"::/0", "::5", "::4", ""},
		{"10.0.0.0/8", "10.0.0.1", "10.0.0.1", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, subnet, start, end, gw string) {
		r, err := RangeConfig{Subnet: subnet, RangeStart: start, RangeEnd: end, Gateway: gw}.Parse()
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error without a field: %v", err)
			}
			return
		}
		if !r.Subnet.IsValid() || r.Subnet.Masked() != r.Subnet {
			t.Fatalf("subnet %v", r.Subnet)
		}
		for _, a := range []netip.Addr{r.Start, r.End, r.Gateway} {
			if !r.Subnet.Contains(a) {
				t.Fatalf("%s outside %s", a, r.Subnet)
			}
			if a == r.Subnet.Addr() || (r.Is4() && a == lastAddr(r.Subnet)) {
				t.Fatalf("%s is the network or broadcast address of %s", a, r.Subnet)
			}
		}
		if r.Start.Compare(r.End) > 0 {
			t.Fatalf("start %s > end %s", r.Start, r.End)
		}
		// At least one address is allocatable.
		if !r.Contains(r.Start) && !r.Contains(r.End) {
			t.Fatalf("no allocatable address in %v", r)
		}
		// JSON round trip of the config is stable.
		b, _ := json.Marshal(RangeConfig{Subnet: r.Subnet.String(), RangeStart: r.Start.String(), RangeEnd: r.End.String(), Gateway: r.Gateway.String()})
		var c RangeConfig
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		r2, err := c.Parse()
		if err != nil || r2 != r {
			t.Fatalf("reparse of %+v: %+v %v", c, r2, err)
		}
	})
}

func BenchmarkAllocateRelease(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "ipam.db"), mustRanges(b, RangeConfig{Subnet: "10.0.0.0/16"}, RangeConfig{Subnet: "fd00::/64"}))
	defer s.Close()
	b.ReportAllocs()
	start := time.Now()
	i := 0
	for b.Loop() {
		o := own(i)
		i++
		if _, err := s.Allocate(o, nil); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.Release(o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "allocs+releases/s")
}

func TestRangesFromPodCIDRs(t *testing.T) {
	r, err := RangesFromPodCIDRs([]string{"10.244.1.0/24", "fd00:10:244:1::/64"})
	if err != nil || len(r) != 2 || r[0].Gateway != netip.MustParseAddr("10.244.1.1") || r[1].Is4() {
		t.Fatalf("%+v %v", r, err)
	}
	for _, tc := range []struct {
		in    []string
		field string
	}{
		{nil, "podCIDRs"},
		{[]string{"10.244.1.0/24", "bogus"}, "podCIDRs[1]"},
		{[]string{"10.244.1.0/24", "10.244.1.0/25"}, "podCIDRs[1]"},
	} {
		_, err := RangesFromPodCIDRs(tc.in)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%v: %v, want field %s", tc.in, err, tc.field)
		}
	}
}

// TestBatchedAllocationsWithFailure: concurrent Allocates share commits (DB.Batch); one that
// fails (a conflicting request) fails alone, the others are unaffected, and everything
// answered is on disk after a reopen.
func TestBatchedAllocationsWithFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	rs := mustRanges(t, RangeConfig{Subnet: "10.23.0.0/24"})
	s := open(t, path, rs)
	if _, err := s.Allocate(own(0), []netip.Addr{netip.MustParseAddr("10.23.0.200")}); err != nil {
		t.Fatal(err)
	}
	const n = 40
	res := make([]Allocation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		var req []netip.Addr
		if i%10 == 0 {
			req = []netip.Addr{netip.MustParseAddr("10.23.0.200")} // taken by owner 0
		}
		wg.Go(func() { res[i], errs[i] = s.Allocate(own(i), req) })
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if i%10 == 0 {
			if !errors.Is(errs[i], ErrConflict) {
				t.Fatalf("owner %d: %v, want ErrConflict", i, errs[i])
			}
			continue
		}
		if errs[i] != nil || len(res[i].Addrs) != 1 {
			t.Fatalf("owner %d: %+v %v", i, res[i], errs[i])
		}
	}
	verify(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, rs)
	defer s.Close()
	for i := 1; i < n; i++ {
		got, ok, err := s.Get(own(i))
		if i%10 == 0 {
			if ok {
				t.Fatalf("owner %d: failed allocation persisted: %+v", i, got)
			}
			continue
		}
		if err != nil || !ok || got.Addrs[0] != res[i].Addrs[0] {
			t.Fatalf("owner %d after reopen: %+v %v %v, answered %+v", i, got, ok, err, res[i])
		}
	}
	verify(t, s)
}
