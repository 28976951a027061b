package sys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func setsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// SetUmemReg registers a UMEM on an AF_XDP socket (XDP_UMEM_REG).
func SetUmemReg(fd int, reg *unix.XDPUmemReg) error {
	return setsockopt(fd, unix.SOL_XDP, unix.XDP_UMEM_REG, unsafe.Pointer(reg), unsafe.Sizeof(*reg))
}

// MmapOffsets reads the ring layout of an AF_XDP socket (XDP_MMAP_OFFSETS).
func MmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	err := getsockopt(fd, unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off))
	return off, err
}

// XDPStats reads the drop counters of an AF_XDP socket (XDP_STATISTICS).
func XDPStats(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	err := getsockopt(fd, unix.SOL_XDP, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st))
	return st, err
}

// SetTpacketReq3 configures a PACKET_RX_RING or PACKET_TX_RING for TPACKET_V3.
func SetTpacketReq3(fd, opt int, req *unix.TpacketReq3) error {
	return setsockopt(fd, unix.SOL_PACKET, opt, unsafe.Pointer(req), unsafe.Sizeof(*req))
}

// TpacketStatsV3 reads and resets the kernel's PACKET_STATISTICS for a TPACKET_V3 socket.
func TpacketStatsV3(fd int) (unix.TpacketStatsV3, error) {
	var st unix.TpacketStatsV3
	err := getsockopt(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st))
	return st, err
}

// Uint32At returns the 32-bit word at off in mem as an atomic (mem must be kernel-shared,
// mmap'ed memory that outlives every use of the result).
func Uint32At(mem []byte, off uint64) *atomic.Uint32 {
	if off+4 > uint64(len(mem)) || off%4 != 0 {
		panic(fmt.Sprintf("sys: word at %d outside or misaligned in %d-byte mapping", off, len(mem)))
	}
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

// DescsAt returns n xdp_desc entries starting at off in mem.
func DescsAt(mem []byte, off uint64, n uint32) []unix.XDPDesc {
	if off+uint64(n)*uint64(unsafe.Sizeof(unix.XDPDesc{})) > uint64(len(mem)) {
		panic("sys: descriptor array outside mapping")
	}
	return unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&mem[off])), n)
}

// Uint64sAt returns n uint64 entries (UMEM addresses) starting at off in mem.
func Uint64sAt(mem []byte, off uint64, n uint32) []uint64 {
	if off+uint64(n)*8 > uint64(len(mem)) {
		panic("sys: address array outside mapping")
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off])), n)
}

// PointerAt returns a pointer to T at off in mem; T must not contain Go pointers.
func PointerAt[T any](mem []byte, off uint64) *T {
	var z T
	if off+uint64(unsafe.Sizeof(z)) > uint64(len(mem)) {
		panic("sys: structure outside mapping")
	}
	return (*T)(unsafe.Pointer(&mem[off]))
}

// PollFD is a non-blocking descriptor registered with the Go runtime poller.
type PollFD struct {
	f      *os.File
	rc     syscall.RawConn
	fd     int
	once   sync.Once
	cerr   error
	closed atomic.Bool
}

// NewPollFD takes ownership of fd (made non-blocking) and registers it with the netpoller.
func NewPollFD(fd int, name string) (*PollFD, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set %s non-blocking: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get raw conn of %s: %w", name, err)
	}
	return &PollFD{f: f, rc: rc, fd: fd}, nil
}

// FD returns the descriptor number, valid until Close.
func (p *PollFD) FD() int { return p.fd }

// ErrTimeout is returned by the Wait methods when the deadline passes first.
var ErrTimeout = os.ErrDeadlineExceeded

// WaitRead calls ready until it returns true, parking in the netpoller for read readiness
// in between. ready is always called once before the first park (after the poller's
// readiness was reset), so a readiness edge that happened before WaitRead is never lost.
// timeout ≤ 0 means no deadline. It returns os.ErrClosed after Close and
// os.ErrDeadlineExceeded on timeout. Callers build ready once (not per call) so that
// waiting does not allocate.
func (p *PollFD) WaitRead(timeout time.Duration, ready func(fd uintptr) bool) error {
	// Always (re)set the deadline: it also clears a past deadline left by InterruptRead.
	// An interrupt racing with this reset is not lost as long as ready checks the
	// condition the interrupt signals (for example a context's Done channel).
	if err := p.f.SetReadDeadline(deadline(timeout)); err != nil {
		return p.closedErr(err)
	}
	return p.closedErr(p.rc.Read(ready))
}

// closedErr maps the poller's "use of closed file" to os.ErrClosed after Close.
func (p *PollFD) closedErr(err error) error {
	if err != nil && p.closed.Load() {
		return os.ErrClosed
	}
	return err
}

func deadline(timeout time.Duration) time.Time {
	if timeout <= 0 {
		return time.Time{}
	}
	return time.Now().Add(timeout)
}

// InterruptRead wakes a goroutine parked in WaitRead (it returns os.ErrDeadlineExceeded).
func (p *PollFD) InterruptRead() { _ = p.f.SetReadDeadline(time.Unix(1, 0)) }

// InterruptWrite wakes a goroutine parked in WaitWrite.
func (p *PollFD) InterruptWrite() { _ = p.f.SetWriteDeadline(time.Unix(1, 0)) }

// WaitWrite is WaitRead for write readiness.
func (p *PollFD) WaitWrite(timeout time.Duration, ready func(fd uintptr) bool) error {
	if err := p.f.SetWriteDeadline(deadline(timeout)); err != nil {
		return p.closedErr(err)
	}
	return p.closedErr(p.rc.Write(ready))
}

// Close unregisters and closes the descriptor; pending waiters return os.ErrClosed. It is
// idempotent.
func (p *PollFD) Close() error {
	p.once.Do(func() {
		p.closed.Store(true)
		p.cerr = p.f.Close()
	})
	return p.cerr
}

// IsClosed reports whether err says the descriptor was closed under a waiter.
func IsClosed(err error) bool { return errors.Is(err, os.ErrClosed) }

// Addr returns the address of the first byte of mem (for registering memory with the kernel).
func Addr(mem []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(mem))) }

// CheckQueue rejects any queue but 0 of a single-queue backend named name.
func CheckQueue(name string, q int) error {
	if q != 0 {
		return fmt.Errorf("select queue %d of %s: only queue 0 exists: %w", q, name, syscall.EINVAL)
	}
	return nil
}

// WaitReady is netmap.GenericBackend.WaitReady for a single-queue backend over p: it calls
// wait (the backend's own readiness wait, parked in the netpoller, given ctx.Done() to
// check) until it returns for a reason other than an interrupt, or ctx ends (ctx.Err()).
// Cancellation interrupts the parked wait through a past deadline (InterruptRead when rx,
// InterruptWrite otherwise); because wait also checks ctx.Done(), a cancellation racing
// with the start of the wait is not lost. It allocates once per call, never per frame.
func (p *PollFD) WaitReady(ctx context.Context, rx bool, wait func(done <-chan struct{}) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	interrupt := p.InterruptWrite
	if rx {
		interrupt = p.InterruptRead
	}
	stop := context.AfterFunc(ctx, interrupt)
	defer stop()
	for {
		err := wait(ctx.Done())
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // an interrupt left over from an earlier, already finished wait
		}
		return err
	}
}

// Done reports whether c is closed; a nil c never is.
func Done(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// WaitWriteKicked waits for transmit room on a ring socket whose completions advance only
// when the kernel is kicked: until ready reports room it calls kick (nil: nothing to kick),
// then parks for write readiness for at most recheck — the safety net against a wake-up
// the kernel never sends while transmit is backlogged; it never applies to an idle socket,
// which does not wait here. It returns nil when ready reports room or done closes,
// ErrTimeout after timeout (≤ 0: none), os.ErrClosed after Close, or kick's error.
func (p *PollFD) WaitWriteKicked(timeout, recheck time.Duration, ready func(fd uintptr) bool, kick func() error, done <-chan struct{}) error {
	end := time.Now().Add(timeout)
	for {
		if ready(0) {
			return nil
		}
		if kick != nil {
			if err := kick(); err != nil {
				return err
			}
		}
		slice := recheck
		if timeout > 0 {
			left := time.Until(end)
			if left <= 0 {
				return ErrTimeout
			}
			slice = min(slice, left)
		}
		err := p.WaitWrite(slice, ready)
		if err == nil || Done(done) {
			return nil
		}
		if !errors.Is(err, ErrTimeout) {
			return err
		}
	}
}
