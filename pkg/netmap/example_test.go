package netmap_test

import (
	"context"
	"fmt"

	"github.com/epair-cni/epair/pkg/netmap"
)

// A pipe between two handles: the master fills TX slots and syncs, the slave
// polls, reads its RX slots and releases them with the next sync.
func Example_pipe() {
	nm := netmap.New(netmap.Config{})
	port, err := netmap.NewMemPort("port0", netmap.Geometry{TxRings: 1, RxRings: 1, TxSlots: 64, RxSlots: 64}, 0, 0)
	if err != nil {
		panic(err)
	}
	if err := nm.Attach(port); err != nil {
		panic(err)
	}
	master, slave := nm.Open(), nm.Open()
	defer master.Close()
	defer slave.Close()
	if err := master.Register(&netmap.Req{Version: netmap.API, Name: "port0", Flags: netmap.RegPipeMaster, RingID: 1}); err != nil {
		panic(err)
	}
	if err := slave.Register(&netmap.Req{Version: netmap.API, Name: "port0", Flags: netmap.RegPipeSlave, RingID: 1}); err != nil {
		panic(err)
	}

	tx := master.TxRing(0)
	for _, msg := range []string{"hello", "netmap"} {
		n := copy(tx.Buf(tx.Head), msg)
		tx.Slot[tx.Head].Len = uint16(n)
		tx.Advance(tx.Next(tx.Head))
	}
	if err := master.TxSync(); err != nil {
		panic(err)
	}

	if _, err := slave.Poll(context.Background(), netmap.PollIn); err != nil {
		panic(err)
	}
	rx := slave.RxRing(0)
	for !rx.Empty() {
		s := rx.Slot[rx.Cur]
		fmt.Println(string(rx.Buf(rx.Cur)[:s.Len]))
		rx.Advance(rx.Next(rx.Cur))
	}
	if err := slave.RxSync(); err != nil { // release the slots
		panic(err)
	}
	// Output:
	// hello
	// netmap
}
