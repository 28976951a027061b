package cni

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestDiskFull (issue 16): the agent's state directory is on a file system that fills up.
// An ADD then fails with a clear error that says so, leaves no half-made pod (no host link,
// no attachment, no address held), and pods already running keep working; once there is
// room again, ADDs work again.
func TestDiskFull(t *testing.T) {
	e := newEnv(t, envOpts{})
	state := filepath.Join(e.agent.dir, "state")
	// The agent's state on a small tmpfs of its own, so that filling it touches nothing else.
	e.agent.stop(false)
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", state, "tmpfs", 0, "size=4m,mode=0700"); err != nil {
		t.Skipf("mount a tmpfs for the agent's state: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(state, syscall.MNT_DETACH) })
	e.agent.start()
	// The uninstalling stop of newEnv's cleanup must run before the unmount.
	t.Cleanup(func() {
		if e.agent.cmd != nil {
			e.agent.stop(true)
		}
	})

	l := e.conflist("1.1.0")
	nsA, nsB := netnsutil.New(t), netnsutil.New(t)
	rA := e.mustAdd(l, rt("full-a", nsA))

	// Fill the file system.
	filler := filepath.Join(state, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{1}, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the state's file system: %v", err)
			}
			break
		}
	}
	f.Close()
	c := e.agent.client

	// New pods, kept, until the stores must grow and cannot: that ADD fails clearly, and
	// nothing of it stays.
	type pod struct {
		id string
		ns *netnsutil.NS
	}
	var added []pod
	failed := false
	for i := 0; i < 200 && !failed; i++ {
		p := pod{fmt.Sprintf("full-%d", i), netnsutil.New(t)}
		before := e.hostEpairs()
		atts, err := c.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.add(l, rt(p.id, p.ns)); err == nil {
			added = append(added, p)
			continue
		} else if !strings.Contains(err.Error(), "no space left on device") {
			t.Fatalf("ADD %d on a full disk: %v; want an error saying no space is left", i, err)
		} else {
			t.Logf("ADD %d on a full disk: %v", i, err)
		}
		failed = true
		if got := e.hostEpairs(); len(got) != len(before) {
			t.Fatalf("a failed ADD left host links: %v, before %v", got, before)
		}
		now, err := c.List(context.Background())
		if err != nil {
			t.Fatalf("list attachments after a failed ADD: %v", err)
		}
		if len(now.Items) != len(atts.Items) {
			t.Fatalf("a failed ADD left attachments: %d, before %d", len(now.Items), len(atts.Items))
		}
		if names := p.ns.LinkNames(t); len(names) != 1 {
			t.Fatalf("a failed ADD left links in the pod: %v", names)
		}
	}
	if !failed {
		t.Fatalf("%d ADDs on a full disk all succeeded", len(added))
	}
	// The running pod still works.
	if err := ping(nsA, rA.IPs[0].Gateway.String()); err != nil {
		t.Fatalf("the running pod, disk full: %v", err)
	}

	// Room again: ADDs work again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	e.mustAdd(l, rt("full-b", nsB))
	if err := ping(nsB, podIP(rA)); err != nil {
		t.Fatalf("after the disk had room again: %v", err)
	}
	added = append(added, pod{"full-a", nsA}, pod{"full-b", nsB})
	for _, p := range added {
		if err := e.del(l, rt(p.id, p.ns)); err != nil {
			t.Fatal(err)
		}
	}
}
