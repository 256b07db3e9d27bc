package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/internal/roundtrips"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

func newStore(t *testing.T, now func() time.Time) (*store.Store, *testutil.Redis) {
	t.Helper()
	r := testutil.NewRedis(t)
	return store.New(r.Client, store.Options{Namespace: r.Namespace, Retention: time.Hour, Now: now}), r
}

func newJob(now time.Time) store.Job {
	return store.Job{
		ID: uuid.NewString(), Status: store.StatusQueued, SessionCode: "SESSION_1",
		CreatedAt: now, UpdatedAt: now, Deadline: now.Add(3 * time.Hour),
		History: []store.Transition{{At: now, Status: store.StatusQueued}},
	}
}

func TestCreateIsIdempotent(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	got, created, fp, err := s.Create(ctx, job, "fp-1", []store.OutboxEntry{{ID: "a", Data: []byte("x")}})
	if err != nil || !created || fp != "fp-1" || got.ID != job.ID {
		t.Fatalf("first Create = %v %v %q %v", got.ID, created, fp, err)
	}
	again := job
	again.SessionCode = "SESSION_OTHER"
	got, created, fp, err = s.Create(ctx, again, "fp-2", []store.OutboxEntry{{ID: "b", Data: []byte("y")}})
	if err != nil || created || fp != "fp-1" || got.SessionCode != "SESSION_1" {
		t.Fatalf("second Create = %q created=%v fp=%q err=%v; want the stored job and fingerprint", got.SessionCode, created, fp, err)
	}
	outbox, err := s.Outbox(ctx, job.ID)
	if err != nil || len(outbox) != 1 || outbox[0].ID != "a" {
		t.Fatalf("outbox = %+v, %v; want only the first creator's entry", outbox, err)
	}
}

// TestCreateOfANewJobIsOneRoundTrip: on one Redis a new job's every entry
// (deadline, listings, counter, session index) goes in the round trip of
// its creation script; a repeat, here of a job that moved on, reusing the
// idempotency key for another session, takes back what went ahead for a
// new job: the count, the listing under the status the job left, and the
// entry under the other session.
func TestCreateOfANewJobIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	// A first creation loads the script (NOSCRIPT, then EVAL).
	first := newJob(time.Now())
	first.SessionCode = "SESSION_FIRST"
	if _, _, _, err := s.Create(ctx, first, "fp", nil); err != nil {
		t.Fatal(err)
	}
	trips := &roundtrips.Counter{}
	r.Client.AddHook(trips)
	job := newJob(time.Now())
	if _, created, _, err := s.Create(ctx, job, "fp", nil); err != nil || !created {
		t.Fatalf("Create = created %v, %v", created, err)
	}
	if n := trips.Count(); n != 1 {
		t.Errorf("a new job's creation took %d round trips, want 1", n)
	}
	if ids, err := s.SessionJobs(ctx, job.SessionCode); err != nil || len(ids) != 1 || ids[0] != job.ID {
		t.Errorf("session %s indexes %v, %v; want the new job", job.SessionCode, ids, err)
	}
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		j.SetStatus(store.StatusRequesting, now, "")
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}

	again := job
	again.SessionCode = "SESSION_OTHER"
	again.CreatedAt = job.CreatedAt.Add(time.Second)
	if got, created, _, err := s.Create(ctx, again, "fp", nil); err != nil || created || got.Status != store.StatusRequesting {
		t.Fatalf("repeat Create = %s created %v, %v; want the stored job", got.Status, created, err)
	}
	stats, err := s.Stats(ctx)
	if err != nil || stats.Created != 2 {
		t.Errorf("jobs created = %d, %v after two jobs and a repeat; want 2", stats.Created, err)
	}
	if ids, err := s.SessionJobs(ctx, again.SessionCode); err != nil || len(ids) != 0 {
		t.Errorf("session %s indexes %v, %v; want no job (the stored job is of %s)", again.SessionCode, ids, err, job.SessionCode)
	}
	queued := r.Namespace + ":index:status:" + string(store.StatusQueued)
	if err := r.Client.ZScore(ctx, queued, job.ID).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("queued listing holds the requesting job (%v); want no entry", err)
	}
	created := r.Namespace + ":index:created"
	if score, err := r.Client.ZScore(ctx, created, job.ID).Result(); err != nil || int64(score) != job.CreatedAt.UnixMilli() {
		t.Errorf("creation listing score %v, %v; want the stored job's %d", score, err, job.CreatedAt.UnixMilli())
	}
}

// TestFinishingCommitIsOneRoundTrip: a commit that finishes a job, read
// ahead, is one round trip: its listing move and the writes of reaching a
// final status (deadline entry, finished count, session entry) go in it.
func TestFinishingCommitIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job, seen := seenJob(t, s, false)
	trips := &roundtrips.Counter{}
	r.Client.AddHook(trips)
	if _, _, _, err := s.UpdateFrom(ctx, job.ID, seen, func(j *store.Job, now time.Time) (store.Change, error) {
		j.SetStatus(store.StatusDone, now, "")
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := trips.Count(); n != 1 {
		t.Errorf("the finishing commit took %d round trips, want 1", n)
	}
	if err := r.Client.ZScore(ctx, r.Namespace+":index:deadlines", job.ID).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("deadline index holds the finished job (%v); want no entry", err)
	}
	if stats, err := s.Stats(ctx); err != nil || stats.Finished[store.StatusDone] != 1 {
		t.Errorf("jobs finished done = %d, %v; want 1", stats.Finished[store.StatusDone], err)
	}
	if ids, err := s.SessionJobs(ctx, job.SessionCode); err != nil || len(ids) != 0 {
		t.Errorf("session %s indexes %v, %v; want no job", job.SessionCode, ids, err)
	}
	if !listed(t, s, store.StatusDone, job.ID) || listed(t, s, store.StatusQueued, job.ID) {
		t.Errorf("the finished job is not listed under done alone")
	}
}

func TestGetUnknownIsNotFound(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	if _, err := s.Get(context.Background(), uuid.NewString()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	_, err := s.Update(context.Background(), uuid.NewString(), func(*store.Job, time.Time) (store.Change, error) {
		return store.Change{}, nil
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update = %v, want ErrNotFound", err)
	}
}

// TestTransitionsOnlyMoveForward tries every pair of statuses.
func TestTransitionsOnlyMoveForward(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	rank := map[store.Status]int{store.StatusQueued: 0, store.StatusRequesting: 1, store.StatusGenerating: 2}
	for _, from := range store.Statuses {
		for _, to := range store.Statuses {
			t.Run(fmt.Sprintf("%s to %s", from, to), func(t *testing.T) {
				job := newJob(time.Now())
				job.Status = from
				if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
					t.Fatal(err)
				}
				_, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
					j.Status = to // bypass SetStatus: the script itself must refuse
					return store.Change{}, nil
				})
				fromRank, fromLive := rank[from]
				toRank, toLive := rank[to]
				allowed := from == to || (fromLive && (!toLive || toRank >= fromRank))
				if allowed && err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !allowed && !errors.Is(err, store.ErrIllegalTransition) {
					t.Fatalf("err = %v, want ErrIllegalTransition", err)
				}
				got, _ := s.Get(ctx, job.ID)
				if want := map[bool]store.Status{true: to, false: from}[allowed]; got.Status != want {
					t.Fatalf("stored status %s, want %s", got.Status, want)
				}
			})
		}
	}
}

// TestConcurrentWritersOneFinalStatus races writers that each try to end
// the job a different way, plus writers recording progress. Exactly one
// final transition and one final event must survive, and no progress write
// may be lost or applied after the job ended.
func TestConcurrentWritersOneFinalStatus(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	for round := range 5 {
		job := newJob(time.Now())
		job.Status = store.StatusGenerating
		if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
			t.Fatal(err)
		}
		finals := []store.Status{store.StatusDone, store.StatusFailed, store.StatusTimedOut, store.StatusCanceled}
		var wins, progress atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range 16 {
			wg.Go(func() {
				<-start
				if w%2 == 0 { // try to finish
					status := finals[w/2%len(finals)]
					var won bool
					_, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
						won = false
						if j.Status.Final() {
							return store.Change{}, store.ErrNoChange
						}
						j.Finish(status, now, nil, "")
						won = true
						return store.Change{Events: []store.NewEvent{{ID: "evt-final-" + string(status), Type: store.FinalEvent(status)}}}, nil
					})
					if err != nil {
						t.Error(err)
					}
					if won {
						wins.Add(1)
					}
					return
				}
				var counted bool
				_, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
					counted = false
					if j.Status.Final() {
						return store.Change{}, store.ErrNoChange
					}
					j.Polls++
					counted = true
					return store.Change{}, nil
				})
				if err != nil {
					t.Error(err)
				}
				if counted {
					progress.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		got, err := s.Get(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		finalsInHistory := 0
		for _, tr := range got.History {
			if tr.Status.Final() {
				finalsInHistory++
			}
		}
		events, _ := s.Events(ctx, job.ID)
		if wins.Load() != 1 || finalsInHistory != 1 || len(events) != 1 || !got.Status.Final() {
			t.Fatalf("round %d: %d winners, %d final transitions, %d events, status %s", round, wins.Load(), finalsInHistory, len(events), got.Status)
		}
		if _, ok := events["evt-final-"+string(got.Status)]; !ok {
			t.Fatalf("round %d: the stored event is not the winner's", round)
		}
		if int32(got.Polls) != progress.Load() {
			t.Fatalf("round %d: %d progress writes committed, job counts %d", round, progress.Load(), got.Polls)
		}
	}
}

func TestEventsAreWrittenOnce(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		_, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
			j.ExternalID = fmt.Sprint(i)
			return store.Change{Events: []store.NewEvent{{ID: "evt-1", Type: store.EventProgress}}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ev, err := s.Event(ctx, job.ID, "evt-1")
	if err != nil {
		t.Fatal(err)
	}
	if want := `"external_id":"0"`; !bytes.Contains(ev.Body, []byte(want)) {
		t.Fatalf("event body %s: the first snapshot must stay (want %s)", ev.Body, want)
	}
}

// TestRetention: unfinished jobs live until their deadline plus the
// retention period; finished ones for the retention period, all their keys.
func TestRetention(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", []store.OutboxEntry{{ID: "x", Data: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	ttl := r.Client.PTTL(ctx, s.KeysOf(job.ID)[0]).Val()
	if ttl < 3*time.Hour+55*time.Minute || ttl > 4*time.Hour {
		t.Fatalf("unfinished job TTL = %s, want about deadline (3h) + retention (1h)", ttl)
	}
	if ob, err := s.Outbox(ctx, job.ID); err != nil || len(ob) != 1 {
		t.Fatalf("outbox = %v, %v; want the created entry, expiring with the job's record", ob, err)
	}
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		j.Finish(store.StatusDone, now, nil, "")
		return store.Change{Events: []store.NewEvent{{ID: "evt-done", Type: store.EventDone}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveMessage(ctx, job.ID, store.Message{ID: "evt-done:job", Status: store.MessageDelivered}); err != nil {
		t.Fatal(err)
	}
	for i, k := range s.KeysOf(job.ID) {
		ttl := r.Client.PTTL(ctx, k).Val()
		if (i == 1 || i == 2) && ttl == -2 {
			continue // no events hash (the job's one event is in its record), no outbox hash (its entries are the record's fields)
		}
		if ttl < 55*time.Minute || ttl > time.Hour {
			t.Errorf("%s TTL = %s, want about the 1h retention", k, ttl)
		}
	}
}

// TestMessageRecordExpiresWithItsJob: a delivery record saved over the one
// its event's commit created keeps expiring with the job, before and after
// the job finishes (the commit that finishes it moves every key's expiry),
// and a record saved where none was takes the job's expiry.
func TestMessageRecordExpiresWithItsJob(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		byCommit  bool // the record was created by the event's commit
		finish    bool // the job finishes before the record is saved
		wantAbout time.Duration
	}{
		{"created by the commit, unfinished", true, false, 4 * time.Hour},
		{"created by the commit, finished since", true, true, time.Hour},
		{"new, unfinished", false, false, 4 * time.Hour},
		{"new, finished", false, true, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, r := newStore(t, nil)
			ctx := context.Background()
			job := newJob(time.Now())
			if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
				t.Fatal(err)
			}
			msg := store.Message{ID: "evt-1.job", EventID: "evt-1", Destination: store.DestinationJob, Status: store.MessagePending}
			if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				j.SetStatus(store.StatusGenerating, now, "")
				change := store.Change{Events: []store.NewEvent{{ID: "evt-1", Type: store.EventAccepted}}}
				if tt.byCommit {
					change.Messages = []store.Message{msg}
				}
				return change, nil
			}); err != nil {
				t.Fatal(err)
			}
			if tt.finish {
				if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
					j.Finish(store.StatusDone, now, nil, "")
					return store.Change{}, nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			msg.Status = store.MessageDelivered
			if err := s.SaveMessage(ctx, job.ID, msg); err != nil {
				t.Fatal(err)
			}
			key := s.KeysOf(job.ID)[3]
			ttl := r.Client.PTTL(ctx, key).Val()
			if ttl < tt.wantAbout-5*time.Minute || ttl > tt.wantAbout {
				t.Fatalf("%s TTL = %s, want about %s, the job's", key, ttl, tt.wantAbout)
			}
			got, err := s.Message(ctx, job.ID, msg.ID)
			if err != nil || got.Status != store.MessageDelivered {
				t.Fatalf("saved record %+v (%v), want it delivered", got, err)
			}
		})
	}
}

// TestOutboxIndex: a refreshed index entry survives a sweeper's drop of
// the version it read.
func TestOutboxIndex(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	s, _ := newStore(t, now)
	ctx := context.Background()
	job := newJob(now())
	if _, _, _, err := s.Create(ctx, job, "fp", []store.OutboxEntry{{ID: "x", Data: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute.Milliseconds())
	stale, err := s.StaleOutboxes(ctx, now().Add(-30*time.Second), 10)
	if err != nil || len(stale) != 1 || stale[0].JobID != job.ID {
		t.Fatalf("StaleOutboxes = %+v, %v", stale, err)
	}
	// A writer refreshes the entry between the sweeper's read and its drop.
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		return store.Change{Outbox: []store.OutboxEntry{{ID: "y", Data: []byte("2")}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.DropOutboxIndex(ctx, stale[0]); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute.Milliseconds())
	again, _ := s.StaleOutboxes(ctx, now().Add(-30*time.Second), 10)
	if len(again) != 1 {
		t.Fatal("a refreshed outbox index entry was dropped")
	}
	if err := s.DropOutboxIndex(ctx, again[0]); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.StaleOutboxes(ctx, now(), 10); len(left) != 0 {
		t.Fatalf("index still holds %+v", left)
	}
}

func TestOverdueIndex(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	early, late := newJob(time.Now()), newJob(time.Now())
	early.Deadline = time.Now().Add(-time.Minute)
	for _, j := range []store.Job{early, late} {
		if _, _, _, err := s.Create(ctx, j, "fp", nil); err != nil {
			t.Fatal(err)
		}
	}
	over, err := s.Overdue(ctx, time.Now(), 10)
	if err != nil || len(over) != 1 || over[0].JobID != early.ID {
		t.Fatalf("Overdue = %+v, %v; want only the early job", over, err)
	}
	if _, err := s.Update(ctx, early.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		j.Finish(store.StatusTimedOut, now, nil, "")
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if over, _ := s.Overdue(ctx, time.Now(), 10); len(over) != 0 {
		t.Fatalf("a finished job stays in the deadline index: %+v", over)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	t.Parallel()
	var j store.Job
	j.SetStatus(store.StatusQueued, time.Now(), "created")
	for i := range 500 {
		j.SetUpstreamStatus(fmt.Sprint("status-", i), time.Now())
	}
	if len(j.History) != 100 || j.History[0].Note != "created" || j.History[99].UpstreamStatus != "status-499" {
		t.Fatalf("history of %d entries, first %+v, last %+v", len(j.History), j.History[0], j.History[len(j.History)-1])
	}
}

// TestFinishedJobLeavesItsSessionIndex: the commit that finishes a job,
// whoever makes it, drops the job from its session's index (pushes for the
// session then find only live jobs); an unfinished job stays.
func TestFinishedJobLeavesItsSessionIndex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status store.Status
		want   int // jobs left in the session's index
	}{
		{"generating", store.StatusGenerating, 1},
		{"done", store.StatusDone, 0},
		{"canceled", store.StatusCanceled, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newStore(t, nil)
			ctx := context.Background()
			job := newJob(time.Now())
			job.SessionCode = "SESSION_LEAVES_" + uuid.NewString()[:8]
			if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
				t.Fatal(err)
			}
			if ids, err := s.SessionJobs(ctx, job.SessionCode); err != nil || len(ids) != 1 {
				t.Fatalf("a new job's session index %v (%v), want the job", ids, err)
			}
			if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				if tt.status.Final() {
					j.Finish(tt.status, now, nil, "")
				} else {
					j.SetStatus(tt.status, now, "")
				}
				return store.Change{}, nil
			}); err != nil {
				t.Fatal(err)
			}
			if ids, err := s.SessionJobs(ctx, job.SessionCode); err != nil || len(ids) != tt.want {
				t.Fatalf("session index after %s: %v (%v), want %d jobs", tt.status, ids, err, tt.want)
			}
		})
	}
}

// TestMovedDeadlineMovesTheExpiry: an unfinished job's keys expire at its
// deadline plus the retention; commits that leave the deadline leave the
// expiry (they need not set it again), one that moves it moves the expiry.
func TestMovedDeadlineMovesTheExpiry(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	update := func(fn func(j *store.Job)) time.Duration {
		t.Helper()
		if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
			fn(j)
			return store.Change{}, nil
		}); err != nil {
			t.Fatal(err)
		}
		return r.Client.PTTL(ctx, s.KeysOf(job.ID)[0]).Val()
	}
	if ttl := update(func(j *store.Job) { j.Polls++ }); ttl < 3*time.Hour+55*time.Minute || ttl > 4*time.Hour {
		t.Fatalf("TTL after a commit that left the deadline = %s, want about deadline (3h) + retention (1h)", ttl)
	}
	if ttl := update(func(j *store.Job) { j.Deadline = j.Deadline.Add(5 * time.Hour) }); ttl < 8*time.Hour+55*time.Minute || ttl > 9*time.Hour {
		t.Fatalf("TTL after the deadline moved 5h later = %s, want about 9h", ttl)
	}
}
