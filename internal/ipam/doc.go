// Package ipam is the node agent's address allocator: one address per address family for
// every owner (containerID, ifname), drawn from one or more ranges, persisted so that an agent
// restart or a node reboot neither loses nor duplicates an address.
//
// Model:
//
//   - A Range is a subnet with an allocatable window [Start, End] and a Gateway. The gateway
//     (first host by default, configurable) is never handed out; for IPv4 the network and
//     broadcast addresses are excluded, for IPv6 the network address (the subnet-router
//     anycast address, RFC 4291 §2.6.1) is. Ranges are parsed by ParseRanges from RangeConfig
//     (node pod CIDRs in a cluster, config in standalone mode) with errors that name the field.
//   - The ranges of one family form a set tried in order: an owner gets one IPv4 address if
//     any IPv4 range is configured and one IPv6 address if any IPv6 range is: single-stack
//     and dual-stack fall out of the configuration.
//   - Allocate is idempotent: the same owner gets the same addresses back. Requested
//     addresses (CNI runtimeConfig.ips) are honoured if they lie in a range's window and are
//     free or already the owner's; otherwise the error says why (ErrOutOfRange, ErrConflict).
//   - A per-range cursor remembers the last address handed out; the next search starts after
//     it and wraps, so a just-released address is reused only after the window has been
//     walked (a restarted pod's stale peers do not get its old address at once).
//   - Release(owner) is idempotent; GC(valid) releases every owner not in the valid set.
//
// Persistence: bbolt, rather than one atomic file per address (host-local's approach). The
// decisive property is multi-key atomicity: an allocation writes the owner record, the address
// index and the cursor together, and dual-stack writes two addresses, in one transaction that
// is fsync'd before Allocate returns; a crash leaves either all of it or none of it, so the two
// indexes can never disagree (no address owned twice, no owner pointing at a free address).
// With atomic files the same guarantee needs a write-ahead scheme of our own. bbolt is
// maintained by the etcd project, pure Go, single file, crash-safe by copy-on-write pages and
// a double meta page, and takes an exclusive flock so two agents cannot open one store.
// Writes are serialized by bbolt; every method is safe for concurrent use.
//
// Layout (bucket → key → value):
//
//	owners   containerID "\x00" ifname → JSON record{owner, addresses with gateways, time}
//	addrs    16-byte address            → owner key
//	cursors  range subnet (text)        → 16-byte last address handed out
//	meta     "schema"                   → "1"
//	         "fresh"                    → "1" from creation until Rebuilt
//
// Verify checks that owners and addrs agree; tests run it after every scenario.
//
// Faults (issue 16). Before bbolt maps a file, CheckFile reads what bbolt trusts beyond any
// recover: the meta pages, the free list (a garbage count made bbolt allocate and sort that
// many ids) and the tree of pages (a page referenced twice, e.g. a branch naming itself,
// made its cursor descend forever), with every page inside the file, naming itself, of the
// right type, and no page both free and in use. A store whose file was missing, empty (truncated to zero bytes) or held
// no store is created Fresh and stays fresh, across opens, until its caller has restored
// what the node still shows (Restore: the running pods' addresses) and called Rebuilt: a
// fresh store on a node that runs pods must never allocate first. Open reads every page,
// and every transaction runs under a guard that turns bbolt's panics on damaged pages
// ("invalid freelist page", page assertions) and faults reading the memory map into an
// error wrapping ErrCorrupt that names the file; the caller moves the file aside and opens
// a fresh store. An owner record that does not decode costs that record alone: Open
// rebuilds it from the address index (its addresses, with their range's prefix and
// gateway), or drops it when no address is indexed to it, and lists what it did in Repairs.
// The free list is synced (not NoFreelistSync): bbolt rebuilds a missing one with a check
// whose errors panic in a goroutine of its own, which no guard can reach.
package ipam
