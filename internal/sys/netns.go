package sys

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// InNetNS runs f on an OS thread switched into the network namespace ns (what sockets,
// TAPs and child processes made there belong to) and switches the thread back before
// returning. what names the namespace in errors. A thread that cannot be switched back
// is stuck in a foreign namespace and must never run anything else: that panics.
func InNetNS(ns netns.NsHandle, what string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter netns %s: %w", what, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("restore netns after %s: %v", what, err))
	}
	return ferr
}
