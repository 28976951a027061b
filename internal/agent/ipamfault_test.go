package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// lostIPAMFixture runs two pods, and a third that is deleted while the agent is stopped (as
// after kill -9), lets damage do its work on the state directory and starts a new agent; it
// returns the running pods' addresses.
func lostIPAMFixture(t *testing.T, damage func(ipamPath string)) (*fixture, map[string][]agentapi.IPConfig) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	ips := map[string][]agentapi.IPConfig{}
	for _, id := range []string{"run1", "run2"} {
		at, _ := f.add(id, "net1")
		ips[id] = at.IPs
	}
	// A third pod is deleted while the agent is down: its link goes with its namespace.
	_, gone := f.add("gone", "net1")
	path := f.a.ipamPath("vale0")
	f.stop()
	f.links.Destroy(gone.HostName)
	damage(path)
	f.start()
	return f, ips
}

// checkRunning checks that the running pods kept their addresses and ports, and that a new
// pod gets an address none of them holds.
func checkRunning(t *testing.T, f *fixture, ips map[string][]agentapi.IPConfig) {
	t.Helper()
	ctx := context.Background()
	held := map[netip.Prefix]string{}
	for id, want := range ips {
		chk, err := f.c.Check(ctx, &agentapi.CheckRequest{Key: key(id)})
		if err != nil || chk.Port == nil || !chk.Port.Up || !slices.Equal(chk.IPs, want) {
			t.Fatalf("running pod %s after the restart: %+v %v; want its addresses %v and its port up", id, chk, err, want)
		}
		for _, ip := range want {
			held[ip.Address] = id
		}
	}
	at, _ := f.add("new", "net1")
	for _, ip := range at.IPs {
		if id, dup := held[ip.Address]; dup {
			t.Fatalf("the new pod got %s, which running pod %s holds", ip.Address, id)
		}
	}
	if err := f.a.stores["vale0"].Verify(); err != nil {
		t.Fatal(err)
	}
}

// TestLostIPAMStoreRebuilt (issue 16): the IPAM store truncated to zero bytes while pods
// run. The new agent restores their addresses from the attachment records of the pods
// whose links are still there, re-attaches them, and a new pod gets an address none of
// them holds. A pod whose link went meanwhile is not restored.
func TestLostIPAMStoreRebuilt(t *testing.T) {
	f, ips := lostIPAMFixture(t, func(path string) {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	})
	st, err := f.a.Recover(context.Background())
	if err != nil || st.Rebuilt != 2 || st.Reattached != 2 || st.Dropped != 1 {
		t.Fatalf("recover: %+v %v; want 2 rebuilt and re-attached, the deleted pod's record dropped", st, err)
	}
	checkRunning(t, f, ips)
	// The next start finds the store rebuilt: nothing to do.
	f.stop()
	f.start()
	if st, err := f.a.Recover(context.Background()); err != nil || st.Rebuilt != 0 || st.Reattached != 3 {
		t.Fatalf("recover after the rebuild: %+v %v", st, err)
	}
}

// TestDamagedIPAMStoreMovedAside (issue 16): garbage over every data page of the IPAM store
// (bbolt panicked at start-up: "invalid freelist page"). The agent does not panic: it moves
// the file aside, starts a fresh store and rebuilds it as for a lost one.
func TestDamagedIPAMStoreMovedAside(t *testing.T) {
	f, ips := lostIPAMFixture(t, func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		ps := os.Getpagesize()
		for i := 2 * ps; i < len(b); i++ {
			b[i] = byte(i*7919 + i>>8)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		// The damage is one the store detects.
		cp := filepath.Join(t.TempDir(), "copy.db")
		if err := os.WriteFile(cp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := ipam.Open(cp, f0ranges(t)); !errors.Is(err, ipam.ErrCorrupt) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("open of the garbled store: %v, want ErrCorrupt", err)
		}
	})
	aside, _ := filepath.Glob(f.a.ipamPath("vale0") + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("damaged store moved aside to %v, want one file", aside)
	}
	st, err := f.a.Recover(context.Background())
	if err != nil || st.Rebuilt != 2 || st.Reattached != 2 {
		t.Fatalf("recover: %+v %v; want 2 rebuilt and re-attached", st, err)
	}
	checkRunning(t, f, ips)
}

func f0ranges(t *testing.T) []ipam.Range {
	r, err := ipam.ParseRanges([]ipam.RangeConfig{{Subnet: "10.50.0.0/24"}, {Subnet: "fd50::/120"}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestLostIPAMStoreRefused (issue 16): the IPAM store and the attachment records both lost,
// pods' links still on the node: the agent cannot tell their addresses and refuses to
// start, naming the file and what to do, at every start until the operator acts; once the
// links are gone it starts.
func TestLostIPAMStoreRefused(t *testing.T) {
	f, _ := lostIPAMFixture(t, func(path string) {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(filepath.Join(filepath.Dir(path), "attachments.db"), 0); err != nil {
			t.Fatal(err)
		}
	})
	path := f.a.ipamPath("vale0")
	for range 2 {
		_, err := f.a.Recover(context.Background())
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "ip link del") {
			t.Fatalf("recover with a lost store and unknown running pods: %v; want a refusal naming %s and what to do", err, path)
		}
		if err := f.a.notReady(); err == nil {
			t.Fatal("the agent is ready after refusing")
		}
		f.stop()
		f.start()
	}
	pairs, _ := f.links.List()
	for _, p := range pairs {
		f.links.Destroy(p.HostName)
	}
	if _, err := f.a.Recover(context.Background()); err != nil {
		t.Fatalf("recover once the links are gone: %v", err)
	}
}

// TestUndecodableIPAMRecord (issue 16): one owner record of the IPAM store that does not
// decode does not block the node: the agent starts, and every pod keeps its addresses.
func TestUndecodableIPAMRecord(t *testing.T) {
	f, ips := lostIPAMFixture(t, func(path string) {
		putIPAMRaw(t, path, "owners", "run1\x00eth0", "{garbage")
	})
	if st, err := f.a.Recover(context.Background()); err != nil || st.Reattached != 2 {
		t.Fatalf("recover: %+v %v", st, err)
	}
	checkRunning(t, f, ips)
}

func putIPAMRaw(t *testing.T, path, bucket, k, v string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(k), []byte(v)) }); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedAttachmentStore (issue 16): garbage over the attachment store's data pages
// (a cache without fsync, which a power loss may leave torn): the agent neither panics nor
// refuses; it moves the file aside and rebuilds the records from IPAM and the links' aliases.
func TestDamagedAttachmentStore(t *testing.T) {
	for seed := range 8 {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			f, ips := lostIPAMFixture(t, func(path string) {
				rp := filepath.Join(filepath.Dir(path), "attachments.db")
				b, err := os.ReadFile(rp)
				if err != nil {
					t.Fatal(err)
				}
				ps := os.Getpagesize()
				for i := 2 * ps; i < len(b); i++ {
					b[i] = byte(i*(7919+seed) + i>>8 + seed)
				}
				if err := os.WriteFile(rp, b, 0o600); err != nil {
					t.Fatal(err)
				}
			})
			if st, err := f.a.Recover(context.Background()); err != nil || st.Reattached != 2 {
				t.Fatalf("recover: %+v %v", st, err)
			}
			checkRunning(t, f, ips)
		})
	}
}

// TestUndecodableAttachmentRecord (issue 16): one attachment record that does not decode
// costs that record only: the agent starts and rebuilds it from IPAM and the link's alias.
func TestUndecodableAttachmentRecord(t *testing.T) {
	f, ips := lostIPAMFixture(t, func(path string) {
		putIPAMRaw(t, filepath.Join(filepath.Dir(path), "attachments.db"), "attachments", "run1\x00eth0", "{garbage")
	})
	if st, err := f.a.Recover(context.Background()); err != nil || st.Reattached != 2 || st.Orphans != 1 {
		t.Fatalf("recover: %+v %v; want 2 re-attached, 1 rebuilt from IPAM", st, err)
	}
	checkRunning(t, f, ips)
}

// TestAddSwitchLostStoreRefused (issue 16): a switch added at run time whose IPAM store is
// lost while a link no record accounts for is on the node: AddSwitch fails naming the file,
// and the switch allocates nothing until its store is rebuilt.
func TestAddSwitchLostStoreRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	f.links.add("net/unknown/net1") // a running pod whose records are lost
	path := filepath.Join(f.cfg.StateDir, "ipam-vale2.db")
	if _, err := f.a.AddSwitch(ctx, secondaryConfig("vale2", "10.60.0.0/24"), nil); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("AddSwitch with a lost store and an unknown pod = %v, want a refusal naming %s", err, path)
	}
	_, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: key("new"), Network: "net", Switch: "vale2"})
	if !errors.Is(err, agentapi.ErrNotReady) {
		t.Fatalf("allocate on the switch whose store was not rebuilt: %v, want NotReady", err)
	}
}
