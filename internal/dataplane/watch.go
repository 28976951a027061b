package dataplane

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// watchLinks follows link deletions in the dataplane's namespace and
// detaches the port of a link that went away (the pod was deleted before
// the agent released it): a socket on a vanished link would otherwise keep
// erroring. stopWatch ends the subscription and waits for the goroutine.
func (d *Dataplane) watchLinks() error {
	ch := make(chan netlink.LinkUpdate, 64)
	d.watchStop = make(chan struct{})
	d.watchDone = make(chan struct{})
	opts := netlink.LinkSubscribeOptions{
		ErrorCallback: func(error) {}, // a lost subscription only delays clean-up until DetachPort
	}
	if d.ns >= 0 {
		h := netns.NsHandle(d.ns)
		opts.Namespace = &h
	}
	if err := netlink.LinkSubscribeWithOptions(ch, d.watchStop, opts); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	go func() {
		defer close(d.watchDone)
		for u := range ch {
			if u.Header.Type != unix.RTM_DELLINK {
				continue
			}
			d.linkGone(u.Attrs().Name, int(u.Index))
		}
	}()
	return nil
}

// linkGone detaches the port on a deleted link, if any. An attach of that
// link in flight is waited for first (it may publish a port on the link
// that just went away).
func (d *Dataplane) linkGone(name string, index int) {
	_ = d.detachWhere(context.Background(), "detach port on deleted link "+name, name, func() (*Port, bool) {
		p, ok := d.byLink[name]
		if !ok || p.ifindex != index {
			return nil, false
		}
		d.linksGone.Add(1) // counted as it is unlinked: Port no longer finds it
		return p, true
	}) // the link is gone: nothing to report to
}

// stopWatch ends the subscription and waits for the watcher.
func (d *Dataplane) stopWatch() {
	if d.watchStop == nil {
		return
	}
	close(d.watchStop) // closes the netlink socket: the reader wakes and closes ch
	<-d.watchDone
	d.watchStop = nil
}

// AutoDetached is the number of ports detached because their link was
// deleted under the dataplane.
func (d *Dataplane) AutoDetached() uint64 { return d.linksGone.Load() }
