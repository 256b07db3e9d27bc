package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

const slotLease = time.Minute

// slotHolders reads destination's slot set as Redis holds it: each
// holder's lease expiry in Unix milliseconds.
func slotHolders(t *testing.T, s *store.Store, rdb redis.UniversalClient, destination string) map[string]int64 {
	t.Helper()
	zs, err := rdb.ZRangeWithScores(context.Background(), s.SlotsKey(destination), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, z := range zs {
		out[z.Member.(string)] = int64(z.Score)
	}
	return out
}

// TestAcquireSlots: a delivery's slots are taken in one call, each against
// its own limit; a holder already in a slot keeps it and moves its lease
// (a re-run, or a re-sent pipeline whose reply was lost); a holder whose
// lease ended no longer counts; and ReleaseSlots gives back every one,
// held or not, leaving the other holders alone. Judged from the sorted
// sets in Redis.
func TestAcquireSlots(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// others are holders already in a destination's set, with the
		// lease each has left (negative: ended).
		others map[string]map[string]time.Duration
		slots  []store.Slot
		runs   int // how often AcquireSlots runs, the clock moving a second between runs
		want   bool
		held   []string // the destinations whose set holds the holder afterwards
	}{
		{
			name:  "all free",
			slots: []store.Slot{{Destination: "job:a", Limit: 2}, {Destination: "domain:a.example", Limit: 1}},
			runs:  1, want: true, held: []string{"job:a", "domain:a.example"},
		},
		{
			name:   "one full",
			others: map[string]map[string]time.Duration{"domain:a.example": {"other": slotLease}},
			slots:  []store.Slot{{Destination: "job:a", Limit: 2}, {Destination: "domain:a.example", Limit: 1}, {Destination: "addr:1.2.3.4:443", Limit: 1}},
			runs:   1, want: false, held: []string{"job:a", "addr:1.2.3.4:443"},
		},
		{
			name:   "a full slot whose holder's lease ended",
			others: map[string]map[string]time.Duration{"domain:a.example": {"dead": -time.Second}},
			slots:  []store.Slot{{Destination: "job:a", Limit: 2}, {Destination: "domain:a.example", Limit: 1}},
			runs:   1, want: true, held: []string{"job:a", "domain:a.example"},
		},
		{
			name:  "a re-run by the same holder",
			slots: []store.Slot{{Destination: "job:a", Limit: 1}, {Destination: "domain:a.example", Limit: 1}},
			runs:  2, want: true, held: []string{"job:a", "domain:a.example"},
		},
		{
			// The first run took the last free slot and its reply was lost:
			// the re-run finds the set full, but of itself.
			name:   "a lost reply: the re-run finds itself in the slot it filled",
			others: map[string]map[string]time.Duration{"domain:a.example": {"other": slotLease}},
			slots:  []store.Slot{{Destination: "job:a", Limit: 1}, {Destination: "domain:a.example", Limit: 2}},
			runs:   2, want: true, held: []string{"job:a", "domain:a.example"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			clock := testutil.NewClock(time.Now())
			s, r := newStore(t, clock.Now)
			for dest, holders := range tc.others {
				for h, left := range holders {
					r.Client.ZAdd(ctx, s.SlotsKey(dest), redis.Z{Score: float64(clock.Now().Add(left).UnixMilli()), Member: h})
				}
			}
			var ok bool
			for i := range tc.runs {
				if i > 0 {
					clock.Advance(time.Second)
				}
				var err error
				if ok, err = s.AcquireSlots(ctx, "holder", slotLease, tc.slots); err != nil {
					t.Fatalf("run %d: %v", i+1, err)
				}
			}
			if ok != tc.want {
				t.Fatalf("AcquireSlots = %v, want %v", ok, tc.want)
			}
			lease := clock.Now().Add(slotLease).UnixMilli()
			held := map[string]bool{}
			for _, d := range tc.held {
				held[d] = true
			}
			var all []string
			for _, sl := range tc.slots {
				all = append(all, sl.Destination)
				got := slotHolders(t, s, r.Client, sl.Destination)
				at, in := got["holder"]
				switch {
				case in != held[sl.Destination]:
					t.Errorf("%s holds the holder: %v, want %v (%v)", sl.Destination, in, held[sl.Destination], got)
				case in && at != lease:
					t.Errorf("%s: the holder's lease ends at %d, want %d (the last run's)", sl.Destination, at, lease)
				}
				if len(got) > sl.Limit {
					t.Errorf("%s has %d holders, over its limit %d: %v", sl.Destination, len(got), sl.Limit, got)
				}
				if in {
					if ttl := r.Client.PTTL(ctx, s.SlotsKey(sl.Destination)).Val(); ttl <= 0 {
						t.Errorf("%s: the set does not expire (PTTL %v): a holder that dies would leave it behind", sl.Destination, ttl)
					}
				}
			}

			if err := s.ReleaseSlots(ctx, "holder", all); err != nil {
				t.Fatal(err)
			}
			for _, d := range all {
				got := slotHolders(t, s, r.Client, d)
				if _, in := got["holder"]; in {
					t.Errorf("after ReleaseSlots %s still holds the holder: %v", d, got)
				}
				for h := range tc.others[d] {
					if _, in := got[h]; !in && tc.others[d][h] > 0 {
						t.Errorf("ReleaseSlots took %s's live slot of %s: %v", h, d, got)
					}
				}
			}
		})
	}
}

// TestAcquireSlotsLostReply: a pipeline whose reply is lost for real is
// re-sent by go-redis; the re-sent run finds the holder in the slots its
// first run took (the last free one among them) and reports them taken.
func TestAcquireSlotsLostReply(t *testing.T) {
	t.Parallel()
	s, proxy, r := lossyStore(t)
	ctx := context.Background()
	direct := store.New(r.Client, store.Options{Namespace: r.Namespace, Retention: time.Hour})
	slots := []store.Slot{{Destination: "job:lost", Limit: 1}, {Destination: "domain:lost.example", Limit: 1}}

	proxy.LoseReplyTo("lost-reply-holder")
	ok, err := s.AcquireSlots(ctx, "lost-reply-holder", slotLease, slots)
	if proxy.Lost() != 1 {
		t.Fatalf("the proxy lost %d replies, want 1: the fault was not injected", proxy.Lost())
	}
	if err != nil || !ok {
		t.Fatalf("AcquireSlots after a lost reply = %v, %v; want taken", ok, err)
	}
	for _, sl := range slots {
		if got := slotHolders(t, direct, r.Client, sl.Destination); len(got) != 1 || got["lost-reply-holder"] == 0 {
			t.Errorf("%s holds %v, want the holder once", sl.Destination, got)
		}
	}
}

// TestAcquireSlotsNoScript: a Redis that does not hold the script (a fresh
// or restarted server) answers the pipeline's EVALSHA with NOSCRIPT; the
// slots are then taken the plain way, which loads it.
func TestAcquireSlotsNoScript(t *testing.T) {
	t.Parallel()
	r := testutil.NewPrivateRedis(t)
	s := store.New(r.Client, store.Options{Namespace: r.Namespace, Retention: time.Hour})
	ctx := context.Background()
	if err := r.Client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	slots := []store.Slot{{Destination: "job:a", Limit: 1}, {Destination: "domain:a.example", Limit: 1}}
	ok, err := s.AcquireSlots(ctx, "holder", slotLease, slots)
	if err != nil || !ok {
		t.Fatalf("AcquireSlots on a Redis without the script = %v, %v; want taken", ok, err)
	}
	for _, sl := range slots {
		if got := slotHolders(t, s, r.Client, sl.Destination); len(got) != 1 || got["holder"] == 0 {
			t.Errorf("%s holds %v, want the holder", sl.Destination, got)
		}
	}
}
