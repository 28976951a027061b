// Package errno holds the sentinel error type shared by the packages that follow the seeds'
// BSD errno contract: a sentinel matches itself and its errno with errors.Is, so callers
// test either errors.Is(err, vale.ErrPortBusy) or errors.Is(err, syscall.EBUSY).
package errno

import (
	"errors"
	"syscall"
)

// Sentinel is an error value that also matches its BSD errno.
type Sentinel struct {
	msg   string
	errno syscall.Errno
}

// New returns a sentinel with message msg that matches e.
func New(msg string, e syscall.Errno) *Sentinel { return &Sentinel{msg: msg, errno: e} }

func (s *Sentinel) Error() string { return s.msg }

// Errno is the sentinel's errno value.
func (s *Sentinel) Errno() syscall.Errno { return s.errno }

// Is reports whether target is this sentinel or its errno.
func (s *Sentinel) Is(target error) bool {
	if t, ok := target.(syscall.Errno); ok {
		return t == s.errno
	}
	return target == s
}

// Of returns the errno carried by err: a Sentinel's, else a wrapped syscall.Errno, else EIO;
// 0 for nil.
func Of(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var s *Sentinel
	if errors.As(err, &s) {
		return s.errno
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
