package vale

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"net"
	"sort"
	"sync/atomic"
	"time"
)

// fdbWays is the associativity of the forwarding table: a MAC address may
// live in any of the fdbWays entries of a bucket, which is 64 bytes, one
// cache line. VALE's table is direct-mapped (one way); four ways keep a
// static entry from permanently shadowing every address hashed next to it.
const fdbWays = 4

// The two bucket hashes: multiplicative, with different odd constants, so
// that addresses sharing a primary bucket are spread over secondary ones.
const (
	fibHash = 0x9E3779B97F4A7C15 // 2^64/φ: Fibonacci hashing (primary)
	altHash = 0xC2B2AE3D27D4EB4F // xxHash64's PRIME64_2 (secondary)
)

// learnTries bounds how often learn starts over after losing a
// compare-and-swap to a concurrent learner or to Expire.
const learnTries = 4

const (
	macMask    = 1<<48 - 1
	staticSeen = math.MaxInt64
)

// FDB is the learning bridge's forwarding table: a fixed-size hash keyed
// by MAC address, mapping to a port index, with aging and static entries.
//
// Two-choice hashing: an address lives in its primary bucket (Fibonacci
// hashing) or its secondary one (an independent multiplicative hash).
// Lookups try the primary bucket and the secondary only on a miss, so a
// known address in its primary bucket still costs one cache line. The
// second choice is for static entries, one per pod port, which must all
// fit: 255 of them in a 1024-entry table (256 buckets of 4) put five into
// some bucket with probability about 0.6 with one choice (0.01 for 100),
// and AddStatic would fail for that pod. AddStatic puts an address in the
// bucket of its two with fewer static entries (the primary on a tie), and
// then all 255 fit except with probability about 10⁻⁶ (placing it in the
// primary whenever that has room would still fail with probability 0.015).
//
// Learning never evicts another port's live entry, nor a static one: a
// new address takes an empty slot, else an expired one, else the oldest
// entry of its own port, in either of its buckets, or is not learned. A
// port sending from random source addresses (to sniff by making the switch
// forget its neighbours, so their traffic floods) can fill empty slots and
// then only cycles through its own entries.
//
// Lookups and learning run concurrently from every forwarding thread of a
// switch without locks: each entry is two atomic words, and a torn pair
// (a key with the previous occupant's timestamp) is harmless, as in VALE,
// whose table is written from all senders under the shared switch lock.
// Learners of different source ports fill a slot with compare-and-swap on
// its key, so two of them never silently overwrite each other's new entry
// (the loser starts over). Static entries, deletions and port flushes
// change entries that learners might also pick, so callers serialise them
// against forwarding (Switch does this under its exclusive lock).
type FDB struct {
	ents  []fdbEntry
	shift uint  // 64 − log2(buckets)
	aging int64 // nanoseconds; 0 = never
}

type fdbEntry struct {
	key  atomic.Uint64 // mac | (port+1)<<48; 0 when empty
	seen atomic.Int64  // clock value of the last refresh; staticSeen if static
}

// FDBEntry is one forwarding-table entry as reported by Entries.
type FDBEntry struct {
	MAC    net.HardwareAddr
	Port   uint16
	Static bool
	// Age is the time since the entry was last refreshed (0 for static).
	Age time.Duration
}

// NewFDB returns an empty table of size entries (a power of two in
// [MinFDBSize, MaxFDBSize]); aging 0 disables aging.
func NewFDB(size int, aging time.Duration) (*FDB, error) {
	if size < MinFDBSize || size > MaxFDBSize || size&(size-1) != 0 {
		return nil, fmt.Errorf("new fdb: size %d is not a power of two in [%d, %d]: %w", size, MinFDBSize, MaxFDBSize, ErrInvalid)
	}
	if aging < 0 {
		return nil, fmt.Errorf("new fdb: negative aging %v: %w", aging, ErrInvalid)
	}
	buckets := size / fdbWays
	return &FDB{
		ents:  make([]fdbEntry, size),
		shift: uint(64 - bits.TrailingZeros(uint(buckets))),
		aging: int64(aging),
	}, nil
}

// Size returns the number of entries.
func (t *FDB) Size() int { return len(t.ents) }

// bucket returns the index of the first entry of mac's primary bucket
// (Fibonacci hashing: the top bits of a multiplicative hash).
func (t *FDB) bucket(mac uint64) int {
	if t.shift == 64 {
		return 0
	}
	return int((mac*fibHash)>>t.shift) * fdbWays
}

// bucket2 returns the index of the first entry of mac's secondary bucket.
// It may be the primary one.
func (t *FDB) bucket2(mac uint64) int {
	if t.shift == 64 {
		return 0
	}
	return int((mac*altHash)>>t.shift) * fdbWays
}

// buckets returns mac's primary and secondary buckets; n is 1 when they
// are the same.
func (t *FDB) buckets(mac uint64) (b [2]int, n int) {
	b[0], b[1] = t.bucket(mac), t.bucket2(mac)
	if b[1] == b[0] {
		return b, 1
	}
	return b, 2
}

// lookup returns the port for mac, ignoring expired entries.
func (t *FDB) lookup(mac uint64, now int64) (uint16, bool) {
	p := t.find(mac, now)
	return p, p != DstUnknown
}

// find returns the port for mac, or DstUnknown when there is no live entry
// for it. It probes the secondary bucket only when the primary one does
// not hold mac.
func (t *FDB) find(mac uint64, now int64) uint16 {
	b := t.bucket(mac)
	for probe := 0; ; probe++ {
		ents := t.ents[b : b+fdbWays : b+fdbWays]
		for i := range ents {
			e := &ents[i]
			k := e.key.Load()
			if k&macMask != mac || k == 0 {
				continue
			}
			if t.aging > 0 {
				if s := e.seen.Load(); s != staticSeen && now-s > t.aging {
					return DstUnknown
				}
			}
			return uint16(k>>48) - 1
		}
		if probe == 1 {
			return DstUnknown
		}
		b2 := t.bucket2(mac)
		if b2 == b {
			return DstUnknown
		}
		b = b2
	}
}

// dst is the forwarding decision (of Learning's Lookup and Resolve) for a
// frame whose first 8 bytes, read little-endian, are w: the port of a
// known unicast destination, DstUnknown for an unknown one, DstBroadcast
// for a group address. It is small enough to inline.
func (t *FDB) dst(w uint64, now int64) uint16 {
	if w&1 != 0 {
		return DstBroadcast
	}
	return t.find(w&macMask, now)
}

// learn records mac on port at time now and reports whether the table
// holds it afterwards. An entry for mac, in either bucket, is refreshed, or
// moved to port when the station moved; a static one is never changed
// (false). A new address takes, preferring its primary bucket: an empty
// slot, else an expired dynamic one, else the oldest dynamic entry of port
// itself; with none of these it is not learned (false): learning never
// evicts another port's live entry.
func (t *FDB) learn(mac uint64, port uint16, now int64) bool {
	nk := mac | (uint64(port)+1)<<48
	b1 := t.bucket(mac)
	// The common case, a known address in its primary bucket, reads one
	// timestamp and nothing of the secondary bucket.
	ents := t.ents[b1 : b1+fdbWays : b1+fdbWays]
	for i := range ents {
		e := &ents[i]
		k := e.key.Load()
		if k&macMask != mac || k == 0 {
			continue
		}
		s := e.seen.Load()
		if s == staticSeen {
			return false
		}
		if k != nk && !e.key.CompareAndSwap(k, nk) { // the station moved
			break // changed under us: take the slow path
		}
		if s != now {
			e.seen.Store(now)
		}
		return true
	}
	return t.learnSlow(mac, nk, b1, now)
}

// learnSlow is learn for an address not found in its primary bucket (or
// changed under a first attempt): it looks in both buckets, and stores a
// new address with compare-and-swap.
func (t *FDB) learnSlow(mac, nk uint64, b1 int, now int64) bool {
	own := nk >> 48
retry:
	for try := 0; try < learnTries; try++ {
		var empty, expired, oldest *fdbEntry
		var expiredKey, oldestKey uint64
		oldestSeen := int64(staticSeen)
		b := b1
		for probe := 0; probe < 2; probe++ {
			if probe == 1 {
				if b = t.bucket2(mac); b == b1 {
					break
				}
			}
			ents := t.ents[b : b+fdbWays : b+fdbWays]
			for i := range ents {
				e := &ents[i]
				k := e.key.Load()
				if k == 0 {
					if empty == nil {
						empty = e
					}
					continue
				}
				s := e.seen.Load()
				if k&macMask == mac {
					if s == staticSeen {
						return false
					}
					if k != nk && !e.key.CompareAndSwap(k, nk) { // the station moved
						continue retry
					}
					if s != now {
						e.seen.Store(now)
					}
					return true
				}
				switch {
				case s == staticSeen:
				case t.aging > 0 && now-s > t.aging:
					if expired == nil {
						expired, expiredKey = e, k
					}
				case k>>48 == own && s < oldestSeen:
					oldest, oldestKey, oldestSeen = e, k, s
				}
			}
		}
		var v *fdbEntry
		var old uint64
		switch {
		case empty != nil:
			v = empty
		case expired != nil:
			v, old = expired, expiredKey
		case oldest != nil:
			v, old = oldest, oldestKey
		default:
			return false
		}
		// The timestamp first: a reader (or Expire) that sees the new key
		// then sees a fresh entry. Should the swap fail, another learner
		// took the slot and refreshes it itself.
		v.seen.Store(now)
		if v.key.CompareAndSwap(old, nk) {
			return true
		}
	}
	return false
}

// Lookup returns the port recorded for mac at time now.
func (t *FDB) Lookup(mac net.HardwareAddr, now int64) (uint16, bool) {
	if len(mac) != 6 {
		return 0, false
	}
	return t.lookup(macKey(mac), now)
}

// AddStatic installs a static entry mac → port that neither ages nor is
// overwritten by learning. An entry for mac, in either of its buckets, is
// replaced in place; a new one goes to the bucket of the two with fewer
// static entries (the primary on a tie), into an empty slot or else over
// the bucket's oldest dynamic entry. It fails with EINVAL for a multicast
// or zero address, EEXIST when mac is already static on another port (a
// pod must not take over another port's address: Delete it first), and
// ENOSPC when both buckets hold fdbWays static entries. Adding the same
// entry again succeeds. Not safe against concurrent forwarding.
func (t *FDB) AddStatic(mac net.HardwareAddr, port uint16) error {
	if len(mac) != 6 {
		return fmt.Errorf("add static entry %v: address is not 6 bytes: %w", mac, ErrInvalid)
	}
	key := macKey(mac)
	if mac[0]&1 != 0 || key == 0 {
		return fmt.Errorf("add static entry %v: not a unicast address: %w", mac, ErrInvalid)
	}
	if port >= DstRefused {
		return fmt.Errorf("add static entry %v: port %d out of range: %w", mac, port, ErrInvalid)
	}
	nk := key | (uint64(port)+1)<<48
	bs, nb := t.buckets(key)
	var cur *fdbEntry
	var nstatic [2]int
	for j, b := range bs[:nb] {
		for i := b; i < b+fdbWays; i++ {
			e := &t.ents[i]
			k := e.key.Load()
			if k == 0 {
				continue
			}
			st := e.seen.Load() == staticSeen
			if k&macMask != key {
				if st {
					nstatic[j]++
				}
				continue
			}
			if st && k != nk {
				return fmt.Errorf("add static entry %v: static on port %d: %w", mac, uint16(k>>48)-1, ErrExists)
			}
			if cur == nil {
				cur = e
			}
		}
	}
	if cur == nil {
		j := 0
		if nb == 2 && nstatic[1] < nstatic[0] {
			j = 1
		}
		if nstatic[j] == fdbWays {
			return fmt.Errorf("add static entry %v: its buckets hold only static entries: %w", mac, ErrSwitchFull)
		}
		vseen := int64(staticSeen)
		for i := bs[j]; i < bs[j]+fdbWays; i++ {
			e := &t.ents[i]
			s := e.seen.Load()
			if e.key.Load() == 0 {
				s = math.MinInt64
			}
			if s < vseen {
				cur, vseen = e, s
			}
		}
	}
	cur.seen.Store(staticSeen)
	cur.key.Store(nk)
	// Racing learners may have left mac twice: keep only the static entry.
	for _, b := range bs[:nb] {
		for i := b; i < b+fdbWays; i++ {
			e := &t.ents[i]
			if k := e.key.Load(); e != cur && k != 0 && k&macMask == key {
				e.key.Store(0)
				e.seen.Store(0)
			}
		}
	}
	return nil
}

// Delete removes the entry for mac, static or not, from either of its
// buckets. It reports whether there was one. Not safe against concurrent
// forwarding.
func (t *FDB) Delete(mac net.HardwareAddr) bool {
	if len(mac) != 6 {
		return false
	}
	key := macKey(mac)
	bs, nb := t.buckets(key)
	found := false
	for _, b := range bs[:nb] {
		for i := b; i < b+fdbWays; i++ {
			e := &t.ents[i]
			if k := e.key.Load(); k != 0 && k&macMask == key {
				e.key.Store(0)
				e.seen.Store(0)
				found = true
			}
		}
	}
	return found
}

// FlushPort removes every entry, static or dynamic, that points at port
// (it scans the whole table, so both buckets of every address), so a
// later port reusing the index inherits nothing. Not safe against
// concurrent forwarding.
func (t *FDB) FlushPort(port uint16) int {
	n := 0
	want := uint64(port) + 1
	for i := range t.ents {
		e := &t.ents[i]
		if k := e.key.Load(); k != 0 && k>>48 == want {
			e.key.Store(0)
			e.seen.Store(0)
			n++
		}
	}
	return n
}

// Expire removes dynamic entries older than the aging time and returns
// how many it removed. It scans the whole table (so both buckets of every
// address) and may run concurrently with forwarding: an entry refreshed
// or refilled meanwhile is kept (compare-and-swap on the key).
func (t *FDB) Expire(now int64) int {
	if t.aging == 0 {
		return 0
	}
	n := 0
	for i := range t.ents {
		e := &t.ents[i]
		k := e.key.Load()
		if k == 0 {
			continue
		}
		if s := e.seen.Load(); s != staticSeen && now-s > t.aging {
			if e.key.CompareAndSwap(k, 0) {
				n++
			}
		}
	}
	return n
}

// Entries returns the live entries of the whole table (expired ones are
// left out), sorted by MAC address.
func (t *FDB) Entries(now int64) []FDBEntry {
	var out []FDBEntry
	for i := range t.ents {
		e := &t.ents[i]
		k := e.key.Load()
		if k == 0 {
			continue
		}
		s := e.seen.Load()
		st := s == staticSeen
		if !st && t.aging > 0 && now-s > t.aging {
			continue
		}
		fe := FDBEntry{MAC: keyMAC(k & macMask), Port: uint16(k>>48) - 1, Static: st}
		if !st {
			fe.Age = time.Duration(now - s)
		}
		out = append(out, fe)
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].MAC) < string(out[j].MAC) })
	return out
}

// macKey packs a 6-byte address the way the forwarding path reads it
// from a frame (little-endian, low 48 bits).
func macKey(m []byte) uint64 {
	var b [8]byte
	copy(b[:], m[:6])
	return binary.LittleEndian.Uint64(b[:])
}

func keyMAC(k uint64) net.HardwareAddr {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], k)
	return net.HardwareAddr(b[:6:6])
}
