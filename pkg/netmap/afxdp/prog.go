package afxdp

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

const (
	xdpPass = 2 // XDP_PASS
	// offRxQueueIndex is offsetof(struct xdp_md, rx_queue_index).
	offRxQueueIndex = 16
)

// newRedirectProgram returns
//
//	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
//
// The low bits of the flags argument are the action when the map has no socket for the key
// (kernel ≥ 5.3): the frame then goes up the stack as it would without the program, which is
// also what an AF_PACKET port sees.
func newRedirectProgram(xsks *ebpf.Map) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "epair_xsk_redir",
		Type:    ebpf.XDP,
		License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, offRxQueueIndex, asm.Word),
			asm.LoadMapPtr(asm.R1, xsks.FD()),
			asm.Mov.Imm(asm.R3, xdpPass),
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load XDP redirect program: %w", err)
	}
	return p, nil
}
