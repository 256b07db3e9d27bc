package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

func TestBudget(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	ctx := context.Background()
	now := time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	b := store.NewBudget(r.Client, r.Namespace, 2, 3, clock)

	take := func(job string) (time.Duration, string) {
		t.Helper()
		wait, window, err := b.Take(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		return wait, window
	}
	for _, job := range []string{"a", "b", "a", "b"} { // a job counts once, however often it asks
		if wait, window := take(job); wait != 0 {
			t.Fatalf("take %s: wait %s (%s), want none", job, wait, window)
		}
	}
	if wait, window := take("c"); window != store.WindowHour || wait != 30*time.Minute {
		t.Fatalf("third job this hour: wait %s window %q, want 30m hour", wait, window)
	}
	if err := b.Refund(ctx, "b"); err != nil { // b's POST was refused: it spent nothing
		t.Fatal(err)
	}
	if wait, _ := take("c"); wait != 0 {
		t.Fatalf("after a refund: wait %s, want none", wait)
	}
	now = now.Add(time.Hour) // a new hour, the same day: 2 of 3 spent today
	if wait, _ := take("d"); wait != 0 {
		t.Fatalf("new hour: wait %s, want none", wait)
	}
	if wait, window := take("e"); window != store.WindowDay || wait != 12*time.Hour+30*time.Minute {
		t.Fatalf("fourth job today: wait %s window %q, want 12h30m day", wait, window)
	}
	hour, day, err := b.Spent(ctx)
	if err != nil || hour != 1 || day != 3 {
		t.Fatalf("spent: hour %d day %d (%v), want 1 and 3", hour, day, err)
	}
	// Every key carries the {budget} hash tag (one Cluster slot) and expires.
	keys, err := r.Client.Keys(ctx, r.Namespace+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if ttl := r.Client.PTTL(ctx, k).Val(); ttl <= 0 || ttl > 25*time.Hour {
			t.Errorf("key %s: TTL %s", k, ttl)
		}
	}
}
