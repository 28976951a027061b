package agent

import (
	"fmt"
	"os"
)

// procSys is where enableForwarding writes (a variable for tests).
var procSys = "/proc/sys"

// enableForwarding turns on IP forwarding for the families the switches have ranges for, in
// the agent's network namespace, as the bridge plugin does for a gateway: traffic from a pod
// to anything beyond the node's own addresses (another node, the world through masquerade,
// a service address DNATed back into the pod network) is routed by the node. IPv6
// forwarding is only touched when an IPv6 range exists, because it turns off router
// advertisement processing on the node's interfaces that use the default accept_ra.
func enableForwarding(c *Config) error {
	var v4, v6 bool
	for i := range c.Switches {
		for _, r := range c.switchRanges(i) {
			if r.Is4() {
				v4 = true
			} else {
				v6 = true
			}
		}
	}
	write := func(path string) error {
		if err := os.WriteFile(procSys+path, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
		return nil
	}
	if v4 {
		if err := write("/net/ipv4/ip_forward"); err != nil {
			return err
		}
	}
	if v6 {
		if err := write("/net/ipv6/conf/all/forwarding"); err != nil {
			return err
		}
	}
	return nil
}
