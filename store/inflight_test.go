package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// inFlightByStatus reads InFlight and indexes it by status, checking that
// it reports exactly the statuses not yet final.
func inFlightByStatus(t *testing.T, s *store.Store) map[store.Status]store.InFlight {
	t.Helper()
	got, err := s.InFlight(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[store.Status]store.InFlight{}
	for _, f := range got {
		out[f.Status] = f
	}
	want := []store.Status{store.StatusQueued, store.StatusRequesting, store.StatusGenerating}
	if len(got) != len(want) {
		t.Fatalf("InFlight reports %d statuses, want %v: %+v", len(got), want, got)
	}
	for _, st := range want {
		if _, ok := out[st]; !ok {
			t.Fatalf("InFlight lacks %s: %+v", st, got)
		}
	}
	return out
}

// createIn creates a job at the given time and moves it, forward step by
// step, to status st.
func createIn(t *testing.T, s *store.Store, created time.Time, st store.Status) store.Job {
	t.Helper()
	ctx := context.Background()
	job := newJob(created)
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	path := map[store.Status][]store.Status{
		store.StatusQueued:     nil,
		store.StatusRequesting: {store.StatusRequesting},
		store.StatusGenerating: {store.StatusRequesting, store.StatusGenerating},
	}[st]
	if st.Final() {
		path = []store.Status{store.StatusRequesting, store.StatusGenerating, st}
	}
	for _, step := range path {
		j, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
			j.SetStatus(step, now, "test")
			return store.Change{}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		job = j
	}
	if job.Status != st {
		t.Fatalf("job is %s, want %s", job.Status, st)
	}
	return job
}

// TestInFlightCountsAndOldest: per status not yet final, the number of jobs
// and the creation time of the oldest, whatever status the job had before;
// final jobs count nowhere.
func TestInFlightCountsAndOldest(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	for st, f := range inFlightByStatus(t, s) {
		if f.Count != 0 || !f.Oldest.IsZero() {
			t.Fatalf("empty namespace: %s = %+v, want nothing", st, f)
		}
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	createIn(t, s, base.Add(10*time.Minute), store.StatusQueued)
	createIn(t, s, base.Add(20*time.Minute), store.StatusQueued)
	createIn(t, s, base.Add(5*time.Minute), store.StatusRequesting)
	// The oldest generating job went through queued and requesting: its
	// age is since creation, and it left no entry behind in either.
	createIn(t, s, base, store.StatusGenerating)
	createIn(t, s, base.Add(30*time.Minute), store.StatusGenerating)
	createIn(t, s, base.Add(31*time.Minute), store.StatusGenerating)
	// Older than all, but final.
	createIn(t, s, base.Add(-time.Minute), store.StatusDone)
	createIn(t, s, base.Add(-2*time.Minute), store.StatusFailed)

	got := inFlightByStatus(t, s)
	for _, tc := range []struct {
		st     store.Status
		count  int64
		oldest time.Time
	}{
		{store.StatusQueued, 2, base.Add(10 * time.Minute)},
		{store.StatusRequesting, 1, base.Add(5 * time.Minute)},
		{store.StatusGenerating, 3, base},
	} {
		if f := got[tc.st]; f.Count != tc.count || !f.Oldest.Equal(tc.oldest) {
			t.Errorf("%s = %d, oldest %v; want %d, oldest %v", tc.st, f.Count, f.Oldest, tc.count, tc.oldest)
		}
	}
}

// TestInFlightSkipsStaleEntries: listing entries are written after the
// job's commit, best effort; an entry whose removal was lost (its job moved
// on, or its record expired) neither counts nor shows as the oldest, also
// when there are more of them than one page of the listing's head.
func TestInFlightSkipsStaleEntries(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
	live := createIn(t, s, base.Add(time.Hour), store.StatusGenerating)
	done := createIn(t, s, base, store.StatusDone)
	key := r.Namespace + ":index:status:" + string(store.StatusGenerating)
	// What a lost ZREM leaves: the finished job still listed as generating,
	// and jobs whose records are gone, all older than the live one.
	ghosts := []redis.Z{{Score: float64(base.UnixMilli()), Member: done.ID}}
	for i := range 11 {
		ghosts = append(ghosts, redis.Z{Score: float64(base.Add(time.Duration(i+1) * time.Minute).UnixMilli()), Member: uuid.NewString()})
	}
	if err := r.Client.ZAdd(ctx, key, ghosts...).Err(); err != nil {
		t.Fatal(err)
	}
	got := inFlightByStatus(t, s)[store.StatusGenerating]
	if got.Count != 1 || !got.Oldest.Equal(live.CreatedAt) {
		t.Fatalf("generating = %d, oldest %v; want 1, oldest %v (the live job, not a stale entry)", got.Count, got.Oldest, live.CreatedAt)
	}
}

// TestInFlightBoundedWhenTheHeadIsAllStale: more stale entries than one
// read checks cost no more reads than its bound, and the oldest reported
// is no earlier than any entry checked and no later than the live job.
func TestInFlightBoundedWhenTheHeadIsAllStale(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Millisecond)
	live := createIn(t, s, base.Add(2*time.Hour), store.StatusQueued)
	key := r.Namespace + ":index:status:" + string(store.StatusQueued)
	var ghosts []redis.Z
	for i := range 100 {
		ghosts = append(ghosts, redis.Z{Score: float64(base.Add(time.Duration(i) * time.Minute).UnixMilli()), Member: fmt.Sprintf("ghost-%03d", i)})
	}
	if err := r.Client.ZAdd(ctx, key, ghosts...).Err(); err != nil {
		t.Fatal(err)
	}
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	counter := &testutil.CommandCounter{}
	rdb.AddHook(counter)
	counted := store.New(rdb, store.Options{Namespace: r.Namespace, Retention: time.Hour})
	got := inFlightByStatus(t, counted)[store.StatusQueued]
	// Checking every entry would take over 100 commands.
	if n := counter.Load(); n > 50 {
		t.Fatalf("one read sent %d Redis commands for 101 entries: it scans", n)
	}
	if !got.Oldest.After(base.Add(8*time.Minute)) || got.Oldest.After(live.CreatedAt) {
		t.Fatalf("oldest %v: want after the first page of stale entries (%v) and not after the live job (%v)", got.Oldest, base.Add(8*time.Minute), live.CreatedAt)
	}
	if got.Count >= 101 || got.Count < 1 {
		t.Fatalf("count %d: want the 101 entries less the stale ones checked", got.Count)
	}
}
