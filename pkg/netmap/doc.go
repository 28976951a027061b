// Package netmap is a userspace reimplementation of netmap's ring model
// (FreeBSD sys/dev/netmap/netmap.c, API 11; seed 004 and SEEDS-SPEC §3): rings
// of slots shared by a producer and a consumer, handed back and forth with
// head/cur/tail, validated on every sync, over a pool of fixed-size buffers
// addressed by index. Pure Go: no syscalls, no cgo, no unsafe.
//
// # What carries the node's traffic
//
// Every switch port of the node is a GenericAdapter (generic.go) over a
// socket backend, with its krings, sync prologues (sync.go, ring.go), buffer
// pool (pool.go) and notification (adapter.go, waitq.go): that is the path
// of every frame. Pipes (pipe.go), host rings (host.go), monitors
// (monitor.go), registration through Handle and its poll (handle.go,
// memport.go, poll.go) reproduce the seed; the agent's netmap socket
// (internal/appport) registers them for applications on the node, which
// reach their rings through shared memory (pkg/nmport).
//
// # Model
//
// Every adapter (port) has NumTxRings TX and NumRxRings RX hardware krings
// plus one host kring per direction (always created, usable only with
// NAFHostRings). A Kring is the kernel view (hwcur, hwtail, the validated
// rhead/rcur/rtail); its Ring is the user view (head, cur, tail, slots).
// Slots in [head, tail) belong to the user, all others to the kernel side.
// One slot is always kept empty: a TX ring exposes at most n-1 free slots, an
// RX ring holds at most n-1 frames. A Handle (netmap_priv_d) is registered
// on an adapter with a mode (ALL_NIC, SW, NIC_SW, ONE_NIC, PIPE_MASTER/SLAVE)
// and then calls TxSync, RxSync and Poll. Every sync runs the prologue
// (validation of the user's head/cur against the kring), the adapter's
// nm_sync, then finalize; a failed prologue resets the ring to the kernel's
// positions (reinit) and never adopts user values.
//
// # Names
//
//	netmap (C)                     Go
//	struct netmap_slot             Slot (BufIdx, Len, Flags, Ptr)
//	NS_BUF_CHANGED, NS_REPORT,     BufChanged, Report, Forward, NoLearn,
//	NS_FORWARD, NS_NO_LEARN,       Indirect, MoreFrag, PortShift/PortMask
//	NS_INDIRECT, NS_MOREFRAG
//	struct netmap_ring             Ring (Head, Cur, Tail, Flags, Ts, Slot)
//	NR_TIMESTAMP, NR_FORWARD       RingTimestamp, RingForward
//	nm_ring_empty/space/next       Ring.Empty, Ring.Space, Ring.Next
//	struct netmap_kring            Kring
//	nr_hwcur, nr_hwtail            Kring.NrHwcur, Kring.NrHwtail (atomic)
//	rhead, rcur, rtail             Kring.RHead, Kring.RCur, Kring.RTail
//	nkr_num_slots, nkr_hwofs       Kring.NumSlots, Kring.NkrHwofs
//	nkr_slot_flags, nr_kflags      Kring.NkrSlotFlags, Kring.NrKflags
//	NKR_EXCLUSIVE, NKR_PENDINTR    KringExclusive, KringPendIntr
//	q_lock                         Kring.QLock
//	nkr_hwlease, nkr_leases,       Kring.NkrHwlease, Kring.NkrLeases,
//	nkr_lease_idx                  Kring.NkrLeaseIdx
//	nm_kr_space, nm_kr_lease       Kring.Space, Kring.LeaseAcquire
//	lease completion (nm_bdg_flush) Kring.LeaseComplete
//	nm_kr_tryget / nm_kr_put       Kring.TryGet / Kring.Put
//	netmap_disable_ring / enable   Kring.Stop / Kring.Start
//	nm_sync, nm_notify             Kring.Sync, Kring.Notify (Kring.NotifyNow)
//	txkring->pipe                  Kring.Peer
//	nm_txsync_prologue             Kring.TxSyncPrologue
//	nm_rxsync_prologue             Kring.RxSyncPrologue
//	nm_txsync/rxsync_finalize      Kring.TxSyncFinalize / RxSyncFinalize
//	netmap_ring_reinit             Kring.Reinit
//	struct netmap_adapter          BaseAdapter (embed it) + Adapter interface
//	nm_register, nm_txsync,        Adapter.Register, TxSync, RxSync,
//	nm_rxsync, nm_krings_create,   KringsCreate, KringsDelete, Notify,
//	nm_krings_delete, nm_notify,   Config, Dtor
//	nm_config, nm_dtor
//	netmap_krings_create/delete    BaseAdapter.CreateKrings / DeleteKrings
//	netmap_attach_common           BaseAdapter.Init
//	netmap_attach / netmap_detach  Netmap.Attach / Netmap.Detach
//	generic_netmap_attach          Netmap.AttachGeneric, NewGenericAdapter
//	netmap_adapter_get / put       BaseAdapter.Get / Put
//	NAF_*                          NAFHostRings, NAFNative, NAFSkipIntr, NAFBusy, ...
//	si_users, si[t]                BaseAdapter.SIUsers, adapter wait queues
//	netmap_notify                  BaseAdapter.Notify
//	netmap_rx_irq / tx_irq         BaseAdapter.RxIRQ / TxIRQ
//	netmap_reset                   BaseAdapter.Reset
//	netmap_disable/enable_all_rings BaseAdapter.DisableAllRings / EnableAllRings
//	netmap_update_config           Netmap.UpdateConfig
//	netmap_transmit                BaseAdapter.HostTransmit
//	netmap_send_up (if_input)      HostStack.SendUp
//	netmap_txsync_to_host,         host kring Sync (internal)
//	netmap_rxsync_from_host,
//	netmap_sw_to_nic, grab_packets
//	netmap_mem_d buffers, NMB      Pool, Pool.Buf, Ring.Buf, Kring.Buf, SwapBufs
//	(lut, objtotal, UMEM region)   Pool.Total, Pool.Region, Pool.Offset, Pool.IndexOf
//	netmap_extra_alloc/free        Pool.AllocExtra / FreeExtra, Handle.BufsHead
//	/dev/netmap, NMG_LOCK          Netmap (New), Netmap.Lock
//	netmap_priv_d                  Handle (Netmap.Open, Dup, Close)
//	struct nmreq                   Req
//	NIOCGINFO, NIOCREGIF           Netmap.Info, Handle.Register
//	NIOCTXSYNC, NIOCRXSYNC         Handle.TxSync, Handle.RxSync
//	netmap_poll                    Handle.Poll (blocking, ctx), Handle.PollNow
//	netmap_interp_ringid           InterpRingID
//	NR_REG_*, NR_EXCLUSIVE,        RegAllNIC..RegPipeSlave, Exclusive,
//	NR_MONITOR_TX/RX               MonitorTX, MonitorRX
//	NR_TX_RINGS_ONLY/RX_RINGS_ONLY TxRingsOnly, RxRingsOnly
//	nm_tx_pending                  Ring.TxPending
//	NETMAP_NO_TX_POLL, ..._RING    NoTxPoll, SWRing, HWRing, RingMask
//	netmap_vp_adapter              MemPort (and pkg/vale's port)
//	netmap_pipe_adapter            pipe ends (PIPE_MASTER/SLAVE registrations)
//	netmap_monitor_adapter         copy monitors (MonitorTX/MonitorRX registrations)
//	netmap_generic_adapter         GenericAdapter over a GenericBackend
//	netmap_get_bdg_na, bdg_ctl     Netmap.AddLookup, Netmap.SetBridgeCtl
//	nm_bound_var, nm_dump_buf      BoundVar, DumpBuf
//	dev.netmap.fwd/admode/...      Config
//
// # Ownership and concurrency
//
// One goroutine at a time syncs a ring: TryGet (an atomic CAS on the busy
// flag) makes a second syncer fail with EBUSY, never race. The user view
// (Ring.Head/Cur/Tail and the slots the user owns) is plain memory touched
// only by the goroutine that holds the ring: the user between syncs, the
// sync code (called by that same user) during them.
//
// The kernel positions that another goroutine may read or write are atomics:
// NrHwtail is advanced by the producer and NrHwcur by the consumer of a ring
// that is fed from elsewhere (a pipe peer, a VALE/MemPort sender, the host
// stack, a monitored ring). The happens-before edges are:
//
//   - producer: write the slots, then NrHwtail.Store (release); consumer:
//     NrHwtail.Load in its prologue/finalize (acquire), then read the slots;
//   - consumer: finish with the released slots, then NrHwcur.Store; producer:
//     NrHwcur.Load, then overwrite those slots;
//   - concurrent producers (VALE, MemPort, monitors) serialize their
//     reservations on Kring.QLock (leases), copy without it, and publish
//     under it; hwtail only advances over leases whose predecessors are
//     complete;
//   - Notify after a publish wakes waiters whose Poll recorded the wait queue
//     before its last re-check (waitq: a channel closed by the waker).
//
// Buffers: a buffer index is owned by exactly one slot, extra-buffer chain or
// the pool's free list. Swaps (pipes, transparent mode) move indexes between
// slots of rings that share a pool and set BufChanged on both slots. Rings
// return their buffers when their krings are deleted, extra buffers on the
// handle's Close, so Pool.Outstanding returns to zero.
//
// Adapters from other packages embed BaseAdapter, call Init(self, cfg), and
// override callbacks; the core always calls through the Adapter interface.
// Fields of BaseAdapter and Kring document who writes them.
//
// See CONFORMANCE.md for the N-T* behaviours, the seed defects (D-N*) and the
// deviations.
package netmap
