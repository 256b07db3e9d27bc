package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/previewd/previewd/internal/roundtrips"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// bankedStore is a Store on r that reuses its slot seats for reuse (idle
// ones go back to Redis after a fifth of it), on clock now.
func bankedStore(r *testutil.Redis, reuse time.Duration, now func() time.Time) *store.Store {
	return store.New(r.Client, store.Options{Namespace: r.Namespace, Retention: time.Hour, Now: now, SlotReuse: reuse})
}

// TestSlotReuse: a Store with SlotReuse keeps the seat a delivery gave
// back and lends it to its next delivery to the destination without a
// round trip; the seat is one member of the slot's set all along, scored
// past the lease by the reuse window, and goes back to Redis once it waited
// unused. Judged from the slot's sorted set in Redis and the client's
// round trips.
func TestSlotReuse(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	s := bankedStore(r, 2*time.Second, nil)
	ctx := context.Background()
	dest := []store.Slot{{Destination: "domain:reuse.example", Limit: 2}}

	before := time.Now()
	if ok, err := s.AcquireSlots(ctx, "first", slotLease, dest); err != nil || !ok {
		t.Fatalf("first AcquireSlots = %v, %v; want taken", ok, err)
	}
	seats := slotHolders(t, s, r.Client, dest[0].Destination)
	if len(seats) != 1 {
		t.Fatalf("the slot holds %v, want one seat", seats)
	}
	for member, ends := range seats {
		if member == "first" {
			t.Errorf("the seat is the holder's name %q, want a member of the Store's own", member)
		}
		if min := before.Add(slotLease + 2*time.Second).UnixMilli(); ends < min {
			t.Errorf("the seat ends at %d, want no sooner than %d (the lease and the reuse window)", ends, min)
		}
	}
	trips := &roundtrips.Counter{}
	r.Client.AddHook(trips)
	if err := s.ReleaseSlots(ctx, "first", []string{dest[0].Destination}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcquireSlots(ctx, "second", slotLease, dest); err != nil || !ok {
		t.Fatalf("second AcquireSlots = %v, %v; want taken", ok, err)
	}
	if err := s.ReleaseSlots(ctx, "second", []string{dest[0].Destination}); err != nil {
		t.Fatal(err)
	}
	if n := trips.Count(); n != 0 {
		t.Errorf("giving back, reusing and giving back again took %d round trips, want 0", n)
	}
	if got := slotHolders(t, s, r.Client, dest[0].Destination); len(got) != 1 || !sameKeys(got, seats) {
		t.Errorf("after the reuse the slot holds %v, want the one seat %v", got, seats)
	}
	testutil.Eventually(t, 5*time.Second, "the idle seat given back to Redis", func() bool {
		return len(slotHolders(t, s, r.Client, dest[0].Destination)) == 0
	})
}

// TestSlotReuseKeepsTheLimit: seats a Store holds, lent or waiting, count
// against the limit for every other Store (another worker process), and a
// Store never lends one seat twice; once the waiting seats go back, the
// other Store gets its seat.
func TestSlotReuseKeepsTheLimit(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	a, b := bankedStore(r, 2*time.Second, nil), bankedStore(r, 2*time.Second, nil)
	ctx := context.Background()
	dest := []store.Slot{{Destination: "domain:limit.example", Limit: 2}}
	for _, h := range []string{"a1", "a2"} {
		if ok, err := a.AcquireSlots(ctx, h, slotLease, dest); err != nil || !ok {
			t.Fatalf("AcquireSlots(%s) = %v, %v; want taken", h, ok, err)
		}
	}
	if ok, err := a.AcquireSlots(ctx, "a3", slotLease, dest); err != nil || ok {
		t.Fatalf("a third holder of a limit of 2 in one Store: AcquireSlots = %v, %v; want busy", ok, err)
	}
	if err := a.ReleaseSlots(ctx, "a1", []string{dest[0].Destination}); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.AcquireSlots(ctx, "b1", slotLease, dest); err != nil || ok {
		t.Fatalf("another Store while one seat is lent and one waits: AcquireSlots = %v, %v; want busy", ok, err)
	}
	if got := slotHolders(t, a, r.Client, dest[0].Destination); len(got) != 2 {
		t.Errorf("after the busy takes the slot holds %v, want the two seats of the first Store", got)
	}
	if err := a.ReleaseSlots(ctx, "a2", []string{dest[0].Destination}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the other Store's seat once the waiting ones went back", func() bool {
		ok, err := b.AcquireSlots(ctx, "b1", slotLease, dest)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
}

// TestSlotReuseWindowEnds: a seat given back after its reuse window goes
// back to Redis at once; so does one whose holder's take found the slot
// busy.
func TestSlotReuseWindowEnds(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	clock := testutil.NewClock(time.Now())
	s := bankedStore(r, time.Minute, clock.Now)
	ctx := context.Background()
	dest := []store.Slot{{Destination: "domain:window.example", Limit: 1}}
	if ok, err := s.AcquireSlots(ctx, "old", slotLease, dest); err != nil || !ok {
		t.Fatalf("AcquireSlots = %v, %v; want taken", ok, err)
	}
	if ok, err := s.AcquireSlots(ctx, "over", slotLease, dest); err != nil || ok {
		t.Fatalf("AcquireSlots over the limit = %v, %v; want busy", ok, err)
	}
	if got := slotHolders(t, s, r.Client, dest[0].Destination); len(got) != 1 {
		t.Errorf("after a busy take the slot holds %v, want only the first seat", got)
	}
	clock.Advance(time.Minute)
	if err := s.ReleaseSlots(ctx, "old", []string{dest[0].Destination}); err != nil {
		t.Fatal(err)
	}
	if got := slotHolders(t, s, r.Client, dest[0].Destination); len(got) != 0 {
		t.Errorf("a seat given back after its reuse window: the slot holds %v, want none", got)
	}
}

func sameKeys(a, b map[string]int64) bool {
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return len(a) == len(b)
}

// TestReleaseKeptSlots: a stopping worker gives its waiting seats back at
// once (not after the idle time, nor when their leases end), and keeps no
// seat given back after that.
func TestReleaseKeptSlots(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	s := bankedStore(r, time.Minute, nil) // seats would wait 12 s
	ctx := context.Background()
	dest := []store.Slot{{Destination: "domain:stop.example", Limit: 2}}
	for _, h := range []string{"waiting", "in-flight"} {
		if ok, err := s.AcquireSlots(ctx, h, slotLease, dest); err != nil || !ok {
			t.Fatalf("AcquireSlots(%s) = %v, %v; want taken", h, ok, err)
		}
	}
	if err := s.ReleaseSlots(ctx, "waiting", []string{dest[0].Destination}); err != nil {
		t.Fatal(err)
	}
	s.ReleaseKeptSlots(ctx)
	if got := slotHolders(t, s, r.Client, dest[0].Destination); len(got) != 1 {
		t.Errorf("after ReleaseKeptSlots the slot holds %v, want only the seat still in flight", got)
	}
	if err := s.ReleaseSlots(ctx, "in-flight", []string{dest[0].Destination}); err != nil {
		t.Fatal(err)
	}
	if got := slotHolders(t, s, r.Client, dest[0].Destination); len(got) != 0 {
		t.Errorf("a seat given back after ReleaseKeptSlots: the slot holds %v, want none", got)
	}
}
