package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// deadlineScore returns the job's score in the deadline index, read through
// Overdue with a cutoff past every deadline.
func deadlineScore(t *testing.T, s *store.Store, jobID string) (float64, bool) {
	t.Helper()
	over, err := s.Overdue(context.Background(), time.Now().Add(100*24*time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range over {
		if e.JobID == jobID {
			return e.Score, true
		}
	}
	return 0, false
}

// TestCreateRepeatKeepsTheDeadline: an idempotent repeat of Create (same job
// id, its own later deadline) must not move the deadline backstop of the
// stored job, nor bring back the entry of a job that has finished.
func TestCreateRepeatKeepsTheDeadline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// before runs between the first Create and the repeat.
		before func(t *testing.T, s *store.Store, r *testutil.Redis, j store.Job)
		// skipFirst leaves the job uncreated: the "repeat" is then a create.
		skipFirst bool
		want      func(first, repeat store.Job) (float64, bool)
	}{
		{
			name: "an unfinished job keeps its first deadline",
			want: func(first, _ store.Job) (float64, bool) { return float64(first.Deadline.Unix()), true },
		},
		{
			name: "a finished job gets no entry back",
			before: func(t *testing.T, s *store.Store, _ *testutil.Redis, j store.Job) {
				if _, err := s.Update(context.Background(), j.ID, func(j *store.Job, now time.Time) (store.Change, error) {
					j.Finish(store.StatusCanceled, now, &store.JobError{Code: store.CodeCanceled, Message: "test"}, "")
					return store.Change{}, nil
				}); err != nil {
					t.Fatal(err)
				}
			},
			want: func(store.Job, store.Job) (float64, bool) { return 0, false },
		},
		{
			name:      "a new job replaces the entry of an attempt that died before creating it",
			skipFirst: true,
			before: func(t *testing.T, _ *store.Store, r *testutil.Redis, j store.Job) {
				// What the NX index write of the dead attempt left.
				if err := r.Client.ZAdd(context.Background(), r.Namespace+":index:deadlines",
					redis.Z{Score: float64(j.Deadline.Unix()), Member: j.ID}).Err(); err != nil {
					t.Fatal(err)
				}
			},
			want: func(_, repeat store.Job) (float64, bool) { return float64(repeat.Deadline.Unix()), true },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, r := newStore(t, nil)
			ctx := context.Background()
			first := newJob(time.Now())
			if !tt.skipFirst {
				if _, created, _, err := s.Create(ctx, first, "fp", nil); err != nil || !created {
					t.Fatalf("first Create: created=%v, %v", created, err)
				}
			}
			if tt.before != nil {
				tt.before(t, s, r, first)
			}
			repeat := first
			repeat.Deadline = first.Deadline.Add(2 * time.Hour)
			if _, _, _, err := s.Create(ctx, repeat, "fp", nil); err != nil {
				t.Fatalf("repeat Create: %v", err)
			}
			score, ok := deadlineScore(t, s, first.ID)
			wantScore, wantOK := tt.want(first, repeat)
			if ok != wantOK || score != wantScore {
				t.Fatalf("deadline index entry = %v (present %v), want %v (present %v); first deadline %d, repeat's %d",
					score, ok, wantScore, wantOK, first.Deadline.Unix(), repeat.Deadline.Unix())
			}
		})
	}
}

// TestOutboxReindexInOneMillisecondSurvivesADrop: a re-index that falls in
// the same millisecond as the score a flush read (or comes from a clock
// behind it) still changes the score, so the flush's guarded drop keeps it.
func TestOutboxReindexInOneMillisecondSurvivesADrop(t *testing.T) {
	t.Parallel()
	frozen := time.Now()
	s, _ := newStore(t, func() time.Time { return frozen })
	ctx := context.Background()
	job := newJob(frozen)
	if _, _, _, err := s.Create(ctx, job, "fp", []store.OutboxEntry{{ID: "a", Data: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	read, ok, err := s.OutboxIndexEntry(ctx, job.ID)
	if err != nil || !ok {
		t.Fatalf("OutboxIndexEntry = %+v, %v, %v", read, ok, err)
	}
	// A commit in the same millisecond re-indexes the job.
	if _, err := s.Update(ctx, job.ID, func(*store.Job, time.Time) (store.Change, error) {
		return store.Change{Outbox: []store.OutboxEntry{{ID: "b", Data: []byte("2")}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.DropOutboxIndex(ctx, read); err != nil {
		t.Fatal(err)
	}
	after, ok, err := s.OutboxIndexEntry(ctx, job.ID)
	if err != nil || !ok {
		t.Fatalf("the re-indexed entry was dropped by a drop at the score read before the re-index (%v)", err)
	}
	if after.Score <= read.Score {
		t.Errorf("re-index score %v, want above %v", after.Score, read.Score)
	}
}

// TestAckOutboxLeft counts what an acknowledgement leaves.
func TestAckOutboxLeft(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", []store.OutboxEntry{{ID: "a", Data: []byte("1")}, {ID: "b", Data: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		ack  []string
		left int64
	}{{[]string{"a"}, 1}, {[]string{"a"}, 1}, {nil, 1}, {[]string{"b", "c"}, 0}} {
		left, err := s.AckOutboxLeft(ctx, job.ID, step.ack...)
		if err != nil || left != step.left {
			t.Fatalf("AckOutboxLeft(%v) = %d, %v; want %d", step.ack, left, err, step.left)
		}
	}
}

// TestOutboxOfAnEarlierVersion: entries an earlier version left in the
// job's outbox hash (before outbox entries became fields of the job's
// record) are read beside this version's, once per id, counted, and
// removed by the acknowledgement; the record's own fields are no entries.
func TestOutboxOfAnEarlierVersion(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", []store.OutboxEntry{{ID: "new", Data: []byte("n")}, {ID: "both", Data: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	legacyKey := s.KeysOf(job.ID)[2]
	if err := r.Client.HSet(ctx, legacyKey, "old", "o", "both", "b-old").Err(); err != nil {
		t.Fatal(err)
	}
	entries, err := s.Outbox(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.ID] = string(e.Data)
	}
	if want := map[string]string{"new": "n", "both": "b", "old": "o"}; len(entries) != len(want) || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Outbox = %v (%d entries), want %v: the record's entry wins over the old hash's", got, len(entries), want)
	}
	for _, step := range []struct {
		ack  []string
		left int64
	}{{nil, 4}, {[]string{"old"}, 3}, {[]string{"both"}, 1}, {[]string{"new"}, 0}} {
		left, err := s.AckOutboxLeft(ctx, job.ID, step.ack...)
		if err != nil || left != step.left {
			t.Fatalf("AckOutboxLeft(%v) = %d, %v; want %d", step.ack, left, err, step.left)
		}
	}
	if n := r.Client.Exists(ctx, legacyKey).Val(); n != 0 {
		t.Errorf("the old outbox hash is still there after every entry was acknowledged")
	}
	if _, err := s.Get(ctx, job.ID); err != nil {
		t.Errorf("the job after its outbox was acknowledged: %v", err)
	}
}

// TestRedoneCommitWritesNoOutboxIndex: a commit whose writer re-runs and
// flushes after a crash (Change.Redone) writes no outbox index entry, two
// calls fewer than any other commit, which indexes before and
// after its entries and leaves the job findable by the sweeper at the
// score it reports. Both leave the entry in the job's outbox.
func TestRedoneCommitWritesNoOutboxIndex(t *testing.T) {
	tests := []struct {
		name     string
		redone   bool
		commands int64 // more than the redone commit's
		indexed  bool
	}{
		{"redone", true, 0, false},
		{"not redone", false, 2, true}, // the index script before and after
	}
	var base int64 = -1
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testutil.NewRedis(t)
			counter := &testutil.CommandCounter{}
			r.Client.AddHook(counter)
			s := store.New(r.Client, store.Options{Namespace: r.Namespace, Retention: time.Hour})
			ctx := context.Background()
			job := newJob(time.Now())
			if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
				t.Fatal(err)
			}
			// Load the scripts, so that both cases count their calls alike
			// (a first EVALSHA answers NOSCRIPT and loads its script).
			warm := newJob(time.Now())
			if _, _, _, err := s.Create(ctx, warm, "fp", []store.OutboxEntry{{ID: "first", Data: []byte("1")}}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.UpdateCommitted(ctx, warm.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				j.SetStatus(store.StatusRequesting, now, "")
				return store.Change{Outbox: []store.OutboxEntry{{ID: "next", Data: []byte("1")}}}, nil
			}); err != nil {
				t.Fatal(err)
			}
			before := counter.Load()
			_, c, err := s.UpdateCommitted(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				j.SetStatus(store.StatusRequesting, now, "")
				return store.Change{Redone: tt.redone, Outbox: []store.OutboxEntry{{ID: "next", Data: []byte("1")}}}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			used := counter.Load() - before
			if c.Indexed != tt.indexed || c.Redone != tt.redone {
				t.Fatalf("committed Indexed=%v Redone=%v, want %v, %v", c.Indexed, c.Redone, tt.indexed, tt.redone)
			}
			entries, err := s.Outbox(ctx, job.ID)
			if err != nil || len(entries) != 1 || entries[0].ID != "next" {
				t.Fatalf("outbox %v (%v), want the entry", entries, err)
			}
			stale, err := s.StaleOutboxes(ctx, time.Now().Add(time.Hour), 10)
			if err != nil {
				t.Fatal(err)
			}
			var found []store.IndexEntry
			for _, e := range stale {
				if e.JobID == job.ID {
					found = append(found, e)
				}
			}
			switch {
			case tt.indexed && (len(found) != 1 || found[0] != c.Index):
				t.Fatalf("outbox index %v, want exactly the reported %v", found, c.Index)
			case !tt.indexed && len(found) != 0:
				t.Fatalf("outbox index %v, want no entry for a redone commit", found)
			}
			if tt.redone {
				base = used
				return
			}
			if base < 0 {
				t.Skip("the redone case did not run")
			}
			if used-base != tt.commands {
				t.Fatalf("%d commands, the redone commit %d: want %d more", used, base, tt.commands)
			}
		})
	}
}

// TestOutboxIndexWithoutTheScript: on a Redis that lost its scripts (a
// restart, a failover), the index writes pipelined by their hash answer
// NOSCRIPT and are made the plain way: a creation leaves the job indexed
// as of its write, and a commit with messages and one without each leave it
// indexed at the score they report.
func TestOutboxIndexWithoutTheScript(t *testing.T) {
	tests := []struct {
		name     string
		messages bool // the commit also creates messages (prepareCommit's pipeline)
	}{
		{"commit without messages", false},
		{"commit with messages", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := testutil.NewPrivateRedis(t)
			s := store.New(r.Client, store.Options{Namespace: r.Namespace, Retention: time.Hour})
			ctx := context.Background()
			indexed := func(what string, want store.IndexEntry) {
				t.Helper()
				got, ok, err := s.OutboxIndexEntry(ctx, want.JobID)
				if err != nil || !ok || got != want {
					t.Fatalf("%s: index entry %+v (%v, %v), want %+v", what, got, ok, err, want)
				}
			}
			flush := func() {
				t.Helper()
				if err := r.Client.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			job := newJob(time.Now())
			flush()
			before := time.Now().UnixMilli()
			if _, isNew, _, err := s.Create(ctx, job, "fp", []store.OutboxEntry{{ID: "first", Data: []byte("1")}}); err != nil || !isNew {
				t.Fatalf("Create without the script: new=%v, %v", isNew, err)
			}
			after := time.Now().UnixMilli()
			if got, ok, err := s.OutboxIndexEntry(ctx, job.ID); err != nil || !ok || got.Score < float64(before) || got.Score > float64(after) {
				t.Fatalf("creation: index entry %+v (%v, %v), want one scored in [%d, %d]", got, ok, err, before, after)
			}

			flush()
			_, c, err := s.UpdateCommitted(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				j.SetStatus(store.StatusGenerating, now, "")
				change := store.Change{Outbox: []store.OutboxEntry{{ID: "next", Data: []byte("1")}}}
				if tt.messages {
					change.Messages = []store.Message{{ID: "evt-1.ep_1", EventID: "evt-1", Destination: "ep_1", Status: store.MessagePending, CreatedAt: now}}
				}
				return change, nil
			})
			if err != nil || !c.Indexed {
				t.Fatalf("commit without the script: %+v, %v", c, err)
			}
			indexed("commit", c.Index)
		})
	}
}
