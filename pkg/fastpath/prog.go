package fastpath

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Layouts of the maps' entries, shared with the programs (little-endian, as the kernel
// stores them on the machines this runs on).
const (
	// portKey: the host-side interface's ifindex (u32).
	// portVal: the pod's MAC, the switch, the pod's addresses and its counter slot.
	pvMAC    = 0  // [6]byte
	pvSwitch = 6  // u16
	pvIPv4   = 8  // [4]byte, zero: no IPv4 address takes the fast path
	pvIPv6   = 12 // [16]byte, first word zero: no IPv6 address takes the fast path
	pvSlot   = 28 // u32
	pvLen    = 32

	// destKey: the destination MAC and the switch (6 + 2 bytes).
	// destVal: the destination's host-side ifindex, its counter slot and flags.
	dvIfindex = 0 // u32
	dvSlot    = 4 // u32
	dvFlags   = 8 // u32: dfIngress
	dvLen     = 12
	// dfIngress: the destination is a switch's host port (its TAP): a frame goes into the
	// interface's ingress, to the node's stack, as if the switch had written it there.
	dfIngress = 1

	// stats: a per-CPU array of counters per slot, four u64.
	stInFrames  = 0
	stInBytes   = 8
	stOutFrames = 16
	stOutBytes  = 24
	stLen       = 32

	// Offsets in struct __sk_buff.
	skbLen     = 0
	skbIfindex = 40

	bpfFIngress = 1 // BPF_F_INGRESS for bpf_redirect

	bpfHdrStartMAC = 0  // BPF_HDR_START_MAC for bpf_skb_load_bytes_relative
	tcxNext        = -1 // TCX_NEXT: not ours, the frame goes on (to the stack or the next program)
	tcActRedirect  = 7  // TC_ACT_REDIRECT, what bpf_redirect_peer returns
	etherTypeIPv4  = 0x0008
	etherTypeIPv6  = 0xdd86 // 0x86dd as a little-endian load sees it
	protoTCP       = 6
	protoUDP       = 17
	protoICMPv6    = 58
	// ICMPv6 types the fast path takes: echo request and reply.
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
)

// Stack slots of the programs (offsets from the frame pointer, each aligned to its size).
const (
	fpKey  = -8  // u32 key: ifindex, then a counter slot
	fpDest = -16 // destKey, 8 bytes
	fpEth  = -32 // the Ethernet header, 14 bytes
	fpIP   = -40 // IPv4 source address, or IPv6 next header
	fpIPv6 = -64 // IPv6 source address, 16 bytes
)

// decide returns the instructions that decide whether a frame takes the fast path, as
// both programs must decide it: the frame came in on a port of the ports map (its
// skb->ifindex), is unicast, carries the port's own MAC as source and, for IPv4, the
// port's IPv4 address as source (any protocol), for IPv6 the port's IPv6 address with
// TCP, UDP or an ICMPv6 echo request or reply right after the fixed header; and its
// destination (MAC, switch) is in the
// dests map, on another interface. Everything else (ARP, neighbour discovery, DHCP,
// broadcast and multicast, IPv6 extension headers, link-local sources, spoofed sources,
// unknown destinations, headers outside the linear data) is not decided here: the
// switch sees it. Control reaches label "fast" with R7 = the source's port entry and
// R0 = the destination's entry, or label "slow"; R6 holds the context throughout.
func decide(ports, dests *ebpf.Map) asm.Instructions {
	in := lookupPort(ports)
	in = append(in, loadBytes(0, fpEth, 14)...)
	in = append(in,
		// Group bit of the destination: broadcast and multicast go to the switch.
		asm.LoadMem(asm.R1, asm.RFP, fpEth, asm.Byte),
		asm.JSet.Imm(asm.R1, 1, "slow"),
		// The source MAC is the port's.
		asm.LoadMem(asm.R1, asm.RFP, fpEth+6, asm.Half),
		asm.LoadMem(asm.R2, asm.R7, pvMAC, asm.Half),
		asm.JNE.Reg(asm.R1, asm.R2, "slow"),
		asm.LoadMem(asm.R1, asm.RFP, fpEth+8, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, pvMAC+2, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "slow"),
		asm.LoadMem(asm.R1, asm.RFP, fpEth+12, asm.Half),
		asm.JEq.Imm(asm.R1, etherTypeIPv4, "v4"),
		asm.JEq.Imm(asm.R1, etherTypeIPv6, "v6"),
		asm.Ja.Label("slow"),
		asm.LoadMem(asm.R2, asm.R7, pvIPv4, asm.Word).WithSymbol("v4"),
		asm.JEq.Imm(asm.R2, 0, "slow"),
	)
	in = append(in, loadBytes(14+12, fpIP, 4)...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.RFP, fpIP, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, pvIPv4, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "slow"),
		asm.Ja.Label("dest"),
		asm.LoadMem(asm.R2, asm.R7, pvIPv6, asm.Word).WithSymbol("v6"),
		asm.JEq.Imm(asm.R2, 0, "slow"),
	)
	in = append(in, loadBytes(14+6, fpIP, 1)...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.RFP, fpIP, asm.Byte),
		asm.JEq.Imm(asm.R1, protoTCP, "v6src"),
		asm.JEq.Imm(asm.R1, protoUDP, "v6src"),
		asm.JNE.Imm(asm.R1, protoICMPv6, "slow"),
	)
	// ICMPv6: echo requests and replies only (neighbour discovery and the rest are the
	// switch's to check).
	in = append(in, loadBytes(14+40, fpIP, 1)...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.RFP, fpIP, asm.Byte),
		asm.JEq.Imm(asm.R1, icmpv6EchoRequest, "v6src"),
		asm.JEq.Imm(asm.R1, icmpv6EchoReply, "v6src"),
		asm.Ja.Label("slow"),
	)
	v6src := loadBytes(14+8, fpIPv6, 16)
	v6src[0] = v6src[0].WithSymbol("v6src")
	in = append(in, v6src...)
	for i := int16(0); i < 16; i += 4 {
		in = append(in,
			asm.LoadMem(asm.R1, asm.RFP, fpIPv6+i, asm.Word),
			asm.LoadMem(asm.R2, asm.R7, pvIPv6+i, asm.Word),
			asm.JNE.Reg(asm.R1, asm.R2, "slow"),
		)
	}
	// The destination: (MAC, switch) in dests, not the interface the frame came in on
	// (hairpin is the switch's business).
	dst := lookupDest(dests)
	dst[0] = dst[0].WithSymbol("dest")
	in = append(in, dst...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.R0, dvIfindex, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, skbIfindex, asm.Word),
		asm.JEq.Reg(asm.R1, asm.R2, "slow"),
		asm.Ja.Label("fast"),
	)
	return in
}

// newTCProgram returns the program attached to a port's host-side interface at ingress
// (tcx): a frame decide lets through is counted (in at its source's slot, out at its
// destination's) and handed with bpf_redirect_peer straight to the destination pod's
// interface, in the pod's namespace, as a GSO super-frame if it is one; any other frame
// goes on to the stack, where the switch's socket has already seen it.
func newTCProgram(ports, dests, stats *ebpf.Map) (*ebpf.Program, error) {
	in := decide(ports, dests)
	in = append(in, asm.Mov.Reg(asm.R8, asm.R0).WithSymbol("fast"))
	in = append(in, countMoved(stats)...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.R8, dvIfindex, asm.Word).WithSymbol("redirect"),
		asm.LoadMem(asm.R2, asm.R8, dvFlags, asm.Word),
		asm.JSet.Imm(asm.R2, dfIngress, "to-host"),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirectPeer.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R2, bpfFIngress).WithSymbol("to-host"),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol("slow"),
		asm.Return(),
	)
	return load("epair_fast_tc", "tc program", ebpf.SchedCLS, in)
}

// newFilterProgram returns the socket filter for the switch's packet sockets on the
// ports' host-side interfaces: it drops (returns 0 for) exactly the frames the tc
// program redirects, so that the switch neither copies nor forwards them, and keeps
// every other frame whole.
func newFilterProgram(ports, dests *ebpf.Map) (*ebpf.Program, error) {
	in := decide(ports, dests)
	in = append(in,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("fast"),
		asm.Return(),
		asm.Mov.Imm32(asm.R0, -1).WithSymbol("slow"),
		asm.Return(),
	)
	return load("epair_fast_sk", "socket filter", ebpf.SocketFilter, in)
}

// newHostProgram returns the program attached to a switch's host port (its TAP) at egress
// (tcx): a frame the node's stack sends to a pod of the switch whose Dest is on (a known,
// unicast destination MAC that is not a host port) is counted (in at the host port's slot,
// out at the pod's) and handed to the pod's host-side veth (bpf_redirect, its egress),
// instead of to the TAP's reader, the switch. The node's frames are not checked for
// spoofing: the switch does not check them either. Everything else goes on to the TAP.
func newHostProgram(ports, dests, stats *ebpf.Map) (*ebpf.Program, error) {
	in := lookupPort(ports)
	in = append(in, loadBytes(0, fpEth, 14)...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.RFP, fpEth, asm.Byte),
		asm.JSet.Imm(asm.R1, 1, "slow"),
	)
	in = append(in, lookupDest(dests)...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.R0, dvFlags, asm.Word),
		asm.JSet.Imm(asm.R1, dfIngress, "slow"),
		asm.Mov.Reg(asm.R8, asm.R0),
	)
	in = append(in, countMoved(stats)...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.R8, dvIfindex, asm.Word).WithSymbol("redirect"),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol("slow"),
		asm.Return(),
	)
	return load("epair_fast_host", "host port program", ebpf.SchedCLS, in)
}

// loadBytes returns the instructions that copy n bytes of the frame, from off bytes past
// its Ethernet header's start, to the stack at dst (bpf_skb_load_bytes_relative, which
// reads the linear data only), or go on to label "slow" where the frame has no such bytes.
func loadBytes(off, dst int32, n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, off),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, dst),
		asm.Mov.Imm(asm.R4, n),
		asm.Mov.Imm(asm.R5, bpfHdrStartMAC),
		asm.FnSkbLoadBytesRelative.Call(),
		asm.JNE.Imm(asm.R0, 0, "slow"),
	}
}

// lookupPort returns the instructions that keep the context in R6 and find the port the
// frame is on (skb->ifindex) in ports: its entry in R7, or on to label "slow".
func lookupPort(ports *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbIfindex, asm.Word),
		asm.StoreMem(asm.RFP, fpKey, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, ports.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "slow"),
		asm.Mov.Reg(asm.R7, asm.R0),
	}
}

// lookupDest returns the instructions that find the frame's destination, (its MAC from
// the Ethernet header on the stack, the switch of the port entry in R7), in dests: its
// entry in R0, or on to label "slow".
func lookupDest(dests *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, fpEth, asm.Word),
		asm.StoreMem(asm.RFP, fpDest, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.RFP, fpEth+4, asm.Half),
		asm.StoreMem(asm.RFP, fpDest+4, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R7, pvSwitch, asm.Half),
		asm.StoreMem(asm.RFP, fpDest+6, asm.R1, asm.Half),
		asm.LoadMapPtr(asm.R1, dests.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpDest),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "slow"),
	}
}

// load loads a program of the fast path (what names it in an error).
func load(name, what string, typ ebpf.ProgramType, in asm.Instructions) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: typ, License: "Dual BSD/GPL", Instructions: in})
	if err != nil {
		return nil, fmt.Errorf("load the fast path's %s: %w", what, err)
	}
	return p, nil
}

// countMoved returns the instructions that count a moved frame, with R7 the source's port
// entry and R8 the destination's entry: in at the source's slot, out at the destination's,
// its length (skb->len) as its bytes; then they go on at label "redirect".
func countMoved(stats *ebpf.Map) asm.Instructions {
	in := asm.Instructions{
		asm.LoadMem(asm.R9, asm.R6, skbLen, asm.Word),
		asm.LoadMem(asm.R1, asm.R7, pvSlot, asm.Word),
	}
	in = append(in, countIn(stats, stInFrames, stInBytes, "out")...)
	in = append(in, asm.LoadMem(asm.R1, asm.R8, dvSlot, asm.Word).WithSymbol("out"))
	return append(in, countIn(stats, stOutFrames, stOutBytes, "redirect")...)
}

// countIn returns the instructions that add one frame of R9 bytes to the counters at
// offsets frames and bytes of stats' entry for the slot in R1, then go on at label next.
func countIn(stats *ebpf.Map, frames, bytes int16, next string) asm.Instructions {
	return asm.Instructions{
		asm.StoreMem(asm.RFP, fpKey, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, stats.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, next),
		asm.LoadMem(asm.R1, asm.R0, frames, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, frames, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, bytes, asm.DWord),
		asm.Add.Reg(asm.R1, asm.R9),
		asm.StoreMem(asm.R0, bytes, asm.R1, asm.DWord),
	}
}
