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
// live in any of the fdbWays entries of its bucket, which is 64 bytes, one
// cache line. VALE's table is direct-mapped (one way); four ways keep a
// static entry from permanently shadowing every address hashed next to it.
const fdbWays = 4

const (
	macMask    = 1<<48 - 1
	staticSeen = math.MaxInt64
)

// FDB is the learning bridge's forwarding table: a fixed-size hash keyed
// by MAC address, mapping to a port index, with aging and static entries.
//
// Lookups and learning run concurrently from every forwarding thread of a
// switch without locks: each entry is two atomic words, and a torn pair
// (a key with the previous occupant's timestamp) is harmless, as in VALE,
// whose table is written from all senders under the shared switch lock.
// Static entries, deletions and port flushes change entries that learners
// might also pick, so callers serialise them against forwarding (Switch
// does this under its exclusive lock).
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

// bucket returns the index of the first entry of mac's bucket
// (Fibonacci hashing: the top bits of a multiplicative hash).
func (t *FDB) bucket(mac uint64) int {
	if t.shift == 64 {
		return 0
	}
	return int((mac*0x9E3779B97F4A7C15)>>t.shift) * fdbWays
}

// lookup returns the port for mac, ignoring expired entries.
func (t *FDB) lookup(mac uint64, now int64) (uint16, bool) {
	b := t.bucket(mac)
	ents := t.ents[b : b+fdbWays : b+fdbWays]
	for i := range ents {
		e := &ents[i]
		k := e.key.Load()
		if k&macMask != mac || k == 0 {
			continue
		}
		if t.aging > 0 {
			if s := e.seen.Load(); s != staticSeen && now-s > t.aging {
				return 0, false
			}
		}
		return uint16(k>>48) - 1, true
	}
	return 0, false
}

// learn records mac on port at time now. A static entry for mac is never
// changed. It returns false when the address could not be stored (its
// bucket is full of static entries).
func (t *FDB) learn(mac uint64, port uint16, now int64) bool {
	nk := mac | (uint64(port)+1)<<48
	b := t.bucket(mac)
	ents := t.ents[b : b+fdbWays : b+fdbWays]
	var victim *fdbEntry
	vseen := int64(staticSeen)
	for i := range ents {
		e := &ents[i]
		k := e.key.Load()
		if k == 0 {
			if vseen != math.MinInt64 {
				victim, vseen = e, math.MinInt64
			}
			continue
		}
		s := e.seen.Load()
		if k&macMask == mac {
			if s == staticSeen {
				return false
			}
			if k != nk {
				e.key.Store(nk) // the station moved
			}
			if s != now {
				e.seen.Store(now)
			}
			return true
		}
		if s < vseen {
			victim, vseen = e, s
		}
	}
	if victim == nil {
		return false
	}
	victim.seen.Store(now)
	victim.key.Store(nk)
	return true
}

// Lookup returns the port recorded for mac at time now.
func (t *FDB) Lookup(mac net.HardwareAddr, now int64) (uint16, bool) {
	if len(mac) != 6 {
		return 0, false
	}
	return t.lookup(macKey(mac), now)
}

// AddStatic installs a static entry mac → port that neither ages nor is
// overwritten by learning. It replaces a dynamic entry for mac or, when
// the bucket is full, its oldest dynamic entry. It fails with EINVAL for a
// multicast or zero address and ENOSPC when the bucket already holds
// fdbWays static entries. Not safe against concurrent forwarding.
func (t *FDB) AddStatic(mac net.HardwareAddr, port uint16) error {
	if len(mac) != 6 {
		return fmt.Errorf("add static entry %v: address is not 6 bytes: %w", mac, ErrInvalid)
	}
	key := macKey(mac)
	if mac[0]&1 != 0 || key == 0 {
		return fmt.Errorf("add static entry %v: not a unicast address: %w", mac, ErrInvalid)
	}
	if port >= DstBroadcast {
		return fmt.Errorf("add static entry %v: port %d out of range: %w", mac, port, ErrInvalid)
	}
	b := t.bucket(key)
	ents := t.ents[b : b+fdbWays]
	var victim *fdbEntry
	vseen := int64(staticSeen)
	for i := range ents {
		e := &ents[i]
		k := e.key.Load()
		if k != 0 && k&macMask == key {
			victim = e
			break
		}
		s := e.seen.Load()
		if k == 0 {
			s = math.MinInt64
		}
		if s < vseen {
			victim, vseen = e, s
		}
	}
	if victim == nil {
		return fmt.Errorf("add static entry %v: bucket full of static entries: %w", mac, ErrSwitchFull)
	}
	victim.seen.Store(staticSeen)
	victim.key.Store(key | (uint64(port)+1)<<48)
	return nil
}

// Delete removes the entry for mac, static or not. It reports whether
// there was one. Not safe against concurrent forwarding.
func (t *FDB) Delete(mac net.HardwareAddr) bool {
	if len(mac) != 6 {
		return false
	}
	key := macKey(mac)
	b := t.bucket(key)
	found := false
	for i := b; i < b+fdbWays; i++ {
		e := &t.ents[i]
		if k := e.key.Load(); k != 0 && k&macMask == key {
			e.key.Store(0)
			e.seen.Store(0)
			found = true
		}
	}
	return found
}

// FlushPort removes every entry, static or dynamic, that points at port,
// so a later port reusing the index inherits nothing. Not safe against
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
// how many it removed. It may run concurrently with forwarding: an entry
// refreshed meanwhile is kept (compare-and-swap on the key).
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

// Entries returns the live entries (expired ones are left out), sorted by
// MAC address.
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
