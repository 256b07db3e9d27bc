package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

// TestListingAfterALostCommit: a change of status moves the job's listing
// in the commit's own round trip, before the compare-and-set's outcome is
// known. When that commit loses (another writer changed the job since the
// record was seen), the job stays listed under the status it really has,
// whatever the update's next attempt does.
func TestListingAfterALostCommit(t *testing.T) {
	t.Parallel()
	errRefused := errors.New("refused on the fresh read")
	toRequesting := func(j *store.Job, now time.Time) {
		j.Status = store.StatusRequesting
		j.History = append(j.History, store.Transition{At: now, Status: store.StatusRequesting})
	}
	tests := []struct {
		name string
		// onFresh is what the update does on the fresh read, after its
		// first attempt (from the stale record) moved the job to
		// requesting and lost.
		onFresh    func(j *store.Job, now time.Time) (store.Change, error)
		meanwhile  bool
		wantStatus store.Status
		wantErr    error
	}{
		{
			name:       "no other writer: committed and moved",
			wantStatus: store.StatusRequesting,
		},
		{
			name:       "lost, then no change",
			onFresh:    func(*store.Job, time.Time) (store.Change, error) { return store.Change{}, store.ErrNoChange },
			meanwhile:  true,
			wantStatus: store.StatusQueued,
		},
		{
			name:       "lost, then a commit that keeps the status",
			onFresh:    func(j *store.Job, _ time.Time) (store.Change, error) { j.Polls++; return store.Change{}, nil },
			meanwhile:  true,
			wantStatus: store.StatusQueued,
		},
		{
			name: "lost, then moved again",
			onFresh: func(j *store.Job, now time.Time) (store.Change, error) {
				toRequesting(j, now)
				return store.Change{}, nil
			},
			meanwhile:  true,
			wantStatus: store.StatusRequesting,
		},
		{
			name:       "lost, then refused",
			onFresh:    func(*store.Job, time.Time) (store.Change, error) { return store.Change{}, errRefused },
			meanwhile:  true,
			wantStatus: store.StatusQueued,
			wantErr:    errRefused,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, _ := newStore(t, nil)
			job, seen := seenJob(t, s, tt.meanwhile)
			_, err := updateFromTwice(ctx, s, job.ID, seen, func(j *store.Job, now time.Time) (store.Change, error) {
				toRequesting(j, now)
				return store.Change{}, nil
			}, tt.onFresh)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("UpdateFrom = %v, want %v", err, tt.wantErr)
			}
			if stored, err := s.Get(ctx, job.ID); err != nil || stored.Status != tt.wantStatus {
				t.Fatalf("stored job is %s (%v), want %s", stored.Status, err, tt.wantStatus)
			}
			for _, st := range []store.Status{store.StatusQueued, store.StatusRequesting} {
				if got, want := listed(t, s, st, job.ID), st == tt.wantStatus; got != want {
					t.Errorf("job listed under %s: %v, want %v", st, got, want)
				}
			}
		})
	}
}

// updateFromTwice runs UpdateFrom from seen with first as the change of its
// first attempt and onFresh as that of every later one (after a lost
// compare-and-set); it returns how many attempts ran.
func updateFromTwice(ctx context.Context, s *store.Store, id string, seen store.Seen, first, onFresh func(j *store.Job, now time.Time) (store.Change, error)) (int, error) {
	attempts := 0
	_, _, _, err := s.UpdateFrom(ctx, id, seen, func(j *store.Job, now time.Time) (store.Change, error) {
		attempts++
		if attempts == 1 {
			return first(j, now)
		}
		return onFresh(j, now)
	})
	return attempts, err
}

// listed reports whether the listing of status shows job id.
func listed(t *testing.T, s *store.Store, status store.Status, id string) bool {
	t.Helper()
	jobs, _, err := s.List(context.Background(), store.ListOptions{Status: status, Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(jobs, func(j store.Job) bool { return j.ID == id })
}

// TestFinishAfterALostCommit: the writes of a job reaching a final status
// (its deadline entry dropped, its finished count, its session entry
// dropped) go in the commit's own round trip, before the compare-and-set's
// outcome is known. When that commit loses, they are taken back, so the
// job keeps its deadline entry (the sweeper's backstop), its session entry
// and the count, whatever the update's next attempt does. Judged from the
// deadline index, the counters and the session index in Redis.
func TestFinishAfterALostCommit(t *testing.T) {
	t.Parallel()
	errRefused := errors.New("refused on the fresh read")
	finish := func(j *store.Job, now time.Time) (store.Change, error) {
		j.SetStatus(store.StatusDone, now, "")
		return store.Change{}, nil
	}
	tests := []struct {
		name         string
		onFresh      func(j *store.Job, now time.Time) (store.Change, error)
		meanwhile    bool
		wantFinished bool
		wantErr      error
	}{
		{name: "no other writer: finished", wantFinished: true},
		{
			name:      "lost, then no change",
			onFresh:   func(*store.Job, time.Time) (store.Change, error) { return store.Change{}, store.ErrNoChange },
			meanwhile: true,
		},
		{
			name:      "lost, then a commit that keeps the status",
			onFresh:   func(j *store.Job, _ time.Time) (store.Change, error) { j.Polls++; return store.Change{}, nil },
			meanwhile: true,
		},
		{name: "lost, then finished", onFresh: finish, meanwhile: true, wantFinished: true},
		{
			name:      "lost, then refused",
			onFresh:   func(*store.Job, time.Time) (store.Change, error) { return store.Change{}, errRefused },
			meanwhile: true,
			wantErr:   errRefused,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, r := newStore(t, nil)
			job, seen := seenJob(t, s, tt.meanwhile)
			attempts, err := updateFromTwice(ctx, s, job.ID, seen, finish, tt.onFresh)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("UpdateFrom = %v, want %v", err, tt.wantErr)
			}
			if tt.meanwhile && attempts < 2 {
				t.Fatalf("the update ran %d times: its first commit did not lose", attempts)
			}
			stored, err := s.Get(ctx, job.ID)
			if err != nil || stored.Status.Final() != tt.wantFinished {
				t.Fatalf("stored job is %s (%v), want final %v", stored.Status, err, tt.wantFinished)
			}
			_, err = r.Client.ZScore(ctx, r.Namespace+":index:deadlines", job.ID).Result()
			if hasDeadline := err == nil; hasDeadline == tt.wantFinished {
				t.Errorf("deadline entry there: %v, want %v", hasDeadline, !tt.wantFinished)
			}
			stats, err := s.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := stats.Finished[store.StatusDone], map[bool]int64{true: 1}[tt.wantFinished]; got != want {
				t.Errorf("finished count %d, want %d", got, want)
			}
			ids, err := s.SessionJobs(ctx, job.SessionCode)
			if err != nil {
				t.Fatal(err)
			}
			if indexed := slices.Contains(ids, job.ID); indexed == tt.wantFinished {
				t.Errorf("session entry there: %v, want %v", indexed, !tt.wantFinished)
			}
		})
	}
}
