package worker

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
)

// Sweeper bounds.
const (
	// sweepGrace: an outbox entry or a deadline this much in the past is
	// one that the process that wrote it should have handled already. For
	// the outbox it is also what makes the sweeper's drop of an index entry
	// safe: a commit re-indexes its job before writing (a newer score the
	// drop leaves alone), so a drop at a score this old can only race a
	// commit stalled that long between its two round trips.
	sweepGrace = 30 * time.Second
	sweepBatch = 100
	// A sweep goes on while batches come back full, so that a backlog of
	// crash orphans (or of overdue jobs after an outage) drains in one
	// sweep, within these bounds so that one sweep cannot run forever.
	sweepMaxBatches = 50
	sweepBudget     = 10 * time.Second
)

func (w *Worker) sweepLoop(ctx context.Context) {
	for sleepSpread(ctx, w.opts.SweepInterval) {
		if err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("sweep failed", zap.Error(err))
		}
	}
}

// Sweep does one round of the janitor's work; every worker runs it on a
// timer, and every step is safe to repeat or to run in several processes:
//   - outboxes left by a process that died between a commit and its
//     enqueue are enqueued;
//   - jobs created since the last sweep and still queued get their request
//     task (enqueued again; a no-op while asynq holds it): their creator
//     may have died between the creation and its enqueue;
//   - jobs still unfinished well past their deadline (their task chain
//     died: archived, deleted from the dashboard, lost with a Redis
//     failover) are timed out, so that no job waits forever;
//   - listing index entries of jobs that have expired are trimmed.
func (w *Worker) Sweep(ctx context.Context) error {
	start := w.opts.Now()
	cutoff := start.Add(-sweepGrace)
	var errs []error
	errs = append(errs, w.sweepIndex(ctx, start, func(ctx context.Context) ([]store.IndexEntry, error) {
		return w.store.StaleOutboxes(ctx, cutoff, sweepBatch)
	}, w.enqueuer.FlushIndexed)...)
	errs = append(errs, w.sweepCreated(ctx, start, cutoff)...)
	errs = append(errs, w.sweepIndex(ctx, start, func(ctx context.Context) ([]store.IndexEntry, error) {
		return w.store.Overdue(ctx, cutoff, sweepBatch)
	}, w.timeOut)...)
	if err := w.store.TrimListing(ctx, start.Add(-w.opts.JobDeadline-w.store.Retention())); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sweepIndex handles batches of an index's entries: at least one, and more
// while the last came back full, every entry of it was handled (each
// handled entry leaves the range: dropped, or re-scored to now), and the
// sweep is within its bounds. An error ends the round: the next sweep
// retries, and one failing entry cannot stall a sweep on itself.
func (w *Worker) sweepIndex(ctx context.Context, start time.Time,
	list func(context.Context) ([]store.IndexEntry, error),
	handle func(context.Context, store.IndexEntry) error,
) []error {
	for batch := 1; ; batch++ {
		entries, err := list(ctx)
		if err != nil {
			return []error{err}
		}
		var errs []error
		for _, e := range entries {
			if err := handle(ctx, e); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 || w.sweepDone(ctx, start, batch, len(entries)) {
			return errs
		}
	}
}

// sweepDone reports whether a pass of the sweep ends after its batch-th
// batch, which held n entries: the index has no more (the batch was not
// full), or the sweep reached its bounds.
func (w *Worker) sweepDone(ctx context.Context, start time.Time, batch, n int) bool {
	return n < sweepBatch || batch >= sweepMaxBatches || w.opts.Now().Sub(start) >= sweepBudget || ctx.Err() != nil
}

// sweepCreated reads the creation listing forward from the cursor the
// last sweep saved, up to cutoff, and enqueues the request task of every
// job still queued (see store.CreatedAfter), in batches within the sweep's
// bounds, saving the cursor after each. With no cursor saved it starts a
// job deadline back: an older job is the overdue pass's to time out.
func (w *Worker) sweepCreated(ctx context.Context, start, cutoff time.Time) []error {
	cursor, ok, err := w.store.CreatedSweepCursor(ctx)
	if err != nil {
		return []error{err}
	}
	if !ok {
		cursor = store.CreatedCursor{MS: start.Add(-w.opts.JobDeadline).UnixMilli()}
	}
	for batch := 1; ; batch++ {
		queued, next, n, err := w.store.CreatedAfter(ctx, cursor, cutoff, sweepBatch)
		if err != nil {
			return []error{err}
		}
		var errs []error
		for _, id := range queued {
			if err := w.enqueueRequest(ctx, id); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return errs // the cursor stays: the next sweep retries this batch
		}
		if next != cursor {
			// The key outlives a sweep interval by far; without one a
			// sweep starts a job deadline back.
			if err := w.store.SaveCreatedSweepCursor(ctx, next, w.opts.JobDeadline); err != nil {
				return []error{err}
			}
			cursor = next
		}
		if w.sweepDone(ctx, start, batch, n) {
			return nil
		}
	}
}

// enqueueRequest enqueues the request task of a job the creation listing
// found queued, unless it moved on or expired since.
func (w *Worker) enqueueRequest(ctx context.Context, jobID string) error {
	job, err := w.store.Get(ctx, jobID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	case job.Status != store.StatusQueued, !w.opts.Now().Before(job.Deadline):
		return nil // moved on, or the overdue pass's to time out
	}
	if err := w.enqueuer.EnqueueRequest(ctx, job); err != nil {
		return err
	}
	w.log.Debug("sweeper enqueued a queued job's request task (a no-op if asynq held it)", zap.String("job_id", job.ID))
	return nil
}

// timeOut handles one overdue entry: a job not final is timed out, and the
// entry is dropped.
func (w *Worker) timeOut(ctx context.Context, e store.IndexEntry) error {
	job, err := w.store.Get(ctx, e.JobID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	case !job.Status.Final():
		log := w.log.With(zap.String("job_id", job.ID), zap.String("session_code", job.SessionCode))
		log.Warn("job past its deadline with no live task; timing it out")
		if err := w.handlers.finishJob(ctx, log, job.ID, store.StatusTimedOut, store.CodeDeadlineExceeded,
			"CSM did not report a final status before the job's deadline", false); err != nil {
			return err
		}
	}
	return w.store.DropDeadlineIndex(ctx, e.JobID)
}
