package ipam

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// faultStore writes a closed store with n dual-stack allocations at path and returns them.
func faultStore(t testing.TB, path string, n int) ([]Range, []Allocation) {
	t.Helper()
	r := mustRanges(t, RangeConfig{Subnet: "10.30.0.0/16"}, RangeConfig{Subnet: "fd00:30::/64"})
	s := open(t, path, r)
	var out []Allocation
	for i := range n {
		a, err := s.Allocate(own(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return r, out
}

// TestTruncatedStoreIsFresh: a store truncated to zero bytes (or a new file) opens as a
// fresh, empty store and says so, so that its caller can rebuild before allocating, and
// stays fresh across opens until the caller marks it Rebuilt.
func TestTruncatedStoreIsFresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	r, _ := faultStore(t, path, 3)
	s := open(t, path, r)
	if !s.Fresh() {
		t.Fatal("a store never marked rebuilt opened as not fresh")
	}
	if err := s.Rebuilt(); err != nil || s.Fresh() {
		t.Fatalf("rebuilt: %v, fresh %v", err, s.Fresh())
	}
	s.Close()
	s = open(t, path, r)
	if s.Fresh() {
		t.Fatal("a store marked rebuilt opened as fresh")
	}
	s.Close()
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, r)
	defer s.Close()
	if !s.Fresh() {
		t.Fatal("a store truncated to zero bytes did not open as fresh")
	}
	if l, err := s.List(); err != nil || len(l) != 0 {
		t.Fatalf("list of a truncated store: %v %v", l, err)
	}
}

// TestRestore: restored addresses are never handed out again, whether or not a range
// contains them; restoring is idempotent and refuses an address another owner holds.
func TestRestore(t *testing.T) {
	r := mustRanges(t, RangeConfig{Subnet: "10.31.0.0/29"})
	s := open(t, filepath.Join(t.TempDir(), "ipam.db"), r)
	defer s.Close()
	held := []Address{{Prefix: netip.MustParsePrefix("10.31.0.2/29"), Gateway: netip.MustParseAddr("10.31.0.1")}}
	if err := s.Restore(own(1), held, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(own(1), held, time.Now()); err != nil {
		t.Fatalf("restore again: %v", err)
	}
	if err := s.Restore(own(2), held, time.Now()); !errors.Is(err, ErrConflict) {
		t.Fatalf("restore of a held address for another owner: %v, want ErrConflict", err)
	}
	outside := []Address{{Prefix: netip.MustParsePrefix("10.99.0.7/24")}}
	if err := s.Restore(own(3), outside, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The window has 10.31.0.2..6 without the gateway: 2 is restored, four are left.
	var got []netip.Addr
	for i := 10; ; i++ {
		a, err := s.Allocate(own(i), nil)
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.Addrs[0].Prefix.Addr())
	}
	if len(got) != 4 || slices.Contains(got, netip.MustParseAddr("10.31.0.2")) {
		t.Fatalf("allocated %v after restoring 10.31.0.2", got)
	}
	verify(t, s)
}

// pageSize of the stores the tests write (bbolt's default: the OS page size).
var pageSize = os.Getpagesize()

// garble writes random bytes over the pages from first (in whole pages, or a burst of
// bytes inside one) of the file at path.
func garble(t testing.TB, path string, rng *rand.Rand, first int, whole bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pages := len(b) / pageSize
	if pages <= first {
		t.Fatalf("%s has %d pages, none from %d", path, pages, first)
	}
	if whole {
		for p := first; p < pages; p++ {
			if first == 0 || rng.IntN(2) == 0 {
				for i := p * pageSize; i < (p+1)*pageSize; i++ {
					b[i] = byte(rng.Uint32())
				}
			}
		}
	} else {
		p := first + rng.IntN(pages-first)
		off := p*pageSize + rng.IntN(pageSize)
		for i := off; i < min(off+1+rng.IntN(64), len(b)); i++ {
			b[i] = byte(rng.Uint32())
		}
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestGarbledPages: random garbage over the data pages (not the meta pages), in whole pages
// or bursts, and then over every page: Open never panics; it either reports ErrCorrupt
// naming the file, or opens a store that lists and verifies without panicking (the
// garbage hit free pages, or values that Open repaired), and whatever it lists is a
// subset of what was allocated.
func TestGarbledPages(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "template.db")
	r, allocs := faultStore(t, tmpl, 200)
	want := map[Owner][]Address{}
	for _, a := range allocs {
		want[a.Owner] = a.Addrs
	}
	orig, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	var corrupt, opened int
	for i := range 300 {
		rng := rand.New(rand.NewPCG(uint64(i), 16))
		path := filepath.Join(dir, "garbled.db")
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		first := 2
		if i >= 250 {
			first = 0 // all pages, meta pages included
		}
		garble(t, path, rng, first, i%2 == 0 || first == 0)
		s, err := Open(path, r)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("#%d: open of a garbled store: %v, want ErrCorrupt naming %s", i, err, path)
			}
			// A refused store leaves its file neither locked nor open (BoltFile.Release).
			if f, err := os.OpenFile(path, os.O_RDWR, 0); err != nil {
				t.Fatal(err)
			} else {
				lerr := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
				f.Close()
				if lerr != nil {
					t.Fatalf("#%d: the refused store's file is still locked: %v", i, lerr)
				}
			}
			corrupt++
			continue
		}
		if first == 0 {
			t.Fatalf("#%d: a store garbled on every page opened", i)
		}
		opened++
		l, err := s.List()
		if err == nil {
			for _, a := range l {
				if w, ok := want[a.Owner]; ok && !slices.Equal(w, a.Addrs) {
					t.Errorf("#%d: %s lists %v, allocated %v", i, a.Owner, a.Addrs, w)
				}
			}
		}
		verr := s.Verify()
		_, aerr := s.Allocate(own(1000), nil)
		if cerr := s.Close(); cerr != nil || testing.Verbose() {
			t.Logf("#%d: list %v, verify %v, allocate %v, close %v", i, err, verr, aerr, cerr)
		}
	}
	t.Logf("300 garbled stores: %d refused as damaged, %d opened", corrupt, opened)
	if corrupt == 0 {
		t.Fatal("no garbled store was found damaged: the test garbles nothing that matters")
	}
}

// putRaw writes v under key k of bucket b of the closed store at path, bypassing the store.
func putRaw(t testing.TB, path string, b, k, v []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(b).Put(k, v) }); err != nil {
		t.Fatal(err)
	}
}

// TestUndecodableRecord: one owner record that does not decode costs that record, not the
// store: Open rebuilds it from the address index (losing only its creation time) and says
// so in Repairs; one with no indexed address is dropped; the other records load.
func TestUndecodableRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	r, allocs := faultStore(t, path, 5)
	s := open(t, path, r)
	s.Rebuilt()
	s.Close()
	putRaw(t, path, bktOwners, own(2).key(), []byte(`{"owner":{"containerID":"c002","ifName":"eth0"},"addrs":[{"prefix":"garb`))
	putRaw(t, path, bktOwners, own(99).key(), []byte{0xff, 0x00, 0x17})
	s = open(t, path, r)
	defer s.Close()
	if rp := s.Repairs(); len(rp) != 4 || !strings.Contains(strings.Join(rp, "\n"), "rebuilt from the address index") ||
		!strings.Contains(strings.Join(rp, "\n"), "dropped") {
		t.Fatalf("repairs: %q", rp)
	}
	l, err := s.List()
	if err != nil || len(l) != 5 {
		t.Fatalf("list: %d records, %v; want 5", len(l), err)
	}
	for i, a := range l {
		if a.Owner != allocs[i].Owner || !slices.Equal(a.Addrs, allocs[i].Addrs) {
			t.Errorf("record %d: %+v, allocated %+v", i, a, allocs[i])
		}
	}
	verify(t, s)
	if s.Fresh() {
		t.Fatal("a repaired store opened as fresh")
	}
}

// FuzzDecodeRecord: the decoder of stored owner records never panics, and what it accepts
// names its key's owner.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte("c1\x00eth0"), []byte(`{"owner":{"containerID":"c1","ifName":"eth0"},"addrs":[{"prefix":"10.0.0.2/24","gateway":"10.0.0.1"}],"created":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte("c1\x00eth0"), []byte(`{"owner":{"containerID":"c2","ifName":"eth0"}}`))
	f.Add([]byte("c1\x00eth0"), []byte(`{"owner":{"containerID":"c1","ifName":"eth0"},"addrs":[{}]}`))
	f.Add([]byte(""), []byte{0xff})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		a, err := decodeRecord(k, v)
		if err == nil && string(a.Owner.key()) != string(k) {
			t.Fatalf("decoded %+v under key %q", a.Owner, k)
		}
	})
}

// FuzzOpenGarbled: Open of a store with arbitrary bytes written at an arbitrary offset of
// its data pages never panics, and its errors name the file.
func FuzzOpenGarbled(f *testing.F) {
	dir := f.TempDir()
	tmpl := filepath.Join(dir, "template.db")
	r, _ := faultStore(f, tmpl, 50)
	orig, err := os.ReadFile(tmpl)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(2*pageSize), []byte("\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Add(uint32(3*pageSize+16), []byte("garbage"))
	f.Add(uint32(4*pageSize), []byte{0, 0, 0, 0, 0x10, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, off uint32, junk []byte) {
		b := slices.Clone(orig)
		o := 2*pageSize + int(off)%(len(b)-2*pageSize)
		copy(b[o:], junk)
		path := filepath.Join(t.TempDir(), "ipam.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, r)
		if err != nil {
			// Damage bbolt or the checks see is ErrCorrupt; what still reads as a store
			// (a garbled schema) is an error naming the file.
			if !errors.Is(err, ErrCorrupt) && !strings.Contains(err.Error(), path) {
				t.Fatalf("open: %v, want ErrCorrupt or an error naming the file", err)
			}
			return
		}
		s.List()
		s.Verify()
		s.Close()
	})
}

// freelistPage returns the free list page of the closed store at path (the meta page with
// the higher transaction id names it).
func freelistPage(t testing.TB, b []byte) int {
	t.Helper()
	le := func(off int) uint64 {
		var v uint64
		for i := 7; i >= 0; i-- {
			v = v<<8 | uint64(b[off+i])
		}
		return v
	}
	m := 16
	if le(pageSize+16+48) > le(16+48) {
		m = pageSize + 16
	}
	return int(le(m + 32))
}

// TestFreelistCountChecked: a free list page whose count is garbage (here 2^40 page ids)
// made bbolt allocate and sort that many ids at open, beyond any recover; CheckFile finds
// it before bbolt maps the file. A valid store passes.
func TestFreelistCountChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	r, _ := faultStore(t, path, 50)
	if err := CheckFile(path); err != nil {
		t.Fatalf("check of a valid store: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fl := freelistPage(t, b) * pageSize
	b[fl+10], b[fl+11] = 0xff, 0xff // count 0xFFFF: the count is the first id
	for i := range 8 {
		b[fl+16+i] = 0
	}
	b[fl+16+5] = 1 // 2^40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, r); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "free list") {
		t.Fatalf("open with a free list of 2^40 ids: %v, want ErrCorrupt naming the free list", err)
	}
}

// TestPageCycleChecked: a branch page that names itself as its child made bbolt's cursor
// descend forever, allocating (a hang, then the OOM killer, no panic to recover); the tree
// check at open refuses the file as damaged.
func TestPageCycleChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	r, _ := faultStore(t, path, 200)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every branch page names itself as its first child (free pages of older
	// transactions are branch pages too: which one is in use is the meta page's business).
	branches := 0
	for p := 2; p < len(b)/pageSize; p++ {
		o := p * pageSize
		if b[o+8] != 0x01 || b[o+9] != 0 || int(b[o])|int(b[o+1])<<8 != p {
			continue
		}
		branches++
		e := o + 16 + 8 // the first element's child page id
		for i := range 8 {
			b[e+i] = byte(uint64(p) >> (8 * i))
		}
	}
	if branches == 0 {
		t.Fatal("no branch page in a store of 200 owners")
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		s, err := Open(path, r)
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "referenced twice") {
			t.Fatalf("open of a store with a page cycle: %v, want ErrCorrupt naming the page", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("open of a store with a page cycle hangs")
	}
}

// TestDamagedWhileOpen: pages garbled under an open store (what the checks at open cannot
// see) make bbolt panic inside the calls; every call returns an error wrapping ErrCorrupt
// that names the file instead.
func TestDamagedWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	r, _ := faultStore(t, path, 200)
	s := open(t, path, r)
	defer s.Close()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	junk := make([]byte, int(fi.Size())-2*pageSize)
	for i := range junk {
		junk[i] = byte(i*7919 + i>>8)
	}
	if _, err := f.WriteAt(junk, int64(2*pageSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = s.List()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("list of a store garbled under it: %v, want ErrCorrupt naming %s", err, path)
	}
	if _, _, err := s.Get(own(3)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("get: %v, want ErrCorrupt", err)
	}
}
