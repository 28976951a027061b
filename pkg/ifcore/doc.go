// Package ifcore is the interface core of the epair node agent: a userspace
// reimplementation of DragonFly BSD's ifnet layer (sys/net/if.c, seed 002)
// and of FreeBSD's epair(4) pseudo-device (sys/net/if_epair.c, seed 000),
// following SEEDS-SPEC.md §1, §2, §4.4 and §4.5.
//
// # What carries the node's traffic
//
// internal/dataplane puts one Ifnet with one Subqueue in front of every
// switch port: its Discipline (altq.go, discipline.go), token bucket
// (tbr.go), packets (packet.go) and the if_start runs on the owner Worker
// (worker.go) are on the path of every frame a pod receives, through
// Subqueue.Enqueue, DevstartLocked and DevstartSched. The rest reproduces
// the seeds' semantics and is reached only by the conformance tests
// (CONFORMANCE.md): the in-memory epair cloner (epair.go), the ioctl layer
// (ioctl.go), groups, multicast and address lists (ifops.go), and ifq
// staging through Dispatch and Handoff (dispatch.go; the dataplane's output
// queues batch on their own and do not stage). A change there cannot break
// a pod's traffic, only the conformance contract.
//
// # Model
//
// A Net owns a set of netisr-like Workers (one goroutine per CPU by
// default, each with a message port, rollup hooks and counters) and the
// interface registry. Every interface (Ifnet) has a send queue (Ifaltq,
// if_snd) made of Subqueues; each subqueue holds a Discipline behind its
// lock, an optional token-bucket regulator, a prepend area, the if_start
// interlock ("started"), the hardware-queue-full flag (OACTIVE), an owner
// worker, and one stage and one if_start message per worker.
//
// Producers call Ifnet.Dispatch (ifq_dispatch). On a worker, the packet is
// staged: if_start is deferred until cntmax packets or MTU-MaxProtoHdr
// bytes have accumulated on that (subqueue, worker), or until the worker's
// port has been emptied and its rollup runs (if_start_rollup). Whoever sets
// "started" either runs if_start or clears it, re-checking under the
// subqueue lock (the double-checked release of
// ifsq_ifstart_need_schedule). if_start runs directly when the hardware
// serializer can be taken without blocking, otherwise it is scheduled on
// the subqueue's owner worker; at most one if_start message per (subqueue,
// worker) is ever pending, and a message that arrives after an owner change
// chases the new owner.
//
// The driver's Start (if_start) drains the subqueue into the hardware. The
// switch implements TxRing (batch-first: Transmit(batch) → accepted count)
// and RingDriver adapts it: a short count prepends the rest and sets
// OACTIVE; the ring later calls Subqueue.TxComplete, which clears OACTIVE and
// runs a devstart on the owner worker.
//
// Policy knobs are live: Ifaltq.SetDiscipline, SetRate and SetMaxLen change a
// running interface under traffic (queued packets move to the new
// discipline; drops are counted).
//
// # Invariants
//
//   - ifnet_lock (Net.mu) is never taken by the control-plane API on a
//     worker: those calls fail with EDEADLK instead of deadlocking in a
//     service sync.
//   - Attach/Detach return only after every worker has finished any
//     iteration of the interface array that started before (ServiceSync).
//   - The index table is published slot first, if_index second, so a
//     lock-free reader never sees a published index with an empty slot.
//   - The packet path (Dispatch, if_start, RingDriver, epair transmit and
//     netisr) allocates nothing, logs nothing and formats no errors; a
//     failure is a counter increment and a preallocated or errno error.
//   - Every goroutine belongs to the Workers and stops in Net.Close; every
//     packet is freed exactly once (PacketPool.Outstanding is checked by the
//     tests).
//
// # Packets and netmap buffers
//
// Packet is ifcore's mbuf: the frame (Data) plus Len, Flags (PktPrio,
// PktMcast, PktBcast), a priority Class, a flow Hash and Rcvif. Only the
// metadata is pooled (sync.Pool, PacketPool). When pkg/netmap is wired in,
// a Packet will describe a slot's buffer instead of owning bytes: Buf is the
// buffer index in netmap's index-addressed pool and Len the slot length;
// Data may alias that buffer's memory; PacketPool.OnFree returns the buffer
// index to netmap's free list (or to the source ring as a "swap" when the
// switch moves buffers zero-copy). ifcore never reads Data, so no copy is
// implied by queueing.
//
// # BSD name → Go name
//
//	struct ifnet                   Ifnet
//	if_attach / if_detach          Net.Attach / Net.Detach
//	if_alloc + if_initname         IfConfig
//	if_index, ifindex2ifnet        Net.IfIndex, Net.ByIndex
//	ifnet_array_get                Net.Interfaces
//	ifunit / ifunit_netisr         Net.Unit / Net.UnitNetisr
//	ifnet_lock                     Net.lock (EDEADLK on a worker)
//	netmsg_service_sync            Net.ServiceSync / Workers.ServiceSync
//	ifnet_forwardmsg               Workers.ForwardAll
//	lwkt_domsg / lwkt_sendmsg      Worker.Do / Worker.Send
//	netisr_register_rollup         Worker.AddRollup
//	if_serializer, ifnet_*serialize Serializer (default *sync.Mutex), SerializeFuncs
//	if_up / if_down                Ifnet.Up / Ifnet.Down (SIOCSIFFLAGS)
//	if_link_state_change           Ifnet.SetLinkState
//	if_slowtimo, if_watchdog       Net slow timer (1 s, worker 0), Watchdogger, Ifnet.SetTimer
//	ifsq_watchdog_*                Subqueue.NewWatchdog, Watchdog.Start/Stop/Set
//	if_addgroup / if_delgroup      Net.AddGroup / Net.DelGroup
//	if_getgroup(members)           Net.Groups / Net.GroupMembers
//	ifpromisc / if_allmulti        Ifnet.Promisc / Ifnet.Allmulti
//	if_addmulti / if_delmulti      Ifnet.AddMulti / Ifnet.DelMulti / DelAllMulti
//	if_resolvemulti                MultiResolver (Ethernet default)
//	if_setlladdr                   Ifnet.SetLladdr
//	ifa_ifwithaddr / _ifwithnet    Net.IfaWithAddr / Net.IfaWithNet
//	ifaof_ifpforaddr               Ifnet.IfaOfIfpForAddr
//	if_getanyethermac              Net.GetAnyEtherMAC
//	if_ring_count2                 RingCount2
//	ifioctl                        Net.Ioctl (Cred, IoctlCmd, Ifreq)
//	if_data_pcpu / IFNET_STAT_*    Counters per worker, Ifnet.Stats (sums), LegacyStats
//	if_stats_compat                Net.SetStatsCompat
//	struct ifaltq / ifaltq_subque  Ifaltq / Subqueue
//	ifq_set_maxlen                 Ifaltq.SetMaxLen
//	ifq_mapsubq_default / _mask    SubqMap MapDefault / MapWorker (and MapHash)
//	ifsq_classic_*                 Classic (Discipline)
//	ALTQ enqueue/dequeue/request   Discipline.Enqueue / Dequeue / Poll / Purge
//	altq TBR                       Rate, SetRate (token bucket, bit/s and packet/s)
//	ifsq_prepend                   Subqueue.Prepend / PrependBatch
//	ifsq_is_oactive / set / clr    Subqueue.IsOActive / SetOActive / ClrOActive
//	ifsq_get_cpuid / set_cpuid     Subqueue.Owner / SetOwner
//	ifq_dispatch / ifq_handoff     Ifnet.Dispatch / Ifnet.Handoff
//	ifsq_ifstart_try / _dispatch   Subqueue.ifstartTry / ifstartDispatch
//	ifsq_ifstart_schedule          Subqueue.schedule
//	ifsq_ifstart_need_schedule     Subqueue.needSchedule
//	ifsq_devstart / _sched         Subqueue.DevstartLocked / DevstartSched (TxComplete)
//	if_start_rollup                ifstartRollup (registered on every worker)
//	ifq_stage_detach               removeStages (forwarded to every worker by Detach)
//	ifsq_stage_cntmax              Config.StageCntMax, Net.SetStageCntMax
//	max_protohdr                   MaxProtoHdr (40 + 14)
//	if_start / if_ioctl            Driver.Start / Ioctler
//	if_transmit                    Transmitter, Ifnet.Transmit
//	if_input                       IfConfig.Input, Ifnet.Input
//	struct mbuf (m_pkthdr)         Packet (PacketPool)
//	if_clone_attach / _detach      Net.AttachCloner / DetachCloner
//	if_clone_create / _destroy     Net.CloneCreate / CloneDestroy
//	ifc_name2unit / ifc_alloc_unit Name2Unit / UnitAllocator
//	epair softc                    epairSoftc (in-flight refcount, drain entry)
//	epair_clone_match/create/destroy Epair.Match / Create / Destroy
//	epair_transmit / epair_start   epairDriver.Transmit / Start
//	epairinq, epair_drv_flags      epairQueue (one per worker), its oactive flag
//	epair_sintr / _drained         epairQueue.sintr / drainedLocked
//	epair_qflush                   Epair.Qflush
//	net.link.epair.netisr_maxqlen  EpairConfig.NetisrMaxLen
//
// Deviations from the seeds (each tested) are listed in CONFORMANCE.md.
package ifcore
