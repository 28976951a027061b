package linkport

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/epair-cni/epair/pkg/netmap/afpacket"
)

// Limits and timing of a RingPool.
const (
	// MaxRingPool bounds a RingPool's size.
	MaxRingPool = 64
	// ringPoolRetry is how long the filler waits after a socket could not be prepared.
	ringPoolRetry = time.Second
)

// RingPool keeps offload sockets prepared ahead of need: AF_PACKET with PACKET_VNET_HDR
// and the TPACKET_V2 receive ring (afpacket.Config.VnetRxRing), set up but bound to no
// link. Setting a ring up waits for an RCU grace period, 10–40 ms on a busy node, which
// would otherwise be part of every pod's CNI ADD; Open with Options.Offload and
// Options.Rings binds a pooled socket instead, which takes microseconds, and a goroutine
// prepares the next one in the background. With the pool empty (a burst of opens), Open
// sets the ring up itself.
//
// Sockets belong to the network namespace they are prepared in: the pool prepares them
// through in, which must run its function in the namespace the ports are opened in. A
// pooled socket is hooked into no receive path until it is bound, so it costs only its
// ring's memory (VnetRxSlots × afpacket.VnetRingSlotSize bytes of kernel memory).
type RingPool struct {
	cfg   afpacket.Config
	in    func(func() error) error
	onErr func(error)
	ready chan *afpacket.Prepared
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	taken atomic.Uint64

	mu      sync.Mutex
	lastErr error // the filler's last failure, nil after a success
}

// NewRingPool starts a pool of size sockets for cfg (VnetHdr and VnetRxRing are set), which
// it prepares through in (nil: in the calling goroutine's namespace, whatever thread the
// filler runs on). onErr, if set, is told when the pool starts failing to prepare sockets
// (once per spell of failures; the filler retries every second meanwhile, and Open sets
// rings up itself). Close stops it.
func NewRingPool(cfg afpacket.Config, size int, in func(func() error) error, onErr func(error)) (*RingPool, error) {
	if size < 1 || size > MaxRingPool {
		return nil, fmt.Errorf("create ring pool: size %d must be in 1..%d: %w", size, MaxRingPool, syscall.EINVAL)
	}
	cfg.VnetHdr, cfg.VnetRxRing = true, true
	if _, err := cfg.MaxFrame(); err != nil {
		return nil, fmt.Errorf("create ring pool: %w", err)
	}
	if in == nil {
		in = func(f func() error) error { return f() }
	}
	p := &RingPool{
		cfg: cfg, in: in, onErr: onErr, ready: make(chan *afpacket.Prepared, size),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go p.fill()
	return p, nil
}

// fill keeps the pool full until Close.
func (p *RingPool) fill() {
	defer close(p.done)
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	for {
		for len(p.ready) < cap(p.ready) {
			var s *afpacket.Prepared
			err := p.in(func() error {
				var err error
				s, err = afpacket.Prepare(p.cfg)
				return err
			})
			p.mu.Lock()
			first := err != nil && p.lastErr == nil
			p.lastErr = err
			p.mu.Unlock()
			if first && p.onErr != nil {
				p.onErr(fmt.Errorf("prepare an offload socket for the ring pool: %w", err))
			}
			if err != nil {
				retry.Reset(ringPoolRetry)
				select {
				case <-p.stop:
					return
				case <-retry.C:
				}
				continue
			}
			select {
			case p.ready <- s:
			case <-p.stop:
				_ = s.Close()
				return
			}
		}
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
	}
}

// take returns a prepared socket for cfg, or nil when the pool is empty or made for
// another config; it never blocks, and it wakes the filler.
func (p *RingPool) take(cfg afpacket.Config) *afpacket.Prepared {
	if p == nil {
		return nil
	}
	cfg.VnetHdr, cfg.VnetRxRing = true, true
	if cfg != p.cfg {
		return nil
	}
	var s *afpacket.Prepared
	select {
	case s = <-p.ready:
		p.taken.Add(1)
	default:
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return s
}

// Len reports how many sockets are ready.
func (p *RingPool) Len() int { return len(p.ready) }

// Taken reports how many sockets ports have taken from the pool.
func (p *RingPool) Taken() uint64 { return p.taken.Load() }

// Err reports why the last socket could not be prepared (nil once one was).
func (p *RingPool) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Close stops the filler and closes the sockets still in the pool. It is idempotent;
// sockets already taken are their ports'.
func (p *RingPool) Close() error {
	var errs []error
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		for {
			select {
			case s := <-p.ready:
				if err := s.Close(); err != nil {
					errs = append(errs, err)
				}
				continue
			default:
			}
			break
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close ring pool: %w", err)
	}
	return nil
}
