package worker

import (
	"testing"
	"time"
)

// TestEnteringCallsOffTheEndedRecordsRemoval: a task that starts again
// before its earlier run's record was removed keeps its new record: the
// pending removal is called off.
func TestEnteringCallsOffTheEndedRecordsRemoval(t *testing.T) {
	l := newLiveness(nil)
	l.endedWell("a")
	l.endedWell("b")
	l.enter("a")
	if l.ended["a"] || !l.ended["b"] {
		t.Fatalf("ended after a re-entered = %v, want only b", l.ended)
	}
}

// TestEnteringWaitsForTheRemovalOnItsWay: a task that starts again while
// its earlier run's record is being removed writes its own only after the
// removal, which therefore cannot remove it.
func TestEnteringWaitsForTheRemovalOnItsWay(t *testing.T) {
	l := newLiveness(nil)
	cleared := make(chan struct{})
	l.clearing, l.cleared = map[string]bool{"a": true}, cleared
	entered := make(chan struct{})
	go func() {
		l.enter("a")
		close(entered)
	}()
	select {
	case <-entered:
		t.Fatal("enter returned while the removal of the task's record was on its way")
	case <-time.After(50 * time.Millisecond):
	}
	close(cleared)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("enter did not return after the removal finished")
	}
}
