package vale

import (
	"errors"
	"syscall"
)

// Sentinel errors. Each wraps the BSD errno the netmap seed (004) or VALE
// returns for the same condition, so callers can test either with errors.Is:
//
//	errors.Is(err, vale.ErrPortBusy)    // true
//	errors.Is(err, syscall.EBUSY)       // also true
var (
	// ErrInvalid: a malformed name, an out-of-range limit or a bad argument.
	ErrInvalid = &errnoError{msg: "invalid argument", errno: syscall.EINVAL}
	// ErrNoSwitch: the named switch does not exist.
	ErrNoSwitch = &errnoError{msg: "no such switch", errno: syscall.ENXIO}
	// ErrNoPort: the named port does not exist.
	ErrNoPort = &errnoError{msg: "no such port", errno: syscall.ENXIO}
	// ErrExists: a switch or persistent port with that name already exists.
	ErrExists = &errnoError{msg: "already exists", errno: syscall.EEXIST}
	// ErrPortBusy: the port is in use (registered by a user, attached, or
	// owned by another switch), or the switch still has ports.
	ErrPortBusy = &errnoError{msg: "busy", errno: syscall.EBUSY}
	// ErrSwitchFull: the switch has MaxPorts ports, or the registry holds
	// MaxSwitches switches.
	ErrSwitchFull = &errnoError{msg: "no space", errno: syscall.ENOSPC}
	// ErrNotSupported: the adapter cannot provide what was asked (for
	// example host rings on an adapter without them).
	ErrNotSupported = &errnoError{msg: "not supported", errno: syscall.EOPNOTSUPP}
	// ErrClosed: the registry has been closed.
	ErrClosed = &errnoError{msg: "registry closed", errno: syscall.ENXIO}
)

// errnoError is a sentinel that matches both itself and its errno.
type errnoError struct {
	msg   string
	errno syscall.Errno
}

func (e *errnoError) Error() string { return e.msg }

// Is reports whether target is this sentinel or its errno.
func (e *errnoError) Is(target error) bool {
	if t, ok := target.(syscall.Errno); ok {
		return t == e.errno
	}
	return target == e
}

// Errno returns the BSD errno value of an error produced by this package
// (0 when err is nil, EIO when it carries none).
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e *errnoError
	if errors.As(err, &e) {
		return e.errno
	}
	var n syscall.Errno
	if errors.As(err, &n) {
		return n
	}
	return syscall.EIO
}
