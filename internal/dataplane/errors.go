package dataplane

import (
	"syscall"

	"github.com/epair-cni/epair/internal/errno"
)

// Sentinel errors; each also matches its errno with errors.Is.
var (
	// ErrInvalid: bad configuration or request (EINVAL).
	ErrInvalid = errno.New("invalid argument", syscall.EINVAL)
	// ErrNoSwitch: the request names a switch the dataplane does not have (ENXIO).
	ErrNoSwitch = errno.New("no such switch", syscall.ENXIO)
	// ErrSwitchExists: AddSwitch of a switch name the dataplane already
	// runs (EEXIST).
	ErrSwitchExists = errno.New("switch exists", syscall.EEXIST)
	// ErrNoPort: no such port or link (ENXIO).
	ErrNoPort = errno.New("no such port", syscall.ENXIO)
	// ErrBusy: the link is attached for another owner, or the owner has
	// another link attached (EBUSY).
	ErrBusy = errno.New("busy", syscall.EBUSY)
	// ErrNotOwned: Adopt found a link whose alias does not record the owner (EPERM).
	ErrNotOwned = errno.New("link not owned by this owner", syscall.EPERM)
	// ErrClosed: the dataplane is closed (ENXIO).
	ErrClosed = errno.New("dataplane closed", syscall.ENXIO)
)

// Errno returns the errno carried by err (EIO when it carries none, 0 for nil).
func Errno(err error) syscall.Errno { return errno.Of(err) }
