package sys

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	ethtoolGTXCSUM = 0x00000016 // ETHTOOL_GTXCSUM
	ethtoolSTXCSUM = 0x00000017 // ETHTOOL_STXCSUM
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte // pad to sizeof(struct ifreq)
}

func ethtool(fd int, ifname string, v *ethtoolValue) error {
	var ifr ifreqData
	if len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long: %w", ifname, unix.EINVAL)
	}
	copy(ifr.name[:], ifname)
	ifr.data = uintptr(unsafe.Pointer(v))
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(v)
	if e != 0 {
		return e
	}
	return nil
}

// SetTxChecksum turns transmit checksum offload of ifname on or off (ETHTOOL_STXCSUM), using
// fd, a datagram socket in the interface's namespace.
//
// Why it matters: a veth advertises checksum offload, so the stack hands it frames whose
// L4 checksum is only partial (CHECKSUM_PARTIAL). Such a frame crossing a userspace switch
// as raw bytes (AF_XDP, AF_PACKET) arrives with a wrong checksum and is dropped. The
// sending end (the pod's veth end) must therefore compute checksums in software.
func SetTxChecksum(fd int, ifname string, on bool) error {
	v := ethtoolValue{cmd: ethtoolSTXCSUM}
	if on {
		v.data = 1
	}
	if err := ethtool(fd, ifname, &v); err != nil {
		return fmt.Errorf("set tx checksum offload of %s: %w", ifname, err)
	}
	return nil
}

// TxChecksum reports whether transmit checksum offload of ifname is on (ETHTOOL_GTXCSUM).
func TxChecksum(fd int, ifname string) (bool, error) {
	v := ethtoolValue{cmd: ethtoolGTXCSUM}
	if err := ethtool(fd, ifname, &v); err != nil {
		return false, fmt.Errorf("get tx checksum offload of %s: %w", ifname, err)
	}
	return v.data != 0, nil
}

// SocketAt opens a socket inside the namespace ns. Like netlink.NewHandleAt, it switches a
// locked thread into ns only for the socket(2) call and back; the socket stays in ns.
func SocketAt(ns netns.NsHandle, domain, typ, proto int) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return -1, fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return -1, fmt.Errorf("enter netns: %w", err)
	}
	fd, serr := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime then discards it instead of reusing a thread
		// stuck in a foreign namespace.
		runtime.LockOSThread()
		if serr == nil {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("restore netns: %w", err)
	}
	if serr != nil {
		return -1, fmt.Errorf("create socket: %w", serr)
	}
	return fd, nil
}

// IfIndex returns the index of interface name in the network namespace of socket fd
// (SIOCGIFINDEX; fd < 0: a throwaway socket in the calling thread's namespace, for callers
// whose socket family takes no ioctls, like AF_XDP): one lookup by name, where
// net.InterfaceByName dumps every link of the namespace (megabytes of garbage per call
// with hundreds of pods). A missing interface is an error wrapping ENODEV.
func IfIndex(fd int, name string) (int, error) {
	if fd < 0 {
		tmp, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("interface %q: socket for SIOCGIFINDEX: %w", name, err)
		}
		defer unix.Close(tmp)
		fd = tmp
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, fmt.Errorf("interface %q: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("interface %q: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}
