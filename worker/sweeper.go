package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
)

// Sweeper bounds.
const (
	// sweepGrace: an outbox entry or a deadline this much in the past is
	// one that the process that wrote it should have handled already.
	sweepGrace = 30 * time.Second
	sweepBatch = 100
)

func (w *Worker) sweepLoop(ctx context.Context) {
	for {
		// Jittered so that many workers do not sweep in step.
		wait := time.Duration(float64(w.opts.SweepInterval) * (0.75 + 0.5*rand.Float64()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("sweep failed", zap.Error(err))
		}
	}
}

// Sweep does one round of the janitor's work; every worker runs it on a
// timer, and every step is safe to repeat or to run in several processes:
//   - outboxes left by a process that died between a commit and its
//     enqueue are enqueued;
//   - jobs still unfinished well past their deadline (their task chain
//     died: archived, deleted from the dashboard, lost with a Redis
//     failover) are timed out, so that no job waits forever;
//   - listing index entries of jobs that have expired are trimmed.
func (w *Worker) Sweep(ctx context.Context) error {
	now := w.opts.Now()
	var errs []error
	stale, err := w.store.StaleOutboxes(ctx, now.Add(-sweepGrace), sweepBatch)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range stale {
		if err := w.enqueuer.Flush(ctx, e.JobID); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := w.store.DropOutboxIndex(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	overdue, err := w.store.Overdue(ctx, now.Add(-sweepGrace), sweepBatch)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range overdue {
		job, err := w.store.Get(ctx, e.JobID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			errs = append(errs, err)
			continue
		case !job.Status.Final():
			log := w.log.With(zap.String("job_id", job.ID), zap.String("session_code", job.SessionCode))
			log.Warn("job past its deadline with no live task; timing it out")
			if err := w.handlers.finish(ctx, log, job.ID, store.StatusTimedOut, store.CodeDeadlineExceeded,
				"CSM did not report a final status before the job's deadline"); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := w.store.DropDeadlineIndex(ctx, e.JobID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := w.store.TrimListing(ctx, now.Add(-w.opts.JobDeadline-w.store.Retention())); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
