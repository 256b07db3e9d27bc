package store_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

const slotLease = time.Minute

// slotHolders reads destination's slot set as Redis holds it: each
// holder's lease expiry in Unix milliseconds. A job's own slot is the
// seats field of its hash.
func slotHolders(t *testing.T, s *store.Store, rdb redis.UniversalClient, destination string) map[string]int64 {
	t.Helper()
	if jobID, ok := strings.CutPrefix(destination, "job:"); ok {
		return jobSeats(t, s, rdb, jobID)
	}
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

// jobSeats reads a job's seats field as Redis holds it ("<lease end ms>
// <holder>" a line): each holder's lease end.
func jobSeats(t *testing.T, s *store.Store, rdb redis.UniversalClient, jobID string) map[string]int64 {
	t.Helper()
	raw, err := rdb.HGet(context.Background(), s.KeysOf(jobID)[0], "sl").Result()
	if errors.Is(err, redis.Nil) {
		return map[string]int64{}
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(raw, "\n") {
		ends, holder, ok := strings.Cut(line, " ")
		n, err := strconv.ParseInt(ends, 10, 64)
		if !ok || err != nil {
			t.Fatalf("job %s seat %q: want \"<lease end ms> <holder>\"", jobID, line)
		}
		out[holder] = n
	}
	return out
}

// TestAcquireSlots: a delivery's slots are taken in one call, each against
// its own limit; with one over its limit, every one is given back at once
// and the full set swept of the holders whose lease ended; a holder
// already in a slot keeps it and moves its lease (a re-run, or a re-sent pipeline whose reply was
// lost); a holder whose lease ended no longer counts; every set that holds
// anyone expires no sooner than its newest lease; and ReleaseSlots gives
// back every one, held or not, leaving the other holders alone. Judged from
// the sorted sets in Redis, and for the job's own slot ("job:a", the job
// the case creates) from its hash's seats field.
func TestAcquireSlots(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// others are holders already in a destination's set, with the
		// lease each has left (negative or zero: ended); the set expires
		// when the longest of them ends, as if they had taken their slots.
		// None outlasts the new holder's lease.
		others map[string]map[string]time.Duration
		slots  []store.Slot
		runs   int // how often AcquireSlots runs, the clock moving a second between runs
		want   bool
		held   []string // the destinations whose set holds the holder afterwards
		// swept are the others gone from a destination's set afterwards
		// (the rest stay: a set with room is not swept).
		swept map[string][]string
	}{
		{
			name:  "all free",
			slots: []store.Slot{{Destination: "job:a", Limit: 2}, {Destination: "domain:a.example", Limit: 1}},
			runs:  1, want: true, held: []string{"job:a", "domain:a.example"},
		},
		{
			name:   "one full: every slot given back",
			others: map[string]map[string]time.Duration{"domain:a.example": {"other": slotLease}},
			slots:  []store.Slot{{Destination: "job:a", Limit: 2}, {Destination: "domain:a.example", Limit: 1}, {Destination: "addr:1.2.3.4:443", Limit: 1}},
			runs:   1, want: false,
		},
		{
			name:   "the limit reached by live holders: the holder's own adds are given back",
			others: map[string]map[string]time.Duration{"domain:a.example": {"one": slotLease, "two": time.Second}},
			slots:  []store.Slot{{Destination: "job:a", Limit: 2}, {Destination: "domain:a.example", Limit: 2}},
			runs:   1, want: false,
		},
		{
			name:   "a full slot whose holder's lease ended",
			others: map[string]map[string]time.Duration{"domain:a.example": {"dead": -time.Second}},
			slots:  []store.Slot{{Destination: "job:a", Limit: 2}, {Destination: "domain:a.example", Limit: 1}},
			runs:   1, want: true, held: []string{"job:a", "domain:a.example"},
		},
		{
			name:   "a lease that ends now has ended",
			others: map[string]map[string]time.Duration{"domain:a.example": {"dead": 0}},
			slots:  []store.Slot{{Destination: "domain:a.example", Limit: 1}},
			runs:   1, want: true, held: []string{"domain:a.example"},
		},
		{
			// The set holds as many members as the limit, one of them dead:
			// counting members rather than live leases would find it full.
			name:   "a holder whose lease ended is not counted",
			others: map[string]map[string]time.Duration{"domain:a.example": {"live": slotLease, "dead": -time.Second}},
			slots:  []store.Slot{{Destination: "domain:a.example", Limit: 2}},
			runs:   1, want: true, held: []string{"domain:a.example"},
		},
		{
			name:   "a full slot is swept of the holders whose lease ended",
			others: map[string]map[string]time.Duration{"domain:a.example": {"live": slotLease, "dead": -time.Second, "ended now": 0}},
			slots:  []store.Slot{{Destination: "domain:a.example", Limit: 1}},
			runs:   1, want: false, swept: map[string][]string{"domain:a.example": {"dead", "ended now"}},
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
		{
			// The set would expire with its holder's short lease, before
			// the new holder's ends.
			name:   "a set that expires sooner than the new lease",
			others: map[string]map[string]time.Duration{"domain:a.example": {"short": 30 * time.Second}},
			slots:  []store.Slot{{Destination: "domain:a.example", Limit: 2}},
			runs:   1, want: true, held: []string{"domain:a.example"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			clock := testutil.NewClock(time.Now())
			s, r := newStore(t, clock.Now)
			job := newJob(clock.Now())
			if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
				t.Fatal(err)
			}
			ofJob := func(d string) string { return strings.Replace(d, "job:a", "job:"+job.ID, 1) }
			tc.slots = slices.Clone(tc.slots)
			for i := range tc.slots {
				tc.slots[i].Destination = ofJob(tc.slots[i].Destination)
			}
			tc.held = slices.Clone(tc.held)
			for i, d := range tc.held {
				tc.held[i] = ofJob(d)
			}
			for dest, holders := range tc.others {
				key := s.SlotsKey(dest)
				// Not sooner than 30s on, though: a set whose holders have
				// all ended would expire before the test reads it.
				longest := clock.Now().Add(30 * time.Second)
				for h, left := range holders {
					ends := clock.Now().Add(left)
					r.Client.ZAdd(ctx, key, redis.Z{Score: float64(ends.UnixMilli()), Member: h})
					if ends.After(longest) {
						longest = ends
					}
				}
				r.Client.PExpireAt(ctx, key, longest)
				if longest.After(clock.Now().Add(slotLease)) {
					t.Fatalf("%s: a holder's lease outlasts the new one's: the set's expiry would not tell", dest)
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
				swept := map[string]bool{}
				for _, h := range tc.swept[sl.Destination] {
					swept[h] = true
				}
				for h := range tc.others[sl.Destination] {
					if _, stays := got[h]; stays == swept[h] {
						t.Errorf("%s: %s stays %v, want %v (%v)", sl.Destination, h, stays, !swept[h], got)
					}
				}
				// Dead holders may stay in a set with room; the live ones
				// never exceed its limit.
				live := 0
				for _, ends := range got {
					if ends > clock.Now().UnixMilli() {
						live++
					}
				}
				if live > sl.Limit {
					t.Errorf("%s has %d live holders, over its limit %d: %v", sl.Destination, live, sl.Limit, got)
				}
				if _, seat := strings.CutPrefix(sl.Destination, "job:"); len(got) == 0 || seat {
					continue // a job's seats live as long as its hash
				}
				// The set must outlive every lease in it: one that expired
				// sooner would free its holders' slots while they run.
				expires, err := r.Client.Do(ctx, "PEXPIRETIME", s.SlotsKey(sl.Destination)).Int64()
				if err != nil {
					t.Fatal(err)
				}
				for h, ends := range got {
					if expires < ends {
						t.Errorf("%s expires at %d ms (-1: never), before %s's lease ends at %d", sl.Destination, expires, h, ends)
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

// TestJobSlotOfAJobGone: the seat of a job that no longer exists (past its
// retention) is there to take, and taking it writes nothing: no hash is
// left behind without an expiry.
func TestJobSlotOfAJobGone(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	gone := newJob(time.Now()).ID
	ok, err := s.AcquireSlots(ctx, "holder", slotLease, []store.Slot{store.JobSlot(gone, 1)})
	if err != nil || !ok {
		t.Fatalf("AcquireSlots = %v, %v; want taken", ok, err)
	}
	if n, err := r.Client.Exists(ctx, s.KeysOf(gone)[0]).Result(); err != nil || n != 0 {
		t.Errorf("the job's hash exists (%d, %v) after taking the seat of a job gone", n, err)
	}
	if err := s.ReleaseSlots(ctx, "holder", []string{store.JobSlot(gone, 1).Destination}); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Client.Exists(ctx, s.KeysOf(gone)[0]).Result(); err != nil || n != 0 {
		t.Errorf("the job's hash exists (%d, %v) after giving the seat back", n, err)
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
	job := newJob(time.Now())
	if _, _, _, err := direct.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	slots := []store.Slot{store.JobSlot(job.ID, 1), {Destination: "domain:lost.example", Limit: 1}}

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

// TestSaveMessageReleasing: the record of an attempt is saved, the
// holder's slots given back and the outbox entries named (the message's
// task, a task enqueued before the attempt) acknowledged by one call, the
// other holders and entries left alone; with
// the record script gone from Redis (a restart, SCRIPT FLUSH) the save
// still lands, with its acknowledgement.
func TestSaveMessageReleasing(t *testing.T) {
	t.Parallel()
	for _, flushScripts := range []bool{false, true} {
		s, r := newStore(t, nil)
		ctx := context.Background()
		job, m := messageFixture(t, s)
		if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
			return store.Change{Outbox: []store.OutboxEntry{{ID: "webhook:mine", Data: []byte("1")}, {ID: "poll:next", Data: []byte("2")}, {ID: "webhook:other", Data: []byte("3")}}}, nil
		}); err != nil {
			t.Fatal(err)
		}
		slots := []store.Slot{store.JobSlot(job.ID, 2), {Destination: "addr:" + job.ID, Limit: 2}}
		for _, holder := range []string{"mine", "other"} {
			if ok, err := s.AcquireSlots(ctx, holder, slotLease, slots); err != nil || !ok {
				t.Fatalf("AcquireSlots(%s) = %v, %v", holder, ok, err)
			}
		}
		if flushScripts {
			if err := r.Client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		m.Status = store.MessageDelivered
		saveErr, releaseErr := s.SaveMessageReleasing(ctx, job.ID, m, []string{"webhook:mine", "poll:next"}, "mine", []string{slots[0].Destination, slots[1].Destination})
		if saveErr != nil || releaseErr != nil {
			t.Fatalf("scripts flushed %v: SaveMessageReleasing = %v, %v", flushScripts, saveErr, releaseErr)
		}
		if got, err := s.Message(ctx, job.ID, m.ID); err != nil || got.Status != store.MessageDelivered {
			t.Errorf("scripts flushed %v: record = %+v, %v; want it delivered", flushScripts, got, err)
		}
		for _, sl := range slots {
			holders := slotHolders(t, s, r.Client, sl.Destination)
			if _, ok := holders["mine"]; ok || len(holders) != 1 {
				t.Errorf("scripts flushed %v: %s holders %v, want only the other", flushScripts, sl.Destination, holders)
			}
		}
		// The last seat given back leaves no seats field.
		m.Status = store.MessageFailed
		if saveErr, releaseErr := s.SaveMessageReleasing(ctx, job.ID, m, nil, "other", []string{slots[0].Destination, slots[1].Destination}); saveErr != nil || releaseErr != nil {
			t.Fatalf("scripts flushed %v: SaveMessageReleasing(other) = %v, %v", flushScripts, saveErr, releaseErr)
		}
		if in, err := r.Client.HExists(ctx, s.KeysOf(job.ID)[0], "sl").Result(); err != nil || in {
			t.Errorf("scripts flushed %v: the job's seats field is there (%v, %v) with no seat held", flushScripts, in, err)
		}
		if ob, err := s.Outbox(ctx, job.ID); err != nil || len(ob) != 1 || ob[0].ID != "webhook:other" {
			t.Errorf("scripts flushed %v: outbox %v, %v; want only the entry not acknowledged", flushScripts, ob, err)
		}
	}
}
