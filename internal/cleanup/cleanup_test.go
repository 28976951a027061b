package cleanup

import (
	"errors"
	"reflect"
	"testing"
)

func TestCleanRunsInReverseAndJoinsErrors(t *testing.T) {
	var order []int
	errA, errC := errors.New("a failed"), errors.New("c failed")
	c := Make(func() error { order = append(order, 1); return errA })
	c.Add(nil)
	c.Add(func() error { order = append(order, 2); return nil })
	c.Add(func() error { order = append(order, 3); return errC })
	if c.Len() != 3 {
		t.Fatalf("Len = %d, want 3", c.Len())
	}
	err := c.Clean()
	if !reflect.DeepEqual(order, []int{3, 2, 1}) {
		t.Fatalf("undo order = %v, want [3 2 1]", order)
	}
	if !errors.Is(err, errA) || !errors.Is(err, errC) {
		t.Fatalf("Clean error = %v, want both failures", err)
	}
	if err := c.Clean(); err != nil || len(order) != 3 {
		t.Fatalf("second Clean ran undo again: err=%v order=%v", err, order)
	}
}

func TestReleaseDisarmsAndHandsOver(t *testing.T) {
	ran := 0
	c := Make(func() error { ran++; return nil })
	c.Add(func() error { ran += 10; return nil })
	moved := c.Release()
	if err := c.Clean(); err != nil || ran != 0 {
		t.Fatalf("Clean after Release ran %d undo(s), err=%v", ran, err)
	}
	if err := moved(); err != nil || ran != 11 {
		t.Fatalf("moved undo ran=%d err=%v, want 11 and nil", ran, err)
	}
}
