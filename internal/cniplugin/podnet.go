package cniplugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/epair-cni/epair/internal/sys"
	"golang.org/x/sys/unix"
)

// podRoute is a route to install in the pod; an invalid GW means on-link.
type podRoute struct {
	Dst netip.Prefix
	GW  netip.Addr
}

// podHandle opens a netlink handle bound to the pod's namespace; the calling thread never
// changes namespace. A missing or unusable namespace wraps ErrInvalidNetNS.
func podHandle(nsPath string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w: %w", nsPath, ErrInvalidNetNS, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle in netns %s: %w: %w", nsPath, ErrInvalidNetNS, err)
	}
	return h, nil
}

// configurePod sets the pod interface's MTU and MAC (if mac is non-nil), adds the
// addresses (IPv6 with IFA_F_NODAD, so they are usable at once instead of after the DAD
// delay) and the routes, and with offload turns transmit checksum offload (and with it TSO)
// back on, which pkg/epair turned off. The link was created UP by pkg/epair; a MAC change
// takes it down and up again. Nothing needs undoing here: deleting the link (the caller's
// cleanup) removes it all.
func configurePod(nsPath, ifName string, mac net.HardwareAddr, mtu int, offload bool, addrs []netip.Prefix, routes []podRoute) error {
	if offload {
		if err := setTxChecksum(nsPath, ifName, true); err != nil {
			return err
		}
	}
	h, err := podHandle(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifName, nsPath, err)
	}
	if mtu != 0 && link.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, ifName, err)
		}
	}
	if mac != nil && !slices.Equal(link.Attrs().HardwareAddr, mac) {
		if err := h.LinkSetDown(link); err != nil {
			return fmt.Errorf("set %s down for the MAC change: %w", ifName, err)
		}
		if err := h.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("set MAC %s on %s: %w", mac, ifName, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", ifName, err)
		}
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: prefixToIPNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("add address %s to %s: %w", p, ifName, err)
		}
	}
	for _, r := range routes {
		rt := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixToIPNet(r.Dst)}
		if r.GW.IsValid() {
			rt.Gw = net.IP(r.GW.AsSlice())
		} else {
			rt.Scope = netlink.SCOPE_LINK
		}
		if err := h.RouteReplace(rt); err != nil {
			return fmt.Errorf("add route %s via %v dev %s: %w", r.Dst, r.GW, ifName, err)
		}
	}
	return nil
}

// podState is what CHECK compares against the expected result.
type podState struct {
	up     bool
	mtu    int
	mac    net.HardwareAddr
	addrs  []netip.Prefix
	routes []podRoute
}

// inspectPod reads ifName's state in the pod namespace. A missing link wraps ENODEV.
func inspectPod(nsPath, ifName string) (*podState, error) {
	h, err := podHandle(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", ifName, nsPath, syscall.ENODEV)
	}
	a := link.Attrs()
	st := &podState{up: a.Flags&net.FlagUp != 0, mtu: a.MTU, mac: a.HardwareAddr}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", ifName, err)
	}
	for _, ad := range addrs {
		if p, ok := ipNetToPrefix(ad.IPNet); ok {
			st.addrs = append(st.addrs, p)
		}
	}
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", ifName, err)
	}
	for _, r := range routes {
		var pr podRoute
		if r.Dst == nil {
			if r.Gw == nil {
				continue
			}
			// The kernel reports default routes with a nil Dst.
			if r.Gw.To4() != nil {
				pr.Dst = netip.MustParsePrefix("0.0.0.0/0")
			} else {
				pr.Dst = netip.MustParsePrefix("::/0")
			}
		} else if p, ok := ipNetToPrefix(r.Dst); ok {
			pr.Dst = p
		} else {
			continue
		}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			pr.GW = gw.Unmap()
		}
		st.routes = append(st.routes, pr)
	}
	return st, nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 || (a.Is4() && bits != 32 && bits != 128) {
		return netip.Prefix{}, false
	}
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}

// netnsGone reports whether the namespace path no longer exists.
func netnsGone(nsPath string) bool {
	_, err := os.Stat(nsPath)
	return errors.Is(err, os.ErrNotExist)
}

// checkPodNetNS makes sure nsPath is a network namespace (not a regular file, a directory
// or another kind of namespace: ErrInvalidNetNS) and not the one the calling thread runs
// in, the node's own (ErrInvalidArgs: an ADD there would configure the node and replace its
// default route). It changes nothing.
func checkPodNetNS(nsPath string) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w: %w", nsPath, ErrInvalidNetNS, err)
	}
	defer ns.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(ns), &fs); err != nil {
		return fmt.Errorf("netns %s: statfs: %w: %w", nsPath, ErrInvalidNetNS, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		kind := "not a namespace file"
		if fi, err := os.Stat(nsPath); err == nil {
			switch {
			case fi.IsDir():
				kind = "a directory"
			case fi.Mode().IsRegular():
				kind = "a regular file"
			}
		}
		return fmt.Errorf("netns %s is not a network namespace (%s): %w", nsPath, kind, ErrInvalidNetNS)
	}
	if t, err := unix.IoctlRetInt(int(ns), unix.NS_GET_NSTYPE); err == nil && t != unix.CLONE_NEWNET {
		return fmt.Errorf("netns %s is not a network namespace (another kind of namespace): %w", nsPath, ErrInvalidNetNS)
	}
	own, err := isOwnNetNS(ns)
	if err != nil {
		return fmt.Errorf("netns %s: %w", nsPath, err)
	}
	if own {
		return fieldErr(ErrInvalidArgs, "CNI_NETNS", nsPath,
			"is the plugin's own (the node's) network namespace, not a pod's: refusing to configure it", "a pod's network namespace")
	}
	return nil
}

// isOwnNetNS reports whether ns is the calling thread's network namespace (same device and
// inode).
func isOwnNetNS(ns netns.NsHandle) (bool, error) {
	self, err := netns.Get()
	if err != nil {
		return false, fmt.Errorf("open own netns: %w", err)
	}
	defer self.Close()
	return ns.Equal(self), nil
}

// setTxChecksum turns transmit checksum offload of ifName in the pod's namespace on or off.
func setTxChecksum(nsPath, ifName string, on bool) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w: %w", nsPath, ErrInvalidNetNS, err)
	}
	defer ns.Close()
	fd, err := sys.SocketAt(ns, unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("socket in netns %s: %w", nsPath, err)
	}
	defer unix.Close(fd)
	if err := sys.SetTxChecksum(fd, ifName, on); err != nil {
		return fmt.Errorf("in netns %s: %w", nsPath, err)
	}
	return nil
}
