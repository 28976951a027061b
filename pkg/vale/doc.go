// Package vale is a VALE software switch (netmap's netmap_vale.c, as
// summarised in SEEDS-SPEC §3.1, §3.18 and §4.2) built on pkg/netmap: a
// learning Ethernet bridge whose ports are netmap adapters and which
// forwards frames between their rings in batches, in userspace.
//
// # Model
//
// A Registry plugs VALE into one netmap instance (netmap.Netmap): names
// "vale<sw>:<port>" resolve to switch ports (netmap_get_bdg_na, through
// Netmap.AddLookup) and the NETMAP_BDG_* commands of NIOCREGIF/NIOCGINFO
// come to it (Netmap.SetBridgeCtl). A Switch exists while it has ports
// (or, for a switch made with CreateSwitch, until DestroySwitch). A Port
// is one of:
//
//   - ephemeral: created by the first registration of "vale0:p1", gone
//     with its last user (the adapter's destructor detaches it);
//   - persistent: created by NewIf (NEWIF), attached with Attach
//     ("vale0:ifname", ATTACH), detached with Detach, deleted by DelIf
//     (DELIF, EBUSY while attached or open);
//   - bwrap: any other netmap adapter (native, or generic over AF_XDP or
//     AF_PACKET) attached with AttachAdapter or ATTACH; the switch owns it
//     (NAF_BUSY: users get EBUSY), a worker goroutine pulls its RX rings
//     (one batch per ring per round, the rest stays in the adapter), senders
//     write its TX rings, and the worker txsyncs them again when the adapter
//     signals room for frames it could not take;
//   - host: with host set, the bwrap'd adapter's host rings are a second
//     port "<ifname>^".
//
// A VALE port's TX rings feed the switch: its txsync runs the forwarding
// (nm_bdg_flush) over [hwcur, head) and returns the slots at once. Its RX
// rings are filled by senders; its rxsync releases what the user consumed.
//
// # Forwarding
//
// A pass takes at most Config.BatchSize slots from one source ring (never
// cutting a NS_MOREFRAG chain, and leaving a chain whose end the user has
// not released yet in the ring), then:
//
//   - gather: one Frame per chain; frames shorter than an Ethernet header
//     in their first fragment, with a bad buffer index or length, an
//     NS_INDIRECT slot, or a chain over 64 slots
//     are DropBadFrame, frames over Config.MaxFrame are DropTooLong;
//   - pass one: the Lookup decides every frame's destination for the whole
//     batch, and the frames are threaded onto one list per destination
//     plus a broadcast list (DstBroadcast) and an unknown-unicast list
//     (DstUnknown); DstDrop, the source itself or a missing port is
//     DropNoDest, DstRefused is DropRefused;
//   - pass two: each destination is visited once, with its unicast frames
//     merged with the broadcast and unknown-unicast frames in source order
//     (a known-only port: without the unknown unicast); every other
//     receiving port gets the broadcast and unknown-unicast lists merged (a
//     known-only port: the broadcast list alone). For a VALE port the sender
//     reserves (leases) room on the RX ring under the ring's QLock, copies
//     without it (re-cutting frames to the destination's buffer size), then
//     publishes under the lock in lease order and notifies, so several
//     senders fill one ring concurrently. Frames that do not fit are
//     DropNoSpace on the destination: forwarding never blocks.
//
// The default Lookup is Learning, a learning bridge over an FDB: a fixed
// size, 4-way set-associative hash keyed by MAC with two-choice hashing
// (every address has a primary and a secondary bucket), aging (against the
// registry's injectable clock, read once per batch) and static entries;
// it learns only valid unicast sources (not group, not zero, no NoLearn
// flag), skips the table when a port repeats its last source address
// (refreshing it once per batch), sends known unicast to its port, floods
// unknown unicast (DstUnknown) and broadcast and multicast (DstBroadcast).
// Learning.Resolve makes the same decision without learning. Lookup is a
// batch interface (VALE's bdg_ops.lookup, mSwitch's modules):
// Switch.SetLookup replaces it, and a LearningWrapper filters frames before
// handing them to Learning. A Deliverer set on a port replaces the ring
// copy of pass two (the seam for output queues).
//
// # Port security
//
// The switch gives a policy (a lookup wrapper such as the agent's
// anti-spoofing; the policy itself is not here) what it needs to keep a
// pod from sniffing or stealing other pods' traffic through MAC learning:
//
//   - a static entry belongs to its port: AddStatic for an address static
//     on another port is ErrExists, and learning never changes a static
//     entry;
//   - learning never evicts another port's live entry (a new address takes
//     an empty slot, an expired one, or its own port's oldest), so a port
//     flooding random source addresses cannot make the switch forget its
//     neighbours and flood their traffic (a learned address still moves to
//     the port that sends from it last, as in any learning bridge: the
//     addresses to protect are static entries);
//   - Switch.SetKnownOnly keeps unknown unicast off a port: it gets only
//     the unicast the lookup sends to it, and broadcast and multicast;
//   - Learning.Resolve looks up without learning, for ports whose addresses
//     are static entries;
//   - a lookup refuses a frame with DstRefused, counted as DropRefused.
//
// With no known-only port and the plain Learning lookup the switch forwards
// as VALE does (unknown unicast floods to every port).
//
// Counters (frames and bytes in and out, drops by reason) are per port and
// per switch, added once per batch with atomics and read without locks.
//
// # Taps and traces
//
// Switch.AddTap hands a capture every frame of a port (received, with the lookup's
// decision, and delivered). Switch.Trace runs one frame through the forwarding code
// without forwarding it: gather's frame checks, the lookup through Prober (its decision
// without side effects: nothing learned, counted or consumed), pass one's threading and
// pass two's choice of destinations, where each destination reports what it would do
// (TraceDeliverer for a Deliverer, ring space for a ring) instead of taking the frame.
//
// # Locks and lock order
//
//  1. NMG_LOCK, the netmap instance's global lock (Netmap.Lock): every
//     configuration change — switches, ports, registration, attach and
//     detach, lookups, static entries, mirrors, known-only marks.
//  2. Switch.mu, a sync.RWMutex per switch: exclusive (after NMG_LOCK) to
//     add, remove, enable or disable a port, change its mirror or
//     known-only mark, or change the lookup or static entries; shared,
//     without NMG_LOCK, for a whole forwarding pass. Attach and detach
//     therefore wait for the passes in flight, and a pass never sees a
//     port change under it. A port detached while its user sends has its
//     frames dropped.
//  3. Kring.QLock of a destination ring: held only to lease and to
//     publish, never across the copy. txWriter.mu (a bwrap's TX ring):
//     held for the copy and the txsync.
//
// Forwarding never takes NMG_LOCK and never re-enters itself: bwrap
// sources are pulled by the bwrap's own goroutine, so a destination's
// notify cannot start a nested pass. A bwrap's worker is stopped before
// its ports are removed (never while holding the exclusive lock), and an
// adapter's krings are deleted only after its port was removed or disabled
// under the exclusive lock, so no sender writes into freed buffers.
//
// # Names
//
//	VALE (C)                         Go
//	struct nm_bridge, nm_bridges     Switch, Registry
//	NM_BDG_MAXPORTS, NM_BDG_BATCH    Config.MaxPorts (254), Config.BatchSize (1024)
//	NM_BDG_HASH, NM_BRIDGES          Config.FDBSize (1024), Options.MaxSwitches (8)
//	NM_BDG_BROADCAST, NM_BDG_NOPORT  DstBroadcast, DstDrop
//	netmap_vp_adapter                vpAdapter (ephemeral and persistent ports)
//	netmap_bwrap_adapter             bwrap
//	bdg_ops.lookup, REGOPS           Lookup, Switch.SetLookup
//	netmap_bdg_learning, nm_hash_ent Learning, FDB
//	nm_bdg_preflush / nm_bdg_flush   Switch.forward (gather, passOne, passTwo)
//	nm_kr_lease / lease publish      Kring.LeaseAcquire / LeaseComplete
//	netmap_vp_txsync / rxsync        vpAdapter.TxSync / RxSync
//	netmap_bwrap_intr_notify         bwrap.notify + bwrap.run/pull
//	NETMAP_BDG_ATTACH / DETACH       Registry.Attach, AttachAdapter / Detach
//	NETMAP_BDG_NEWIF / DELIF         Registry.NewIf / DelIf
//	NETMAP_BDG_LIST                  Registry.List, Info, PortInfo (and the LIST command)
//	NETMAP_BDG_HOST                  the host argument of Attach/AttachAdapter
//
// # Deviations from VALE
//
//   - Up to 4096 ports per switch (uint16 indexes; broadcast and drop are
//     0xFFFE and 0xFFFF instead of 254 and 255, and 0xFFFD and 0xFFFC are
//     DstUnknown and DstRefused). The slot's NS_PORT_MASK destination
//     override is not honoured: it cannot address more than 255 ports.
//   - The FDB is 4-way set-associative with two-choice hashing, aging and
//     static entries (VALE: direct-mapped, no aging); learning takes only
//     an empty, expired or own slot (VALE overwrites whatever the slot
//     holds); entries for a detached port are flushed.
//   - Unknown unicast is DstUnknown, flooded like broadcast except to
//     known-only ports (VALE: NM_BDG_BROADCAST, to every port).
//   - A frame for its own source port, or for a port nobody has open, is
//     counted as DropNoDest (VALE drops it silently).
//   - Frames are re-cut to the destination's buffer size, so ports with
//     different buffer sizes interoperate.
//   - Senders to a bwrap'd adapter's TX ring serialise on the copy (a TX
//     ring has no lease protocol); VALE ports' RX rings use leases.
//   - NS_INDIRECT slots (data at a user pointer) are dropped as bad frames,
//     and the virtio-net header length is per switch (Config.VnetHdrLen,
//     0, 10 or 12) rather than per port: every port of the switch carries
//     it before each frame and the switch forwards it with the frame as
//     plain bytes (no software segmentation or checksum when lengths
//     differ, as VALE's bdg_mismatch_datapath does); NETMAP_BDG_VNET_HDR
//     succeeds only for the switch's own length (else EOPNOTSUPP).
//   - A switch made by CreateSwitch survives without ports until
//     DestroySwitch (the agent configures switches before pods exist).
package vale
