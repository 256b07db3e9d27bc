package worker_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestSpendingGuardHoldsRequestsBack: with a budget of 2 previews an hour,
// a producer's burst of 4 jobs sends 2 POSTs; the others wait (not fail),
// with budget_exhausted in their history, until the next hour.
func TestSpendingGuardHoldsRequestsBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var clock atomic.Int64
	clock.Store(time.Now().Truncate(time.Hour).Add(10 * time.Minute).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	h.opts.Budget = store.NewBudget(h.redis.Client, h.redis.Namespace, 2, 0, now)
	w := h.newWorker()
	ctx := context.Background()

	var jobs []store.Job
	for range 4 {
		code := "SESSION_BUDGET_" + testutil.RandomHex(4)
		jobs = append(jobs, h.request(code, csmsim.SessionConfig{GenerationTime: time.Second}))
	}
	run := func(j store.Job) error {
		return w.Handlers().RequestPreview(ctx, mustTask(t, tasks.RequestPreview{JobID: j.ID, SessionCode: j.SessionCode}))
	}
	var waited []store.Job
	for _, j := range jobs {
		if err := run(j); err != nil {
			if !strings.Contains(err.Error(), "budget_exhausted") {
				t.Fatalf("RequestPreview: %v", err)
			}
			waited = append(waited, j)
		}
	}
	if got := h.sim.TotalAcceptedPreviews(); got != 2 {
		t.Fatalf("accepted POSTs = %d with a budget of 2 an hour, want 2", got)
	}
	if len(waited) != 2 {
		t.Fatalf("%d requests waited, want 2", len(waited))
	}
	for _, j := range waited {
		got := h.job(j.ID)
		if got.Status.Final() || got.Request.IntentAt != nil {
			t.Fatalf("a waiting job: status %s intent %v; want it waiting, no intent", got.Status, got.Request.IntentAt)
		}
		last := got.History[len(got.History)-1].Note
		if !strings.HasPrefix(last, "budget_exhausted") {
			t.Fatalf("last history note %q, want budget_exhausted", last)
		}
		if err := run(j); err == nil { // asking again within the hour: noted once
			t.Fatal("a second ask within the hour was let through")
		}
		if n := len(h.job(j.ID).History); n != len(got.History) {
			t.Fatalf("history grew from %d to %d entries on a repeated wait", len(got.History), n)
		}
	}
	clock.Add(int64(time.Hour)) // the next hour
	for _, j := range waited {
		if err := run(j); err != nil {
			t.Fatalf("RequestPreview in the next hour: %v", err)
		}
	}
	if got := h.sim.TotalAcceptedPreviews(); got != 4 {
		t.Fatalf("accepted POSTs = %d after the hour turned, want 4", got)
	}
}

// TestRefusedPostGivesItsBudgetBack: a POST that CSM refused (429) billed
// nothing, so it does not count against the budget: with one preview an
// hour, another job can still be requested.
func TestRefusedPostGivesItsBudgetBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	now := time.Now().Truncate(time.Hour).Add(10 * time.Minute)
	h.opts.Budget = store.NewBudget(h.redis.Client, h.redis.Namespace, 1, 0, func() time.Time { return now })
	w := h.newWorker()
	ctx := context.Background()
	refused := h.request("SESSION_REFUSED_"+testutil.RandomHex(4), withFaults(csmsim.SessionConfig{GenerationTime: time.Second},
		csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault429}))
	if err := w.Handlers().RequestPreview(ctx, mustTask(t, tasks.RequestPreview{JobID: refused.ID, SessionCode: refused.SessionCode})); err == nil {
		t.Fatal("a POST refused with 429 returned no error")
	}
	other := h.request("SESSION_AFTER_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
	if err := w.Handlers().RequestPreview(ctx, mustTask(t, tasks.RequestPreview{JobID: other.ID, SessionCode: other.SessionCode})); err != nil {
		t.Fatalf("the next job waited for a budget the refused POST never spent: %v", err)
	}
	if got := h.sim.AcceptedPreviews(other.SessionCode); got != 1 {
		t.Fatalf("accepted POSTs of the next job = %d, want 1", got)
	}
}
