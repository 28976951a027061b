package ifcore

import (
	"syscall"
	"testing"
)

// Refused counts the packets Enqueue turned away, not the ones it evicted
// after queueing them: a caller that counts its refusals (the switch's
// queue-full) adds only Drops − Refused.
func TestSubqueueRefusedVsEvicted(t *testing.T) {
	_, sq := newSubqTest(t, 4)
	for i := 1; i <= 4; i++ {
		if err := sq.Enqueue(pkt(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	wantErrno(t, sq.Enqueue(pkt(5, 0)), syscall.ENOBUFS)  // refused
	if err := sq.Enqueue(pkt(101, PktPrio)); err != nil { // evicts a normal packet
		t.Fatal(err)
	}
	if sq.Drops() != 2 || sq.Refused() != 1 {
		t.Fatalf("drops %d refused %d, want 2 and 1 (one refused, one evicted)", sq.Drops(), sq.Refused())
	}
	sq.Purge()
}
