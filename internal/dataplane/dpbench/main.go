// Command dpbench is the helper of hack/bench-dataplane.sh: it runs a
// Dataplane in the calling process's network namespace over given links
// (switch; with -offload an offload switch: ports with virtio-net headers,
// pods keep TSO and checksum offload), floods 64-byte UDP
// frames (udp-flood), and turns a link's transmit checksum offload, and with
// it TSO, off or on (csum-off, csum-on). It only ever sends to the address
// it is given, from inside the namespace the script put it in.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/linkport"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dpbench switch|udp-flood|csum-off|csum-on [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "switch":
		err = runSwitch(os.Args[2:])
	case "udp-flood":
		err = udpFlood(os.Args[2:])
	case "csum-off":
		err = setCsum(os.Args[2:], false)
	case "csum-on":
		err = setCsum(os.Args[2:], true)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dpbench:", err)
		os.Exit(1)
	}
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func runSwitch(args []string) error {
	fs := flag.NewFlagSet("switch", flag.ExitOnError)
	var links list
	fs.Var(&links, "link", "host link to attach as NAME,PODMAC,PODIP[,PODIP] (repeat)")
	backend := fs.String("backend", "auto", "auto, xdp or packet")
	gw := fs.String("gw", "", "gateway address with prefix for the host port")
	frames := fs.Int("xdp-frames", 0, "AF_XDP UMEM frames per link (0: the default, as the agent's)")
	slots := fs.Int("ring-slots", 0, "netmap ring slots per port (0: the default, as the agent's)")
	qlen := fs.Int("queue", 0, "output queue length (0: default)")
	offload := fs.Bool("offload", false, "an offload switch (virtio-net headers; backend auto or packet)")
	allowSpoofing := fs.Bool("allow-spoofing", false, "ports without anti-spoofing (default: the dataplane's port security)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the switch to this file, from ready to SIGTERM")
	fastPath := fs.Bool("fast-path", false, "move known-unicast frames between the pods in the kernel (dataplane Config.FastPath; offload switch)")
	rxSpin := fs.Duration("rx-spin", 0, "how long a port keeps looking for frames after traffic (0: the default, as the agent's; negative: off)")
	_ = fs.Parse(args)
	be, err := linkport.ParseBackend(*backend)
	if err != nil {
		return err
	}
	cfg := dataplane.DefaultConfig()
	cfg.Backend = be
	cfg.Link.XDP.FrameCount = uint32(*frames)
	if *slots != 0 {
		cfg.RingSlots = *slots
	}
	cfg.DefaultPolicy.QueueLen = *qlen
	cfg.RxSpin = *rxSpin
	cfg.FastPath = *fastPath
	cfg.DefaultPolicy.AllowSpoofing = *allowSpoofing
	sc := dataplane.SwitchConfig{Name: "vale0", Offload: *offload}
	if *gw != "" {
		p, err := netip.ParsePrefix(*gw)
		if err != nil {
			return fmt.Errorf("parse -gw: %w", err)
		}
		sc.HostPort.Gateways = []netip.Prefix{p}
	}
	cfg.Switches = []dataplane.SwitchConfig{sc}
	dp, err := dataplane.New(cfg)
	if err != nil {
		return err
	}
	defer dp.Close(dataplane.CloseOptions{Uninstall: true})
	for i, l := range links {
		req, err := linkRequest(l)
		if err != nil {
			return err
		}
		req.Owner = fmt.Sprintf("bench%d/eth0", i)
		if _, err := dp.AttachPort(context.Background(), req); err != nil {
			return err
		}
	}
	// Measure the ports as they run for good: after the background move to AF_XDP.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := dp.SettleUpgrades(ctx); err != nil {
		return fmt.Errorf("wait for the ports' AF_XDP upgrades: %w", err)
	}
	for _, pi := range dp.Ports() {
		fmt.Fprintf(os.Stderr, "dpbench: attached %s (%s%s)\n", pi.Name, pi.Backend, strings.TrimSuffix(" "+pi.Fallback, " "))
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	pprof.StopCPUProfile()
	for _, p := range dp.Ports() {
		fmt.Fprintf(os.Stderr, "dpbench: %s in %d out %d drops %v queue drops %d nobuf %d tx errors %d super-frames in %d socket full %d fast path in %d out %d\n",
			p.Name, p.Counters.InFrames, p.Counters.OutFrames, p.Counters.Drops, p.Queue.Drops, p.Queue.NoBuf, p.Queue.TxErrors, p.RxChains, p.KernelDrops,
			p.FastPath.InFrames, p.FastPath.OutFrames)
	}
	return nil
}

// udpFlood sends 18-byte UDP payloads (64-byte frames with FCS) with
// sendmmsg in batches of 64 until the duration ends.
func udpFlood(args []string) error {
	fs := flag.NewFlagSet("udp-flood", flag.ExitOnError)
	dst := fs.String("dst", "", "destination ip:port")
	size := fs.Int("size", 18, "UDP payload bytes")
	dur := fs.Duration("duration", 5*time.Second, "how long to send")
	flows := fs.Int("flows", 1, "source ports to spread over")
	_ = fs.Parse(args)
	ap, err := netip.ParseAddrPort(*dst)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("parse -dst %q: want an IPv4 ip:port", *dst)
	}
	var fds []int
	for i := 0; i < *flows; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	const batch = 64
	payload := make([]byte, *size)
	iov := make([]unix.Iovec, batch)
	msgs := make([]unix.Mmsghdr, batch)
	for i := range msgs {
		iov[i].Base = &payload[0]
		iov[i].SetLen(len(payload))
		msgs[i].Hdr.Iov = &iov[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	var sent uint64
	end := time.Now().Add(*dur)
	for i := 0; time.Now().Before(end); i++ {
		fd := fds[i%len(fds)]
		binary.BigEndian.PutUint32(payload, uint32(i))
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), batch, 0, 0, 0)
		if e != 0 {
			if e == unix.ENOBUFS || e == unix.EAGAIN || e == unix.ECONNREFUSED {
				continue
			}
			return fmt.Errorf("sendmmsg: %w", e)
		}
		sent += uint64(n)
	}
	fmt.Printf("sent %d datagrams in %v (%.0f/s)\n", sent, *dur, float64(sent)/dur.Seconds())
	return nil
}

// setCsum turns a link's transmit checksum offload (and with it TSO) on or off.
func setCsum(args []string, on bool) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: csum-on|csum-off <link>")
	}
	if _, err := net.InterfaceByName(args[0]); err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return sys.SetTxChecksum(fd, args[0], on)
}

// linkRequest parses -link NAME,PODMAC,PODIP[,PODIP]: the host link and the pod's identity,
// which the switch pins (and anti-spoofing checks).
func linkRequest(v string) (dataplane.AttachRequest, error) {
	f := strings.Split(v, ",")
	if len(f) < 3 {
		return dataplane.AttachRequest{}, fmt.Errorf("-link %q: want NAME,PODMAC,PODIP[,PODIP]", v)
	}
	mac, err := net.ParseMAC(f[1])
	if err != nil {
		return dataplane.AttachRequest{}, fmt.Errorf("-link %q: pod MAC: %w", v, err)
	}
	req := dataplane.AttachRequest{HostIfName: f[0], PodMAC: mac}
	for _, a := range f[2:] {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return dataplane.AttachRequest{}, fmt.Errorf("-link %q: pod address: %w", v, err)
		}
		req.PodIPs = append(req.PodIPs, ip)
	}
	return req, nil
}
