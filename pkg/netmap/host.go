package netmap

import (
	"fmt"
	"syscall"
)

// HostStack is the host network stack seen from netmap: the sink of the host
// TX ring and of transparent mode (netmap_send_up / if_input). Frames are
// views of netmap buffers valid only during the call: copy what you keep.
type HostStack interface {
	SendUp(frames [][]byte)
}

// minFrame is the shortest frame passed up (an Ethernet header, 004:1070).
const minFrame = 14

// hostQueue is the host RX kring's rx_queue (an mbq): frames the host stack
// sent, waiting for rxsync_from_host. Storage is preallocated on first use,
// so enqueue and import do not allocate. Protected by the kring's QLock.
type hostQueue struct {
	bufs       [][]byte
	lens       []int
	head, qlen int
	n, bufSize uint32
}

func (q *hostQueue) init(n, bufSize uint32) { q.n, q.bufSize = n, bufSize }

func (q *hostQueue) enqueue(frame []byte) {
	if q.bufs == nil {
		q.bufs = make([][]byte, q.n)
		q.lens = make([]int, q.n)
		mem := make([]byte, int(q.n)*int(q.bufSize))
		for i := range q.bufs {
			q.bufs[i] = mem[i*int(q.bufSize) : (i+1)*int(q.bufSize)]
		}
	}
	i := (q.head + q.qlen) % int(q.n)
	q.lens[i] = copy(q.bufs[i], frame)
	q.qlen++
}

func (q *hostQueue) dequeue() []byte {
	b := q.bufs[q.head][:q.lens[q.head]]
	q.head = (q.head + 1) % int(q.n)
	q.qlen--
	return b
}

func (q *hostQueue) purge() { q.head, q.qlen = 0, 0 }

// HostTransmit is netmap_transmit (004:2870-2947): the host stack sends frame
// into netmap, which queues a copy for the host RX ring. ENXIO if netmap is
// off for the adapter, ENOBUFS if the frame is larger than a buffer (D-N16:
// ENOBUFS kept, not EMSGSIZE) or the queue is full (slots held by the user
// plus queued frames reach n-1). The host RX kring is notified on every
// outcome, as in the seed.
func (na *BaseAdapter) HostTransmit(frame []byte) error {
	na.krMu.RLock()
	defer na.krMu.RUnlock()
	if !na.On() || na.RxRings == nil {
		return fmt.Errorf("host transmit %s: not in netmap mode: %w", na.Name, syscall.ENXIO)
	}
	k := na.RxRings[na.NumRxRings]
	var err error
	if uint32(len(frame)) > na.Mem.bufSize {
		err = fmt.Errorf("host transmit %s: frame of %d bytes exceeds buffer size %d: %w", na.Name, len(frame), na.Mem.bufSize, syscall.ENOBUFS)
	} else {
		k.QLock.Lock()
		space := k.Dist(k.NrHwcur.Load(), k.NrHwtail.Load())
		if space+uint32(k.hostq.qlen) >= k.NumSlots-1 {
			err = fmt.Errorf("host transmit %s: host ring full: %w", na.Name, syscall.ENOBUFS)
		} else {
			k.hostq.enqueue(frame)
		}
		k.QLock.Unlock()
	}
	k.NotifyNow()
	return err
}

// HostQueueLen reports the frames queued for the host RX ring.
func (na *BaseAdapter) HostQueueLen() int {
	na.krMu.RLock()
	defer na.krMu.RUnlock()
	if na.RxRings == nil {
		return 0
	}
	k := na.RxRings[na.NumRxRings]
	k.QLock.Lock()
	defer k.QLock.Unlock()
	return k.hostq.qlen
}

// sendUp hands a batch to the host stack.
func (na *BaseAdapter) sendUp(frames [][]byte) {
	if len(frames) > 0 && na.Host != nil {
		na.Host.SendUp(frames)
	}
}

// grabPackets is netmap_grab_packets (004:1050-1082): released slots in
// [hwcur, rhead) marked Forward (or all with force) go to the host stack;
// slots shorter than an Ethernet header or longer than a buffer are skipped.
// Multi-slot packets (MoreFrag) are not supported on the host path and are
// dropped whole (the seed copies each fragment as a packet, "XXX TODO").
func (na *BaseAdapter) grabPackets(k *Kring, force bool) {
	batch := k.hostBatch[:0]
	inFrag := false
	for n := k.NrHwcur.Load(); n != k.RHead; n = k.Next(n) {
		s := &k.Ring.Slot[n]
		frag := inFrag || s.Flags&MoreFrag != 0
		inFrag = s.Flags&MoreFrag != 0
		if s.Flags&Forward == 0 && !force {
			continue
		}
		if frag || s.Len < minFrame || uint32(s.Len) > na.Mem.bufSize {
			continue
		}
		s.Flags &^= Forward
		if len(batch) == cap(batch) {
			na.sendUp(batch)
			batch = batch[:0]
		}
		batch = append(batch, na.Mem.Buf(s.BufIdx)[:s.Len])
	}
	na.sendUp(batch)
	clear(batch)
}

// txsyncToHost is netmap_txsync_to_host (004:1137-1165), the host TX kring's
// nm_sync: every slot in [hwcur, rhead) goes to the host stack regardless of
// Forward (bad lengths are consumed, not delivered); then hwcur = rhead and
// hwtail = nm_prev(rhead).
func (na *BaseAdapter) txsyncToHost(k *Kring, flags SyncFlags) error {
	na.grabPackets(k, true)
	head := k.RHead
	k.NrHwcur.Store(head)
	k.NrHwtail.Store(k.Prev(head))
	return nil
}

// rxsyncFromHost is netmap_rxsync_from_host, the host RX kring's nm_sync.
func (na *BaseAdapter) rxsyncFromHost(k *Kring, flags SyncFlags) error {
	na.rxsyncFromHostCount(k, flags)
	return nil
}

// rxsyncFromHostCount does the work and returns how many frames it moved to
// the NIC TX rings (send_down). Import is bounded by the free slots (D-N7):
// it never overwrites slots the user holds.
func (na *BaseAdapter) rxsyncFromHostCount(k *Kring, flags SyncFlags) int {
	k.QLock.Lock()
	defer k.QLock.Unlock()
	q := &k.hostq
	if q.qlen > 0 {
		nmi := k.NrHwtail.Load()
		stop := k.Prev(k.NrHwcur.Load()) // D-N7: not nm_prev(hwtail)
		for nmi != stop && q.qlen > 0 {
			f := q.dequeue()
			s := &k.Ring.Slot[nmi]
			buf := na.Mem.Buf(s.BufIdx)
			if buf == nil { // slot repaired by reinit: give it a buffer back
				idx, err := na.Mem.Alloc()
				if err != nil {
					break
				}
				s.BufIdx = idx
				buf = na.Mem.Buf(idx)
			}
			s.Len = uint16(copy(buf, f))
			s.Flags = k.NkrSlotFlags
			nmi = k.Next(nmi)
		}
		k.NrHwtail.Store(nmi)
	}
	sent := 0
	head := k.RHead
	if k.NrHwcur.Load() != head {
		if cfg := na.cfg(); cfg.Fwd || k.Ring.Flags&RingForward != 0 {
			sent = na.swToNIC(k, cfg.Fwd)
		}
		k.NrHwcur.Store(head)
	}
	return sent
}

func (na *BaseAdapter) cfg() *Config {
	if na.nm != nil {
		return na.nm.cfgp.Load()
	}
	return &Config{}
}

// swToNIC is netmap_sw_to_nic (004:1085-1134), hardened per D-N8: it works on
// validated kring state, not the user's cur, and runs txsync itself. For each
// NIC TX ring it can take (busy flag) and whose user has no partially filled
// slots (head == cur), released host slots marked Forward (all with fwd) swap
// buffers with the free TX slots at head; both slots get exactly BufChanged;
// head and cur advance and the TX ring is synced so the frames leave.
func (na *BaseAdapter) swToNIC(src *Kring, fwd bool) int {
	rxcur := src.NrHwcur.Load()
	head := src.RHead
	sent := 0
	for i := 0; i < na.NumTxRings && rxcur != head; i++ {
		kd := na.TxRings[i]
		if kd.TryGet() != nil {
			continue
		}
		if _, ok := kd.TxSyncPrologue(); !ok || kd.RHead != kd.RCur {
			kd.Put()
			continue
		}
		rd := kd.Ring
		moved := 0
		for ; rxcur != head && kd.RCur != kd.RTail; rxcur = src.Next(rxcur) {
			s := &src.Ring.Slot[rxcur]
			if s.Flags&Forward == 0 && !fwd {
				continue
			}
			d := &rd.Slot[kd.RCur]
			s.BufIdx, d.BufIdx = d.BufIdx, s.BufIdx
			d.Len = s.Len
			s.Flags, d.Flags = BufChanged, BufChanged
			kd.RCur = kd.Next(kd.RCur)
			moved++
		}
		if moved > 0 {
			kd.RHead = kd.RCur
			rd.Head, rd.Cur = kd.RCur, kd.RCur
			if kd.callSync(0) == nil {
				kd.TxSyncFinalize()
			}
			sent += moved
		}
		kd.Put()
	}
	return sent
}
