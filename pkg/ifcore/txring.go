package ifcore

// TxRing is the batch-first transmit end an interface drains into (a
// switch port's TX ring, an AF_XDP TX queue): Transmit takes ownership of
// the first n packets of batch and returns n; n < len(batch) means the ring
// is full. The ring must call Subqueue.TxComplete once it has room again.
type TxRing interface {
	Transmit(w *Worker, batch []*Packet) int
}

// RingDriver is the if_start of an interface whose hardware is a TxRing:
// dequeue up to Batch packets, hand them over, and on a short count push
// the rest back (prepend) and set OACTIVE.
type RingDriver struct {
	Ring  TxRing
	Batch int // default 64
}

var _ Driver = (*RingDriver)(nil)

// Start implements Driver.
func (d *RingDriver) Start(w *Worker, sq *Subqueue) {
	bs := d.Batch
	if bs <= 0 {
		bs = 64
	}
	if cap(sq.batch) < bs {
		sq.batch = make([]*Packet, bs) // once per subqueue
	}
	buf := sq.batch[:bs]
	s := sq.ifp.shard(w)
	for {
		n := sq.DequeueBatch(buf)
		if n == 0 {
			return
		}
		acc := d.Ring.Transmit(w, buf[:n])
		s.OPackets.Add(uint64(acc))
		if acc < n {
			sq.PrependBatch(buf[acc:n])
			sq.SetOActive()
			clear(buf[:n])
			return
		}
		clear(buf[:n])
	}
}

// TxComplete is what a TxRing calls when it has room again: clear OACTIVE
// and restart transmission on the owner worker.
func (sq *Subqueue) TxComplete() {
	sq.ClrOActive()
	sq.DevstartSched()
}
