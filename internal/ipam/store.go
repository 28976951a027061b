package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Sentinels callers branch on. Each error that wraps one also wraps the BSD errno the
// situation calls for, and names the range, address or owner involved.
var (
	// ErrExhausted: no free address in any range of a family (ENOSPC).
	ErrExhausted = errors.New("address range exhausted")
	// ErrConflict: a requested address belongs to another owner (EADDRINUSE).
	ErrConflict = errors.New("address owned by another attachment")
	// ErrOutOfRange: a requested address lies in no range's window (EADDRNOTAVAIL).
	ErrOutOfRange = errors.New("address outside every configured range")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("ipam store closed")
	// ErrCorrupt: the store's file is damaged: bbolt refused it or panicked reading it. The
	// error names the file; the caller moves it aside and starts afresh (the agent rebuilds
	// the running pods' allocations, see Fresh and Restore).
	ErrCorrupt = errors.New("ipam store damaged")
)

var (
	bktOwners  = []byte("owners")
	bktAddrs   = []byte("addrs")
	bktCursors = []byte("cursors")
	bktMeta    = []byte("meta")
	keySchema  = []byte("schema")
	keyFresh   = []byte("fresh") // set when the store is created, deleted by Rebuilt
	schema     = []byte("1")
)

// Owner identifies who holds addresses: a CNI attachment.
type Owner struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

func (o Owner) String() string { return o.ContainerID + "/" + o.IfName }

func (o Owner) key() []byte { return []byte(o.ContainerID + "\x00" + o.IfName) }

func (o Owner) validate() error {
	if o.ContainerID == "" || strings.IndexByte(o.ContainerID, 0) >= 0 {
		return &FieldError{Field: "containerID", Value: o.ContainerID, Reason: "must be non-empty and contain no NUL byte"}
	}
	if o.IfName == "" || strings.IndexByte(o.IfName, 0) >= 0 {
		return &FieldError{Field: "ifName", Value: o.IfName, Reason: "must be non-empty and contain no NUL byte"}
	}
	return nil
}

// Address is one allocated address: Prefix carries the address with its subnet's length.
type Address struct {
	Prefix  netip.Prefix `json:"prefix"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
}

// Allocation is an owner's record.
type Allocation struct {
	Owner   Owner     `json:"owner"`
	Addrs   []Address `json:"addrs"`
	Created time.Time `json:"created"`
}

// Store is a persistent allocator. Open it once per node (bbolt holds an exclusive lock).
type Store struct {
	db       *bolt.DB
	path     string
	ranges   []Range
	batching atomic.Int32 // batch calls in flight
	fresh    atomic.Bool  // created (new, empty, truncated file) and not yet marked Rebuilt
	repairs  []string     // damaged records Open repaired or dropped
}

// guard runs fn, turning a panic inside bbolt (which panics on some damaged pages, e.g.
// "invalid freelist page") and a fault reading the memory map into an error wrapping
// ErrCorrupt that names the file. Only fn's own goroutine is covered.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = corrupt(path, fmt.Errorf("%w: %v", errPanicked, p))
		}
	}()
	return fn()
}

// BoltFile opens a bbolt file through its Options and keeps the file's handle, so that
// Release can drop the file lock and close the file when a panic inside bbolt (on a
// damaged page) left them held: bbolt does not close the file then. The IPAM store and the
// agent's attachment store open their files this way.
type BoltFile struct{ fh *os.File }

// Options are bbolt's options for opening the file (a 2 s lock timeout), keeping its handle.
func (f *BoltFile) Options() *bolt.Options {
	return &bolt.Options{Timeout: 2 * time.Second, OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
		h, err := os.OpenFile(name, flag, mode)
		f.fh = h
		return h, err
	}}
}

// Release closes a damaged store, whatever state a panic left it in: it closes db unless
// bbolt panicked (a panic inside a rollback can leave a lock held that Close would wait for
// forever: db is left to the garbage collector and its memory map is leaked), then drops
// the file lock and closes the file itself, since a memory map left behind keeps the
// locked file open.
func (f *BoltFile) Release(db *bolt.DB, panicked bool) {
	if db != nil && !panicked {
		db.Close()
	}
	if f.fh != nil {
		if c, err := f.fh.SyscallConn(); err == nil {
			c.Control(func(fd uintptr) { syscall.Flock(int(fd), syscall.LOCK_UN) })
		}
		f.fh.Close()
	}
}

// errPanicked marks an error guard made of a panic.
var errPanicked = errors.New("panic")

func corrupt(path string, err error) error {
	return fmt.Errorf("ipam store %s is damaged (%w): %w", path, err, ErrCorrupt)
}

// Open opens (creating if needed, mode 0600, parent directory 0700) the store at path for
// ranges. Allocations made under earlier, different ranges are kept and still returned to
// their owners; only new allocations use ranges.
func Open(path string, ranges []Range) (*Store, error) {
	if len(ranges) == 0 {
		return nil, &FieldError{Field: "ranges", Reason: "at least one range is required"}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open ipam store: %w", err)
	}
	if err := CheckFile(path); err != nil {
		return nil, fmt.Errorf("open ipam store: %w", err)
	}
	var bf BoltFile
	var db *bolt.DB
	err := guard(path, func() error {
		var err error
		db, err = bolt.Open(path, 0o600, bf.Options())
		return err
	})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("open ipam store %s: locked by another process: %w", path, syscall.EWOULDBLOCK)
		case errors.Is(err, ErrCorrupt):
			bf.Release(nil, true)
			return nil, fmt.Errorf("open %w", err)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch),
			strings.Contains(err.Error(), "file size too small"):
			return nil, fmt.Errorf("open %w", corrupt(path, err))
		}
		return nil, fmt.Errorf("open ipam store %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("open ipam store: chmod: %w", err)
	}
	s := &Store{db: db, path: path, ranges: slices.Clone(ranges)}
	err = guard(path, func() error {
		// Read every page first in a read-only transaction, whose rollback reads
		// nothing: a writable one's rollback rereads the free list, and a panic there
		// would leave the store locked.
		if err := db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				return b.ForEach(func(_, _ []byte) error { return nil })
			})
		}); err != nil {
			return err
		}
		return db.Update(func(tx *bolt.Tx) error {
			created := tx.Bucket(bktMeta) == nil || tx.Bucket(bktMeta).Get(keySchema) == nil
			for _, b := range [][]byte{bktOwners, bktAddrs, bktCursors, bktMeta} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					if errors.Is(err, berrors.ErrIncompatibleValue) {
						// A value where the bucket is: a damaged page.
						return corrupt(path, fmt.Errorf("bucket %s: %w", b, err))
					}
					return err
				}
			}
			meta := tx.Bucket(bktMeta)
			if v := meta.Get(keySchema); v != nil && !bytes.Equal(v, schema) {
				return fmt.Errorf("schema %q, this build reads %q", v, schema)
			}
			if err := meta.Put(keySchema, schema); err != nil {
				return err
			}
			if created {
				if err := meta.Put(keyFresh, []byte("1")); err != nil {
					return err
				}
			}
			s.fresh.Store(meta.Get(keyFresh) != nil)
			// Read every page now, so that a damaged one is found here, as an error, and
			// not by a later call; repair the records that do not decode.
			return s.check(tx)
		})
	})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			bf.Release(db, errors.Is(err, errPanicked))
			return nil, fmt.Errorf("open %w", err)
		}
		db.Close()
		return nil, fmt.Errorf("open ipam store %s: %w", path, err)
	}
	// Concurrent Allocates share one transaction and one fsync (group commit); the short
	// delay bounds what a lone, sequential Allocate pays for it.
	db.MaxBatchDelay = batchDelay
	return s, nil
}

// Fresh reports whether the store was created by Open (the file did not exist, was empty,
// e.g. truncated to zero bytes, or held no store) and has not been marked Rebuilt since,
// by this or an earlier Open. A fresh store of a node that still runs pods has lost their
// allocations: the caller must Restore them, then call Rebuilt, before allocating. A
// caller that fails half-way leaves the store fresh for the next attempt.
func (s *Store) Fresh() bool { return s.fresh.Load() }

// Rebuilt records (durably) that the caller has restored what a fresh store lost.
func (s *Store) Rebuilt() error {
	err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bktMeta).Delete(keyFresh) })
	if err != nil {
		return fmt.Errorf("mark ipam store %s rebuilt: %w", s.path, err)
	}
	s.fresh.Store(false)
	return nil
}

// Repairs describes the damaged records Open found, one line each, and what it did: an owner
// record that does not decode is rebuilt from the address index (the addresses indexed to
// its key, with their range's prefix length and gateway), or dropped when no address is
// indexed to it; an index entry with a malformed key is dropped.
func (s *Store) Repairs() []string { return slices.Clone(s.repairs) }

// check reads every key and value of the store and repairs what does not decode (in tx,
// writable). A page bbolt cannot read panics, which guard turns into ErrCorrupt.
func (s *Store) check(tx *bolt.Tx) error {
	owners, addrs, cursors := tx.Bucket(bktOwners), tx.Bucket(bktAddrs), tx.Bucket(bktCursors)
	byOwner := map[string][]netip.Addr{}
	var badIdx, badCur [][]byte
	if err := addrs.ForEach(func(k, v []byte) error {
		if len(k) != 16 {
			badIdx = append(badIdx, bytes.Clone(k))
			return nil
		}
		byOwner[string(v)] = append(byOwner[string(v)], netip.AddrFrom16([16]byte(k)).Unmap())
		return nil
	}); err != nil {
		return err
	}
	if err := cursors.ForEach(func(k, v []byte) error {
		if len(v) != 16 {
			badCur = append(badCur, bytes.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	var (
		bad  [][]byte
		good []Allocation
	)
	if err := owners.ForEach(func(k, v []byte) error {
		a, err := decodeRecord(k, v)
		if err == nil {
			err = s.consistent(a)
		}
		if err != nil {
			bad = append(bad, bytes.Clone(k))
			s.repairs = append(s.repairs, fmt.Sprintf("owner record %q: %v", k, err))
			return nil
		}
		good = append(good, a)
		return nil
	}); err != nil {
		return err
	}
	// The address index must name every good record's addresses' owner: an entry lost or
	// garbled would let the address be handed out again.
	for _, a := range good {
		k := a.Owner.key()
		for _, ad := range a.Addrs {
			ik := addrKey(ad.Prefix.Addr())
			h := addrs.Get(ik)
			if bytes.Equal(h, k) {
				continue
			}
			if h != nil && owners.Get(h) != nil {
				s.repairs = append(s.repairs, fmt.Sprintf("%s of %s is indexed to %s: left as it is", ad.Prefix.Addr(), a.Owner, ownerFromKey(h)))
				continue
			}
			s.repairs = append(s.repairs, fmt.Sprintf("%s of %s was not indexed to it: index repaired", ad.Prefix.Addr(), a.Owner))
			if err := addrs.Put(ik, k); err != nil {
				return err
			}
		}
	}
	for _, k := range badIdx {
		s.repairs = append(s.repairs, fmt.Sprintf("address index entry with a malformed key %x: dropped", k))
		if err := addrs.Delete(k); err != nil {
			return err
		}
	}
	for _, k := range badCur {
		// A cursor only steers the search; without it the search starts at the window.
		if err := cursors.Delete(k); err != nil {
			return err
		}
	}
	for _, k := range bad {
		held := byOwner[string(k)]
		if len(held) == 0 {
			s.repairs = append(s.repairs, fmt.Sprintf("owner record %q holds no indexed address: dropped", k))
			if err := owners.Delete(k); err != nil {
				return err
			}
			continue
		}
		slices.SortFunc(held, netip.Addr.Compare)
		al := Allocation{Owner: ownerFromKey(k), Created: time.Now().UTC()}
		for _, ip := range held {
			al.Addrs = append(al.Addrs, s.address(ip))
		}
		v, err := json.Marshal(al)
		if err != nil {
			return err
		}
		if err := owners.Put(k, v); err != nil {
			return err
		}
		s.repairs = append(s.repairs, fmt.Sprintf("owner record %q rebuilt from the address index: %s", k, addrList(al.Addrs)))
	}
	return nil
}

// decodeRecord decodes an owner record stored under k and checks that it is consistent:
// it names the owner of its key and holds valid addresses.
func decodeRecord(k, v []byte) (Allocation, error) {
	var a Allocation
	if err := json.Unmarshal(v, &a); err != nil {
		return Allocation{}, fmt.Errorf("decode: %w", err)
	}
	if !bytes.Equal(a.Owner.key(), k) {
		return Allocation{}, fmt.Errorf("record names %q", a.Owner.key())
	}
	if err := a.Owner.validate(); err != nil {
		return Allocation{}, err
	}
	for _, ad := range a.Addrs {
		if !ad.Prefix.IsValid() {
			return Allocation{}, fmt.Errorf("invalid address %v", ad.Prefix)
		}
	}
	return a, nil
}

// consistent checks a decoded record against the configured ranges: an address inside a
// range's subnet carries that range's prefix length and gateway, as Allocate wrote it (a
// damaged field, say a gateway whose key was garbled away, decodes as a zero value).
// Addresses outside every range (restored ones) are taken as they are.
func (s *Store) consistent(a Allocation) error {
	for _, ad := range a.Addrs {
		ip := ad.Prefix.Addr()
		for _, r := range s.ranges {
			if r.Subnet.Contains(ip) && ad != s.address(ip) {
				return fmt.Errorf("address %s (gateway %v) does not match its range %s", ad.Prefix, ad.Gateway, r.Subnet)
			}
		}
	}
	return nil
}

// address is ip as an allocation of the range that contains it (a host prefix without a
// gateway when no configured range does).
func (s *Store) address(ip netip.Addr) Address {
	for _, r := range s.ranges {
		if r.Subnet.Contains(ip) {
			return Address{Prefix: netip.PrefixFrom(ip, r.Subnet.Bits()), Gateway: r.Gateway}
		}
	}
	return Address{Prefix: netip.PrefixFrom(ip, ip.BitLen())}
}

// Restore records that owner holds addrs, as read back from what the node shows after the
// store was lost (Fresh) or damaged: every address is indexed to owner whether or not a
// configured range contains it, so none is handed to another owner. Restoring what the
// owner already holds is a no-op; an address held by another owner fails with ErrConflict
// and writes nothing.
func (s *Store) Restore(owner Owner, addrs []Address, created time.Time) error {
	if err := owner.validate(); err != nil {
		return err
	}
	err := s.update(func(tx *bolt.Tx) error {
		owners, idx := tx.Bucket(bktOwners), tx.Bucket(bktAddrs)
		if v := owners.Get(owner.key()); v != nil {
			cur, err := decodeRecord(owner.key(), v)
			if err != nil {
				return err
			}
			if slices.Equal(cur.Addrs, addrs) {
				return nil
			}
			return fmt.Errorf("%s already holds %s, not %s: %w (%w)", owner, addrList(cur.Addrs), addrList(addrs), ErrConflict, syscall.EADDRINUSE)
		}
		for _, ad := range addrs {
			if !ad.Prefix.IsValid() {
				return &FieldError{Field: "addrs", Value: ad.Prefix.String(), Reason: "not an address prefix"}
			}
			k := addrKey(ad.Prefix.Addr())
			if h := idx.Get(k); h != nil && !bytes.Equal(h, owner.key()) {
				return fmt.Errorf("%s is held by %s: %w (%w)", ad.Prefix.Addr(), ownerFromKey(h), ErrConflict, syscall.EADDRINUSE)
			}
			if err := idx.Put(k, owner.key()); err != nil {
				return err
			}
		}
		v, err := json.Marshal(Allocation{Owner: owner, Addrs: slices.Clone(addrs), Created: created.UTC()})
		if err != nil {
			return err
		}
		return owners.Put(owner.key(), v)
	})
	if err != nil {
		return fmt.Errorf("restore %s: %w", owner, err)
	}
	return nil
}

// batchDelay is how long Allocate waits for others to share its commit.
const batchDelay = time.Millisecond

// Close closes the store. Further calls fail with ErrClosed.
func (s *Store) Close() error { return s.db.Close() }

// Ranges returns the ranges new allocations are drawn from.
func (s *Store) Ranges() []Range { return slices.Clone(s.ranges) }

func (s *Store) update(fn func(*bolt.Tx) error) error {
	err := guard(s.path, func() error { return s.db.Update(fn) })
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// batch runs fn in a transaction shared with concurrent callers (bbolt DB.Batch): it is
// committed and fsync'd before batch returns. fn may run more than once (a batch whose
// other function failed is retried) and must be idempotent, resetting what it writes. A
// caller with no other batch in flight commits at once (db.Update) instead of waiting
// MaxBatchDelay for company that is not coming.
func (s *Store) batch(fn func(*bolt.Tx) error) error {
	var err error
	if s.batching.Add(1) == 1 {
		err = guard(s.path, func() error { return s.db.Update(fn) })
	} else {
		// bbolt recovers a panic of fn run by another caller's goroutine and returns it.
		err = guard(s.path, func() error { return s.db.Batch(fn) })
	}
	s.batching.Add(-1)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func (s *Store) view(fn func(*bolt.Tx) error) error {
	err := guard(s.path, func() error { return s.db.View(fn) })
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// families lists the address families the ranges cover, IPv4 first.
func (s *Store) families() []bool {
	var has4, has6 bool
	for _, r := range s.ranges {
		if r.Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	var f []bool
	if has4 {
		f = append(f, true)
	}
	if has6 {
		f = append(f, false)
	}
	return f
}

// Allocate returns owner's addresses, allocating one per configured family on first call.
// requested (at most one per family) are honoured: each must be allocatable in a range and
// free or already the owner's. The transaction is fsync'd before Allocate returns;
// concurrent Allocates share it (DB.Batch).
func (s *Store) Allocate(owner Owner, requested []netip.Addr) (Allocation, error) {
	if err := owner.validate(); err != nil {
		return Allocation{}, err
	}
	want := map[bool]netip.Addr{} // by is4
	for i, a := range requested {
		a = a.Unmap()
		if !a.IsValid() {
			return Allocation{}, &FieldError{Field: fmt.Sprintf("ips[%d]", i), Reason: "not an IP address"}
		}
		if _, dup := want[a.Is4()]; dup {
			return Allocation{}, &FieldError{Field: "ips", Value: a.String(), Reason: "at most one address per family may be requested"}
		}
		want[a.Is4()] = a
	}
	var out Allocation
	err := s.batch(func(tx *bolt.Tx) error {
		out = Allocation{} // fn may be re-run: start from scratch
		owners, addrs := tx.Bucket(bktOwners), tx.Bucket(bktAddrs)
		if v := owners.Get(owner.key()); v != nil {
			if err := json.Unmarshal(v, &out); err != nil {
				return fmt.Errorf("decode owner record %s: %w", owner, err)
			}
			for _, a := range want {
				if !slices.ContainsFunc(out.Addrs, func(x Address) bool { return x.Prefix.Addr() == a }) {
					return fmt.Errorf("%s already holds %s, not the requested %s: %w (%w)",
						owner, addrList(out.Addrs), a, ErrConflict, syscall.EADDRINUSE)
				}
			}
			return nil
		}
		out = Allocation{Owner: owner, Created: time.Now().UTC()}
		for a := range want {
			if !slices.Contains(s.families(), a) {
				return fmt.Errorf("requested %s: no %s range configured: %w (%w)", want[a], famName(a), ErrOutOfRange, syscall.EADDRNOTAVAIL)
			}
		}
		for _, is4 := range s.families() {
			var (
				addr Address
				err  error
			)
			if a, ok := want[is4]; ok {
				addr, err = s.takeRequested(addrs, owner, a)
			} else {
				addr, err = s.takeNext(tx, owner, is4)
			}
			if err != nil {
				return err
			}
			out.Addrs = append(out.Addrs, addr)
		}
		v, err := json.Marshal(out)
		if err != nil {
			return err
		}
		return owners.Put(owner.key(), v)
	})
	if err != nil {
		return Allocation{}, fmt.Errorf("allocate %s: %w", owner, err)
	}
	return out, nil
}

func (s *Store) takeRequested(addrs *bolt.Bucket, owner Owner, a netip.Addr) (Address, error) {
	for _, r := range s.ranges {
		if !r.Contains(a) {
			continue
		}
		k := addrKey(a)
		if holder := addrs.Get(k); holder != nil {
			return Address{}, fmt.Errorf("requested %s is held by %s: %w (%w)", a, ownerFromKey(holder), ErrConflict, syscall.EADDRINUSE)
		}
		if err := addrs.Put(k, owner.key()); err != nil {
			return Address{}, err
		}
		return Address{Prefix: netip.PrefixFrom(a, r.Subnet.Bits()), Gateway: r.Gateway}, nil
	}
	for _, r := range s.ranges {
		if r.Subnet.Contains(a) {
			return Address{}, &notAllocatable{fmt.Sprintf("requested %s %s: not a pod's address (%v)", a, r.why(a), syscall.EADDRNOTAVAIL)}
		}
	}
	return Address{}, fmt.Errorf("requested %s is not allocatable in %s: %w (%w)", a, s.rangeList(a.Is4()), ErrOutOfRange, syscall.EADDRNOTAVAIL)
}

// notAllocatable is ErrOutOfRange (EADDRNOTAVAIL) for an address inside a range's subnet
// that no pod may have, with a message that says what the address is instead of "outside
// every configured range".
type notAllocatable struct{ msg string }

func (e *notAllocatable) Error() string { return e.msg }

// Is makes errors.Is(err, ErrOutOfRange) and errors.Is(err, syscall.EADDRNOTAVAIL) hold.
func (e *notAllocatable) Is(target error) bool {
	return target == ErrOutOfRange || target == syscall.EADDRNOTAVAIL
}

// takeNext walks each range of the family from the address after its cursor, wrapping once.
func (s *Store) takeNext(tx *bolt.Tx, owner Owner, is4 bool) (Address, error) {
	addrs, cursors := tx.Bucket(bktAddrs), tx.Bucket(bktCursors)
	for _, r := range s.ranges {
		if r.Is4() != is4 {
			continue
		}
		ck := []byte(r.Subnet.String())
		first := r.Start
		if c := cursors.Get(ck); len(c) == 16 {
			prev := netip.AddrFrom16([16]byte(c))
			if is4 {
				prev = prev.Unmap()
			}
			// A cursor at End (or left over from a resized range) restarts at Start.
			if prev.Compare(r.Start) >= 0 && prev.Compare(r.End) < 0 {
				first = prev.Next()
			}
		}
		a := first
		for {
			if a != r.Gateway && addrs.Get(addrKey(a)) == nil {
				if err := addrs.Put(addrKey(a), owner.key()); err != nil {
					return Address{}, err
				}
				if err := cursors.Put(ck, addrKey(a)); err != nil {
					return Address{}, err
				}
				return Address{Prefix: netip.PrefixFrom(a, r.Subnet.Bits()), Gateway: r.Gateway}, nil
			}
			if a == r.End {
				a = r.Start
			} else {
				a = a.Next()
			}
			if a == first {
				break
			}
		}
	}
	return Address{}, fmt.Errorf("no free %s address in %s: %w (%w)", famName(is4), s.rangeList(is4), ErrExhausted, syscall.ENOSPC)
}

// Get returns owner's allocation, if any.
func (s *Store) Get(owner Owner) (Allocation, bool, error) {
	var (
		out Allocation
		ok  bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktOwners).Get(owner.key())
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &out)
	})
	if err != nil {
		return Allocation{}, false, fmt.Errorf("get %s: %w", owner, err)
	}
	return out, ok, nil
}

// Release frees owner's addresses. Releasing an unknown owner succeeds with ok false.
func (s *Store) Release(owner Owner) (Allocation, bool, error) {
	var (
		out Allocation
		ok  bool
	)
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		out, ok, err = release(tx, owner.key())
		return err
	})
	if err != nil {
		return Allocation{}, false, fmt.Errorf("release %s: %w", owner, err)
	}
	return out, ok, nil
}

func release(tx *bolt.Tx, ok []byte) (Allocation, bool, error) {
	owners, addrs := tx.Bucket(bktOwners), tx.Bucket(bktAddrs)
	v := owners.Get(ok)
	if v == nil {
		return Allocation{}, false, nil
	}
	var a Allocation
	if err := json.Unmarshal(v, &a); err != nil {
		return Allocation{}, false, fmt.Errorf("decode owner record %s: %w", ownerFromKey(ok), err)
	}
	for _, ad := range a.Addrs {
		k := addrKey(ad.Prefix.Addr())
		// Only delete the index entry if it is ours: never free someone else's address.
		if bytes.Equal(addrs.Get(k), ok) {
			if err := addrs.Delete(k); err != nil {
				return Allocation{}, false, err
			}
		}
	}
	if err := owners.Delete(ok); err != nil {
		return Allocation{}, false, err
	}
	return a, true, nil
}

// GC releases every owner not in valid and returns what it released.
func (s *Store) GC(valid []Owner) ([]Allocation, error) {
	keep := make(map[string]bool, len(valid))
	for _, o := range valid {
		keep[string(o.key())] = true
	}
	var removed []Allocation
	err := s.update(func(tx *bolt.Tx) error {
		removed = removed[:0]
		var stale [][]byte
		err := tx.Bucket(bktOwners).ForEach(func(k, _ []byte) error {
			if !keep[string(k)] {
				stale = append(stale, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			a, ok, err := release(tx, k)
			if err != nil {
				return err
			}
			if ok {
				removed = append(removed, a)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gc ipam: %w", err)
	}
	return removed, nil
}

// List returns every allocation, ordered by owner.
func (s *Store) List() ([]Allocation, error) {
	var out []Allocation
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktOwners).ForEach(func(k, v []byte) error {
			var a Allocation
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("decode owner record %s: %w", ownerFromKey(k), err)
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list ipam: %w", err)
	}
	return out, nil
}

// Verify checks the store's invariants: every owner's addresses are indexed to that owner,
// every indexed address belongs to an owner that lists it, and no address is held twice.
func (s *Store) Verify() error {
	return s.view(func(tx *bolt.Tx) error {
		owners, addrs := tx.Bucket(bktOwners), tx.Bucket(bktAddrs)
		seen := map[netip.Addr]string{}
		err := owners.ForEach(func(k, v []byte) error {
			var a Allocation
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("verify: owner %s: %w", ownerFromKey(k), err)
			}
			if !bytes.Equal(a.Owner.key(), k) {
				return fmt.Errorf("verify: record under %s names %s", ownerFromKey(k), a.Owner)
			}
			for _, ad := range a.Addrs {
				ip := ad.Prefix.Addr()
				if prev, dup := seen[ip]; dup {
					return fmt.Errorf("verify: %s held by %s and %s", ip, prev, a.Owner)
				}
				seen[ip] = a.Owner.String()
				if h := addrs.Get(addrKey(ip)); !bytes.Equal(h, k) {
					return fmt.Errorf("verify: %s of %s indexed to %q", ip, a.Owner, h)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return addrs.ForEach(func(k, v []byte) error {
			ip := netip.AddrFrom16([16]byte(k)).Unmap()
			if _, ok := seen[ip]; !ok {
				return fmt.Errorf("verify: %s indexed to %s but no owner lists it", ip, ownerFromKey(v))
			}
			return nil
		})
	})
}

func addrKey(a netip.Addr) []byte {
	b := a.As16()
	return b[:]
}

func ownerFromKey(k []byte) Owner {
	c, i, _ := bytes.Cut(k, []byte{0})
	return Owner{ContainerID: string(c), IfName: string(i)}
}

func famName(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}

func (s *Store) rangeList(is4 bool) string {
	var names []string
	for _, r := range s.ranges {
		if r.Is4() == is4 {
			names = append(names, r.Subnet.String())
		}
	}
	if len(names) == 0 {
		return "no " + famName(is4) + " range"
	}
	return "range " + strings.Join(names, ", ")
}

func addrList(as []Address) string {
	var s []string
	for _, a := range as {
		s = append(s, a.Prefix.Addr().String())
	}
	return strings.Join(s, ",")
}
