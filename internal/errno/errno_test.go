package errno

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestSentinelMatchesItselfAndItsErrnoOnly(t *testing.T) {
	busy, other := New("busy", syscall.EBUSY), New("also busy", syscall.EBUSY)
	err := fmt.Errorf("attach p1: %w", busy)
	if !errors.Is(err, busy) || !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("%v does not match its sentinel or EBUSY", err)
	}
	if errors.Is(err, other) || errors.Is(err, syscall.ENXIO) {
		t.Fatalf("%v matches another sentinel or errno", err)
	}
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{err, syscall.EBUSY},
		{fmt.Errorf("open: %w", syscall.ENOENT), syscall.ENOENT},
		{errors.New("plain"), syscall.EIO},
	} {
		if got := Of(c.err); got != c.want {
			t.Errorf("Of(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
