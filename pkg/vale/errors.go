package vale

import (
	"syscall"

	"github.com/epair-cni/epair/internal/errno"
)

// Sentinel errors. Each wraps the BSD errno the netmap seed (004) or VALE
// returns for the same condition, so callers can test either with errors.Is:
//
//	errors.Is(err, vale.ErrPortBusy)    // true
//	errors.Is(err, syscall.EBUSY)       // also true
var (
	// ErrInvalid: a malformed name, an out-of-range limit or a bad argument.
	ErrInvalid = errno.New("invalid argument", syscall.EINVAL)
	// ErrNoSwitch: the named switch does not exist.
	ErrNoSwitch = errno.New("no such switch", syscall.ENXIO)
	// ErrNoPort: the named port does not exist.
	ErrNoPort = errno.New("no such port", syscall.ENXIO)
	// ErrExists: a switch or persistent port with that name already exists.
	ErrExists = errno.New("already exists", syscall.EEXIST)
	// ErrPortBusy: the port is in use (registered by a user, attached, or
	// owned by another switch), or the switch still has ports.
	ErrPortBusy = errno.New("busy", syscall.EBUSY)
	// ErrSwitchFull: the switch has MaxPorts ports, or the registry holds
	// MaxSwitches switches.
	ErrSwitchFull = errno.New("no space", syscall.ENOSPC)
	// ErrNotSupported: the adapter cannot provide what was asked (for
	// example host rings on an adapter without them).
	ErrNotSupported = errno.New("not supported", syscall.EOPNOTSUPP)
	// ErrClosed: the registry has been closed.
	ErrClosed = errno.New("registry closed", syscall.ENXIO)
)

// Errno returns the BSD errno value of an error produced by this package
// (0 when err is nil, EIO when it carries none).
func Errno(err error) syscall.Errno { return errno.Of(err) }
