package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

// TestUpdateFromASeenRecord: an update that starts from a record read
// earlier (GetSeen, or the record an earlier UpdateFrom left) never rests
// on it once the job has changed: the compare-and-set refuses the stale
// commit and fn runs again on a fresh read, and an ErrNoChange that fn
// concludes from the stale record is checked on a fresh one.
func TestUpdateFromASeenRecord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fn   func(j *store.Job, now time.Time) (store.Change, error)
		// meanwhile is another writer's change after the record was seen.
		meanwhile bool
		wantPolls int
	}{
		{
			name:      "current record: committed from it",
			fn:        func(j *store.Job, now time.Time) (store.Change, error) { j.Polls++; return store.Change{}, nil },
			wantPolls: 1,
		},
		{
			name:      "stale record: the other writer's change is kept",
			fn:        func(j *store.Job, now time.Time) (store.Change, error) { j.Polls++; return store.Change{}, nil },
			meanwhile: true,
			wantPolls: 6,
		},
		{
			name: "stale record says no change, the job says otherwise",
			fn: func(j *store.Job, now time.Time) (store.Change, error) {
				if j.Polls == 0 {
					return store.Change{}, store.ErrNoChange
				}
				j.Polls++
				return store.Change{}, nil
			},
			meanwhile: true,
			wantPolls: 6,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, _ := newStore(t, nil)
			job, seen := seenJob(t, s, tt.meanwhile)
			got, next, _, err := s.UpdateFrom(ctx, job.ID, seen, tt.fn)
			if err != nil || got.Polls != tt.wantPolls {
				t.Fatalf("UpdateFrom = polls %d, %v; want %d", got.Polls, err, tt.wantPolls)
			}
			if stored, err := s.Get(ctx, job.ID); err != nil || stored.Polls != tt.wantPolls {
				t.Fatalf("stored job has polls %d (%v), want %d", stored.Polls, err, tt.wantPolls)
			}
			// The record UpdateFrom left is current: the next update
			// commits from it.
			if got, _, _, err := s.UpdateFrom(ctx, job.ID, next, func(j *store.Job, now time.Time) (store.Change, error) {
				j.Polls++
				return store.Change{}, nil
			}); err != nil || got.Polls != tt.wantPolls+1 {
				t.Fatalf("UpdateFrom the record left = polls %d, %v; want %d", got.Polls, err, tt.wantPolls+1)
			}
		})
	}
}

// seenJob creates a job and returns it with its record as read then; with
// meanwhile, another writer changes the job after that read (polls 5), so
// that the record is stale.
func seenJob(t *testing.T, s *store.Store, meanwhile bool) (store.Job, store.Seen) {
	t.Helper()
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	_, seen, err := s.GetSeen(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if meanwhile {
		if _, err := s.Update(ctx, job.ID, func(j *store.Job, _ time.Time) (store.Change, error) {
			j.Polls = 5
			return store.Change{}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return job, seen
}
