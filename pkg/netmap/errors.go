package netmap

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
)

// Sentinel errors. Each wraps the BSD errno that netmap returns, so callers
// can test either errors.Is(err, ErrBusy) or errors.Is(err, syscall.EBUSY).
var (
	errBusy    = fmt.Errorf("ring busy: %w", syscall.EBUSY)
	errStopped = fmt.Errorf("ring stopped: %w", syscall.EBUSY)

	// ErrBusy: the kring is held by another sync, or stopped.
	ErrBusy = errBusy
	// ErrStopped: the kring is stopped (also matches syscall.EBUSY).
	ErrStopped = errStopped
	// ErrNotBound: the handle is not registered (ENXIO).
	ErrNotBound = fmt.Errorf("handle not bound: %w", syscall.ENXIO)
	// ErrDetached: the adapter's backend is gone or netmap is off (ENXIO).
	ErrDetached = fmt.Errorf("adapter detached: %w", syscall.ENXIO)
	// ErrBadRing: a prologue rejected the user's head/cur (strict mode, EINVAL).
	ErrBadRing = fmt.Errorf("invalid ring indexes: %w", syscall.EINVAL)
)

type kringError struct {
	name string
	msg  string
}

func (e *kringError) Error() string { return "kring " + e.name + ": " + e.msg }

func invariantError(k *Kring, msg string) error {
	return &kringError{name: k.Name, msg: fmt.Sprintf("%s (hwcur %d rhead %d rcur %d rtail %d hwtail %d head %d cur %d tail %d n %d)",
		msg, k.NrHwcur.Load(), k.RHead, k.RCur, k.RTail, k.NrHwtail.Load(), k.Ring.Head, k.Ring.Cur, k.Ring.Tail, k.NumSlots)}
}

func yieldCPU() { runtime.Gosched() }

// IsBusy reports whether err is EBUSY.
func IsBusy(err error) bool { return errors.Is(err, syscall.EBUSY) }
