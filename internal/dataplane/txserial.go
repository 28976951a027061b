package dataplane

import (
	"context"
	"sync"

	"github.com/epair-cni/epair/pkg/netmap"
)

// txSerial wraps a pod link's backend so that its transmit side has one
// user at a time although two parties may use it: the port's output queue
// (if_start) and the generic adapter's TX ring, which the switch writes
// while a port has no Deliverer yet (the moment between AttachAdapter and
// SetDeliverer) and which the bwrap worker may flush later. The backends
// allow one TxBatch caller and one TX waiter at a time; the mutex and the
// waiter token enforce that. Receive calls pass through.
type txSerial struct {
	netmap.GenericBackend
	mu     sync.Mutex
	waiter chan struct{} // capacity 1: the TX waiter's token
}

var _ netmap.GenericBackend = (*txSerial)(nil)

// newTxSerial wraps b; a backend that moves chains itself (offload ports:
// netmap.GenericFragBackend) keeps doing so through the wrapper.
func newTxSerial(b netmap.GenericBackend) netmap.GenericBackend {
	s := &txSerial{GenericBackend: b, waiter: make(chan struct{}, 1)}
	if fb, ok := b.(netmap.GenericFragBackend); ok {
		return &txSerialFrag{txSerial: s, fb: fb}
	}
	return s
}

// txSerialFrag is txSerial for a netmap.GenericFragBackend: TxFrags is a
// transmit too (serialised with TxBatch), RxScatter passes through.
type txSerialFrag struct {
	*txSerial
	fb netmap.GenericFragBackend
}

var _ netmap.GenericFragBackend = (*txSerialFrag)(nil)

// TxFrags implements netmap.GenericFragBackend.
func (s *txSerialFrag) TxFrags(q int, frags [][]byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fb.TxFrags(q, frags)
}

// RxScatter implements netmap.GenericFragBackend.
func (s *txSerialFrag) RxScatter(q int, bufs [][]byte) (int, bool, error) {
	return s.fb.RxScatter(q, bufs)
}

// TxBatch implements netmap.GenericBackend.
func (s *txSerial) TxBatch(q int, frames [][]byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.GenericBackend.TxBatch(q, frames)
}

// WaitReady implements netmap.GenericBackend.
func (s *txSerial) WaitReady(ctx context.Context, q int, dir netmap.Direction) error {
	if dir != netmap.TX {
		return s.GenericBackend.WaitReady(ctx, q, dir)
	}
	select {
	case s.waiter <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.waiter }()
	return s.GenericBackend.WaitReady(ctx, q, dir)
}
