// Package hostport is the switch's host port: a TAP device (IFF_TAP|IFF_NO_PI) that connects
// a switch to the node's own network stack, the Linux counterpart of netmap's host rings.
//
// The switch writes frames into the TAP (they enter the host stack as if received on the
// TAP interface) and reads the frames the host stack sends out of it. The TAP carries the
// pod gateway addresses, so pods reach the node (and, through node routing, kube-proxy, SNAT
// and overlays, everything beyond) by sending to the gateway.
//
// The package is named for its role (the host port), not its mechanism (TAP), because that is
// what the switch and the agent ask for. The device is not persistent: it exists while the
// Port is open, and Close removes it, addresses and routes included.
//
// Port offers the same batch calls as the AF_XDP and AF_PACKET ports (Receive, Transmit,
// WaitRX, WaitTX, Close) and implements netmap.GenericBackend. A TAP moves one frame per
// read(2)/write(2), so a batch is a loop of non-blocking system calls that stops at EAGAIN;
// waiting is through the Go netpoller (the TAP descriptor is pollable), so an idle host port
// costs no CPU. By default the device is created with IFF_NO_PI and without IFF_VNET_HDR: the
// host stack therefore completes checksums and segments before frames reach the switch. In
// offload mode (Config.VnetHdr) it adds IFF_VNET_HDR, a 10-byte header and TUNSETOFFLOAD
// (checksum, TSO4/6, ECN): frames read and written start with a struct virtio_net_hdr and
// TCP super-frames up to 64 KB cross unsegmented, for a switch whose ports all carry that
// header (vale.Config.VnetHdrLen 10). Port is then also a netmap.GenericFragBackend
// (TxFrags with writev(2), RxScatter with readv(2)): frames move between the TAP and a
// netmap slot chain without the adapter's gather and scatter copies.
package hostport
