package sys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// SetIovecs points iov[i] at bufs[i] (an empty buffer gets an empty entry) for the first
// min(len(iov), len(bufs)) buffers and returns how many entries it set and their total
// length. The caller clears iov when the system call is done, so that it pins no buffer.
func SetIovecs(iov []unix.Iovec, bufs [][]byte) (n, total int) {
	n = min(len(iov), len(bufs))
	for i, b := range bufs[:n] {
		iov[i] = unix.Iovec{}
		if len(b) > 0 {
			iov[i].Base = &b[0]
			iov[i].SetLen(len(b))
			total += len(b)
		}
	}
	return n, total
}

// Packet-path system calls (Writev, Read, Write here; the AF_PACKET sockets' recvmsg,
// recvmmsg and sendmmsg) are raw: made with unix.RawSyscall, without the runtime's
// entersyscall/exitsyscall. Every descriptor they are used on is non-blocking, so a call
// returns within microseconds. Made the usual way, a call that takes more than 20 µs (a
// 64 KB write whose receiver's TCP runs in our softirq does) has its P taken by sysmon
// and handed to another thread, which is woken for it: on a paravirtualised node a
// context switch costs as much as the call itself. Raw calls measured 20–35 % more TCP
// through the switch on the 2-vCPU test machine (BENCHMARKS.md). The price: while one
// runs, its P runs nothing else, and a stop-the-world waits for it to return.

// Writev writes iov to fd with one writev(2), retrying EINTR, and returns the errno (0 on
// success). It does not allocate. fd must be non-blocking (raw call, above).
func Writev(fd int, iov []unix.Iovec) unix.Errno {
	if len(iov) == 0 {
		return 0
	}
	for {
		_, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e != unix.EINTR {
			return e
		}
	}
}

// Read reads from the non-blocking fd into b with one raw read(2), retrying EINTR.
func Read(fd int, b []byte) (int, unix.Errno) { return rawIO(unix.SYS_READ, fd, b) }

// Write writes b to the non-blocking fd with one raw write(2), retrying EINTR.
func Write(fd int, b []byte) (int, unix.Errno) { return rawIO(unix.SYS_WRITE, fd, b) }

// rawIO is read(2) or write(2) (trap) of b on fd, raw, retrying EINTR.
func rawIO(trap uintptr, fd int, b []byte) (int, unix.Errno) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(len(b)))
		if e != unix.EINTR {
			return int(n), e
		}
	}
}
