package epair

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/vishvananda/netlink"
)

// dumpRetries bounds the retries of an interrupted link dump. A dump is interrupted
// whenever a link changes while it runs, which under a burst of concurrent ADDs (100 pairs
// being created at once) happens several times in a row; a jittered pause lets the burst's
// changes land between attempts.
const dumpRetries = 100

// linkList dumps the host namespace's links, retrying interrupted dumps. It returns
// netlink.ErrDumpInterrupted (with the last, possibly incomplete, list) only if every
// attempt was interrupted.
func (c *Cloner) linkList() ([]netlink.Link, error) {
	var (
		links []netlink.Link
		err   error
	)
	for i := range dumpRetries {
		links, err = c.host.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
		if i >= 3 {
			time.Sleep(time.Duration(rand.IntN(2000)+200) * time.Microsecond)
		}
	}
	return links, err
}
