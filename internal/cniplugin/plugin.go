package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/cleanup"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
)

// Links is the host-side link work the plugin needs; *epair.Cloner implements it.
type Links interface {
	Create(req epair.Request) (*epair.Pair, error)
	Destroy(hostName string) error
	DestroyPodEnd(podNetNS, ifName string) error
	List() ([]epair.Pair, error)
	LookupOwner(owner string) (*epair.Pair, error)
	SetHostMTU(hostName string, mtu int) error
	Close() error
}

var _ Links = (*epair.Cloner)(nil)

// Agent is the part of the agent API the plugin calls; *agentapi.Client implements it.
type Agent interface {
	agentapi.Interface
	Close() error
}

var _ Agent = (*agentapi.Client)(nil)

// Plugin holds the verb handlers. Its fields are the plugin's only dependencies on the
// outside world, so tests run the handlers in-process against a real agent socket and real
// namespaces.
type Plugin struct {
	// Stdout receives the ADD result.
	Stdout io.Writer
	// DialAgent returns a client for the configured socket.
	DialAgent func(c *Config) Agent
	// OpenLinks opens the link operations in the host namespace.
	OpenLinks func() (Links, error)
}

// New returns the production plugin: results on os.Stdout, the agent over its unix socket,
// links through pkg/epair in the calling process's namespace.
func New() *Plugin {
	return &Plugin{
		Stdout: os.Stdout,
		DialAgent: func(c *Config) Agent {
			return agentapi.NewClient(c.AgentSocket, time.Duration(c.Timeouts.Add))
		},
		OpenLinks: func() (Links, error) { return epair.New(epair.Options{}) },
	}
}

// Funcs returns the handlers in skel's form, every error mapped by CNIError.
func (p *Plugin) Funcs() skel.CNIFuncs {
	wrap := func(f func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
		return func(a *skel.CmdArgs) error {
			if err := f(a); err != nil {
				return CNIError(err)
			}
			return nil
		}
	}
	return skel.CNIFuncs{Add: wrap(p.Add), Del: wrap(p.Del), Check: wrap(p.Check), Status: wrap(p.Status), GC: wrap(p.GC)}
}

// About is the VERSION "about" string.
const About = "epair CNI plugin: veth pairs switched by the epair node agent"

type call struct {
	cfg   *Config
	args  *skel.CmdArgs
	key   agentapi.Key
	owner string
	log   *log.Logger
	close func()
}

// begin parses the input once and validates the CNI_* variables the verb needs.
func (p *Plugin) begin(verb string, args *skel.CmdArgs, needNetNS bool) (*call, error) {
	cfg, err := Load(args.StdinData, args.Args)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	c := &call{cfg: cfg, args: args, close: func() {}}
	var closeLog func()
	c.log, closeLog = openLog(cfg, verb, args.ContainerID)
	c.close = func() {
		if cfg.LogLevel == "debug" {
			var ru unix.Rusage
			if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
				c.log.Printf("end (process CPU: user %v, system %v)", time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()))
			}
		}
		closeLog()
	}
	c.debugf("begin")
	if args.ContainerID == "" {
		return c, fmt.Errorf("%s: %w", verb, fieldErr(ErrInvalidArgs, "CNI_CONTAINERID", "", "required", ""))
	}
	if strings.IndexByte(args.ContainerID, 0) >= 0 {
		return c, fmt.Errorf("%s: %w", verb, fieldErr(ErrInvalidArgs, "CNI_CONTAINERID", args.ContainerID, "contains a NUL byte", ""))
	}
	if err := validIfName(args.IfName); err != "" {
		return c, fmt.Errorf("%s: %w", verb, fieldErr(ErrInvalidArgs, "CNI_IFNAME", args.IfName, err, "1..15 bytes, no '/', ':' or whitespace"))
	}
	if needNetNS && args.Netns == "" {
		return c, fmt.Errorf("%s: %w", verb, fieldErr(ErrInvalidArgs, "CNI_NETNS", "", "required", "a network namespace path"))
	}
	if needNetNS && netnsGone(args.Netns) {
		// Fail before asking the agent for anything.
		return c, fmt.Errorf("%s: netns %s does not exist: %w", verb, args.Netns, ErrInvalidNetNS)
	}
	if needNetNS {
		// A file or directory that is no network namespace, or the node's own namespace:
		// refused before any side effect.
		if err := checkPodNetNS(args.Netns); err != nil {
			return c, fmt.Errorf("%s: %w", verb, err)
		}
	}
	c.key = agentapi.Key{ContainerID: args.ContainerID, IfName: args.IfName}
	c.owner = epair.OwnerKey(cfg.Name, args.ContainerID, args.IfName)
	return c, nil
}

func validIfName(s string) string {
	switch {
	case s == "":
		return "required"
	case len(s) > 15:
		return "longer than 15 bytes"
	case s == "." || s == "..":
		return "reserved name"
	case strings.ContainsAny(s, "/: \t\n\r\x00"):
		return "contains '/', ':', NUL or whitespace"
	}
	return ""
}

func openLog(cfg *Config, verb, cid string) (*log.Logger, func()) {
	if cfg.LogFile == "" {
		return log.New(io.Discard, "", 0), func() {}
	}
	f, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return log.New(io.Discard, "", 0), func() {}
	}
	short := cid
	if len(short) > 12 {
		short = short[:12]
	}
	return log.New(f, fmt.Sprintf("epair-cni %s %s pid=%d ", verb, short, os.Getpid()), log.LstdFlags|log.Lmicroseconds|log.LUTC), func() { f.Close() }
}

func (c *call) debugf(format string, a ...any) {
	if c.cfg.LogLevel == "debug" {
		c.log.Printf(format, a...)
	}
}

func (c *call) infof(format string, a ...any) {
	if c.cfg.LogLevel != "error" {
		c.log.Printf(format, a...)
	}
}

// Add implements CNI ADD: allocate-or-get the attachment, clone the epair, configure the pod
// side, attach the host end to the switch, print the result. Every side effect is undone if a
// later step fails. The steps are addOp's methods, in this order.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	c, err := p.begin("add", args, true)
	if c != nil {
		defer c.close()
		defer func() {
			if err != nil {
				c.log.Printf("failed: %v", err)
			}
		}()
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(c.cfg.Timeouts.Add))
	defer cancel()
	op := &addOp{call: c, ctx: ctx, agent: p.DialAgent(c.cfg), undo: cleanup.Make(nil)}
	defer op.agent.Close()
	if op.links, err = p.OpenLinks(); err != nil {
		return fmt.Errorf("add: open links: %w", err)
	}
	defer op.links.Close()
	c.debugf("opened links")
	defer func() {
		if cerr := op.undo.Clean(); cerr != nil {
			c.log.Printf("rollback: %v", cerr)
		}
	}()
	if err := op.allocateAndClone(); err != nil {
		return err
	}
	if err := op.ensurePair(); err != nil {
		return err
	}
	res, err := op.attachAndConfigure()
	if err != nil {
		return err
	}
	out, err := res.GetAsVersion(c.cfg.CNIVersion)
	if err != nil {
		return fmt.Errorf("add: convert result to %s: %w", c.cfg.CNIVersion, err)
	}
	if err := out.PrintTo(p.Stdout); err != nil {
		return fmt.Errorf("add: print result: %w", err)
	}
	op.undo.Release()
	return nil
}

// addOp is one ADD's state between its steps.
type addOp struct {
	*call
	ctx   context.Context
	agent Agent
	links Links
	undo  cleanup.Cleanup // every side effect, undone unless the ADD succeeds

	creq epair.Request
	pair *epair.Pair
	cerr error // the first Create's error: ensurePair may still recover from EEXIST
	att  *agentapi.Attachment
	mac  net.HardwareAddr // the MAC the pod end gets (nil: the pair's own)
}

// allocateAndClone allocates the attachment and clones the pair at the same time (each
// takes about a millisecond): the pair gets the configured MTU (the agent's, when it
// differs, is set afterwards) and the scheme's MAC (the agent's or the runtime's is set with
// the addresses). It settles the pod's MAC: the agent's wins (it may pin it), else the
// runtime's request, else pkg/epair's node-unique scheme.
func (op *addOp) allocateAndClone() error {
	cfg, args := op.cfg, op.args
	req := &agentapi.AllocateRequest{
		Key: op.key, NetNS: args.Netns, Network: cfg.Name, Switch: cfg.Switch,
		PodName: string(cfg.Args.K8S_POD_NAME), PodNamespace: string(cfg.Args.K8S_POD_NAMESPACE), PodUID: string(cfg.Args.K8S_POD_UID),
		IPs: cfg.RequestedIPs, MTU: cfg.MTU, NetmapPorts: cfg.netmapPorts(),
	}
	if cfg.RequestedMAC != nil {
		req.MAC = cfg.RequestedMAC.String()
	}
	type allocation struct {
		att *agentapi.Attachment
		err error
	}
	allocated := make(chan allocation, 1)
	go func() {
		att, err := op.agent.Allocate(op.ctx, req)
		allocated <- allocation{att, err}
	}()
	op.creq = epair.Request{PodNetNS: args.Netns, IfName: args.IfName, MTU: cfg.MTU, Owner: op.owner}
	op.pair, op.cerr = op.links.Create(op.creq)
	al := <-allocated
	var conflict error
	if al.err == nil && al.att.Existing {
		conflict = requestedConflict(op.key, cfg.RequestedIPs, al.att)
	}
	if al.err == nil && conflict == nil {
		// (A repeated ADD refused for asking other addresses leaves the attachment it
		// found as it was.)
		op.undo.Add(func() error {
			// A fresh context: the ADD deadline may be what failed.
			rctx, rcancel := context.WithTimeout(context.Background(), time.Duration(cfg.Timeouts.Del))
			defer rcancel()
			_, err := op.agent.Release(rctx, &agentapi.ReleaseRequest{Key: op.key})
			return err
		})
	}
	if op.cerr == nil {
		op.undoPair()
	}
	if al.err != nil {
		return fmt.Errorf("add: allocate attachment %s: %w", op.key, al.err)
	}
	if conflict != nil {
		return fmt.Errorf("add: %w", conflict)
	}
	op.att = al.att
	op.debugf("allocated %+v", op.att)
	if len(op.att.IPs) == 0 {
		return fmt.Errorf("add: attachment %s: the agent returned no address: %w", op.key, agentapi.ErrInternal)
	}
	op.mac = cfg.RequestedMAC
	if op.att.MAC != "" {
		var err error
		if op.mac, err = net.ParseMAC(op.att.MAC); err != nil {
			return fmt.Errorf("add: attachment %s: agent MAC %q: %w", op.key, op.att.MAC, err)
		}
	}
	return nil
}

// requestedConflict is the error of a repeated ADD whose runtimeConfig.ips asks for
// addresses the existing attachment does not hold (nil if it holds them all).
func requestedConflict(key agentapi.Key, requested []netip.Addr, att *agentapi.Attachment) error {
	var held []string
	for _, ip := range att.IPs {
		held = append(held, ip.Address.String())
	}
	for _, a := range requested {
		a = a.Unmap()
		if !slices.ContainsFunc(att.IPs, func(ip agentapi.IPConfig) bool { return ip.Address.Addr() == a }) {
			return fmt.Errorf("%w: attachment %s already exists with %s, not the requested %s (runtimeConfig.ips); DEL it first to change its addresses",
				ErrAddressConflict, key, strings.Join(held, ", "), a)
		}
	}
	return nil
}

// undoPair registers the removal of the pair just created.
func (op *addOp) undoPair() {
	hostName := op.pair.HostName
	op.undo.Add(func() error { return op.links.Destroy(hostName) })
}

// ensurePair removes a pair left by an earlier, interrupted ADD of the same attachment and
// creates the pair again if that one was in the way, then gives it the agent's MTU. Only a
// retried ADD (the agent knew the attachment) can have one, or an ADD that found the pod
// interface still there: a fresh ADD skips the link dump that finding it takes.
func (op *addOp) ensurePair() error {
	if op.att.Existing {
		if _, err := op.removeStale(); err != nil {
			return err
		}
		op.debugf("removed what is left of %s", op.owner)
	}
	if errors.Is(op.cerr, syscall.EEXIST) {
		// The pod interface is there: left by an earlier ADD of this attachment? (A
		// pair of another owner is not touched, and Create fails again.)
		removed, err := op.removeStale()
		if err != nil {
			return err
		}
		if removed || op.att.Existing {
			if op.pair, op.cerr = op.links.Create(op.creq); op.cerr == nil {
				op.undoPair()
			}
		}
	}
	if op.cerr != nil {
		if netnsGone(op.args.Netns) {
			return fmt.Errorf("add: create epair: %w: %w", ErrInvalidNetNS, op.cerr)
		}
		return fmt.Errorf("add: create epair: %w", op.cerr)
	}
	if op.att.MTU != 0 && op.att.MTU != op.pair.MTU {
		if err := op.links.SetHostMTU(op.pair.HostName, op.att.MTU); err != nil {
			return fmt.Errorf("add: %w", err)
		}
		op.pair.MTU = op.att.MTU
	}
	op.debugf("created %s (index %d) / %s", op.pair.HostName, op.pair.HostIndex, op.args.IfName)
	return nil
}

// removeStale destroys the owner's pairs other than the one this ADD made.
func (op *addOp) removeStale() (bool, error) {
	keep := ""
	if op.pair != nil {
		keep = op.pair.HostName
	}
	all, err := op.links.List()
	if err != nil {
		return false, fmt.Errorf("add: look up existing epairs: %w", err)
	}
	removed := false
	for _, old := range all {
		if old.Owner != op.owner || old.HostName == keep {
			continue
		}
		op.infof("removing stale %s of %s", old.HostName, op.owner)
		if err := op.links.Destroy(old.HostName); err != nil {
			return removed, fmt.Errorf("add: remove stale epair of %s: %w", op.owner, err)
		}
		removed = true
	}
	return removed, nil
}

// attachAndConfigure has the agent attach the host end while the pod end is configured (a
// failure of either is undone by the release, which also detaches), and returns the result.
func (op *addOp) attachAndConfigure() (*current.Result, error) {
	cfg, args, att, pair := op.cfg, op.args, op.att, op.pair
	addrs := make([]netip.Prefix, 0, len(att.IPs))
	for _, ip := range att.IPs {
		addrs = append(addrs, ip.Address)
	}
	routes, err := podRoutes(att, cfg.IPAM.Routes)
	if err != nil {
		return nil, fmt.Errorf("add: %w", err)
	}
	type attachment struct {
		port *agentapi.Port
		err  error
	}
	podMAC := pair.PodMAC
	if op.mac != nil {
		podMAC = op.mac
	}
	attached := make(chan attachment, 1)
	go func() {
		port, err := op.agent.Attach(op.ctx, &agentapi.AttachRequest{Key: op.key, HostIfName: pair.HostName, HostIfIndex: pair.HostIndex,
			PodMAC: podMAC.String()})
		attached <- attachment{port, err}
	}()
	perr := configurePod(args.Netns, args.IfName, op.mac, pair.MTU, att.Offload, addrs, routes)
	op.debugf("configured %s in %s", args.IfName, args.Netns)
	at := <-attached
	if perr != nil {
		return nil, fmt.Errorf("add: configure pod interface: %w", perr)
	}
	if at.err != nil {
		return nil, fmt.Errorf("add: attach %s to switch %s: %w", pair.HostName, att.Switch, at.err)
	}
	op.infof("attached %s as %s", pair.HostName, at.port.Name)
	mtu := att.MTU
	if mtu == 0 {
		mtu = pair.MTU
	}
	return buildResult(cfg, args, pair, podMAC, mtu, att, routes), nil
}

// podRoutes resolves the agent's routes and the config's extra routes: a route without a
// gateway goes via the attachment's gateway of its family (on-link if there is none).
func podRoutes(att *agentapi.Attachment, extra []*types.Route) ([]podRoute, error) {
	gw := func(dst netip.Prefix) netip.Addr {
		for _, ip := range att.IPs {
			if ip.Gateway.IsValid() && ip.Gateway.Is4() == dst.Addr().Is4() {
				return ip.Gateway
			}
		}
		return netip.Addr{}
	}
	hasFamily := func(is4 bool) bool {
		return slices.ContainsFunc(att.IPs, func(ip agentapi.IPConfig) bool { return ip.Address.Addr().Is4() == is4 })
	}
	var out []podRoute
	for _, r := range att.Routes {
		if !r.Dst.IsValid() {
			return nil, fmt.Errorf("agent route without destination: %w", agentapi.ErrInternal)
		}
		if !hasFamily(r.Dst.Addr().Is4()) {
			continue // e.g. an IPv6 default route for a pod the config made IPv4-only
		}
		pr := podRoute{Dst: r.Dst.Masked(), GW: r.GW}
		if !pr.GW.IsValid() {
			pr.GW = gw(pr.Dst)
		}
		out = append(out, pr)
	}
	for i, r := range extra {
		p, ok := ipNetToPrefix(&r.Dst)
		if !ok {
			return nil, fieldErr(ErrInvalidConfig, fmt.Sprintf("ipam.routes[%d].dst", i), r.Dst.String(), "not a CIDR", "")
		}
		if !hasFamily(p.Addr().Is4()) {
			return nil, fieldErr(ErrInvalidConfig, fmt.Sprintf("ipam.routes[%d].dst", i), p.String(), "the pod has no address of this family", "")
		}
		pr := podRoute{Dst: p.Masked()}
		if a, ok := netip.AddrFromSlice(r.GW); ok && r.GW != nil {
			pr.GW = a.Unmap()
		} else {
			pr.GW = gw(pr.Dst)
		}
		out = append(out, pr)
	}
	return out, nil
}

func buildResult(cfg *Config, args *skel.CmdArgs, pair *epair.Pair, podMAC net.HardwareAddr, mtu int,
	att *agentapi.Attachment, routes []podRoute) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: cfg.DNS}
	if prev := cfg.PrevResult; prev != nil {
		// Not the first plugin: keep what the earlier ones reported.
		res.Interfaces = append(res.Interfaces, prev.Interfaces...)
		res.IPs = append(res.IPs, prev.IPs...)
		res.Routes = append(res.Routes, prev.Routes...)
		if cfg.DNS.IsEmpty() {
			res.DNS = prev.DNS
		}
	}
	base := len(res.Interfaces)
	res.Interfaces = append(res.Interfaces,
		&current.Interface{Name: pair.HostName, Mac: pair.HostMAC.String(), Mtu: mtu},
		&current.Interface{Name: args.IfName, Mac: podMAC.String(), Mtu: mtu, Sandbox: args.Netns})
	for _, ip := range att.IPs {
		ipc := &current.IPConfig{Address: *prefixToIPNet(ip.Address), Interface: current.Int(base + 1)}
		if ip.Gateway.IsValid() {
			ipc.Gateway = net.IP(ip.Gateway.AsSlice())
		}
		res.IPs = append(res.IPs, ipc)
	}
	for _, r := range routes {
		tr := &types.Route{Dst: *prefixToIPNet(r.Dst)}
		if r.GW.IsValid() {
			tr.GW = net.IP(r.GW.AsSlice())
		}
		res.Routes = append(res.Routes, tr)
	}
	return res
}

// Del implements CNI DEL. It succeeds when called again, when the netns or the link is gone
// and when the agent is down or slow: the agent call is bounded by timeouts.del and its
// transport failures are logged, not returned (the agent reconciles from the host links and
// its store when it is back). Local links are removed whatever the agent says.
func (p *Plugin) Del(args *skel.CmdArgs) (err error) {
	c, err := p.begin("del", args, false)
	if c != nil {
		defer c.close()
	}
	if err != nil {
		return err
	}
	cfg := c.cfg
	var errs []error
	links, err := p.OpenLinks()
	if err != nil {
		return fmt.Errorf("del: open links: %w", err)
	}
	defer links.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Timeouts.Del))
	defer cancel()
	agent := p.DialAgent(cfg)
	defer agent.Close()
	if _, err := agent.Release(ctx, &agentapi.ReleaseRequest{Key: c.key}); err != nil {
		switch agentapi.CodeOf(err) {
		case agentapi.CodeUnavailable, agentapi.CodeTimeout, agentapi.CodeNotReady:
			c.log.Printf("agent not reachable, removing local state only: %v", err)
		default:
			errs = append(errs, fmt.Errorf("del: release %s: %w", c.key, err))
		}
	}
	if args.Netns != "" {
		if err := links.DestroyPodEnd(args.Netns, args.IfName); err != nil {
			if errors.Is(err, epair.ErrNotOwned) {
				// Someone else's interface under our ifname: never touch it.
				c.log.Printf("leaving %s in %s alone: %v", args.IfName, args.Netns, err)
			} else {
				errs = append(errs, fmt.Errorf("del: %w", err))
			}
		}
	}
	// The netns may be gone (the pod end went with it) or was not given: find the host end
	// by its owner alias.
	if pair, err := links.LookupOwner(c.owner); err == nil {
		if err := links.Destroy(pair.HostName); err != nil {
			errs = append(errs, fmt.Errorf("del: %w", err))
		}
	} else if !errors.Is(err, syscall.ENXIO) {
		errs = append(errs, fmt.Errorf("del: %w", err))
	}
	err = errors.Join(errs...)
	if err != nil {
		c.log.Printf("failed: %v", err)
	}
	return err
}

// Check implements CNI CHECK: the pod's interface, addresses and routes match prevResult,
// the host link exists, and the agent has the port attached and up.
func (p *Plugin) Check(args *skel.CmdArgs) (err error) {
	c, err := p.begin("check", args, true)
	if c != nil {
		defer c.close()
	}
	if err != nil {
		return err
	}
	cfg := c.cfg
	prev := cfg.PrevResult
	if prev == nil {
		return fmt.Errorf("check: %w", fieldErr(ErrInvalidConfig, "prevResult", "", "required for CHECK", "the result of the ADD"))
	}
	ifIdx := slices.IndexFunc(prev.Interfaces, func(i *current.Interface) bool { return i.Name == args.IfName && i.Sandbox != "" })
	if ifIdx < 0 {
		return fmt.Errorf("check: %w: prevResult has no interface %s in a sandbox", ErrCheckFailed, args.IfName)
	}
	want := prev.Interfaces[ifIdx]

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Timeouts.Check))
	defer cancel()
	agent := p.DialAgent(cfg)
	defer agent.Close()
	att, err := agent.Check(ctx, &agentapi.CheckRequest{Key: c.key})
	if err != nil {
		return fmt.Errorf("check: agent: %w", err)
	}
	if att.Port == nil {
		return fmt.Errorf("check: %w: %s is not attached to a switch port", ErrCheckFailed, c.key)
	}
	if !att.Port.Up {
		return fmt.Errorf("check: %w: port %s of %s is down", ErrCheckFailed, att.Port.Name, c.key)
	}

	links, err := p.OpenLinks()
	if err != nil {
		return fmt.Errorf("check: open links: %w", err)
	}
	defer links.Close()
	pair, err := links.LookupOwner(c.owner)
	if err != nil {
		return fmt.Errorf("check: %w: host end of %s: %w", ErrCheckFailed, c.owner, err)
	}
	if pair.HostName != att.Port.HostIfName {
		return fmt.Errorf("check: %w: agent port is on %s, the pod's host end is %s", ErrCheckFailed, att.Port.HostIfName, pair.HostName)
	}

	st, err := inspectPod(args.Netns, args.IfName)
	if err != nil {
		return fmt.Errorf("check: %w: %w", ErrCheckFailed, err)
	}
	if !st.up {
		return fmt.Errorf("check: %w: %s is down", ErrCheckFailed, args.IfName)
	}
	if want.Mac != "" && !strings.EqualFold(want.Mac, st.mac.String()) {
		return fmt.Errorf("check: %w: %s has MAC %s, result says %s", ErrCheckFailed, args.IfName, st.mac, want.Mac)
	}
	if want.Mtu != 0 && want.Mtu != st.mtu {
		return fmt.Errorf("check: %w: %s has MTU %d, result says %d", ErrCheckFailed, args.IfName, st.mtu, want.Mtu)
	}
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface != ifIdx {
			continue
		}
		p, ok := ipNetToPrefix(&ip.Address)
		if !ok {
			return fmt.Errorf("check: %w: prevResult address %v", ErrCheckFailed, ip.Address)
		}
		if !slices.Contains(st.addrs, p) {
			return fmt.Errorf("check: %w: address %s missing on %s", ErrCheckFailed, p, args.IfName)
		}
		if !slices.ContainsFunc(att.IPs, func(a agentapi.IPConfig) bool { return a.Address == p }) {
			return fmt.Errorf("check: %w: agent has no record of %s for %s", ErrCheckFailed, p, c.key)
		}
	}
	for _, r := range prev.Routes {
		dst, ok := ipNetToPrefix(&r.Dst)
		if !ok {
			continue
		}
		dst = dst.Masked()
		// A route of a family the pod has no address of belongs to another plugin's interface.
		if !slices.ContainsFunc(st.addrs, func(a netip.Prefix) bool { return a.Addr().Is4() == dst.Addr().Is4() }) {
			continue
		}
		found := slices.ContainsFunc(st.routes, func(pr podRoute) bool {
			if pr.Dst != dst {
				return false
			}
			if r.GW == nil {
				return true
			}
			gw, _ := netip.AddrFromSlice(r.GW)
			return pr.GW == gw.Unmap()
		})
		if !found {
			return fmt.Errorf("check: %w: route %s via %v missing in the pod", ErrCheckFailed, dst, r.GW)
		}
	}
	return nil
}

// Status implements CNI STATUS: code 50 unless the agent answers and is ready.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	cfg, err := Load(args.StdinData, args.Args)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Timeouts.Status))
	defer cancel()
	agent := p.DialAgent(cfg)
	defer agent.Close()
	st, err := agent.Status(ctx)
	if err != nil {
		return fmt.Errorf("status: %w: agent at %s: %w", ErrNotAvailable, cfg.AgentSocket, err)
	}
	if !st.Ready {
		return fmt.Errorf("status: %w: agent not ready: %s", ErrNotAvailable, st.Reason)
	}
	return nil
}

// GC implements CNI GC: every host link this plugin created for this network whose owner is
// not in cni.dev/valid-attachments is destroyed, and the agent removes the attachments
// (ports, addresses) not in the set. Links of other networks and links not ours are never
// touched.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	cfg, err := Load(args.StdinData, args.Args)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	lg, closeLog := openLog(cfg, "gc", "")
	defer closeLog()
	valid := make(map[string]bool, len(cfg.ValidAttachments))
	keys := make([]agentapi.Key, 0, len(cfg.ValidAttachments))
	for _, a := range cfg.ValidAttachments {
		valid[epair.OwnerKey(cfg.Name, a.ContainerID, a.IfName)] = true
		keys = append(keys, agentapi.Key{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	links, err := p.OpenLinks()
	if err != nil {
		return fmt.Errorf("gc: open links: %w", err)
	}
	defer links.Close()
	pairs, err := links.List()
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	var errs []error
	prefix := cfg.Name + "/"
	for _, pr := range pairs {
		// Fully hashed keys ("sha256:...") cannot be attributed to a network: left alone.
		if valid[pr.Owner] || !strings.HasPrefix(pr.Owner, prefix) {
			continue
		}
		lg.Printf("removing %s of stale %s", pr.HostName, pr.Owner)
		if err := links.Destroy(pr.HostName); err != nil {
			errs = append(errs, fmt.Errorf("gc: %w", err))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Timeouts.GC))
	defer cancel()
	agent := p.DialAgent(cfg)
	defer agent.Close()
	if resp, err := agent.GC(ctx, &agentapi.GCRequest{Network: cfg.Name, Valid: keys}); err != nil {
		errs = append(errs, fmt.Errorf("gc: agent: %w", err))
	} else {
		lg.Printf("agent removed %d attachments", len(resp.Removed))
	}
	return errors.Join(errs...)
}
