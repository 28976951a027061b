// Package dataplane is a node's packet path: the single owner of the VALE
// switches (pkg/vale), their TAP host ports (pkg/hostport) and the pods'
// ports (pod host-end veths opened through pkg/linkport), with an ifcore
// output queue (pkg/ifcore) in front of every pod port. The node agent owns
// one Dataplane; the Kubernetes controller changes port policies through it.
//
// # Model
//
// New creates every configured switch with vale.Registry.CreateSwitch and
// one host port per switch: a TAP device carrying the pod gateway
// addresses, up, with the pod CIDRs routed to it, wrapped as a netmap
// generic adapter and attached (bwrap) as the port "<switch>:<tap>". Pods
// reach the node through it, and everything else through the node's
// routing (and, with Config.Masquerade, the nftables table "epair").
//
// Switches can also be added and removed while the dataplane runs (a
// VirtualSwitch created or deleted without an agent restart), up to
// MaxSwitches at once. AddSwitch checks the switch as Config.Validate would
// and against the running ones, and sets it up as New does; RemoveSwitch
// takes the switch away from the other methods at once, detaches its ports
// (their sockets close, the pod links stay), waits for the attaches and
// detaches of its ports in flight (an attach that would publish a port on
// it fails with ErrNoSwitch instead), closes its TAP (addresses and routes
// go with it) and destroys it. With Config.Masquerade both rewrite the
// rules for the switches that run afterwards. Switch changes are serialised with each other on a mutex
// of their own, so attaches and detaches on the other switches go on
// meanwhile. An AttachRequest without Switch goes to the first switch in
// configuration order (then order of AddSwitch) that still runs.
//
// AttachPort opens a pod's host link (epair<n>a) with linkport (AF_XDP by
// default, AF_PACKET as fallback or when forced), wraps it as a generic
// adapter, attaches it to the switch as "<switch>:<hostIfName>" and installs
// the port's output queue as the port's vale.Deliverer. Ports are keyed by
// owner and link: the same request again is a no-op.
//
// Only the bookkeeping is serialised: AttachPort claims the link and the
// owner under the dataplane's mutex, sets the port up (socket, UMEM, XDP
// program, adapter, output queue, bwrap) without it and takes it again to
// publish the port; DetachPort unlinks and claims the port under it, takes
// it out of the switch and stops its output queue without it, and returns:
// the socket (XDP program detach, ring unmapping: ~20 ms of RCU grace
// periods) closes on a goroutine that holds the claim until it is done. An operation on a claimed link or owner waits for
// the claim, so a link's new socket never races its old one, and Close
// waits for every claim. Attaches and detaches of different pods run in
// parallel (a burst of CNI ADDs does not queue behind one lock).
//
// A switch with SwitchConfig.Offload carries a 10-byte virtio-net header on
// every frame of every port: pod links are AF_PACKET with PACKET_VNET_HDR
// receiving through a TPACKET_V2 ring of small slots (no XDP, nothing to
// upgrade; short frames and looks cost no system call), the TAP host port has
// IFF_VNET_HDR, the pods keep TSO and checksum offload, and TCP super-frames
// of up to 64 KB cross the switch as netmap slot chains. The output queues
// keep super-frames in 64 KiB buffers (OffloadBigBufs per port, made on
// first use); anti-spoofing and the queue's hash and multicast checks look
// past the header. Setting a receive ring up waits for an RCU grace period
// (10–40 ms on a busy node), so the dataplane keeps Config.RingPool sockets
// prepared in its namespace (linkport.RingPool, started with the first
// offload switch) and AttachPort binds one; when a burst has emptied the
// pool, the port sets its ring up itself.
//
// With backend auto or xdp, AttachPort does not attach AF_XDP itself unless
// Config.DirectOpen is set: the port starts on a ring-less AF_PACKET socket
// (linkport FastStart, ~0.06 ms to open) and a single upgrader goroutine
// moves it to AF_XDP later (linkport.Upgradable.Upgrade: no frame lost or
// duplicated), one port at a time, once no attach or detach has started for
// UpgradeQuiet (50 ms) or after UpgradeMaxDelay (2 s) at the latest. The
// XDP attach costs 10–40 ms under the kernel's RTNL lock, which every CNI
// ADD and DEL also takes: done inside AttachPort it was most of a pod's ADD
// latency. PortInfo.Backend shows where a port is (af_packet_ringless
// before its upgrade, or for good with the reason in Fallback when AF_XDP
// cannot serve the link); SettleUpgrades waits for the queue to drain.
//
// Before a port opens, the host end of the pod's veth is taken out of the node's IPv4 stack
// (arp_ignore 8, forwarding 0, over netlink): a ring-less socket lets the pod's frames reach
// the stack too, and the kernel would otherwise answer the pod's ARP for its gateway with
// the host end's MAC, which nothing switches once the port is on AF_XDP.
//
// # Packet path
//
//	pod veth ─RX─▶ backend (AF_XDP/AF_PACKET) ─▶ generic adapter RX ring
//	   ▲               netpoller wait, "interrupt"      │ bwrap worker
//	   │                                                 ▼
//	   │                                 switch: gather, lookup, pass two
//	   │                                                 │ Deliver
//	   └─TX── backend TxBatch ◀── if_start ◀── ifaltq (discipline, TBR)
//
// Per port, the generic adapter's RX goroutine parks in the Go netpoller
// until the link has frames and then wakes the port's bwrap worker, which
// drains the RX ring in batches of at most the switch's BatchSize and runs
// the two-pass forwarding. Pass two hands each destination's frames to its
// output queue (outq.Deliver): the frames are copied into the port's
// buffers, enqueued on the ifcore subqueue (discipline, queue length,
// priority class of the source port) and if_start runs once per batch, on
// the delivering goroutine when the subqueue's serializer is free, or on
// the subqueue's owner netisr worker (ifcore.Workers, one per CPU) when it
// is contended or when the token bucket's callout restarts it. if_start
// hands up to 64 frames at a time to the backend; when the link's TX queue
// is full the rest goes back to the head of the queue, OACTIVE is set, and
// the port's TX goroutine waits in the netpoller for room and restarts it.
// A full queue, ring or buffer pool is a counted drop; nothing on the path
// blocks on a destination, and nothing polls: an idle dataplane costs no
// CPU.
//
// Before the switch, the kernel drops what a pod port's socket cannot hold
// when the pod sends faster than the switch drains the link (the AF_XDP RX
// ring or the AF_PACKET ring or receive queue is full). PortInfo.KernelDrops
// counts those frames from the socket's own counters (linkport.KernelDrops,
// read with each PortInfo, summed over a FastStart port's sockets so it never
// goes backwards across the upgrade), under the drop reason ReasonSocketFull
// ("socket-full"); they are not in the switch's Counters, and no capture or
// trace can show them, since the switch never had them.
//
// Frames from the host port to a pod go through the pod's output queue like
// any other; frames to the host port go straight into the TAP adapter's TX
// ring (the host stack has its own queueing).
//
// # Port security
//
// Every switch's lookup is a guardLookup in front of the switch's learning
// lookup, and every port is admitted to it by the dataplane (frames from a
// port it has not admitted, one still being attached, are dropped). The host
// port learns; pod ports never do: attach installs the pod's MAC
// (AttachRequest.PodMAC, required) as a static FDB entry, refuses a MAC that
// another port already has (EBUSY), and marks the port known-only, so unknown
// unicast goes to the host port and never to a pod. The host port's MAC (the
// gateway's, stable when the configuration sets it) is static too. By default
// a pod port also has anti-spoofing (frames with another Ethernet source, IP
// source, ARP sender or Neighbor Discovery claim than the pod's identity,
// AttachRequest.PodMAC and PodIPs, are refused; PortPolicy.AllowSpoofing opts
// out) and storm control (PortPolicy.BroadcastRate, MulticastRate). Refused
// frames are marked vale.DstRefused (the switch's "refused" drops) and
// counted in PortInfo.Refused by reason. SetPortPolicy swaps a port's
// security from the next batch on. AnnounceGateways sends a gratuitous ARP
// and an unsolicited NA for every gateway through the host port (after a
// restart). A pod's IPv6 router solicitations, MLD reports and MLD done
// messages go to the host port alone instead of every port (only the node's
// router acts on them; flooded, the retransmissions of 250 idle pods were most
// of an idle switch's work). The rules are in spoof.go.
//
// # Mirror
//
// PortPolicy.Mirror has the switch (vale.Switch.SetMirror) copy a pod
// port's frames to a monitor port of the same switch, named by its port
// name ("mon0" for "vale0:mon0"): RX copies in the forwarding pass of the
// pod's own batches (every frame received from the pod), TX copies in pass
// two after the pod's output queue accepted frames. The monitor is an
// ordinary switch port (a VALE port a capture tool opens, or any other
// port): it also receives its share of floods. An absent, closed or full
// monitor is a counted drop, never a wait.
//
// # Capture and trace
//
// Capture taps a port (vale.Switch.AddTap) into a fixed set of buffers a reader drains;
// frames the reader is too slow for are counted as lost, never waited for. Trace builds a
// frame from a description (resolving the destination as the pod would: the pod or
// gateway holding the address, the gateway off the pod network, a broadcast neighbour
// request when nobody holds it) and runs it through the switch's own forwarding code
// without sending it (vale.Switch.Trace): port security's decision with the same checks
// (storm tokens read, not taken), the FDB lookup, and for each destination its output
// queue's admission (the discipline's own decision, the queue's length and token bucket,
// without queueing). For a frame the host port takes, the kernel answers how it would route
// it (an RTM_GETROUTE as if received on the TAP) and Trace says whether masquerading
// applies.
//
// # Goroutines
//
// Per pod port: the adapter's RX and TX waiters (pkg/netmap), the bwrap
// worker (pkg/vale) and the output queue's TX waiter; per host port the
// first three; per Dataplane the ifcore netisr workers and the FDB ager;
// per detached port, until its socket is closed, one closer. Close (and
// DetachPort for one port, RemoveSwitch for a switch's) stops each of them
// and waits (Close also waits for the closers, for attaches in flight and
// for switch changes in flight; RemoveSwitch for its switch's closers and
// attaches).
//
// # Restart
//
// Close(CloseOptions{}) leaves the pods' links and the nftables table in
// place (an agent restart); the TAPs and sockets go with the process anyway
// (the XDP programs are bpf_links, released when their socket closes or the
// process dies). After a restart, Adopt re-attaches a running pod's link
// after checking that its alias records the owner, without touching the
// link. Close(CloseOptions{Uninstall: true}) also removes the table.
//
// # Links that go away
//
// The Dataplane follows link deletions in its namespace (a netlink
// subscription owned by it): when a pod's host link disappears under an
// attached port (the pod was deleted before the agent released it), the
// port is detached at once, so no socket keeps erroring on a dead link;
// a later DetachPort succeeds (AutoDetached counts these).
//
// # Masquerade
//
// With Config.Masquerade the table "inet epair" masquerades traffic from
// the pod CIDRs that leaves through any other interface than a host port,
// and DNATed pod traffic that goes back into the pod network through a host
// port (hairpin: a pod reaching itself through a service). It uses the nft
// binary through sigs.k8s.io/knftables (see nft.go for why). Every
// install replaces the chain's rules whole (one transaction), so AddSwitch
// and RemoveSwitch rewrite them for the switches that run afterwards.
//
// # Peers
//
// SetPeers (and a resync every PeerResync) programs the other nodes of the pod network:
// each peer's pod CIDRs are routed to its address (routed mode, "proto 77" routes) or into
// the kernel VXLAN device toward it (vxlan.go), not masqueraded, and whatever no peer
// wants any more is removed; a resync writes only what differs from the kernel's state.
// With Config.Masquerade the table "inet epair" also counts each peer's traffic
// (peercount.go): a named counter per peer and direction ("peer-tx-<peer>",
// "peer-rx-<peer>"), interval maps from the peers' pod CIDRs to them ("peers-tx4",
// "peers-tx6", "peers-rx4", "peers-rx6"), and two base chains with one lookup per family:
// "peers-out" at postrouting by destination (what leaves the node for a peer's pods) and
// "peers-in" at prerouting by source (what arrives from them). The resync keeps them in
// step with the peers in one nft transaction of the differences from what it last wrote
// (re-reading the table when it cannot know: at start, after a failed write, every 30 s,
// or when a read missed a counter); a peer dropped loses its counters, no peers means no
// hook, and Close(CloseOptions{Uninstall: true}) removes them with the table. Peers reads
// them (PeerState.Counted, PeerCounters) with one `nft -j list counters`.
//
// # Deviations
//
//   - Frames to the host port bypass the output queues: they go straight
//     into the TAP adapter's TX ring (the host stack queues on its own).
//   - A policy without a burst gets DefaultBurst (100 ms) of its rate, not
//     ifcore's 10 ms: a shorter bucket loses tokens whenever the draining
//     goroutine waits for a CPU on a loaded node.
//   - The hairpin rule masquerades every DNATed pod flow that re-enters the
//     pod network, not only a pod reaching itself (nftables cannot compare
//     the source with the destination address); kube-proxy's own
//     masquerade marks are unaffected.
//   - Output queue buffers are allocated on first use (up to the queue
//     length plus two batches) and then recycled, so a port that never
//     queues much holds little memory.
//
// # Names
//
//	DragonFly / VALE                 Go
//	ifnet + ifaltq of a port         outq (ifcore.Ifnet, Subqueue 0)
//	if_start                         outq.Start (ifcore.Driver)
//	ifsq_devstart / _sched           outq.kick
//	TX completion, ifsq_clr_oactive  outq.txWait → Subqueue.TxComplete
//	netisr threads                   ifcore.Workers
//	bwrap, host rings                vale bwrap; the TAP replaces host rings
package dataplane
