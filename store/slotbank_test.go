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

// TestAwaitSlots: while a Store's own holders fill a slot, a further take
// is refused without asking Redis, AwaitSlots waits until one of them gives
// its seat back (or until its bound), and AwaitSlotBack waits for the next
// seat back only while the Store lends one. Judged from AcquireSlots, the
// client's round trips and the slot's set in Redis.
func TestAwaitSlots(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	s := bankedStore(r, 2*time.Second, nil)
	ctx := context.Background()
	dest := []store.Slot{{Destination: "domain:await.example", Limit: 2}}
	for _, h := range []string{"h1", "h2"} {
		if ok, err := s.AcquireSlots(ctx, h, slotLease, dest); err != nil || !ok {
			t.Fatalf("AcquireSlots(%s) = %v, %v; want taken", h, ok, err)
		}
	}

	trips := &roundtrips.Counter{}
	r.Client.AddHook(trips)
	if ok, err := s.AcquireSlots(ctx, "h3", slotLease, dest); err != nil || ok {
		t.Fatalf("AcquireSlots(h3) with both seats lent = %v, %v; want refused", ok, err)
	}
	if n := trips.Count(); n != 0 {
		t.Errorf("the refusal took %d round trips, want 0: the Store knows its own seats fill the slot", n)
	}
	if free, waited := s.AwaitSlots(ctx, dest, 50*time.Millisecond); free || !waited {
		t.Errorf("AwaitSlots with both seats lent and none given back = %v, %v; want not free after waiting", free, waited)
	}

	given := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		given <- s.ReleaseSlots(ctx, "h1", []string{dest[0].Destination})
	}()
	start := time.Now()
	if free, waited := s.AwaitSlots(ctx, dest, 10*time.Second); !free || !waited {
		t.Fatalf("AwaitSlots while h1 gives its seat back = %v, %v; want free after waiting", free, waited)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("AwaitSlots took %s, want it to end when the seat came back", took)
	}
	if err := <-given; err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcquireSlots(ctx, "h3", slotLease, dest); err != nil || !ok {
		t.Fatalf("AcquireSlots(h3) after h1 gave back = %v, %v; want taken", ok, err)
	}
	if got := slotHolders(t, s, r.Client, dest[0].Destination); len(got) != 2 {
		t.Errorf("the slot holds %v, want two seats: h1's went to h3", got)
	}
	if free, waited := s.AwaitSlots(ctx, []store.Slot{{Destination: "domain:other.example", Limit: 2}}, time.Second); !free || waited {
		t.Errorf("AwaitSlots of a slot the Store holds no seat of = %v, %v; want free at once", free, waited)
	}

	if s.AwaitSlotBack(ctx, []store.Slot{{Destination: "domain:other.example", Limit: 2}}, time.Second) {
		t.Error("AwaitSlotBack of a slot the Store lends no seat of = true, want false at once")
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		given <- s.ReleaseSlots(ctx, "h2", []string{dest[0].Destination})
	}()
	if !s.AwaitSlotBack(ctx, dest, 10*time.Second) {
		t.Error("AwaitSlotBack while h2 gives its seat back = false, want true")
	}
	if err := <-given; err != nil {
		t.Fatal(err)
	}
	_ = s.ReleaseSlots(ctx, "h3", []string{dest[0].Destination})
	s.ReleaseKeptSlots(ctx)
}

// TestAwaitSlotsWithoutReuse: a Store that keeps no seats never waits.
func TestAwaitSlotsWithoutReuse(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	s := bankedStore(r, 0, nil)
	dest := []store.Slot{{Destination: "domain:plain.example", Limit: 1}}
	if free, waited := s.AwaitSlots(context.Background(), dest, time.Second); !free || waited {
		t.Errorf("AwaitSlots = %v, %v; want free at once", free, waited)
	}
	if s.AwaitSlotBack(context.Background(), dest, time.Second) {
		t.Error("AwaitSlotBack = true, want false at once")
	}
}
