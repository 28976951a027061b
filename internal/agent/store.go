package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/epair-cni/epair/internal/controller"
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
	opts := &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil && !errors.Is(err, berrors.ErrTimeout) {
		// Unreadable (a power loss during an unsynced write): start afresh, keeping the
		// old file for inspection; Recover rebuilds the records.
		if rerr := os.Rename(path, path+".corrupt"); rerr == nil {
			db, err = bolt.Open(path, 0o600, opts)
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

func (s *recordStore) all() ([]*record, error) {
	var out []*record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktAttachments).ForEach(func(k, v []byte) error {
			r := new(record)
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("decode attachment %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load attachments: %w", err)
	}
	return out, nil
}

// close flushes and closes the store (a graceful stop leaves it synced).
func (s *recordStore) close() error {
	err := s.db.Sync()
	return errors.Join(err, s.db.Close())
}

// identityMAC is the pod's MAC for anti-spoofing: the one it was asked to have, else the
// one the plugin reported ("" when neither is known: no anti-spoofing for the port).
func (r *record) identityMAC() string {
	if r.MAC != "" {
		return r.MAC
	}
	return r.PodMAC
}
