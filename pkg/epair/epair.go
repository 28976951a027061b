package epair

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/epair-cni/epair/internal/cleanup"
	"github.com/epair-cni/epair/internal/sys"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// Base is the cloner's name prefix (epair_clone_match, 000:471).
	Base = "epair"
	// MaxUnit is the highest unit, as FreeBSD's IF_MAXUNIT.
	MaxUnit = 0x7fff
	// AliasPrefix marks a host link as owned by this plugin; the owner key follows it.
	AliasPrefix = "epair-cni:"
	// maxAlias is IFALIASZ-1 (the kernel keeps a NUL-terminated 256-byte alias).
	maxAlias = 255
	// ifNameMax is IFNAMSIZ-1.
	ifNameMax = 15
	// hostSuffix and podSuffix end the names and the MACs (0x0a / 0x0b, 000:505, 587).
	hostSuffix, podSuffix = 'a', 'b'
)

// Options configure a Cloner. The zero value uses the caller's network namespace as the host
// namespace and /etc/machine-id as the node ID.
type Options struct {
	// HostNetNS is the path of the host namespace (for example /proc/1/ns/net or a test
	// namespace under /var/run/netns). Empty means the namespace of the calling thread.
	HostNetNS string
	// NodeID is the node-unique seed of the MAC scheme. Empty means /etc/machine-id.
	NodeID string
	// MaxUnit caps the unit allocator (0 means MaxUnit). Exceeding it is ENOSPC.
	MaxUnit int
}

// Cloner creates and destroys epair veth pairs. It is safe for concurrent use.
type Cloner struct {
	host    *netlink.Handle
	nodeID  string
	maxUnit int
}

// Request describes one pair to create.
type Request struct {
	// PodNetNS is the path of the pod's network namespace. Required.
	PodNetNS string
	// IfName is the final name of the pod end (the CNI ifname, e.g. eth0). Empty keeps
	// epair<n>b.
	IfName string
	// MTU of both ends; 0 keeps the kernel default.
	MTU int
	// Owner is recorded in the host end's alias (for example "<containerID>/<ifname>").
	// Required: an ownerless link could never be garbage-collected.
	Owner string
	// KeepTxChecksum leaves the pod end's transmit checksum offload on. By default it is
	// turned off: the host end is switched in userspace (AF_XDP/AF_PACKET), which sees
	// frames as raw bytes, so the pod must send complete checksums (see sys.SetTxChecksum).
	KeepTxChecksum bool
}

// Pair is a created (or listed) epair.
type Pair struct {
	Unit      int
	HostName  string // epair<n>a, in the host namespace
	HostIndex int
	HostMAC   net.HardwareAddr
	PodName   string // the pod end's name (IfName); empty when listed from the host side
	PodIndex  int    // the pod end's ifindex in the pod namespace; 0 when listed
	PodMAC    net.HardwareAddr
	MTU       int
	Owner     string
}

// ErrNotOwned is returned (wrapping EINVAL) when asked to destroy a link that is not an epair
// host end created by this package.
var ErrNotOwned = fmt.Errorf("link is not an epair owned by this plugin: %w", syscall.EINVAL)

// New opens a Cloner bound to the host namespace described by opts.
func New(opts Options) (*Cloner, error) {
	maxUnit := opts.MaxUnit
	if maxUnit == 0 {
		maxUnit = MaxUnit
	}
	if maxUnit < 0 || maxUnit > MaxUnit {
		return nil, fmt.Errorf("check options: MaxUnit %d out of range 0..%d: %w", opts.MaxUnit, MaxUnit, syscall.EINVAL)
	}
	nodeID, err := NodeID(opts.NodeID)
	if err != nil {
		return nil, err
	}
	var h *netlink.Handle
	if opts.HostNetNS == "" {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		var ns netns.NsHandle
		ns, err = netns.GetFromPath(opts.HostNetNS)
		if err != nil {
			return nil, fmt.Errorf("open host netns %s: %w", opts.HostNetNS, err)
		}
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		ns.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink handle in host netns %q: %w", opts.HostNetNS, err)
	}
	return &Cloner{host: h, nodeID: nodeID, maxUnit: maxUnit}, nil
}

// Close releases the netlink handle. Links are not touched.
func (c *Cloner) Close() error {
	c.host.Close()
	return nil
}

// HostName returns epair<unit>a, the host end's name.
func HostName(unit int) string { return Base + strconv.Itoa(unit) + string(rune(hostSuffix)) }

// PodName returns epair<unit>b, the name the pod end has before its rename.
func PodName(unit int) string { return Base + strconv.Itoa(unit) + string(rune(podSuffix)) }

// ParseHostName returns the unit of an epair<n>a name, applying the seed's unit rules
// (ifc_name2unit: decimal digits, no leading zero except "0", ≤ MaxUnit).
func ParseHostName(name string) (int, error) {
	if !strings.HasPrefix(name, Base) || !strings.HasSuffix(name, string(rune(hostSuffix))) || len(name) < len(Base)+2 {
		return 0, fmt.Errorf("parse epair name %q: not epair<n>a: %w", name, syscall.EINVAL)
	}
	digits := name[len(Base) : len(name)-1]
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("parse epair name %q: unit %q is not decimal: %w", name, digits, syscall.EINVAL)
		}
	}
	if len(digits) > 1 && digits[0] == '0' {
		return 0, fmt.Errorf("parse epair name %q: unit has a leading zero: %w", name, syscall.EINVAL)
	}
	u, err := strconv.Atoi(digits)
	if err != nil || u > MaxUnit {
		return 0, fmt.Errorf("parse epair name %q: unit out of range 0..%d: %w", name, MaxUnit, syscall.EINVAL)
	}
	return u, nil
}

// MACs returns the host (…:0a) and pod (…:0b) addresses of a unit on the node identified by
// nodeID: 02:h1:h2:h3:h4:0a/0b with h = SHA-256(nodeID, NUL, unit as 4 big-endian bytes).
func MACs(nodeID string, unit int) (host, pod net.HardwareAddr) {
	h := sha256.New()
	h.Write([]byte(nodeID))
	var b [5]byte
	binary.BigEndian.PutUint32(b[1:], uint32(unit))
	h.Write(b[:])
	sum := h.Sum(nil)
	host = net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], 0x0a}
	pod = net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], 0x0b}
	return host, pod
}

// NodeID returns the node-unique seed of the MAC schemes: configured (trimmed) when it is
// set, else the contents of /etc/machine-id.
func NodeID(configured string) (string, error) {
	if id := strings.TrimSpace(configured); id != "" {
		return id, nil
	}
	b, err := os.ReadFile("/etc/machine-id")
	if err != nil {
		return "", fmt.Errorf("read node ID: %w (set Options.NodeID)", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("read node ID: /etc/machine-id is empty (set Options.NodeID): %w", syscall.EINVAL)
	}
	return id, nil
}

// GatewayMAC is the address of switch sw's host port (the pods' gateway) on the node
// identified by nodeID: 02:h1:h2:h3:h4:01 with h = SHA-256(nodeID, NUL, "gateway", NUL, sw).
// It is the same after every agent restart, so the pods' neighbor entries for the gateway
// stay valid, and it never equals a pair's address (those end in 0a and 0b).
func GatewayMAC(nodeID, sw string) net.HardwareAddr {
	h := sha256.New()
	h.Write([]byte(nodeID))
	h.Write([]byte("\x00gateway\x00"))
	h.Write([]byte(sw))
	sum := h.Sum(nil)
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], 0x01}
}

// MACs returns this cloner's addresses for unit.
func (c *Cloner) MACs(unit int) (host, pod net.HardwareAddr) { return MACs(c.nodeID, unit) }

func validIfName(name string) error {
	if len(name) == 0 || len(name) > ifNameMax || name == "." || name == ".." {
		return fmt.Errorf("interface name %q must be 1..%d bytes and not . or ..: %w", name, ifNameMax, syscall.EINVAL)
	}
	if strings.ContainsAny(name, "/: \t\n\x00") {
		return fmt.Errorf("interface name %q contains '/', ':', NUL or whitespace: %w", name, syscall.EINVAL)
	}
	return nil
}

func (r *Request) validate() error {
	if r.PodNetNS == "" {
		return fmt.Errorf("check request: PodNetNS is empty: %w", syscall.EINVAL)
	}
	if r.IfName != "" {
		if err := validIfName(r.IfName); err != nil {
			return fmt.Errorf("check request: IfName: %w", err)
		}
	}
	if r.MTU < 0 || r.MTU > 65535 || (r.MTU != 0 && r.MTU < 68) {
		return fmt.Errorf("check request: MTU %d outside 68..65535 (or 0 for default): %w", r.MTU, syscall.EINVAL)
	}
	if r.Owner == "" || len(AliasPrefix)+len(r.Owner) > maxAlias || strings.ContainsRune(r.Owner, 0) {
		return fmt.Errorf("check request: Owner must be 1..%d bytes without NUL: %w", maxAlias-len(AliasPrefix), syscall.EINVAL)
	}
	return nil
}

// usedUnits lists the units whose host end exists. A dump interrupted by a concurrent change
// is retried; the result only steers the first guess, the kernel arbitrates.
func (c *Cloner) usedUnits() (map[int]bool, error) {
	var (
		links []netlink.Link
		err   error
	)
	links, err = c.linkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list host links: %w", err)
	}
	used := make(map[int]bool, len(links))
	for _, l := range links {
		if u, err := ParseHostName(l.Attrs().Name); err == nil {
			used[u] = true
		}
	}
	return used, nil
}

// Create clones a pair for req: it allocates the lowest free unit, creates epair<n>a in the
// host namespace and epair<n>b in the pod namespace with the MAC scheme, MTU and owner alias,
// renames the pod end to req.IfName and sets both ends up. On any failure nothing is left.
func (c *Cloner) Create(req Request) (*Pair, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	podNS, err := netns.GetFromPath(req.PodNetNS)
	if err != nil {
		return nil, fmt.Errorf("open pod netns %s: %w", req.PodNetNS, err)
	}
	defer podNS.Close()
	pod, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle in pod netns %s: %w", req.PodNetNS, err)
	}
	defer pod.Close()
	if req.IfName != "" {
		if _, err := pod.LinkByName(req.IfName); err == nil {
			return nil, fmt.Errorf("create epair in %s: interface %s already exists: %w", req.PodNetNS, req.IfName, syscall.EEXIST)
		}
	}

	unit, err := c.addVeth(&req, podNS)
	if err != nil {
		return nil, err
	}
	hostName := HostName(unit)
	cl := cleanup.Make(func() error { return c.deleteLink(hostName) })
	defer cl.Clean()

	hostLink, err := c.host.LinkByName(hostName)
	if err != nil {
		return nil, fmt.Errorf("find host end %s: %w", hostName, err)
	}
	// rtnl_create_link ignores IFLA_IFALIAS, so the owner is recorded in a second step.
	// Until then the link is invisible to List (and therefore to GC), never misattributed.
	if err := c.host.LinkSetAlias(hostLink, AliasPrefix+req.Owner); err != nil {
		return nil, fmt.Errorf("set owner alias of %s: %w", hostName, err)
	}
	podLink, err := pod.LinkByName(PodName(unit))
	if err != nil {
		return nil, fmt.Errorf("find pod end %s in %s: %w", PodName(unit), req.PodNetNS, err)
	}
	podName := PodName(unit)
	if req.IfName != "" && req.IfName != podName {
		if err := pod.LinkSetName(podLink, req.IfName); err != nil {
			return nil, fmt.Errorf("rename pod end %s to %s in %s: %w", podName, req.IfName, req.PodNetNS, err)
		}
		podName = req.IfName
	}
	if !req.KeepTxChecksum {
		fd, err := sys.SocketAt(podNS, unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return nil, fmt.Errorf("open socket in pod netns %s: %w", req.PodNetNS, err)
		}
		err = sys.SetTxChecksum(fd, podName, false)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("in pod netns %s: %w", req.PodNetNS, err)
		}
	}
	// The pod's IPv6 link-local address is the EUI-64 of its MAC, whatever the namespace's
	// default: anti-spoofing (internal/dataplane) ties it to the pod by that. Without
	// IPv6 on the link there is nothing to set.
	if err := pod.LinkSetIP6AddrGenMode(podLink, nl.IN6_ADDR_GEN_MODE_EUI64); err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
		return nil, fmt.Errorf("set EUI-64 link-local addressing on pod end %s in %s: %w", podName, req.PodNetNS, err)
	}
	if err := pod.LinkSetUp(podLink); err != nil {
		return nil, fmt.Errorf("set pod end %s up in %s: %w", podName, req.PodNetNS, err)
	}
	if err := c.host.LinkSetUp(hostLink); err != nil {
		return nil, fmt.Errorf("set host end %s up: %w", hostName, err)
	}
	hmac, pmac := c.MACs(unit)
	p := &Pair{
		Unit: unit, HostName: hostName, HostIndex: hostLink.Attrs().Index, HostMAC: hmac,
		PodName: podName, PodIndex: podLink.Attrs().Index, PodMAC: pmac,
		MTU: hostLink.Attrs().MTU, Owner: req.Owner,
	}
	cl.Release()
	return p, nil
}

// addVeth creates the pair on the lowest free unit, retrying on EEXIST.
func (c *Cloner) addVeth(req *Request, podNS netns.NsHandle) (int, error) {
	tried := make(map[int]bool)
	for {
		used, err := c.usedUnits()
		if err != nil {
			return 0, fmt.Errorf("allocate epair unit: %w", err)
		}
		progress := false
		for unit := 0; unit <= c.maxUnit; unit++ {
			if used[unit] || tried[unit] {
				continue
			}
			progress = true
			tried[unit] = true
			hmac, pmac := c.MACs(unit)
			v := &netlink.Veth{
				LinkAttrs: netlink.LinkAttrs{
					Name: HostName(unit), MTU: req.MTU, HardwareAddr: hmac, TxQLen: -1,
					// One queue per end: veth steers a frame to the receive queue numbered
					// like the sender's transmit queue, and an AF_XDP port serves one queue.
					NumTxQueues: 1, NumRxQueues: 1,
				},
				PeerNumTxQueues:  1,
				PeerNumRxQueues:  1,
				PeerName:         PodName(unit),
				PeerHardwareAddr: pmac,
				PeerNamespace:    netlink.NsFd(int(podNS)),
				PeerTxQLen:       -1,
			}
			err := c.host.LinkAdd(v)
			if err == nil {
				return unit, nil
			}
			if !errors.Is(err, syscall.EEXIST) {
				return 0, fmt.Errorf("create veth %s/%s (pod end in %s): %w", HostName(unit), PodName(unit), req.PodNetNS, err)
			}
			// Someone took this unit (or a stale epair<n>b sits in the pod netns): next.
		}
		if !progress {
			return 0, fmt.Errorf("allocate epair unit: all units 0..%d in use: %w", c.maxUnit, syscall.ENOSPC)
		}
	}
}

// Destroy removes the pair whose host end is hostName (both ends go). A missing link is
// success; a link that is not an epair host end owned by this plugin is refused.
func (c *Cloner) Destroy(hostName string) error {
	if err := c.destroyHost(hostName); err != nil {
		return fmt.Errorf("destroy epair %s: %w", hostName, err)
	}
	return nil
}

// deleteLink removes a just-created host end during rollback (it may not carry its alias yet).
func (c *Cloner) deleteLink(hostName string) error {
	l, err := c.host.LinkByName(hostName)
	if err == nil {
		err = c.host.LinkDel(l)
	}
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("roll back %s: %w", hostName, err)
	}
	return nil
}

func (c *Cloner) destroyHost(hostName string) error {
	l, err := c.host.LinkByName(hostName)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("find %s: %w", hostName, err)
	}
	if err := owned(l); err != nil {
		return err
	}
	if err := c.host.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", hostName, err)
	}
	return nil
}

// DestroyPodEnd removes the pair through its pod end ifName inside podNetNS (both ends go).
// A missing namespace or link is success; a link that is not a veth whose peer is one of our
// host ends is refused.
func (c *Cloner) DestroyPodEnd(podNetNS, ifName string) error {
	ns, err := netns.GetFromPath(podNetNS)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("destroy epair %s: open pod netns %s: %w", ifName, podNetNS, err)
	}
	defer ns.Close()
	pod, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("destroy epair %s: open netlink handle in %s: %w", ifName, podNetNS, err)
	}
	defer pod.Close()
	l, err := pod.LinkByName(ifName)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("destroy epair %s: find it in %s: %w", ifName, podNetNS, err)
	}
	v, ok := l.(*netlink.Veth)
	if !ok {
		return fmt.Errorf("destroy epair %s in %s: %s is a %s: %w", ifName, podNetNS, ifName, l.Type(), ErrNotOwned)
	}
	// IFLA_LINK of a veth is its peer's ifindex, in the host namespace for our pairs.
	peer := v.Attrs().ParentIndex
	if hl, err := c.host.LinkByIndex(peer); err == nil {
		if err := owned(hl); err != nil {
			return fmt.Errorf("destroy epair %s in %s: peer %s: %w", ifName, podNetNS, hl.Attrs().Name, err)
		}
	} else if !isNotFound(err) {
		return fmt.Errorf("destroy epair %s in %s: find peer %d: %w", ifName, podNetNS, peer, err)
	} else {
		return fmt.Errorf("destroy epair %s in %s: peer index %d is not in the host netns: %w", ifName, podNetNS, peer, ErrNotOwned)
	}
	if err := pod.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("destroy epair %s: delete it in %s: %w", ifName, podNetNS, err)
	}
	return nil
}

// owned reports whether l is an epair host end created by this package.
func owned(l netlink.Link) error {
	a := l.Attrs()
	if _, err := ParseHostName(a.Name); err != nil || l.Type() != "veth" || !strings.HasPrefix(a.Alias, AliasPrefix) {
		return fmt.Errorf("%s (type %s, alias %q): %w", a.Name, l.Type(), a.Alias, ErrNotOwned)
	}
	return nil
}

// List returns every epair host end owned by this plugin in the host namespace, by unit.
// PodName and PodIndex are empty: the pod end lives in a namespace the host cannot name.
func (c *Cloner) List() ([]Pair, error) {
	var (
		links []netlink.Link
		err   error
	)
	links, err = c.linkList()
	if err != nil {
		return nil, fmt.Errorf("list epairs: %w", err)
	}
	var out []Pair
	for _, l := range links {
		if owned(l) != nil {
			continue
		}
		a := l.Attrs()
		unit, _ := ParseHostName(a.Name)
		_, pmac := c.MACs(unit)
		out = append(out, Pair{
			Unit: unit, HostName: a.Name, HostIndex: a.Index, HostMAC: a.HardwareAddr,
			PodMAC: pmac, MTU: a.MTU, Owner: strings.TrimPrefix(a.Alias, AliasPrefix),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unit < out[j].Unit })
	return out, nil
}

// SetHostMTU sets the MTU of the host end hostName (an epair host end owned by this
// plugin); the pod end's is set in the pod's namespace by whoever configures it.
func (c *Cloner) SetHostMTU(hostName string, mtu int) error {
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("set MTU of %s: %d outside 68..65535: %w", hostName, mtu, syscall.EINVAL)
	}
	l, err := c.host.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("set MTU of %s: %w", hostName, err)
	}
	if err := owned(l); err != nil {
		return fmt.Errorf("set MTU of %s: %w", hostName, err)
	}
	if err := c.host.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", mtu, hostName, err)
	}
	return nil
}

// LookupOwner returns the pair recorded with owner, or an error wrapping ENXIO.
func (c *Cloner) LookupOwner(owner string) (*Pair, error) {
	pairs, err := c.List()
	if err != nil {
		return nil, err
	}
	for i := range pairs {
		if pairs[i].Owner == owner {
			return &pairs[i], nil
		}
	}
	return nil, fmt.Errorf("look up epair of owner %q: %w", owner, syscall.ENXIO)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT)
}

// ErrMismatch is wrapped by Check's errors about a pair that exists but is not as recorded.
var ErrMismatch = errors.New("epair does not match its record")

// Check verifies the pair recorded for owner (CNI CHECK, E-T23): the host end exists, is up
// and carries the scheme's MAC; the pod end ifName exists in podNetNS, is up, is the host
// end's veth peer and carries the scheme's MAC. A missing end is an error wrapping ENXIO; a
// wrong MAC, peer or state one wrapping ErrMismatch.
func (c *Cloner) Check(owner, podNetNS, ifName string) (*Pair, error) {
	p, err := c.LookupOwner(owner)
	if err != nil {
		return nil, fmt.Errorf("check epair: %w", err)
	}
	hl, err := c.host.LinkByName(p.HostName)
	if err != nil {
		return nil, fmt.Errorf("check epair %s: host end: %w", p.HostName, syscall.ENXIO)
	}
	hmac, pmac := c.MACs(p.Unit)
	if a := hl.Attrs(); a.HardwareAddr.String() != hmac.String() {
		return nil, fmt.Errorf("check epair %s: host MAC %s, want %s: %w", p.HostName, a.HardwareAddr, hmac, ErrMismatch)
	} else if a.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("check epair %s: host end is down: %w", p.HostName, ErrMismatch)
	}
	ns, err := netns.GetFromPath(podNetNS)
	if err != nil {
		return nil, fmt.Errorf("check epair %s: open pod netns %s: %w", p.HostName, podNetNS, err)
	}
	defer ns.Close()
	pod, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("check epair %s: open netlink handle in %s: %w", p.HostName, podNetNS, err)
	}
	defer pod.Close()
	pl, err := pod.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("check epair %s: pod end %s missing in %s: %w", p.HostName, ifName, podNetNS, syscall.ENXIO)
	}
	a := pl.Attrs()
	switch {
	case pl.Type() != "veth":
		return nil, fmt.Errorf("check epair %s: pod end %s in %s is a %s: %w", p.HostName, ifName, podNetNS, pl.Type(), ErrMismatch)
	case a.ParentIndex != hl.Attrs().Index:
		return nil, fmt.Errorf("check epair %s: pod end %s in %s is not its peer (peer index %d, host index %d): %w", p.HostName, ifName, podNetNS, a.ParentIndex, hl.Attrs().Index, ErrMismatch)
	case a.HardwareAddr.String() != pmac.String():
		return nil, fmt.Errorf("check epair %s: pod end %s MAC %s, want %s: %w", p.HostName, ifName, a.HardwareAddr, pmac, ErrMismatch)
	case a.Flags&net.FlagUp == 0:
		return nil, fmt.Errorf("check epair %s: pod end %s in %s is down: %w", p.HostName, ifName, podNetNS, ErrMismatch)
	}
	p.PodName, p.PodIndex = ifName, a.Index
	return p, nil
}
