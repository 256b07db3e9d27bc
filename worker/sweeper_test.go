package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestSweepDrainsMoreThanOneBatch: one sweep goes on while its batches come
// back full, so a backlog beyond one batch (100) is cleared at once and the
// last orphan does not wait behind the others for sweeps to come.
func TestSweepDrainsMoreThanOneBatch(t *testing.T) {
	t.Parallel()
	const n = 150
	tests := []struct {
		name string
		// orphan stores job as a dead process left it.
		orphan func(t *testing.T, h *harness, job store.Job)
		check  func(t *testing.T, h *harness, ids []string)
	}{
		{
			name: "outboxes a dead producer never flushed",
			orphan: func(t *testing.T, h *harness, job store.Job) {
				entry := tasks.OutboxEntry(tasks.RequestPreview{JobID: job.ID, SessionCode: job.SessionCode}, time.Time{})
				if _, _, _, err := h.store.Create(context.Background(), job, "fp", []store.OutboxEntry{entry}); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, h *harness, ids []string) {
				ctx := context.Background()
				pending, err := h.inspector.ListPendingTasks(h.queues.Previews, asynq.PageSize(2*n))
				if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
					t.Fatal(err)
				}
				if len(pending) != n {
					t.Errorf("%d request tasks enqueued by one sweep, want %d", len(pending), n)
				}
				stale, err := h.store.StaleOutboxes(ctx, time.Now().Add(24*time.Hour), 2*n)
				if err != nil || len(stale) != 0 {
					t.Errorf("outbox index after the sweep: %d entries, %v; want none", len(stale), err)
				}
			},
		},
		{
			name: "jobs whose creator died before enqueueing",
			orphan: func(t *testing.T, h *harness, job store.Job) {
				if _, _, _, err := h.store.Create(context.Background(), job, "fp", nil); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, h *harness, ids []string) {
				pending, err := h.inspector.ListPendingTasks(h.queues.Previews, asynq.PageSize(2*n))
				if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
					t.Fatal(err)
				}
				got := make(map[string]bool, len(pending))
				for _, task := range pending {
					got[task.ID] = true
				}
				for _, id := range ids {
					if !got["request:"+id] {
						t.Errorf("job %s: no request task after the sweep", id)
					}
				}
				if len(pending) != n {
					t.Errorf("%d request tasks enqueued by one sweep, want %d", len(pending), n)
				}
			},
		},
		{
			name: "jobs past their deadline with no task",
			orphan: func(t *testing.T, h *harness, job store.Job) {
				job.Deadline = job.CreatedAt.Add(-time.Minute)
				if _, _, _, err := h.store.Create(context.Background(), job, "fp", nil); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, h *harness, ids []string) {
				timedOut := 0
				for _, id := range ids {
					if h.job(id).Status == store.StatusTimedOut {
						timedOut++
					}
				}
				if timedOut != n {
					t.Errorf("%d jobs timed out by one sweep, want %d", timedOut, n)
				}
				over, err := h.store.Overdue(context.Background(), time.Now().Add(24*time.Hour), 2*n)
				if err != nil || len(over) != 0 {
					t.Errorf("deadline index after the sweep: %d entries, %v; want none", len(over), err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			now := time.Now()
			ids := make([]string, 0, n)
			for range n {
				job := store.Job{ID: "5a1d7c3e-0f2b-4c8a-9e61-" + testutil.RandomHex(6), Status: store.StatusQueued, SessionCode: "SESSION_SWEEP",
					CreatedAt: now, UpdatedAt: now, Deadline: now.Add(3 * time.Hour), History: []store.Transition{{At: now, Status: store.StatusQueued}}}
				tt.orphan(t, h, job)
				ids = append(ids, job.ID)
			}
			// Sweep a minute later: past the sweeper's grace.
			h.opts.Now = func() time.Time { return time.Now().Add(time.Minute) }
			if err := h.newWorker().Sweep(context.Background()); err != nil {
				t.Fatal(err)
			}
			tt.check(t, h, ids)
		})
	}
}
