package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

// Store is what the handlers need of the store.
type Store interface {
	Get(ctx context.Context, id string) (store.Job, error)
	Update(ctx context.Context, id string, fn func(j *store.Job, now time.Time) (store.Change, error)) (store.Job, error)
	Event(ctx context.Context, jobID, eventID string) (store.Event, error)
	Message(ctx context.Context, jobID, msgID string) (store.Message, error)
	CreateMessage(ctx context.Context, jobID string, m store.Message) error
	SaveMessage(ctx context.Context, jobID string, m store.Message) error
	Endpoints(ctx context.Context) ([]store.Endpoint, error)
	Endpoint(ctx context.Context, id string) (store.Endpoint, error)
	UpdateEndpoint(ctx context.Context, id string, fn func(e *store.Endpoint, now time.Time) error) (store.Endpoint, error)
	IndexEndpointMessage(ctx context.Context, endpointID, msgID string, at time.Time) error
	AcquireSlot(ctx context.Context, destination, holder string, limit int, lease time.Duration) (bool, error)
	ReleaseSlot(ctx context.Context, destination, holder string) error
}

// CSM is what the handlers need of the CSM client.
type CSM interface {
	GetSession(ctx context.Context, code string) (*csm.Session, error)
	RequestPreview(ctx context.Context, code string, p csm.PreviewParams) (*csm.PreviewJob, error)
}

// Sender delivers one webhook request.
type Sender interface {
	Send(ctx context.Context, url string, signer *webhook.Signer, msg webhook.Message, now time.Time) (webhook.Result, error)
}

// Tasks enqueues: a job's committed outbox, or one task.
type Tasks interface {
	Flush(ctx context.Context, jobID string) error
	Enqueue(ctx context.Context, p tasks.Payload, processAt time.Time) error
}

// Handlers are the asynq task handlers. Every handler is idempotent: asynq
// may deliver a task more than once (a crash, a lease expiry), and a task
// may find its job in any later state.
type Handlers struct {
	store    Store
	csm      CSM
	sender   Sender
	tasks    Tasks
	signer   *webhook.Signer
	log      *zap.Logger
	now      func() time.Time
	polling  PollPolicy
	webhooks WebhookPolicy
	metrics  Observer
}

// PollPolicy sets the pace of polling.
type PollPolicy struct {
	Interval    time.Duration // the first interval
	MaxInterval time.Duration // the interval grows (×1.5 a poll, jittered) up to this
	// ReconcileGrace: after a preview POST whose outcome is unknown, how
	// long polling waits for upstream to show our preview before the job
	// fails as preview_unconfirmed.
	ReconcileGrace time.Duration
}

// bookkeepingTimeout bounds the store writes a handler makes after its
// context ended (shutdown): recording what happened to a POST matters more
// than returning a few milliseconds sooner.
const bookkeepingTimeout = 5 * time.Second

func bookkeeping(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
}

func (h *Handlers) taskLogger(ctx context.Context, t *asynq.Task, jobID, session string) *zap.Logger {
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	return h.log.With(zap.String("task_type", t.Type()), zap.String("task_id", id), zap.Int("attempt", retried+1),
		zap.String("job_id", jobID), zap.String("session_code", session))
}

// RequestPreview sends the preview POST of a job, at most once ever.
//
// The intent is recorded before the POST and cleared only when the answer
// proves CSM did not accept it (429, a rate-limit 400, a refused
// connection...); then a retry may POST again. When the outcome is unknown
// (a 5xx, a timeout or reset after the request was sent, a crash between
// POST and write), the POST is never repeated: the job moves to generating
// and polling looks for evidence of the preview in the session (see
// PollPreview for what happens when none comes).
func (h *Handlers) RequestPreview(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode[tasks.RequestPreview](t)
	if err != nil {
		return err
	}
	log := h.taskLogger(ctx, t, p.JobID, p.SessionCode)
	job, err := h.store.Get(ctx, p.JobID)
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
	if job.Request.IntentAt != nil {
		return h.reconcile(ctx, log, job.ID, "an earlier attempt's preview POST has an unknown outcome")
	}

	// Read the session first: it gives the spin URL when the caller did not
	// (turbo sessions require one), proves the session exists before we
	// pay, and records the baseline that later tells our preview from an
	// earlier generation's leftovers.
	sess, err := h.csm.GetSession(ctx, job.SessionCode)
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

	var intentRecorded bool
	job, err = h.store.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		intentRecorded = false
		if (j.Status != store.StatusQueued && j.Status != store.StatusRequesting) || j.Request.IntentAt != nil {
			return store.Change{}, store.ErrNoChange // canceled, or another attempt got here first
		}
		j.SetStatus(store.StatusRequesting, now, "")
		j.SelectedSpin = spin
		j.Request.IntentAt = &now
		j.Request.Attempts++
		j.Request.Outcome = ""
		j.Request.BaselineStatus = sess.RawStatus()
		j.Request.BaselineMeshes = sess.MeshFingerprint()
		intentRecorded = true
		return store.Change{}, nil
	})
	if err != nil {
		return err
	}
	if !intentRecorded {
		log.Info("job moved on before the POST; nothing to send", zap.String("status", string(job.Status)))
		return h.tasks.Flush(ctx, job.ID)
	}

	params := csm.PreviewParams{SelectedSpinIndex: job.SelectedSpinIndex, SelectedSpin: spin, ScaledBBox: job.ScaledBBox, PivotPoint: job.PivotPoint}
	start := time.Now()
	pj, postErr := h.csm.RequestPreview(ctx, job.SessionCode, params)
	h.metrics.UpstreamCall("request_preview", outcomeOf(postErr), time.Since(start))

	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	if postErr == nil {
		return h.accepted(bctx, log, job.ID, pj)
	}
	var ce *csm.Error
	if !errors.As(postErr, &ce) || ce.MaybeAccepted {
		log.Warn("preview POST outcome unknown; it will not be re-sent", zap.Error(postErr))
		return h.reconcile(bctx, log, job.ID, "preview POST outcome unknown ("+postErr.Error()+")")
	}
	// The answer proves CSM did not start a preview: clear the intent so a
	// retry may POST again. If this write fails the intent stays, and the
	// next attempt reconciles instead of POSTing: safe, never billed twice.
	if _, err := h.store.Update(bctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		if j.Request.IntentAt == nil || j.Status != store.StatusRequesting {
			return store.Change{}, store.ErrNoChange
		}
		j.Request.IntentAt = nil
		j.Request.Outcome = store.OutcomeRejected
		j.Request.LastError = postErr.Error()
		return store.Change{}, nil
	}); err != nil {
		return err
	}
	return h.requestRefused(ctx, log, job.ID, postErr)
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

// accepted records an accepted preview POST and starts the poll chain.
func (h *Handlers) accepted(ctx context.Context, log *zap.Logger, jobID string, pj *csm.PreviewJob) error {
	job, err := h.store.Update(ctx, jobID, func(j *store.Job, now time.Time) (store.Change, error) {
		var change store.Change
		j.UniqueTrialKey = pj.UniqueTrialKey
		j.Request.IntentAt = nil
		j.Request.Outcome = store.OutcomeAccepted
		j.Request.AcceptedAt = &now
		j.Request.LastError = ""
		switch {
		case j.Status == store.StatusRequesting:
			j.SetUpstreamStatus(pj.Status, now)
			j.SetStatus(store.StatusGenerating, now, "preview accepted by CSM")
			h.schedulePoll(&change, j, now, 1)
			tasks.Emit(&change, j, store.EventAccepted)
		case j.Status == store.StatusGenerating:
			// Reconciled meanwhile by another attempt: polling is running.
			j.Note(now, "preview accepted by CSM")
			tasks.Emit(&change, j, store.EventAccepted)
		default:
			j.Note(now, "preview accepted by CSM after the job ended")
		}
		return change, nil
	})
	if err != nil {
		return err
	}
	log.Info("preview accepted", zap.String("unique_trial_key", job.UniqueTrialKey), zap.String("status", string(job.Status)))
	return h.tasks.Flush(ctx, jobID)
}

// reconcile moves a job whose POST outcome is unknown to generating without
// re-sending anything; polling then looks for evidence of the preview.
func (h *Handlers) reconcile(ctx context.Context, log *zap.Logger, jobID, reason string) error {
	_, err := h.store.Update(ctx, jobID, func(j *store.Job, now time.Time) (store.Change, error) {
		if j.Status != store.StatusQueued && j.Status != store.StatusRequesting {
			return store.Change{}, store.ErrNoChange
		}
		var change store.Change
		if j.Request.IntentAt == nil {
			j.Request.IntentAt = &now
		}
		j.Request.Outcome = store.OutcomeUnknown
		j.Request.LastError = reason
		j.SetStatus(store.StatusGenerating, now, "reconciling: "+reason+"; not re-sent, polling the session for evidence")
		h.schedulePoll(&change, j, now, 1)
		return change, nil
	})
	if err != nil {
		return err
	}
	log.Warn("reconciling by polling", zap.String("reason", reason))
	return h.tasks.Flush(ctx, jobID)
}

// finish moves a job to a final status (if it is not final yet) and fires
// the final event.
func (h *Handlers) finish(ctx context.Context, log *zap.Logger, jobID string, status store.Status, code, message string) error {
	job, err := h.store.Update(ctx, jobID, func(j *store.Job, now time.Time) (store.Change, error) {
		if j.Status.Final() {
			return store.Change{}, store.ErrNoChange
		}
		var change store.Change
		j.Finish(status, now, &store.JobError{Code: code, Message: message}, "")
		tasks.Emit(&change, j, store.FinalEvent(status))
		return change, nil
	})
	if err != nil {
		return err
	}
	h.metrics.JobFinished(job)
	log.Info("job finished", zap.String("status", string(job.Status)), zap.String("error_code", code), zap.String("reason", message))
	return h.tasks.Flush(ctx, jobID)
}

// schedulePoll adds poll number seq of the chain to change, due after the
// policy's delay for it and never later than just past the deadline.
func (h *Handlers) schedulePoll(change *store.Change, j *store.Job, now time.Time, seq int) {
	h.schedulePollAfter(change, j, now, seq, 0)
}

func (h *Handlers) schedulePollAfter(change *store.Change, j *store.Job, now time.Time, seq int, atLeast time.Duration) {
	delay := max(h.polling.delay(j.Polls), atLeast)
	at := now.Add(delay)
	if limit := j.Deadline.Add(time.Second); at.After(limit) {
		at = limit
	}
	j.Poll.Seq = seq
	j.Poll.NextAt = &at
	change.Outbox = append(change.Outbox, tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: seq}, at))
}

// delay is the wait before the poll that follows `polls` polls: Interval
// growing by half each poll up to MaxInterval, ±10% jitter so that jobs
// started together do not poll in lockstep.
func (p PollPolicy) delay(polls int) time.Duration {
	d := float64(p.Interval)
	for range polls {
		d *= 1.5
		if d >= float64(p.MaxInterval) {
			d = float64(p.MaxInterval)
			break
		}
	}
	d *= 0.9 + 0.2*rand.Float64()
	return max(time.Duration(d), time.Second)
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
