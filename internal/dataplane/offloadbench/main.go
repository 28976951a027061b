// Command offloadbench is the offload-mode helper of hack/bench-dataplane.sh:
// it runs a dataplane.OffloadSwitch (ports with virtio-net headers, pods keep
// TSO and checksum offload) over given links in the calling process's
// network namespace (switch), and turns a link's transmit checksum offload,
// and with it TSO, back on (csum-on).
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/sys"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: offloadbench switch|csum-on [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "switch":
		err = runSwitch(os.Args[2:])
	case "csum-on":
		err = csumOn(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "offloadbench:", err)
		os.Exit(1)
	}
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func runSwitch(args []string) error {
	fs := flag.NewFlagSet("switch", flag.ExitOnError)
	var links list
	fs.Var(&links, "link", "host link to attach (repeat)")
	gw := fs.String("gw", "", "gateway address with prefix for the host port")
	slots := fs.Int("slots", 0, "ring slots per port (0: default)")
	blocks := fs.Uint("blocks", 0, "AF_PACKET receive blocks per link (0: default)")
	blockSize := fs.Uint("block-size", 0, "AF_PACKET receive block size (0: default)")
	_ = fs.Parse(args)
	cfg := dataplane.OffloadConfig{Switch: dataplane.SwitchConfig{Name: "vale0"}, RingSlots: *slots}
	cfg.Link.Packet.BlockCount, cfg.Link.Packet.BlockSize = uint32(*blocks), uint32(*blockSize)
	if *gw != "" {
		p, err := netip.ParsePrefix(*gw)
		if err != nil {
			return fmt.Errorf("parse -gw: %w", err)
		}
		cfg.Switch.HostPort.Gateways = []netip.Prefix{p}
	}
	o, err := dataplane.NewOffloadSwitch(cfg)
	if err != nil {
		return err
	}
	defer o.Close()
	for _, l := range links {
		if err := o.AttachLink(l); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "offloadbench: attached %s\n", l)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	for _, s := range o.Stats() {
		fmt.Fprintf(os.Stderr, "offloadbench: %s super-frames in %d out %d dropped %d, kernel RX ring drops %d\n", s.Name, s.RxChains, s.TxChains, s.TxDropped, s.KernelDrops)
	}
	if c, err := o.Counters(); err == nil {
		fmt.Fprintf(os.Stderr, "offloadbench: switch in %d out %d drops %v\n", c.InFrames, c.OutFrames, c.Drops)
	}
	return nil
}

func csumOn(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: csum-on <link>")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return sys.SetTxChecksum(fd, args[0], true)
}
