// Package limits defines, once, the bounds and defaults that the CRD schema, the agent's
// and the plugin's configurations and the dataplane all check: a value one layer accepts is
// one every layer below it can serve. The CRD markers in api/v1alpha1 have to be literal
// numbers; a test in internal/controller compares the generated schema with these
// constants.
package limits

const (
	// MinMTU is the smallest pod network MTU: IPv4's minimum datagram size (RFC 791).
	MinMTU = 576
	// MaxMTU is the largest: jumbo frames of 9000 bytes, common in data centres. Every
	// switch the agent runs carries virtio-net headers, whose ports take frames longer than
	// a buffer as slot chains.
	MaxMTU = 9000
	// MaxPlainMTU is the largest MTU of the dataplane's plain switch (AF_XDP ports, kept for
	// the benchmarks): a frame of it with an Ethernet header and a VLAN tag fills one 4 KiB
	// buffer of the AF_XDP and AF_PACKET ring backends.
	MaxPlainMTU = 4096 - 18
	// DefaultMTU is a switch's MTU when its configuration sets none.
	DefaultMTU = 1500

	// DefaultQueueLen is a port's output queue length in frames when nothing sets one, in
	// both modes (a VirtualSwitch's spec.defaultQueue.length, the dataplane's PortPolicy):
	// DragonFly's IFQ_MAXLEN of 50 is far too short for a software switch draining
	// batches, and 1024 holds a few TCP windows of 1500-byte frames.
	DefaultQueueLen = 1024

	// DefaultBroadcastRate and DefaultMulticastRate are a pod port's storm control when the
	// switch sets none: the broadcast and the other group-addressed frames per second a pod
	// may send (a burst of 100 ms worth): far above what ARP, ND and MLD need, far below a
	// flood that costs the switch a core.
	DefaultBroadcastRate = 1000
	DefaultMulticastRate = 5000
	// MaxStormRate bounds the storm control rates (frames per second; 0 is no limit).
	MaxStormRate = 100_000_000

	// DefaultRingSlots is the slot count of a port's netmap rings and DefaultXDPFrames the
	// UMEM frame count of a pod link's AF_XDP socket (half receive, half transmit) when
	// nothing sets them, for the agent (Config.RingSlots, XDPFrames) and the dataplane
	// alike. They are what a port costs in memory: with these, 250 pods stay under 256 MiB
	// of agent RSS at about 1.3 Gbit/s of pod-to-pod TCP; 128/256 give about 1.9 Gbit/s for
	// 275 MiB, 1024/1024 about 2 Gbit/s for 700 MiB (BENCHMARKS.md). A burst larger than a
	// ring is dropped by the kernel before the switch runs.
	DefaultRingSlots = 64
	DefaultXDPFrames = 128
	// MaxNetmapPorts is the most netmap application ports one pod interface may have.
	MaxNetmapPorts = 8
)
