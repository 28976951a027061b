package dataplane

import (
	"errors"
	"syscall"
)

// errnoError is a sentinel that also matches its BSD errno value.
type errnoError struct {
	msg   string
	errno syscall.Errno
}

func (e *errnoError) Error() string { return e.msg }

// Is lets errors.Is match the errno as well as the sentinel.
func (e *errnoError) Is(target error) bool {
	if t, ok := target.(syscall.Errno); ok {
		return t == e.errno
	}
	return e == target
}

// Sentinel errors; each also matches its errno with errors.Is.
var (
	// ErrInvalid: bad configuration or request (EINVAL).
	ErrInvalid = &errnoError{"invalid argument", syscall.EINVAL}
	// ErrNoSwitch: the request names a switch the dataplane does not have (ENXIO).
	ErrNoSwitch = &errnoError{"no such switch", syscall.ENXIO}
	// ErrNoPort: no such port or link (ENXIO).
	ErrNoPort = &errnoError{"no such port", syscall.ENXIO}
	// ErrBusy: the link is attached for another owner, or the owner has
	// another link attached (EBUSY).
	ErrBusy = &errnoError{"busy", syscall.EBUSY}
	// ErrNotOwned: Adopt found a link whose alias does not record the owner (EPERM).
	ErrNotOwned = &errnoError{"link not owned by this owner", syscall.EPERM}
	// ErrClosed: the dataplane is closed (ENXIO).
	ErrClosed = &errnoError{"dataplane closed", syscall.ENXIO}
)

// Errno returns the errno carried by err (EIO when it carries none, 0 for nil).
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e *errnoError
	if errors.As(err, &e) {
		return e.errno
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return syscall.EIO
}
