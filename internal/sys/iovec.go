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

// Writev writes iov to fd with one writev(2), retrying EINTR, and returns the errno (0 on
// success). It does not allocate.
func Writev(fd int, iov []unix.Iovec) unix.Errno {
	if len(iov) == 0 {
		return 0
	}
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e != unix.EINTR {
			return e
		}
	}
}
