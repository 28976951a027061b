package hostport

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/netmap"
)

var _ netmap.GenericFragBackend = (*Port)(nil)

// maxFrags bounds the fragments of one frame (a 64 KB frame in 2 KiB buffers is 33;
// netmap chains are at most 64 slots).
const maxFrags = 64

// TxFrags writes one frame given as its fragments with writev(2) (a netmap slot chain
// without the gather copy). false means the TAP's queue is full: call WaitTX. Frames it
// cannot take are consumed and counted in TxDropped.
func (p *Port) TxFrags(q int, frags [][]byte) (bool, error) {
	if err := p.EnterQueue(q); err != nil {
		return false, err
	}
	defer p.Exit()
	if len(frags) == 0 || len(frags) > maxFrags {
		p.txDrop.Add(1)
		return true, nil
	}
	iov := p.txIov[:len(frags)]
	defer clear(iov)
	var total int
	if _, total = sys.SetIovecs(iov, frags); total < p.minFrame() || total > p.FrameSize() {
		p.txDrop.Add(1)
		return true, nil
	}
	switch e := sys.Writev(p.pfd.FD(), iov); e {
	case 0:
		p.txPackets.Add(1)
		p.txBytes.Add(uint64(total))
		return true, nil
	case unix.EAGAIN:
		return false, nil
	case unix.EIO:
		if p.Closed() {
			return false, ErrClosed
		}
	}
	p.txDrop.Add(1) // refused by the kernel
	return true, nil
}

// RxScatter reads the next frame the host stack sent out of the TAP over bufs with
// readv(2), each buffer filled before the next; ok is false when none is pending. A frame
// that fills every buffer may have been cut by the kernel, and one over FrameSize would not
// fit the switch: both are dropped (n == 0, counted in RxTruncated), so offer room for
// FrameSize bytes plus one.
func (p *Port) RxScatter(q int, bufs [][]byte) (int, bool, error) {
	if err := p.EnterQueue(q); err != nil {
		return 0, false, err
	}
	defer p.Exit()
	nb, room := sys.SetIovecs(p.rxIov[:], bufs)
	iov := p.rxIov[:nb]
	defer clear(iov)
	for {
		// Raw: the descriptor is non-blocking (see internal/sys, Writev).
		n, _, e := unix.RawSyscall(unix.SYS_READV, uintptr(p.pfd.FD()), uintptr(unsafe.Pointer(&iov[0])), uintptr(nb))
		switch e {
		case 0:
		case unix.EAGAIN:
			return 0, false, nil
		case unix.EINTR:
			continue
		default:
			return 0, false, fmt.Errorf("read host port %s: %w", p.name, e)
		}
		if int(n) >= room || int(n) > p.FrameSize() {
			p.rxTrunc.Add(1)
			return 0, true, nil
		}
		p.rxPackets.Add(1)
		p.rxBytes.Add(uint64(n))
		return int(n), true, nil
	}
}
