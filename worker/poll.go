package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// pollResult is what one poll did, for logging after the commit (the update
// function itself must stay free of side effects: it may run more than once).
type pollResult struct {
	stale          bool
	upstreamChange bool
	unknownStatus  bool
	authFault      bool
	pollErr        error
}

// PollPreview reads a job's session once, records what it says, and either
// finishes the job or schedules the next poll. Polling is not failure: an
// answer that says "still working", and any upstream error, schedules the
// next poll without spending an asynq retry; only our own store failing
// does. Every job has a deadline, so the chain always ends.
//
// Only the poll the chain expects (the job's Poll.Seq) does anything, so a
// redelivered or duplicated poll task cannot fork the chain.
func (h *Handlers) PollPreview(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode[tasks.PollPreview](t)
	if err != nil {
		return err
	}
	log := h.taskLogger(ctx, t, p.JobID, p.SessionCode).With(zap.Int("poll_seq", p.Seq))
	job, seen, err := h.firstRead(ctx, p.JobID)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("job not found (expired or deleted); dropping poll")
		return nil
	}
	if err != nil {
		return err
	}
	if job.Status.Final() || job.Status != store.StatusGenerating || job.Poll.Seq != p.Seq {
		if job.Poll.Seq == p.Seq+1 || job.Status.Final() {
			// Our predecessor committed but may have died before enqueueing.
			return h.tasks.Flush(ctx, job.ID)
		}
		log.Debug("stale poll; ignored", zap.Int("expected_seq", job.Poll.Seq), zap.String("status", string(job.Status)))
		return nil
	}
	if !h.now().Before(job.Deadline) {
		return h.finish(ctx, log, job.ID, store.StatusTimedOut, store.CodeDeadlineExceeded,
			"CSM did not report a final status before the job's deadline")
	}

	// Pushes counted before the read: one counted after it (up to the
	// commit below) may announce news this read missed.
	pushesBefore, pushOK := h.pushCount(ctx, job.ID)

	start := time.Now()
	sess, getErr := h.csm.GetSession(ctx, job.SessionCode)
	h.metrics.UpstreamCall("get_session", outcomeOf(getErr), time.Since(start))
	if getErr != nil && ctx.Err() != nil {
		return ctx.Err() // shutting down: the same poll runs again, uncounted
	}

	var res pollResult
	// The commit starts from the record read above (the compare-and-set
	// refuses it if the job changed since, and the update reads again).
	job, _, committed, err := h.store.UpdateFrom(ctx, job.ID, seen, h.addressed(ctx, log, true, func(j *store.Job, now time.Time) (store.Change, error) {
		res = pollResult{}
		if j.Status != store.StatusGenerating || j.Poll.Seq != p.Seq {
			res.stale = true
			return store.Change{}, store.ErrNoChange
		}
		var change store.Change
		j.Polls++
		var retryAfter time.Duration
		if getErr != nil {
			retryAfter = h.applyPollError(&change, j, now, getErr, &res)
		} else {
			h.applySession(&change, j, now, sess, &res)
		}
		if !j.Status.Final() {
			if getErr == nil && h.polling.PushInterval > 0 {
				retryAfter = max(retryAfter, h.polling.expectedWait(sess.PreviewMesh, j.Request.AcceptedAt, now))
			}
			h.schedulePollAfter(&change, j, now, p.Seq+1, retryAfter)
		}
		return change, nil
	}))
	if err != nil {
		return err
	}
	h.logPoll(log, job, res)
	if !res.stale {
		h.afterPoll(ctx, log, job, pushesBefore, pushOK)
	}
	return h.flushDelivering(ctx, log, job, committed)
}

// pushes is what the poll needs of the store for CSM's pushes (see
// store.NotePush and tasks.Pusher): *store.Store has it.
type pushes interface {
	Pushes(ctx context.Context, jobID string) (int64, error)
}

// pushCount reads the job's push count when pushes are on; ok is false
// when there is nothing to compare with.
func (h *Handlers) pushCount(ctx context.Context, jobID string) (n int64, ok bool) {
	ps, on := h.store.(pushes)
	if !on || h.polling.PushInterval <= 0 {
		return 0, false
	}
	n, err := ps.Pushes(ctx, jobID)
	return n, err == nil
}

// afterPoll runs after a poll's commit, before its flush. A push that
// arrived while the poll ran (the count moved) may announce news the read
// missed: the next step of the chain, just committed, is enqueued due now
// (the flush that follows finds it enqueued, by its id). A push after this
// check finds the new step and hurries it itself (tasks.Pusher), so no push
// is lost and no second chain starts. (A finished job leaves the session
// index with the commit that finishes it: see store.afterCommit.)
func (h *Handlers) afterPoll(ctx context.Context, log *zap.Logger, job store.Job, before int64, ok bool) {
	ps, on := h.store.(pushes)
	if !on || !ok || h.polling.PushInterval <= 0 || job.Status != store.StatusGenerating {
		return
	}
	after, err := ps.Pushes(ctx, job.ID)
	if err != nil || after == before {
		return
	}
	next := tasks.PollPreview{JobID: job.ID, SessionCode: job.SessionCode, Seq: job.Poll.Seq}
	if err := h.tasks.Enqueue(ctx, next, time.Time{}); err != nil {
		log.Warn("a push came during the poll but the next poll could not be brought forward; it runs as scheduled", zap.Error(err))
	}
}

// applyPollError records a failed session read. A 404 fails the job; an
// auth fault is a configuration problem, loud in the logs, and the job keeps
// waiting (an operator can fix the key before the deadline); anything else
// is retried by the next poll, no sooner than CSM asked.
func (h *Handlers) applyPollError(change *store.Change, j *store.Job, now time.Time, err error, res *pollResult) time.Duration {
	res.pollErr = err
	j.Poll.LastError = err.Error()
	var ce *csm.Error
	if !errors.As(err, &ce) {
		return 0
	}
	switch ce.Kind {
	case csm.KindNotFound:
		j.Finish(store.StatusFailed, now, &store.JobError{Code: store.CodeSessionNotFound, Message: "CSM answered 404 for the session while polling"}, "")
		tasks.Emit(change, j, store.EventFailed)
	case csm.KindAuth:
		res.authFault = true
	}
	return ce.RetryAfter
}

// applySession records what the session says and decides the job's fate.
func (h *Handlers) applySession(change *store.Change, j *store.Job, now time.Time, s *csm.Session, res *pollResult) {
	j.Poll.LastError = ""
	phase := s.Phase()
	raw := s.RawStatus()
	// Evidence that the session moved since our POST, so that a final status
	// left by an earlier generation (or the 2025 schema's "complete" of the
	// spin stage) is not taken for ours.
	fp := s.MeshFingerprint()
	moved := j.Poll.SawProgress || raw != j.Request.BaselineStatus || (fp != "" && fp != j.Request.BaselineMeshes)

	res.upstreamChange = j.SetUpstreamStatus(raw, now)
	res.unknownStatus = res.upstreamChange && phase == csm.PhaseUnknown
	if s.PercentDone != nil && (j.PercentDone == nil || *j.PercentDone != *s.PercentDone) {
		pct := *s.PercentDone
		j.PercentDone = &pct
		res.upstreamChange = true
	}

	switch {
	case phase == csm.PhaseGenerating:
		j.Poll.SawProgress = true
	case phase == csm.PhaseDone && moved:
		j.MeshURLs = s.MeshURLs()
		if j.PercentDone != nil {
			full := 100
			j.PercentDone = &full
		}
		j.Finish(store.StatusDone, now, nil, "")
		tasks.Emit(change, j, store.EventDone)
		return
	case phase == csm.PhaseFailed && moved:
		j.Finish(store.StatusFailed, now, &store.JobError{Code: store.CodePreviewFailed, Message: "CSM reported " + raw}, "")
		tasks.Emit(change, j, store.EventFailed)
		return
	}

	// A POST whose outcome was never learned and no sign of it upstream:
	// give up after the grace period rather than wait for the deadline. It
	// is not re-sent: a second POST could bill a second preview.
	if j.Request.Outcome == store.OutcomeUnknown && !j.Poll.SawProgress && j.Request.IntentAt != nil &&
		now.Sub(*j.Request.IntentAt) >= h.polling.ReconcileGrace {
		j.Finish(store.StatusFailed, now, &store.JobError{
			Code: store.CodePreviewUnconfirmed,
			Message: "the preview POST's outcome is unknown and the session showed no preview within the grace period; " +
				"it was not re-sent to avoid billing twice: request again with a new idempotency key if you want another attempt",
		}, "")
		tasks.Emit(change, j, store.EventFailed)
		return
	}
	if res.upstreamChange {
		tasks.Emit(change, j, store.EventProgress)
	}
}

func (h *Handlers) logPoll(log *zap.Logger, j store.Job, res pollResult) {
	if res.stale {
		log.Debug("poll lost a race with another writer; ignored")
		return
	}
	log = log.With(zap.String("upstream_status", j.UpstreamStatus), zap.String("status", string(j.Status)), zap.Int("polls", j.Polls))
	switch {
	case res.authFault:
		h.metrics.UpstreamAuthFault()
		log.Error("CSM refused our API key while polling: check PREVIEWD_CSM_API_KEY; the job keeps waiting until its deadline", zap.Error(res.pollErr))
	case res.pollErr != nil:
		var ce *csm.Error
		if errors.As(res.pollErr, &ce) && ce.Kind == csm.KindRateLimited {
			h.metrics.UpstreamRateLimited()
		}
		log.Warn("poll failed; the next poll retries", zap.Error(res.pollErr))
	case res.unknownStatus:
		log.Warn("unknown upstream status; treated as still working")
	}
	if j.Status.Final() {
		h.metrics.JobFinished(j)
		log.Info("job finished", zap.Any("error", j.Error))
	}
}

// nextDelay is the wait before the poll that follows `polls` polls: with
// pushes on, the safety-net interval (±10% jitter); otherwise delay's
// growing schedule.
func (p PollPolicy) nextDelay(polls int) time.Duration {
	if p.PushInterval > 0 {
		return time.Duration(float64(p.PushInterval) * (0.9 + 0.2*rand.Float64()))
	}
	return p.delay(polls)
}

// pushTaskCheck is how often an idle asynq server looks for a task when
// CSM's pushes are on. A push reaches its receiver in three hops (the
// hurried poll, the fan-out, the delivery), each waiting up to 1.5× this
// for an idle server to look: 150 ms keeps the worst under 1 s (measured in
// push_test.go) at about 7 dequeue attempts a second per idle server.
const pushTaskCheck = 150 * time.Millisecond

// taskCheckInterval is the servers' TaskCheckInterval: idle pick-up only
// matters for a poll brought forward by a push; without pushes, polls are
// scheduled and the default check suffices.
func (p PollPolicy) taskCheckInterval(def time.Duration) time.Duration {
	if p.PushInterval > 0 {
		return min(def, pushTaskCheck)
	}
	return def
}

// ExpectedDuration is how long CSM takes for a preview of the given mesh
// kind (shared/csm-api.md): turbo about a minute, HD one to two hours;
// fast_sculpt is assumed to sit between. 0: no expectation.
func ExpectedDuration(mesh string) time.Duration {
	switch mesh {
	case "turbo":
		return time.Minute
	case "fast_sculpt":
		return 5 * time.Minute
	case "hd":
		return 90 * time.Minute
	}
	return 0
}

// expectedWait is the least wait before the next poll of a preview of
// mesh kind accepted at accepted, by its expected duration: half the time
// left to the expected end (so an HD preview is polled at 45 min, 67, 79,
// ... rather than every minute for an hour and a half), and past the end a
// quarter of the overrun (a preview late by an hour is read every 15 min).
// Each poll's wait is thereby also its detection bound. The policy's own
// schedule (or a push) is what makes polls sooner; the job's deadline caps
// every wait. With no expectation (unknown kind, no acceptance time) it is 0.
//
// It applies with pushes on, where polls are the safety net and the wait
// of a lost push is what they bound; without pushes polls keep the policy's
// schedule (a simulated minute-long turbo preview takes seconds).
func expectedWait(mesh string, accepted *time.Time, now time.Time) time.Duration {
	return expectedWaitFor(ExpectedDuration(mesh), accepted, now)
}

// expectedWait is the schedule's wait with the policy's expected durations
// (PollPolicy.Expected, else ExpectedDuration).
func (p PollPolicy) expectedWait(mesh string, accepted *time.Time, now time.Time) time.Duration {
	if p.Expected == nil {
		return expectedWait(mesh, accepted, now)
	}
	return expectedWaitFor(p.Expected(mesh), accepted, now)
}

// expectedWaitFor is expectedWait for a preview expected to take e.
func expectedWaitFor(e time.Duration, accepted *time.Time, now time.Time) time.Duration {
	if e == 0 || accepted == nil {
		return 0
	}
	elapsed := now.Sub(*accepted)
	if elapsed < e {
		return (e - elapsed) / 2
	}
	return (elapsed - e) / 4
}
