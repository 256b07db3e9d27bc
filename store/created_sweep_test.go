package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

// TestCreatedAfterReadsEveryQueuedJobOnce: read in batches smaller than
// the jobs created in one millisecond, the creation listing yields every
// job still queued exactly once, none that moved on, none created after
// the bound; a saved cursor reads back as saved.
func TestCreatedAfterReadsEveryQueuedJobOnce(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var want []string
	var moved, late string
	for i, at := range []time.Duration{0, 0, 0, 0, 0, time.Millisecond, time.Millisecond, 2 * time.Millisecond, time.Second} {
		j := newJob(base.Add(at))
		if _, created, _, err := s.Create(ctx, j, "fp", nil); err != nil || !created {
			t.Fatalf("Create %d: created=%v, %v", i, created, err)
		}
		switch i {
		case 3:
			moved = j.ID
			if _, err := s.Update(ctx, j.ID, func(job *store.Job, _ time.Time) (store.Change, error) {
				job.Status = store.StatusRequesting
				return store.Change{}, nil
			}); err != nil {
				t.Fatal(err)
			}
		case 8:
			late = j.ID
		default:
			want = append(want, j.ID)
		}
	}
	upTo := base.Add(500 * time.Millisecond)
	cursor := store.CreatedCursor{MS: base.Add(-time.Hour).UnixMilli()}
	var got []string
	for range 10 {
		queued, next, n, err := s.CreatedAfter(ctx, cursor, upTo, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, queued...)
		cursor = next
		if n < 2 {
			break
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("queued jobs read = %v, want %v (moved on: %s, created after the bound: %s)", got, want, moved, late)
	}
	if cursor.MS != base.Add(2*time.Millisecond).UnixMilli() || cursor.Skip != 1 {
		t.Errorf("cursor after the reads = %+v, want the last entry read (ms %d, skip 1)", cursor, base.Add(2*time.Millisecond).UnixMilli())
	}

	if _, ok, err := s.CreatedSweepCursor(ctx); ok || err != nil {
		t.Fatalf("cursor before any save: ok=%v, %v", ok, err)
	}
	if err := s.SaveCreatedSweepCursor(ctx, cursor, time.Minute); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := s.CreatedSweepCursor(ctx); !ok || err != nil || c != cursor {
		t.Fatalf("saved cursor reads back %+v (ok=%v, %v), want %+v", c, ok, err, cursor)
	}
}
