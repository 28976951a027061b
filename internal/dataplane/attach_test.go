package dataplane

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

// holdAttach makes the attach of ifname stop before it publishes its port
// until the returned release is called; entered is closed when it stops.
func holdAttach(t *testing.T, ifname string) (entered <-chan struct{}, release func()) {
	in, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	testAttachHook = func(n string) {
		if n == ifname {
			close(in)
			<-gate
		}
	}
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() { release(); testAttachHook = nil })
	return in, release
}

// attachHeld starts the attach of req and returns once it is held before it publishes
// (holdAttach); its result comes on res after release.
func (e *env) attachHeld(t *testing.T, req AttachRequest) (res <-chan error, release func()) {
	t.Helper()
	entered, release := holdAttach(t, req.HostIfName)
	ch := make(chan error, 1)
	go func() {
		_, err := e.dp.AttachPort(context.Background(), req)
		ch <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the held attach never reached its hook")
	}
	return ch, release
}

// TestAttachOutsideLock holds one pod's attach after its socket is open
// and checks that the dataplane keeps serving meanwhile: another pod
// attaches and detaches, lists and the FDB answer; a second attach of the
// held link (same owner) waits and then returns the same port, and an
// attach of the held link for another owner is EBUSY once it is published.
func TestAttachOutsideLock(t *testing.T) {
	e := newEnv(t, 1, linkport.Auto, nil)
	a := e.pods[0]
	b, c := e.makePod(), e.makePod()
	entered, release := holdAttach(t, b.pair.HostName)
	first := make(chan error, 1)
	go func() {
		_, err := e.dp.AttachPort(context.Background(), b.req())
		first <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the held attach never reached its hook")
	}
	again := make(chan PortInfo, 1)
	go func() {
		pi, err := e.dp.AttachPort(context.Background(), b.req())
		if err != nil {
			t.Errorf("second attach of the held link: %v", err)
		}
		again <- pi
	}()

	// Everything else goes on while b's attach is in flight.
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.attach(c)
		if len(e.dp.Ports()) != 2 { // a and c; b not published yet
			t.Errorf("ports while b is held: %v", e.dp.Ports())
		}
		if _, err := e.dp.FDB("vale0"); err != nil {
			t.Error(err)
		}
		if err := e.dp.DetachPort(context.Background(), c.portName()); err != nil {
			t.Error(err)
		}
		// A bounded wait on the held link gives up with the context.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := e.dp.AttachPort(ctx, b.reqAs("other/eth0")); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("attach of a held link with a short context: %v, want deadline exceeded", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the dataplane did not serve other ports while one attach was in flight (global lock held?)")
	}
	select {
	case <-again:
		t.Fatal("a second attach of the same link returned before the first published")
	default:
	}
	release()
	if err := <-first; err != nil {
		t.Fatalf("held attach: %v", err)
	}
	if pi := <-again; pi.Name != b.portName() {
		t.Fatalf("second attach returned %q, want %s", pi.Name, b.portName())
	}
	if n := len(e.dp.Ports()); n != 2 {
		t.Fatalf("%d ports, want 2 (a, b)", n)
	}
	_, err := e.dp.AttachPort(context.Background(), b.reqAs("other/eth0"))
	if Errno(err) != ErrBusy.Errno() {
		t.Fatalf("attach of b for another owner: %v, want EBUSY", err)
	}
	e.ping(a, b.ip)
	e.ping(b, a.ip)
}

// TestDetachWaitsForAttach: a DetachPort of a link whose attach is in
// flight waits for it and then detaches it, so nothing stays attached.
func TestDetachWaitsForAttach(t *testing.T) {
	e := newEnv(t, 0, linkport.Auto, nil)
	b := e.makePod()
	entered, release := holdAttach(t, b.pair.HostName)
	go e.dp.AttachPort(context.Background(), b.req())
	<-entered
	detached := make(chan error, 1)
	go func() { detached <- e.dp.DetachPort(context.Background(), b.portName()) }()
	select {
	case err := <-detached:
		t.Fatalf("detach returned (%v) while the attach was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-detached; err != nil {
		t.Fatal(err)
	}
	if _, err := e.dp.Port(b.portName()); Errno(err) != ErrNoPort.Errno() {
		t.Fatalf("port after detach: %v", err)
	}
	waitFor(t, "the detached port's XDP program to go", 5*time.Second, func() bool { return len(e.xdpProgs()) == 0 })
}

// TestDetachClosesInBackground: DetachPort returns once the port is out
// of the switch; its socket closes in the background. Meanwhile the link
// attaches again at once (waiting for the old socket, so no EBUSY), and a
// detach right before Close leaves no XDP program or descriptor behind.
func TestDetachClosesInBackground(t *testing.T) {
	e := newEnv(t, 2, linkport.XDP, nil)
	a, b := e.pods[0], e.pods[1]
	fds := fdCount(t)
	for range 3 {
		if err := e.dp.DetachPort(context.Background(), b.portName()); err != nil {
			t.Fatal(err)
		}
		for _, pi := range e.dp.Switches()[0].Ports {
			if pi.Name == b.portName() {
				t.Fatalf("switch still lists %s after DetachPort", pi.Name)
			}
		}
		if _, err := e.dp.Port(b.portName()); Errno(err) != ErrNoPort.Errno() {
			t.Fatalf("port after detach: %v", err)
		}
		e.attach(b) // right away: waits for the old socket
	}
	e.ping(a, b.ip)
	if err := e.dp.DetachPort(context.Background(), b.portName()); err != nil {
		t.Fatal(err)
	}
	if err := e.dp.DetachOwner(context.Background(), a.owner); err != nil {
		t.Fatal(err)
	}
	if err := e.dp.Close(CloseOptions{Uninstall: true}); err != nil {
		t.Fatal(err)
	}
	if progs := e.xdpProgs(); len(progs) != 0 {
		t.Fatalf("XDP programs after Close: %v", progs)
	}
	if n := fdCount(t); n > fds {
		t.Fatalf("%d descriptors after Close, %d with the ports attached", n, fds)
	}
}

// TestCloseDuringAttach closes the dataplane while an attach is in flight:
// Close waits for it, the attach fails with ErrClosed and undoes itself
// (no XDP program, no descriptor left).
func TestCloseDuringAttach(t *testing.T) {
	e := newEnv(t, 0, linkport.XDP, nil)
	b := e.makePod()
	fds := fdCount(t)
	entered, release := holdAttach(t, b.pair.HostName)
	res := make(chan error, 1)
	go func() {
		_, err := e.dp.AttachPort(context.Background(), b.req())
		res <- err
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- e.dp.Close(CloseOptions{Uninstall: true}) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with an attach in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Fatalf("attach across Close: %v, want ErrClosed", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if progs := e.xdpProgs(); len(progs) != 0 {
		t.Fatalf("XDP programs left: %v", progs)
	}
	if n := fdCount(t); n > fds {
		t.Fatalf("%d descriptors after Close, %d before the attach", n, fds)
	}
}

// TestConcurrentAttachDetach attaches and detaches many pods at once (the
// CNI burst): every attach succeeds, every port forwards, and after the
// concurrent detaches no port, XDP program or descriptor is left.
func TestConcurrentAttachDetach(t *testing.T) {
	e := newEnv(t, 0, linkport.XDP, nil)
	const n = 12
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = e.makePod()
	}
	fds := fdCount(t)
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Add(2)
		for range 2 { // each twice: the second is idempotent
			go func() {
				defer wg.Done()
				if _, err := e.dp.AttachPort(context.Background(), p.req()); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if got := len(e.dp.Ports()); got != n {
		t.Fatalf("%d ports, want %d", got, n)
	}
	settle(t, e.dp)
	if got := len(e.xdpProgs()); got != n {
		t.Fatalf("%d XDP programs, want %d", got, n)
	}
	e.ping(pods[0], pods[n-1].ip)
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if i%2 == 0 {
				err = e.dp.DetachPort(context.Background(), p.portName())
			} else {
				err = e.dp.DetachOwner(context.Background(), p.owner)
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := len(e.dp.Ports()); got != 0 {
		t.Fatalf("%d ports after detaching all", got)
	}
	// The sockets close in the background.
	waitFor(t, "the detached ports' XDP programs to go", 10*time.Second, func() bool { return len(e.xdpProgs()) == 0 })
	waitFor(t, "the detached ports' descriptors to close", 10*time.Second, func() bool { return fdCount(t) <= fds })
	// The links attach again at once (the old sockets are gone).
	e.attach(pods[0])
	e.attach(pods[1])
	e.ping(pods[0], pods[1].ip)
}
