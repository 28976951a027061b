// Package cleanup is a stack of undo actions for multi-step setup.
//
// A setup that creates several side effects (a veth pair, an address, a port) registers the
// undo of each one as it succeeds. If a later step fails, the caller returns and the deferred
// Clean runs every undo in reverse order; once the whole setup has succeeded the caller calls
// Release, which disarms the stack. There are no success flags and no shadowed errors:
//
//	c := cleanup.Make(func() error { return netlink.LinkDel(host) })
//	defer c.Clean()
//	...
//	c.Add(func() error { return release(addr) })
//	...
//	c.Release()
//
// This follows gVisor's pkg/cleanup, with undo functions that may fail: Clean keeps going
// and reports every failure, joined, so nothing is left behind silently.
package cleanup

import "errors"

// Cleanup holds undo functions, run last-in first-out by Clean unless Release was called.
// The zero value is an empty, usable stack. It is not safe for concurrent use.
type Cleanup struct {
	undo []func() error
}

// Make returns a Cleanup holding f (if non-nil).
func Make(f func() error) Cleanup {
	var c Cleanup
	c.Add(f)
	return c
}

// Add pushes f; nil is ignored.
func (c *Cleanup) Add(f func() error) {
	if f != nil {
		c.undo = append(c.undo, f)
	}
}

// Clean runs the pending undo functions in reverse order of registration, empties the stack
// and returns every error they reported, joined. A released stack does nothing.
func (c *Cleanup) Clean() error {
	var errs []error
	for i := len(c.undo) - 1; i >= 0; i-- {
		if err := c.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	c.undo = nil
	return errors.Join(errs...)
}

// Release disarms the stack: the setup succeeded and its side effects are kept. It returns the
// undo functions as one function so ownership can move to a longer-lived object (for example
// a port that will undo them on Close).
func (c *Cleanup) Release() func() error {
	undo := c.undo
	c.undo = nil
	return func() error {
		moved := Cleanup{undo: undo}
		return moved.Clean()
	}
}

// Len reports how many undo functions are pending.
func (c *Cleanup) Len() int { return len(c.undo) }
