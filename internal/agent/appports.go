package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/epair-cni/epair/internal/controller"
	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/nmport"
	"github.com/epair-cni/epair/pkg/vale"
)

// appPortRecord is one of a pod's netmap application ports as the agent keeps it: the
// pod's name for it, its switch port, and its identity (a MAC derived from the attachment
// and the name, addresses from the switch's IPAM under the port's own owner).
type appPortRecord struct {
	Name string         `json:"name"`
	Port string         `json:"port"`
	MAC  string         `json:"mac"`
	IPs  []ipam.Address `json:"ips"`
}

// appSep separates an attachment's interface from an application port's name in the
// port's IPAM owner ("eth0/rx"): no interface name can contain it.
const appSep = "/"

// appOwner is the IPAM owner of application port name of attachment k.
func appOwner(k agentapi.Key, name string) ipam.Owner {
	return ipam.Owner{ContainerID: k.ContainerID, IfName: k.IfName + appSep + name}
}

// ownerKey maps an IPAM owner to its attachment's key; app says the owner is one of the
// attachment's application ports.
func keyOfOwner(o ipam.Owner) (k agentapi.Key, app bool) {
	ifn, _, app := strings.Cut(o.IfName, appSep)
	return agentapi.Key{ContainerID: o.ContainerID, IfName: ifn}, app
}

// appPortIdentity derives the switch port name and the MAC (locally administered,
// unicast) of application port name of attachment k on switch sw, try 0, 1, ... until the
// name is free. A port's full name ("vale0:nm1a2b3c4") fits in IFNAMSIZ-1 bytes, as
// netmap's names do: "nm" and as many hex digits of a hash as the switch's name leaves
// room for, at least 4.
func appPortIdentity(sw string, k agentapi.Key, name string, try int) (port string, mac net.HardwareAddr, err error) {
	digits := vale.MaxNameLen - len(sw) - 1 - 2
	if digits < 4 {
		return "", nil, fmt.Errorf("switch name %q is too long for application ports (at most %d bytes)", sw, vale.MaxNameLen-1-2-4)
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%d", k.ContainerID, k.IfName, name, try))
	mac = net.HardwareAddr{0x06, h[10], h[11], h[12], h[13], h[14]}
	return "nm" + hex.EncodeToString(h[:5])[:min(digits, 10)], mac, nil
}

// appPortTaken reports whether another attachment's application port has port or mac.
func (a *Agent) appPortTaken(k agentapi.Key, port string, mac net.HardwareAddr) bool {
	for _, r := range a.records() {
		for _, p := range r.AppPorts {
			if r.Key != k && (p.Port == port || p.MAC == mac.String()) {
				return true
			}
		}
	}
	return false
}

// ParseNetmapPorts parses a list of application port names (the pod annotation's value,
// comma-separated): each 1-15 bytes of [A-Za-z0-9_.-], no duplicates, at most
// dataplane.MaxAppPorts.
func ParseNetmapPorts(s string) ([]string, error) {
	var out []string
	for n := range strings.SplitSeq(s, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		out = append(out, n)
	}
	if err := agentapi.ValidateNetmapPorts(out); err != nil {
		return nil, err
	}
	return out, nil
}

// annotationTimeout bounds the read of a pod's annotation at attach: the cache answers at
// once; only a pod the cache has not seen yet costs a request to the API server.
const annotationTimeout = 2 * time.Second

// wantedAppPorts are the names of the application ports r's pod asks for: the plugin's
// (netmapPorts in the network configuration or runtimeConfig) and, in cluster mode, the
// pod's annotation. When the annotation cannot be read (the API server is away and the
// cache has not seen the pod), the pod is attached without the annotation's ports and the
// agent says so in its log: a pod's network never waits for the API server.
func (a *Agent) wantedAppPorts(ctx context.Context, r *record) ([]string, error) {
	names := slices.Clone(r.NetmapPorts)
	if a.pods != nil && r.PodName != "" && r.PodNamespace != "" {
		actx, cancel := context.WithTimeout(ctx, annotationTimeout)
		v, ok, err := a.pods.PodAnnotation(actx, r.PodNamespace, r.PodName, controller.NetmapPortsAnnotation)
		cancel()
		if err != nil {
			a.log.Warn("could not read the pod's annotations: attached without the application ports they may ask for",
				"pod", r.PodNamespace+"/"+r.PodName, "annotation", controller.NetmapPortsAnnotation, "err", err)
			ok = false
		}
		if ok {
			more, err := ParseNetmapPorts(v)
			if err != nil {
				return nil, agentapi.NewError(agentapi.CodeInvalidRequest, fmt.Sprintf("pod %s/%s: annotation %s=%q: %v",
					r.PodNamespace, r.PodName, controller.NetmapPortsAnnotation, v, err))
			}
			for _, n := range more {
				if !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
		}
	}
	if err := agentapi.ValidateNetmapPorts(names); err != nil {
		return nil, fmt.Errorf("application ports of %s: %w", r.Key, err)
	}
	if len(names) > 0 && a.cfg.PodNetmapPorts != nil && !*a.cfg.PodNetmapPorts {
		return nil, agentapi.NewError(agentapi.CodeInvalidRequest, fmt.Sprintf("%s asks for netmap application ports %v, and this node's agent "+
			"does not serve them (podNetmapPorts: false in its configuration; in a cluster, the chart's agent.netmapPorts)", r.Key, names))
	}
	if slices.Contains(names, r.Key.IfName) {
		return nil, agentapi.NewError(agentapi.CodeInvalidRequest, fmt.Sprintf("application port %q: the name of the pod's interface", r.Key.IfName))
	}
	return names, nil
}

// ensureAppPorts sets r.AppPorts to the application ports r's pod asks for: the ones r
// has keep their addresses, new ones get addresses from the switch's IPAM, and ones no
// longer asked for stay until the attachment is released. It returns undo, which gives
// back what this call allocated (swMu and the key's lock held).
func (a *Agent) ensureAppPorts(ctx context.Context, r *record) (undo func(), err error) {
	undo = func() {}
	names, err := a.wantedAppPorts(ctx, r)
	if err != nil || len(names) == 0 {
		return undo, err
	}
	st, ok := a.stores[r.Switch]
	if !ok {
		return undo, fmt.Errorf("application ports of %s: switch %s is not configured any more", r.Key, r.Switch)
	}
	var made []ipam.Owner
	undo = func() {
		for _, o := range made {
			if _, _, err := st.Release(o); err != nil {
				a.log.Warn("release an application port's addresses", "owner", o.String(), "err", err)
			}
		}
	}
	out := make([]appPortRecord, 0, len(names))
	for _, n := range names {
		if i := slices.IndexFunc(r.AppPorts, func(p appPortRecord) bool { return p.Name == n }); i >= 0 {
			out = append(out, r.AppPorts[i])
			continue
		}
		var port string
		var mac net.HardwareAddr
		for try := 0; ; try++ {
			if port, mac, err = appPortIdentity(r.Switch, r.Key, n, try); err != nil {
				undo()
				return func() {}, agentapi.NewError(agentapi.CodeInvalidRequest, fmt.Sprintf("application port %s of %s: %v", n, r.Key, err))
			}
			if !a.appPortTaken(r.Key, port, mac) {
				break
			}
		}
		o := appOwner(r.Key, n)
		al, err := st.Allocate(o, nil)
		if err != nil {
			undo()
			return func() {}, ipamError(fmt.Errorf("allocate addresses for application port %s of %s: %w", n, r.Key, err))
		}
		made = append(made, o)
		out = append(out, appPortRecord{Name: n, Port: port, MAC: mac.String(), IPs: al.Addrs})
	}
	// Ports asked for before and not now stay until the attachment goes: their
	// addresses may still be in use by an application.
	for _, p := range r.AppPorts {
		if !slices.Contains(names, p.Name) {
			out = append(out, p)
		}
	}
	r.AppPorts = out
	return undo, nil
}

// appPortsOf is the dataplane's view of r's application ports.
func appPortsOf(r *record) []dataplane.AppPort {
	out := make([]dataplane.AppPort, 0, len(r.AppPorts))
	for _, p := range r.AppPorts {
		mac, _ := net.ParseMAC(p.MAC)
		ap := dataplane.AppPort{Name: p.Name, Port: p.Port, MAC: mac}
		for _, ad := range p.IPs {
			ap.Addrs = append(ap.Addrs, nmport.Address{Prefix: ad.Prefix, Gateway: ad.Gateway})
		}
		out = append(out, ap)
	}
	return out
}

// serveAppPorts serves r's application ports in its pod's network namespace.
func (a *Agent) serveAppPorts(r *record) error {
	if len(r.AppPorts) == 0 {
		return nil
	}
	if r.NetNS == "" {
		return fmt.Errorf("application ports of %s: the pod's network namespace is not known", r.Key)
	}
	return a.dp.ServeAppPorts(r.Switch, r.HostIfName, r.NetNS, r.Key.IfName, appPortsOf(r))
}

// releaseAppPorts gives back the addresses of k's application ports: those r lists and,
// without a record, any the switch stores hold for k (swMu and the key's lock held).
func (a *Agent) releaseAppPorts(k agentapi.Key, r *record) error {
	var errs []error
	for name, st := range a.stores {
		owners := map[ipam.Owner]bool{}
		if r != nil && r.Switch == name {
			for _, p := range r.AppPorts {
				owners[appOwner(k, p.Name)] = true
			}
		}
		if r == nil {
			als, err := st.List()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, al := range als {
				if pk, app := keyOfOwner(al.Owner); app && pk == k {
					owners[al.Owner] = true
				}
			}
		}
		for o := range owners {
			if _, _, err := st.Release(o); err != nil {
				errs = append(errs, fmt.Errorf("release application port %s: %w", o, err))
			}
		}
	}
	return errors.Join(errs...)
}
