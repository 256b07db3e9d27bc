package worker

import (
	"context"
	"math/rand/v2"
	"sync"
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
	// GetSeen and UpdateFrom read each job once on a handler's path and
	// write from what was read or last committed; UpdateFrom reports what
	// the commit put in the outbox, for FlushCommittedSettled.
	GetSeen(ctx context.Context, id string) (store.Job, store.Seen, error)
	UpdateFrom(ctx context.Context, id string, seen store.Seen, fn func(j *store.Job, now time.Time) (store.Change, error)) (store.Job, store.Seen, store.Committed, error)
	Event(ctx context.Context, jobID, eventID string) (store.Event, error)
	Message(ctx context.Context, jobID, msgID string) (store.Message, error)
	CreateMessage(ctx context.Context, jobID string, m store.Message) error
	SaveMessage(ctx context.Context, jobID string, m store.Message) error
	SaveMessageReleasing(ctx context.Context, jobID string, m store.Message, acks []string, holder string, destinations []string) (saveErr, releaseErr error)
	UpdateMessage(ctx context.Context, jobID, msgID string, fn func(m *store.Message, found bool) ([]store.OutboxEntry, error)) (store.Message, error)
	Endpoints(ctx context.Context) ([]store.Endpoint, error)
	EndpointsIn(ctx context.Context, ids []string) ([]store.Endpoint, error)
	Endpoint(ctx context.Context, id string) (store.Endpoint, error)
	UpdateEndpoint(ctx context.Context, id string, fn func(e *store.Endpoint, now time.Time) error) (store.Endpoint, error)
	IndexEndpointMessage(ctx context.Context, endpointID, msgID string, at time.Time) error
	// AcquireSlots and ReleaseSlots take and give back a delivery's slots
	// (slots.go), each in one round trip.
	AcquireSlots(ctx context.Context, holder string, lease time.Duration, slots []store.Slot) (bool, error)
	ReleaseSlots(ctx context.Context, holder string, destinations []string) error
	// AwaitSlots waits, up to within, while this worker's own deliveries
	// hold every seat of one of slots; free false: one still is.
	AwaitSlots(ctx context.Context, slots []store.Slot, within time.Duration) (free, waited bool)
	// AwaitSlotBack waits, up to within, for one of this worker's seats of
	// slots to come back; false at once when it holds none.
	AwaitSlotBack(ctx context.Context, slots []store.Slot, within time.Duration) bool
}

// CSM is what the handlers need of the CSM client.
type CSM interface {
	GetSession(ctx context.Context, code string) (*csm.Session, error)
	// AwaitTurn waits for the shared rate limit; RequestPreview does not,
	// so that no wait sits between a recorded intent and its POST.
	AwaitTurn(ctx context.Context) error
	RequestPreview(ctx context.Context, code string, p csm.PreviewParams) (*csm.PreviewJob, error)
}

// Budget is the spending guard: how many previews may be requested per
// hour and per day, across every worker.
type Budget interface {
	// Take counts the job's preview against the budget (once per job,
	// however often it is called). When the budget is spent it returns
	// how long to wait and which window is exhausted.
	Take(ctx context.Context, jobID string) (wait time.Duration, window string, err error)
	// Refund gives the job's count back: its POST was never accepted.
	Refund(ctx context.Context, jobID string) error
}

// Sender delivers one webhook request: Target and Resolve say what a
// delivery will dial, so that its slots are taken for that (slots.go), and
// SendTo dials exactly that.
type Sender interface {
	Target(url string) (webhook.Target, error)
	Resolve(ctx context.Context, t webhook.Target) (webhook.Target, error)
	SendTo(ctx context.Context, t webhook.Target, signer *webhook.Signer, msg webhook.Message, now time.Time) (webhook.Result, error)
}

// Tasks enqueues: a job's committed outbox, or one task.
type Tasks interface {
	Flush(ctx context.Context, jobID string) error
	// FlushCommittedSettled enqueues what a commit put in the outbox from
	// memory (store.Committed), but for the entries settled names, whose
	// work the writer did itself.
	FlushCommittedSettled(ctx context.Context, c store.Committed, settled map[string]bool) error
	// EnqueueEntries enqueues outbox entries without acknowledging them.
	EnqueueEntries(ctx context.Context, jobID string, entries []store.OutboxEntry) (done []string, failed bool, err error)
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
	budget   Budget // nil: no spending limit
	// writeBudget bounds how long a must-happen write retries.
	writeBudget time.Duration
	// inline bounds the webhooks sent right after a commit (address.go).
	inline inlineGate
	// posts tracks preview POSTs in flight with their bookkeeping: they
	// run detached from shutdown, and Run waits for them.
	posts sync.WaitGroup
}

// PollPolicy sets the pace of polling.
type PollPolicy struct {
	Interval    time.Duration // the first interval
	MaxInterval time.Duration // the interval grows (×1.5 a poll, jittered) up to this
	// ReconcileGrace: after a preview POST whose outcome is unknown, how
	// long polling waits for upstream to show our preview before the job
	// fails as preview_unconfirmed.
	ReconcileGrace time.Duration
	// PushInterval, when set (CSM's pushes are on), replaces the schedule
	// above: polls become a safety net for lost pushes (see nextDelay).
	PushInterval time.Duration
	// Expected, when set, replaces ExpectedDuration, CSM's own figures for
	// how long a preview of each mesh kind takes, in the expected-duration
	// schedule (expectedWait): the bench compresses time with it, to run
	// hours of HD previews in minutes. Nil: ExpectedDuration.
	Expected func(mesh string) time.Duration
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

// finish moves a job to a final status (if it is not final yet) and fires
// the final event, from a task handler.
func (h *Handlers) finish(ctx context.Context, log *zap.Logger, jobID string, status store.Status, code, message string) error {
	return h.finishJob(ctx, log, jobID, status, code, message, true)
}

// finishJob is finish; inTask says whether its caller is a task handler
// that runs again if it dies before its flush (see addressed).
func (h *Handlers) finishJob(ctx context.Context, log *zap.Logger, jobID string, status store.Status, code, message string, inTask bool) error {
	job, _, committed, err := h.store.UpdateFrom(ctx, jobID, store.Seen{}, h.addressed(ctx, log, inTask, func(j *store.Job, now time.Time) (store.Change, error) {
		if j.Status.Final() {
			return store.Change{}, store.ErrNoChange
		}
		var change store.Change
		j.Finish(status, now, &store.JobError{Code: code, Message: message}, "")
		tasks.Emit(&change, j, store.FinalEvent(status))
		return change, nil
	}))
	if err != nil {
		return err
	}
	h.metrics.JobFinished(job)
	log.Info("job finished", zap.String("status", string(job.Status)), zap.String("error_code", code), zap.String("reason", message))
	return h.flushDelivering(ctx, log, job, committed)
}

// schedulePoll adds poll number seq of the chain to change, due after the
// policy's delay for it and never later than just past the deadline.
func (h *Handlers) schedulePoll(change *store.Change, j *store.Job, now time.Time, seq int) {
	h.schedulePollAfter(change, j, now, seq, 0)
}

func (h *Handlers) schedulePollAfter(change *store.Change, j *store.Job, now time.Time, seq int, atLeast time.Duration) {
	delay := max(h.polling.nextDelay(j.Polls), atLeast)
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
