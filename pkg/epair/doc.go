// Package epair is the Linux counterpart of FreeBSD's epair(4) cloner (seed 000,
// SEEDS-SPEC.md §1): it creates a veth pair straddling two network namespaces, the host end
// named epair<n>a and the pod end created as epair<n>b and then renamed to the CNI ifname.
//
// Mapping from the seed (SEEDS-SPEC.md §1.15):
//
//   - epair_clone_create → Cloner.Create: one RTM_NEWLINK with a nested VETH_INFO_PEER that
//     carries IFLA_NET_NS_FD, sent on a netlink handle bound to the host namespace
//     (netlink.NewHandleAt; the calling thread never changes namespace). Both ends appear
//     atomically, so the seed's two-phase params hack and its panic (D-E12) have no
//     counterpart: any later failure rolls the pair back through a cleanup stack.
//   - ifc_alloc_unit (lowest free unit) → the kernel's link table is the allocator: Create
//     lists the host namespace, tries the lowest unit whose epair<n>a is absent, and on EEXIST
//     moves to the next free unit (re-listing when it runs out). Two concurrent callers can
//     never both own a unit because the kernel accepts only one RTM_NEWLINK per name; there
//     is no lock file and nothing to leak when a caller dies. Units run 0..MaxUnit (0x7fff as
//     IF_MAXUNIT); none free → ENOSPC.
//   - MAC 02:00:00:hi:lo:0a/0b → 02:h1:h2:h3:h4:0a (host) and …:0b (pod): the locally
//     administered unicast prefix and the a/b discriminator are kept, bytes 1-4 are taken from
//     SHA-256(node ID, unit) instead of the per-netns ifindex (D-E10), so the addresses are
//     stable across restarts and distinct across nodes. The node ID defaults to
//     /etc/machine-id.
//   - epair_clone_destroy on either end → Cloner.Destroy (host end) or Cloner.DestroyPodEnd
//     (pod end): RTM_DELLINK on either end removes both. A missing link is success (CNI DEL is
//     idempotent); a link that exists but is not one of ours is refused (EINVAL), never deleted.
//   - if_xname bookkeeping in the cloner list → the host link's alias records the owner
//     ("epair-cni:" + owner, e.g. containerID/ifname). List and LookupOwner read it back; this is
//     what the CNI GC and the agent's restart recovery use.
//
// Both ends are left UP after Create (E-T23); the seed leaves them down, which is a
// BSD-ism the CNI does not want. The pod end is renamed while it is still down, since Linux
// refuses to rename an UP link (EBUSY).
package epair
