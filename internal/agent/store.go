package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
)

// record is what the agent persists per attachment besides the addresses (which live in
// the switch's IPAM store): enough to answer Check/List, to GC by network and to re-attach
// the host link after a restart.
type record struct {
	Key          agentapi.Key `json:"key"`
	Network      string       `json:"network,omitempty"`
	NetNS        string       `json:"netns,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
	Switch       string       `json:"switch"`
	MAC          string       `json:"mac,omitempty"`
	MTU          int          `json:"mtu"`
	// PodMAC is the pod end's MAC as the plugin reported it at Attach (MAC is the one
	// the runtime asked for, usually empty): with the addresses, the pod's identity.
	PodMAC string `json:"podMAC,omitempty"`
	// HostIfName/HostIfIndex are set once Attach succeeded.
	HostIfName  string    `json:"hostIfName,omitempty"`
	HostIfIndex int       `json:"hostIfIndex,omitempty"`
	Created     time.Time `json:"created"`
	// IPs are the addresses IPAM gave the attachment, a copy of the switch's IPAM record:
	// if that store is lost or damaged, Recover restores the running pods' addresses from
	// them, so that none is handed to another pod.
	IPs []ipam.Address `json:"ips,omitempty"`
	// NetmapPorts are the application ports the plugin asked for; AppPorts the ones the
	// pod has (those and its annotation's), with their switch ports and addresses.
	NetmapPorts []string        `json:"netmapPorts,omitempty"`
	AppPorts    []appPortRecord `json:"appPorts,omitempty"`

	// policy is the pod's PortPolicy applied to the port (cluster mode), nil for the
	// switch's default. It is not persisted: a restarted agent asks the controller again.
	policy *controller.PolicyConfig
}

var bktAttachments = []byte("attachments")

func recKey(k agentapi.Key) []byte { return []byte(k.ContainerID + "\x00" + k.IfName) }

// recordStore persists records in bbolt without fsync: the records are a cache of what
// the IPAM store (fsync'd, the source of truth for addresses) and the host links' aliases
// (network, container, ifname) already say. A killed agent loses nothing (the page cache
// survives the process); a power loss may lose the last changes or leave the file
// unreadable, in which case openRecords starts afresh and Recover rebuilds every record
// from IPAM and the aliases, losing only the diagnostic fields (netns, pod name). This
// takes three fsyncs off every pod's ADD+DEL and lets concurrent ADDs not queue behind
// each other's flushes.
type recordStore struct{ db *bolt.DB }

func openRecords(path string) (*recordStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open attachment store: %w", err)
	}
	db, err := openRecordsDB(path)
	if err != nil && !errors.Is(err, berrors.ErrTimeout) {
		// Unreadable (a power loss during an unsynced write): start afresh, keeping the
		// old file for inspection; Recover rebuilds the records.
		if rerr := os.Rename(path, path+".corrupt"); rerr == nil {
			db, err = openRecordsDB(path)
		}
	}
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open attachment store %s: locked by another agent: %w", path, syscall.EWOULDBLOCK)
		}
		return nil, fmt.Errorf("open attachment store %s: %w", path, err)
	}
	db.NoSync = true
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bktAttachments)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open attachment store %s: %w", path, err)
	}
	return &recordStore{db: db}, nil
}

// openRecordsDB opens the attachment store's file and reads every page of it, turning a
// panic of bbolt on a damaged page into an error. The free list is synced (not
// NoFreelistSync): bbolt rebuilds a missing one by a check whose errors panic in a
// goroutine of its own, which no recover reaches; a damaged synced one panics in Open's.
func openRecordsDB(path string) (*bolt.DB, error) {
	// What bbolt reads at open beyond any recover (the meta pages and the free list).
	if err := ipam.CheckFile(path); err != nil {
		return nil, err
	}
	var bf ipam.BoltFile
	var db *bolt.DB
	err := guardStore(func() error {
		var err error
		if db, err = bolt.Open(path, 0o600, bf.Options()); err != nil {
			return err
		}
		return db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				return b.ForEach(func(_, _ []byte) error { return nil })
			})
		})
	})
	if err != nil {
		if db != nil {
			guardStore(db.Close)
		}
		bf.Release(nil, true) // a panic inside Open leaves the file mapped and locked
		return nil, err
	}
	return db, nil
}

// guardStore runs fn, turning a panic (bbolt's on a damaged page, or a fault reading the
// memory map) into an error.
func guardStore(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("damaged: %v", p)
		}
	}()
	return fn()
}

func (s *recordStore) put(r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode attachment %s: %w", r.Key, err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bktAttachments).Put(recKey(r.Key), b) }); err != nil {
		return fmt.Errorf("store attachment %s: %w", r.Key, err)
	}
	return nil
}

func (s *recordStore) delete(k agentapi.Key) error {
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bktAttachments).Delete(recKey(k)) }); err != nil {
		return fmt.Errorf("delete attachment %s: %w", k, err)
	}
	return nil
}

// all returns the records; one that does not decode is skipped and reported in bad (Recover
// rebuilds it from IPAM and the link's alias, as for a lost store).
func (s *recordStore) all() (out []*record, bad []string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktAttachments).ForEach(func(k, v []byte) error {
			r := new(record)
			if err := json.Unmarshal(v, r); err != nil {
				bad = append(bad, fmt.Sprintf("%q: %v", k, err))
				return nil
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("load attachments: %w", err)
	}
	return out, bad, nil
}

// close flushes and closes the store (a graceful stop leaves it synced).
func (s *recordStore) close() error {
	err := s.db.Sync()
	return errors.Join(err, s.db.Close())
}

// openIPAM opens the IPAM store of a switch at path. A damaged store (ipam.ErrCorrupt) is
// moved aside to <path>.corrupt-<time> and replaced by a fresh one, whose allocations
// Recover rebuilds from the attachment records of the pods still running; records Open
// repaired are logged.
func (a *Agent) openIPAM(path string, ranges []ipam.Range) (*ipam.Store, error) {
	st, err := ipam.Open(path, ranges)
	if errors.Is(err, ipam.ErrCorrupt) {
		aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("%w; moving it aside to %s failed (%v): move it aside by hand and restart the agent, "+
				"which rebuilds the running pods' allocations from its attachment records", err, aside, rerr)
		}
		a.log.Error("IPAM store damaged: moved aside; starting a fresh store and rebuilding the allocations of the running pods",
			"file", path, "movedTo", aside, "err", err)
		st, err = ipam.Open(path, ranges)
	}
	if err != nil {
		return nil, err
	}
	for _, r := range st.Repairs() {
		a.log.Error("IPAM store: damaged record repaired", "file", path, "repair", r)
	}
	return st, nil
}

// identityMAC is the pod's MAC for anti-spoofing: the one it was asked to have, else the
// one the plugin reported ("" when neither is known: no anti-spoofing for the port).
func (r *record) identityMAC() string {
	if r.MAC != "" {
		return r.MAC
	}
	return r.PodMAC
}
