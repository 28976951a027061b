package afxdp

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// rxQueues returns the interface's receive queue count (IFLA_NUM_RX_QUEUES), read through
// netlink in the calling thread's namespace.
func rxQueues(ifname string) (int, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("find %s: %w", ifname, err)
	}
	return l.Attrs().NumRxQueues, nil
}
