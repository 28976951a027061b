package hostport

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/epair-cni/epair/internal/cleanup"
	"github.com/epair-cni/epair/internal/portcore"
	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config describes the host port.
type Config struct {
	// Name of the TAP device (1..15 bytes), for example "epairhost0".
	Name string
	// MTU of the device; 0 keeps the kernel default (1500).
	MTU int
	// MAC of the device; nil lets the kernel pick a random one.
	MAC net.HardwareAddr
	// Addrs are assigned to the device (the pod gateway addresses, e.g. 10.244.1.1/24).
	Addrs []netip.Prefix
	// TXQueueLen is the device's transmit queue length; 0 keeps the default (1000).
	TXQueueLen int
	// VnetHdr opens the TAP in offload mode (IFF_VNET_HDR, TUNSETVNETHDRSZ
	// 10, TUNSETOFFLOAD checksum + TSO4/6 + ECN): every frame read or
	// written starts with a 10-byte struct virtio_net_hdr, and the host
	// stack hands over (and takes) unsegmented TCP super-frames up to
	// MaxVnetFrame bytes with partial checksums.
	VnetHdr bool
}

// Offload mode sizes.
const (
	// VnetHdrLen is sizeof(struct virtio_net_hdr).
	VnetHdrLen = 10
	// MaxVnetFrame is the largest header + frame in offload mode.
	MaxVnetFrame = 65535
)

// Stats are the port's counters.
type Stats struct {
	RxPackets, RxBytes uint64 // frames read from the host stack
	TxPackets, TxBytes uint64 // frames written into the host stack
	TxDropped          uint64 // frames refused: empty, oversize, or rejected by the kernel
	RxTruncated        uint64 // frames longer than the caller's buffer
}

// ErrClosed is returned by operations on a closed port.
var ErrClosed = fmt.Errorf("host port closed: %w", syscall.EBADF)

// Port is an open TAP host port. Its embedded Core provides Close (which also destroys
// the device), Name, WaitRX, WaitTX and the netmap.GenericBackend glue; the waits ask the
// kernel (poll(2) with a zero timeout): the TAP exposes no shared ring to look at.
type Port struct {
	portcore.Core
	name    string
	ifindex int
	mtu     int
	vnet    bool
	pfd     *sys.PollFD

	// The wait conditions ask the kernel (poll(2) with a zero timeout): the TAP exposes no
	// shared ring to look at. Each direction has its own pollfd, owned by its waiter.
	rxPoll [1]unix.PollFd
	txPoll [1]unix.PollFd
	txIov  [maxFrags]unix.Iovec // TxFrags' writev vector (transmitting goroutine)
	rxIov  [maxFrags]unix.Iovec // RxScatter's readv vector (receiving goroutine)

	rxPackets, rxBytes, rxTrunc atomic.Uint64
	txPackets, txBytes, txDrop  atomic.Uint64
}

var _ netmap.GenericBackend = (*Port)(nil)

type ifreqFlags struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

func (c *Config) validate() error {
	if c.Name == "" || len(c.Name) >= unix.IFNAMSIZ {
		return fmt.Errorf("check host port config: Name %q must be 1..%d bytes: %w", c.Name, unix.IFNAMSIZ-1, syscall.EINVAL)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65521) {
		return fmt.Errorf("check host port config: MTU %d outside 68..65521: %w", c.MTU, syscall.EINVAL)
	}
	if c.MAC != nil && (len(c.MAC) != 6 || c.MAC[0]&1 != 0) {
		return fmt.Errorf("check host port config: MAC %s is not a unicast Ethernet address: %w", c.MAC, syscall.EINVAL)
	}
	for _, a := range c.Addrs {
		if !a.IsValid() {
			return fmt.Errorf("check host port config: invalid address %v: %w", a, syscall.EINVAL)
		}
	}
	if c.TXQueueLen < 0 {
		return fmt.Errorf("check host port config: TXQueueLen %d is negative: %w", c.TXQueueLen, syscall.EINVAL)
	}
	return nil
}

// Open creates the TAP device in the calling thread's network namespace, configures it
// (MAC, MTU, addresses) and sets it up. On error nothing is left behind.
func Open(cfg Config) (*Port, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open host port %s: open /dev/net/tun: %w", cfg.Name, err)
	}
	var ifr ifreqFlags
	copy(ifr.name[:], cfg.Name)
	ifr.flags = unix.IFF_TAP | unix.IFF_NO_PI
	if cfg.VnetHdr {
		ifr.flags |= unix.IFF_VNET_HDR
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		unix.Close(fd)
		if e == unix.EBUSY {
			return nil, fmt.Errorf("open host port %s: a device of that name is in use: %w", cfg.Name, e)
		}
		return nil, fmt.Errorf("open host port %s: TUNSETIFF: %w", cfg.Name, e)
	}
	p := &Port{name: cfg.Name, vnet: cfg.VnetHdr}
	p.pfd, err = sys.NewPollFD(fd, "tap:"+cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("open host port %s: %w", cfg.Name, err)
	}
	// Closing the descriptor destroys the (non-persistent) device.
	c := cleanup.Make(p.pfd.Close)
	defer c.Clean()
	if cfg.VnetHdr {
		if err := setVnet(fd); err != nil {
			return nil, fmt.Errorf("open host port %s: %w", cfg.Name, err)
		}
	}

	l, err := netlink.LinkByName(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("open host port %s: find the device: %w", cfg.Name, err)
	}
	if cfg.MAC != nil {
		if err := netlink.LinkSetHardwareAddr(l, cfg.MAC); err != nil {
			return nil, fmt.Errorf("open host port %s: set MAC %s: %w", cfg.Name, cfg.MAC, err)
		}
	}
	if cfg.MTU != 0 {
		if err := netlink.LinkSetMTU(l, cfg.MTU); err != nil {
			return nil, fmt.Errorf("open host port %s: set MTU %d: %w", cfg.Name, cfg.MTU, err)
		}
	}
	if cfg.TXQueueLen != 0 {
		if err := netlink.LinkSetTxQLen(l, cfg.TXQueueLen); err != nil {
			return nil, fmt.Errorf("open host port %s: set txqueuelen %d: %w", cfg.Name, cfg.TXQueueLen, err)
		}
	}
	for _, a := range cfg.Addrs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(l, addr); err != nil {
			return nil, fmt.Errorf("open host port %s: add address %v: %w", cfg.Name, a, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("open host port %s: set up: %w", cfg.Name, err)
	}
	if l, err = netlink.LinkByName(cfg.Name); err != nil {
		return nil, fmt.Errorf("open host port %s: re-read the device: %w", cfg.Name, err)
	}
	p.ifindex, p.mtu = l.Attrs().Index, l.Attrs().MTU
	p.rxPoll[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	p.txPoll[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
	p.Init(p, portcore.Config{
		Name: p.name, PFD: p.pfd, ErrClosed: ErrClosed, Undo: c.Release(),
		RxReady: func() bool { return ready(p.rxPoll[:]) },
		TxReady: func() bool { return ready(p.txPoll[:]) },
	})
	return p, nil
}

// ready polls without blocking.
func ready(pfd []unix.PollFd) bool {
	pfd[0].Revents = 0
	n, err := unix.Poll(pfd, 0)
	return err == nil && n > 0 && pfd[0].Revents&(pfd[0].Events|unix.POLLERR|unix.POLLHUP) != 0
}

// Ifindex returns the device's interface index.
func (p *Port) Ifindex() int { return p.ifindex }

// Stats returns the port's counters.
func (p *Port) Stats() Stats {
	return Stats{
		RxPackets: p.rxPackets.Load(), RxBytes: p.rxBytes.Load(), RxTruncated: p.rxTrunc.Load(),
		TxPackets: p.txPackets.Load(), TxBytes: p.txBytes.Load(), TxDropped: p.txDrop.Load(),
	}
}

// Receive reads up to len(bufs) frames the host stack sent out of the TAP. It never blocks.
// A buffer shorter than the frame gets a truncated copy (counted in RxTruncated); size
// buffers for MTU+14 bytes.
func (p *Port) Receive(bufs [][]byte, lens []int) (int, error) {
	if err := p.Enter(); err != nil {
		return 0, err
	}
	defer p.Exit()
	want := min(len(bufs), len(lens))
	n := 0
	var bytes uint64
	for n < want {
		m, e := sys.Read(p.pfd.FD(), bufs[n]) // raw: see internal/sys
		if e != 0 {
			if e == unix.EAGAIN {
				break
			}
			return n, fmt.Errorf("read host port %s: %w", p.name, e)
		}
		if full := p.mtu + 14; m == len(bufs[n]) && (m < full || p.vnet && m < MaxVnetFrame) {
			// The kernel truncates silently when the buffer is short; a full buffer
			// smaller than a full-size frame may have been cut.
			p.rxTrunc.Add(1)
		}
		lens[n] = m
		bytes += uint64(m)
		n++
	}
	if n > 0 {
		p.rxPackets.Add(uint64(n))
		p.rxBytes.Add(bytes)
	}
	return n, nil
}

// Transmit writes frames into the host stack. It never blocks and returns how many frames it
// consumed (written, or dropped and counted in TxDropped). Fewer than len(frames) means the
// device's queue is full: call WaitTX.
func (p *Port) Transmit(frames [][]byte) (int, error) {
	if err := p.Enter(); err != nil {
		return 0, err
	}
	defer p.Exit()
	var consumed, sent int
	var bytes uint64
	for _, f := range frames {
		if len(f) < p.minFrame() || len(f) > p.FrameSize() {
			p.txDrop.Add(1)
			consumed++
			continue
		}
		_, e := sys.Write(p.pfd.FD(), f) // raw: see internal/sys
		if e != 0 {
			if e == unix.EAGAIN {
				break
			}
			if e == unix.EIO && p.Closed() {
				return consumed, ErrClosed
			}
			// EINVAL and friends: the kernel refused this frame; drop it, keep going.
			p.txDrop.Add(1)
			consumed++
			continue
		}
		bytes += uint64(len(f))
		sent++
		consumed++
	}
	if sent > 0 {
		p.txPackets.Add(uint64(sent))
		p.txBytes.Add(bytes)
	}
	return consumed, nil
}

// FrameSize is the largest frame the port carries: MTU plus an Ethernet header and a VLAN tag,
// or MaxVnetFrame (virtio_net_hdr included) in offload mode.
func (p *Port) FrameSize() int {
	if p.vnet {
		return MaxVnetFrame
	}
	return p.mtu + 14 + 4
}

// VnetHdr reports whether the port is in offload mode.
func (p *Port) VnetHdr() bool { return p.vnet }

func (p *Port) minFrame() int {
	if p.vnet {
		return VnetHdrLen + 14
	}
	return 14
}

// setVnet sets the header size and the offloads the host stack may use towards the TAP.
func setVnet(fd int) error {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
		return fmt.Errorf("TUNSETVNETHDRSZ %d: %w", VnetHdrLen, err)
	}
	off := unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETOFFLOAD, uintptr(off)); e != 0 {
		return fmt.Errorf("TUNSETOFFLOAD %#x: %w", off, e)
	}
	return nil
}
