package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/epair-cni/epair/internal/dataplane"
)

// runOffloadSwitch runs a dataplane.OffloadSwitch until SIGINT/SIGTERM.
func runOffloadSwitch(args []string) error {
	fs := flag.NewFlagSet("offload-switch", flag.ExitOnError)
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
		fmt.Fprintf(os.Stderr, "dpbench: attached %s\n", l)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	for _, s := range o.Stats() {
		fmt.Fprintf(os.Stderr, "dpbench: %s super-frames in %d out %d dropped %d, kernel RX ring drops %d\n", s.Name, s.RxChains, s.TxChains, s.TxDropped, s.KernelDrops)
	}
	if c, err := o.Counters(); err == nil {
		fmt.Fprintf(os.Stderr, "dpbench: switch in %d out %d drops %v\n", c.InFrames, c.OutFrames, c.Drops)
	}
	return nil
}
