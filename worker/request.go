package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// RequestPreview sends the preview POST of a job, at most once ever.
//
// The guarantee rests on the intent: a compare-and-set records it, under
// this run's own attempt id, before the POST, and only this run may clear
// it, when the answer proves CSM did not accept the POST (429, a rate-limit
// 400, a refused connection...); then a later run may POST again. Every
// other outcome keeps it: an accepted POST records its trial key, and an
// unknown one (a 5xx, a timeout or reset after the request was written, a
// crash between POST and write) is reconciled by polling, never re-sent.
// A run that finds an intent it did not record, a trial key or a recorded
// outcome cannot know what became of that POST, so it reconciles too.
//
// The window between intent and POST holds no wait we control: the
// spending budget and the shared rate limit are taken before the intent,
// and with Options.MinReplicas the intent is acknowledged by the replicas
// (or withdrawn) before the POST, so a failover cannot forget it. The POST
// and the writes recording its outcome run detached from shutdown (bounded
// by the CSM client's timeout and the write budget): a drain does not turn
// an answered POST into an unknown outcome.
func (h *Handlers) RequestPreview(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode[tasks.RequestPreview](t)
	if err != nil {
		return err
	}
	log := h.taskLogger(ctx, t, p.JobID, p.SessionCode)
	// The record as read is where the intent's commit starts from: no
	// second read of the job (the compare-and-set catches a change since).
	job, seen, err := h.firstRead(ctx, p.JobID)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("job not found (expired or deleted); dropping task")
		return nil
	}
	if err != nil {
		return err
	}
	if job.Status != store.StatusQueued && job.Status != store.StatusRequesting {
		// A redelivery: finish what a crashed predecessor may have left.
		return h.tasks.Flush(ctx, job.ID)
	}
	if !h.now().Before(job.Deadline) {
		return h.finish(ctx, log, job.ID, store.StatusTimedOut, store.CodeDeadlineExceeded, "the preview could not be requested before the job's deadline")
	}
	if reason := postedBefore(job); reason != "" {
		return h.reconcile(ctx, log, job.ID, reason)
	}

	// Read the session first: it gives the spin URL when the caller did not
	// (turbo sessions require one), proves the session exists before we
	// pay, and records the baseline that later tells our preview from an
	// earlier generation's leftovers.
	// The read is part of the request: its rate-limit turn comes from the
	// requests' share, not the one kept for polls (csm.ForRequest).
	sess, err := h.csm.GetSession(csm.ForRequest(ctx), job.SessionCode)
	if err != nil {
		return h.requestRefused(ctx, log, job.ID, err)
	}
	spin := job.SelectedSpin
	if spin == "" {
		if spin, err = spinURL(sess, job.SelectedSpinIndex); err != nil {
			var notReady errSpinsNotReady
			if errors.As(err, &notReady) {
				log.Info("spins not ready yet; retrying", zap.String("upstream_status", sess.RawStatus()))
				return err
			}
			return h.finish(ctx, log, job.ID, store.StatusFailed, store.CodeSpinUnavailable, err.Error())
		}
	}

	// Every wait comes before the intent.
	if err := h.takeBudget(ctx, log, job); err != nil {
		return err
	}
	// The budget is given back unless a POST may have been accepted.
	mayBeBilled := false
	defer func() {
		if !mayBeBilled {
			h.refundBudget(ctx, log, p.JobID)
		}
	}()
	if err := h.csm.AwaitTurn(ctx); err != nil {
		return h.requestRefused(ctx, log, job.ID, err)
	}

	attempt := uuid.NewString()
	job, seen, recorded, err := h.recordIntent(ctx, job.ID, seen, attempt, spin, sess)
	switch {
	case errors.Is(err, store.ErrNotReplicated):
		// Committed on the primary only: a failover now could forget it,
		// and a later run would POST again. Withdraw it and retry later.
		log.Warn("intent not acknowledged by enough replicas; not POSTing", zap.Error(err))
		if werr := h.withdrawIntent(ctx, log, job.ID, attempt, false, err); werr != nil {
			return werr
		}
		return err
	case err != nil:
		// The write may have landed anyway (every retry's reply lost):
		// withdraw it if it did, so that no later run mistakes it for a
		// POST of unknown outcome.
		if werr := h.withdrawIntent(ctx, log, p.JobID, attempt, false, err); werr != nil {
			log.Error("could not withdraw an intent whose write failed; a later attempt will reconcile", zap.Error(werr))
		}
		return err
	case !recorded && (job.Status == store.StatusQueued || job.Status == store.StatusRequesting):
		return h.reconcile(ctx, log, job.ID, "another attempt recorded a preview POST meanwhile")
	case !recorded:
		log.Info("job moved on before the POST; nothing to send", zap.String("status", string(job.Status)))
		return h.tasks.Flush(ctx, job.ID)
	}

	h.posts.Add(1)
	defer h.posts.Done()
	detached := context.WithoutCancel(ctx)
	params := csm.PreviewParams{SelectedSpinIndex: job.SelectedSpinIndex, SelectedSpin: spin, ScaledBBox: job.ScaledBBox, PivotPoint: job.PivotPoint}
	start := time.Now()
	pj, postErr := h.csm.RequestPreview(detached, job.SessionCode, params)
	h.metrics.UpstreamCall("request_preview", outcomeOf(postErr), time.Since(start))

	var ce *csm.Error
	mayBeBilled = postErr == nil || !errors.As(postErr, &ce) || ce.MaybeAccepted
	if postErr == nil {
		return h.accepted(detached, log, job.ID, seen, pj)
	}
	if mayBeBilled {
		log.Warn("preview POST outcome unknown; it will not be re-sent", zap.Error(postErr))
		return h.reconcile(detached, log, job.ID, "preview POST outcome unknown ("+postErr.Error()+")")
	}
	// The answer proves CSM did not start a preview: withdraw the intent so
	// a retry may POST again. If even that write fails, the intent stays
	// and the next attempt reconciles instead of POSTing: never billed
	// twice.
	if err := h.withdrawIntent(detached, log, job.ID, attempt, true, postErr); err != nil {
		return err
	}
	return h.requestRefused(ctx, log, job.ID, postErr)
}

// postedBefore says why a job still queued or requesting may have had a
// preview POST already, or "" when none was ever sent.
func postedBefore(j store.Job) string {
	switch {
	case j.UniqueTrialKey != "" || j.Request.Outcome == store.OutcomeAccepted:
		return "a preview POST of this job was already accepted"
	case j.Request.Outcome == store.OutcomeUnknown:
		return "an earlier preview POST of this job has an unknown outcome"
	case j.Request.IntentAt != nil:
		return "an earlier attempt's preview POST has an unknown outcome"
	}
	return ""
}

// recordIntent records that attempt is about to POST. It reports whether
// this attempt holds the intent; false with the job as read means the job
// moved on, or another attempt's POST may have been sent.
// It starts from seen, the record as the handler read it, and returns the
// record as it left it.
func (h *Handlers) recordIntent(ctx context.Context, jobID string, seen store.Seen, attempt, spin string, sess *csm.Session) (store.Job, store.Seen, bool, error) {
	var recorded bool
	job, seen, _, err := h.store.UpdateFrom(ctx, jobID, seen, func(j *store.Job, now time.Time) (store.Change, error) {
		recorded = false
		switch {
		case j.Request.IntentID == attempt:
			recorded = true // our own write, read back after a lost reply
			return store.Change{}, store.ErrNoChange
		case j.Status != store.StatusQueued && j.Status != store.StatusRequesting, postedBefore(*j) != "":
			return store.Change{}, store.ErrNoChange
		}
		j.SetStatus(store.StatusRequesting, now, "")
		j.SelectedSpin = spin
		j.Request.IntentAt = &now
		j.Request.IntentID = attempt
		j.Request.Attempts++
		j.Request.Outcome = ""
		j.Request.BaselineStatus = sess.RawStatus()
		j.Request.BaselineMeshes = sess.MeshFingerprint()
		recorded = true
		return store.Change{Durable: true}, nil
	})
	return job, seen, recorded, err
}

// withdrawIntent clears the intent attempt recorded, after an answer (or a
// failed write) that proves its POST was not sent or not accepted. It
// touches nothing another attempt recorded.
// sent says whether the POST was written at all (Attempts counts those).
func (h *Handlers) withdrawIntent(ctx context.Context, log *zap.Logger, jobID, attempt string, sent bool, cause error) error {
	return h.persist(ctx, log, "withdraw the preview intent", func(ctx context.Context) error {
		_, err := h.store.Update(ctx, jobID, func(j *store.Job, now time.Time) (store.Change, error) {
			if j.Request.IntentID != attempt || j.Request.IntentAt == nil {
				return store.Change{}, store.ErrNoChange
			}
			j.Request.IntentAt = nil
			j.Request.IntentID = ""
			j.Request.Outcome = store.OutcomeRejected
			j.Request.LastError = cause.Error()
			if !sent {
				j.Request.Attempts--
			}
			if j.Status != store.StatusGenerating {
				return store.Change{}, nil
			}
			// Another attempt found our intent while we waited for CSM and
			// started polling for a preview that, we now know, CSM never
			// started. Nothing was billed; the job cannot go back to
			// requesting, so it fails with the reason instead of waiting
			// for its deadline.
			var change store.Change
			j.Finish(store.StatusFailed, now, &store.JobError{Code: store.CodeUpstreamRejected,
				Message: "CSM refused the preview POST (" + cause.Error() + ") after another attempt had taken the job over; nothing was billed: request again"}, "")
			tasks.Emit(&change, j, store.EventFailed)
			return change, nil
		})
		if errors.Is(err, store.ErrNotReplicated) {
			return nil // only intents are durable changes
		}
		return err
	})
}

// requestRefused decides, once, what a failed call before or of a refused
// POST means for the job: retry later, or fail it.
func (h *Handlers) requestRefused(ctx context.Context, log *zap.Logger, jobID string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: asynq re-runs the task without counting a failure
	}
	var ce *csm.Error
	if !errors.As(err, &ce) {
		return err
	}
	switch {
	case ce.Kind == csm.KindNotFound:
		return h.finish(ctx, log, jobID, store.StatusFailed, store.CodeSessionNotFound, "CSM does not know this session")
	case ce.Kind == csm.KindAuth:
		h.metrics.UpstreamAuthFault()
		log.Error("CSM refused our API key: check PREVIEWD_CSM_API_KEY; the job waits until its deadline", zap.Error(err))
		return err
	case ce.Kind == csm.KindRateLimited:
		h.metrics.UpstreamRateLimited()
		log.Warn("CSM rate limit; retrying", zap.Error(err), zap.Duration("retry_after", ce.RetryAfter))
		return err
	case ce.Retryable:
		log.Warn("CSM call failed; retrying", zap.Error(err))
		return err
	}
	return h.finish(ctx, log, jobID, store.StatusFailed, store.CodeUpstreamRejected, ce.Error())
}

// accepted records an accepted preview POST and starts the poll chain. It
// is one fact, recorded once: a re-run finds the trial key recorded and
// changes nothing, and the accepted event's id is derived from the job, so
// no retry can announce it twice. It starts from seen, the record as the
// intent's commit left it.
func (h *Handlers) accepted(ctx context.Context, log *zap.Logger, jobID string, seen store.Seen, pj *csm.PreviewJob) error {
	var job store.Job
	var committed store.Committed
	err := h.persist(ctx, log, "record the accepted preview", func(ctx context.Context) error {
		var err error
		from := seen
		seen = store.Seen{} // a retry of the write reads afresh
		job, _, committed, err = h.store.UpdateFrom(ctx, jobID, from, h.addressed(ctx, log, true, func(j *store.Job, now time.Time) (store.Change, error) {
			if j.Request.Outcome == store.OutcomeAccepted && j.UniqueTrialKey == pj.UniqueTrialKey {
				return store.Change{}, store.ErrNoChange
			}
			var change store.Change
			j.UniqueTrialKey = pj.UniqueTrialKey
			j.Request.IntentAt = nil
			j.Request.IntentID = ""
			j.Request.Outcome = store.OutcomeAccepted
			j.Request.AcceptedAt = &now
			j.Request.LastError = ""
			switch j.Status {
			case store.StatusQueued, store.StatusRequesting:
				// queued: the intent was lost (a failover to a replica
				// that never saw it) but this POST was accepted: adopt it.
				j.SetUpstreamStatus(pj.Status, now)
				j.SetStatus(store.StatusGenerating, now, "preview accepted by CSM")
				h.schedulePoll(&change, j, now, j.Poll.Seq+1)
				tasks.Emit(&change, j, store.EventAccepted)
			case store.StatusGenerating:
				// Reconciled meanwhile by another attempt: polling is running.
				j.Note(now, "preview accepted by CSM")
				tasks.Emit(&change, j, store.EventAccepted)
			default:
				j.Note(now, "preview accepted by CSM after the job ended")
			}
			return change, nil
		}))
		return err
	})
	if err != nil {
		return err
	}
	log.Info("preview accepted", zap.String("unique_trial_key", job.UniqueTrialKey), zap.String("status", string(job.Status)))
	return h.flushDelivering(ctx, log, job, committed)
}

// reconcile moves a job whose POST outcome is unknown to generating without
// re-sending anything; polling then looks for evidence of the preview.
func (h *Handlers) reconcile(ctx context.Context, log *zap.Logger, jobID, reason string) error {
	var committed store.Committed
	err := h.persist(ctx, log, "start reconciling", func(ctx context.Context) error {
		var err error
		_, _, committed, err = h.store.UpdateFrom(ctx, jobID, store.Seen{}, func(j *store.Job, now time.Time) (store.Change, error) {
			if j.Status != store.StatusQueued && j.Status != store.StatusRequesting {
				return store.Change{}, store.ErrNoChange
			}
			var change store.Change
			if j.Request.IntentAt == nil && j.Request.Outcome != store.OutcomeAccepted {
				j.Request.IntentAt = &now
			}
			if j.Request.Outcome != store.OutcomeAccepted {
				j.Request.Outcome = store.OutcomeUnknown
			}
			j.Request.LastError = reason
			j.SetStatus(store.StatusGenerating, now, "reconciling: "+reason+"; not re-sent, polling the session for evidence")
			h.schedulePoll(&change, j, now, j.Poll.Seq+1)
			return change, nil
		})
		return err
	})
	if err != nil {
		return err
	}
	log.Warn("reconciling by polling", zap.String("reason", reason))
	return h.tasks.FlushCommittedSettled(ctx, committed, nil)
}

type errSpinsNotReady struct{ status string }

func (e errSpinsNotReady) Error() string {
	return fmt.Sprintf("the session's spins are not ready (status %q)", e.status)
}

// spinURL picks the spin URL CSM's own SDK would send.
func spinURL(s *csm.Session, index int) (string, error) {
	if index < len(s.Spins) && s.Spins[index].ImageURL != "" {
		return s.Spins[index].ImageURL, nil
	}
	switch s.RawStatus() {
	case "spin_generate_processing", "in_progress", "queued":
		return "", errSpinsNotReady{status: s.RawStatus()}
	case "spin_generate_failed":
		return "", errors.New("the session's spin generation failed")
	}
	return "", fmt.Errorf("the session has no spin %d (it has %d)", index, len(s.Spins))
}
