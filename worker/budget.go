package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
)

// errBudgetExhausted marks a request waiting for the spending guard: a
// wait, not a failure, so it spends no retry.
var errBudgetExhausted = errors.New("spending budget exhausted")

// budgetWait is the error a request waiting for the budget returns; asynq
// runs it again after RetryDelay.
type budgetWait struct {
	window string
	wait   time.Duration
}

func (e budgetWait) Error() string {
	return fmt.Sprintf("budget_exhausted: the %sly preview budget is spent; waiting %s", e.window, e.wait.Round(time.Second))
}

func (e budgetWait) Is(target error) bool      { return target == errBudgetExhausted }
func (e budgetWait) RetryDelay() time.Duration { return e.wait }

// budgetNote starts the history note of a job waiting for the budget.
const budgetNote = "budget_exhausted"

// takeBudget counts the job's preview against the spending guard, or
// returns a budgetWait until the window allows (never past the deadline,
// where the next run times the job out). The first wait is noted in the
// job's history.
func (h *Handlers) takeBudget(ctx context.Context, log *zap.Logger, job store.Job) error {
	if h.budget == nil {
		return nil
	}
	wait, window, err := h.budget.Take(ctx, job.ID)
	if err != nil || wait <= 0 {
		return err
	}
	h.metrics.BudgetExhausted(window)
	if untilDeadline := job.Deadline.Sub(h.now()) + time.Second; wait > untilDeadline {
		wait = max(untilDeadline, time.Second)
	}
	bw := budgetWait{window: window, wait: wait}
	log.Warn("spending budget exhausted; the request waits", zap.String("window", window), zap.Duration("wait", wait))
	if _, err := h.store.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		if n := len(j.History); n > 0 && strings.HasPrefix(j.History[n-1].Note, budgetNote) {
			return store.Change{}, store.ErrNoChange
		}
		j.Note(now, fmt.Sprintf("%s: the %sly limit of previews is spent; the request waits until the window allows", budgetNote, window))
		return store.Change{}, nil
	}); err != nil {
		log.Warn("could not note the budget wait in the job's history", zap.Error(err))
	}
	return bw
}

// refundBudget gives back the job's count: its POST was refused or never
// sent. A lost refund only makes the guard stricter.
func (h *Handlers) refundBudget(ctx context.Context, log *zap.Logger, jobID string) {
	if h.budget == nil {
		return
	}
	if err := h.budget.Refund(context.WithoutCancel(ctx), jobID); err != nil {
		log.Warn("could not refund the spending budget", zap.Error(err))
	}
}
