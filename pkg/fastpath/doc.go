// Package fastpath is the kernel fast path for a switch's known-unicast traffic between
// pods and between pods and the node: a tc program on each pod port's host-side veth
// hands a frame straight to the destination pod's interface (bpf_redirect_peer), or into
// the switch's host port (see below), as the kernel would through a bridge but without
// the bridge, and a socket filter keeps those frames away from the switch's packet socket
// on the same interface. Everything else (broadcast, multicast, ARP and
// neighbour discovery, DHCP, unknown destinations, spoofed sources, ports whose frames
// the switch must see for a policy, a mirror or a capture) still crosses the userspace
// switch. internal/dataplane puts every pod port of an offload switch on it when its
// Config.FastPath is set (the agent's fastPath: on where the kernel can, by default).
//
// # Which frames
//
// A frame takes the fast path when all of these hold (decide in prog.go; wantFast in the
// tests is the same rule in Go, and FuzzDecide holds the two programs and the rule to
// each other):
//   - it came in on the host-side interface of a port whose Source is on;
//   - its destination MAC is unicast and is the MAC of a port of the same switch whose
//     Dest is on, on another interface (hairpin stays with the switch);
//   - its source MAC is the port's;
//   - it is IPv4 from the port's IPv4 address, or IPv6 from the port's IPv6 address with
//     TCP, UDP or an ICMPv6 echo request or reply as the next header (no extension
//     headers, no other ICMPv6: neighbour discovery is the switch's to check);
//   - the headers it reads are in the frame's linear data.
//
// GSO super-frames pass whole, so pods keep TSO and checksum offload end to end.
//
// # The host port
//
// A switch's host port (its TAP, Port.Host) takes part too. As a destination, its entry
// carries dfIngress: a pod's frame to the gateway MAC (to the node, or routed by it: to
// another node, to a Service, out of the cluster) is redirected into the TAP's ingress,
// so the node's stack receives it on the TAP exactly as if the switch had written it
// there. As a source, a third program at the TAP's egress redirects the frames the
// node's stack sends out of it to a pod of the switch whose Dest is on, to the egress of
// the pod's veth, before the TAP's reader (the switch) would get them; no socket sees
// them first, so that direction needs no filter. The node's frames are not checked for
// spoofing, as the switch does not check them.
//
// # Two deciders, one decision
//
// A packet socket sees a frame before the tc ingress hook does (the kernel delivers to
// its taps first), so two programs decide about each frame: the socket filter (drop it
// for the switch, or keep it) and the tc program (redirect it, or let it go on to the
// stack, which drops it on a host-side veth). They run the same instructions over the
// same entries, so they agree, except while an entry changes between the two looks.
// Each program therefore reads its own copy of the maps (a view), and the copies are
// changed in an order that can duplicate a frame but never lose one:
//   - publishing (more frames fast): the tc view, an RCU grace period, the filter's view;
//   - withdrawing (fewer frames fast): the filter's view, a grace period, the tc view.
//
// A frame's two looks happen within one RCU read-side section (__netif_receive_skb), so
// after the grace period no frame can have read the old filter view and the new tc view
// in the wrong combination: a frame the filter leaves to the fast path is one the tc
// program moves. During the grace period a frame can be both moved and kept, so the
// destination may receive it twice (TestNoLossWhileChanging counts both). The grace
// period is membarrier(MEMBARRIER_CMD_GLOBAL), which is synchronize_rcu().
//
// # Counters
//
// A per-CPU array holds, per port, the frames and bytes the fast path moved from the
// pod (In) and to it (Out); a super-frame counts once with all its bytes. Stats sums
// them.
//
// # Requirements and lifetime
//
// tcx links (Linux 6.6), bpf_redirect_peer (5.10), CAP_BPF and CAP_NET_ADMIN. The tc
// program is attached with a BPF link per interface, owned by this process: when the
// process exits, the programs go with it and every frame goes back to the switch. Set
// and Remove act on interfaces of the network namespace of the calling thread.
package fastpath
