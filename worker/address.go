package worker

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

// Events leave a job's commit already addressed, and the job's own webhook
// is sent right after it:
//
//   - addressed makes the commit that creates an event also create its
//     messages (one per destination, pending) and their delivery tasks'
//     outbox entries (tasks.Address), instead of a fan-out task that would
//     do it one hop later;
//   - flushDelivering then sends the message to the job's own webhook_url
//     from the handler that committed (deliverInline), and enqueues the
//     rest. A message delivered (or given up for a receiver's stop) there
//     is acknowledged in the outbox without its task; after a failed
//     attempt its task is enqueued for when the schedule's second attempt
//     is due (DeliverWebhook.Attempted counts the first); with no attempt
//     made, its task runs at once. Until the acknowledgement the entry
//     waits in the outbox, so a crash in between leaves it to the sweeper
//     (the receiver may then get it twice, with one webhook-id).
//
// An inline attempt takes the same delivery slots as a task (slots.go) but
// never waits for one, and never takes long: it runs within inlineTimeout,
// and not at all for inlineBackoff after one to the same host failed in
// this process. Everything else is the delivery task's, so a receiver that
// hangs holds a poll worker for at most inlineTimeout, once per
// inlineBackoff, and never more deliveries than its share.
//
// The first event's attempt has its slots taken by the commit itself, in
// its round trip (inlineSlots, store.Change.Slots), instead of in one of
// its own after it. They are taken before the compare-and-set's outcome is
// known: a commit that loses holds them for the moment until its update
// gives them back, so a delivery of another job to the same receiver may
// find its domain's slots full then, and wait its turn as it would behind
// any holder.

// inlineTimeout bounds an attempt made right after a commit.
const inlineTimeout = 2 * time.Second

// inlineBackoff is how long a receiver's domain gets no inline attempts
// after one failed: its deliveries go through tasks meanwhile.
const inlineBackoff = 30 * time.Second

// maxBackoffsKept: past this many hosts in backoff, the expired ones are
// forgotten.
const maxBackoffsKept = 1024

// updateFunc is a store update function.
type updateFunc = func(j *store.Job, now time.Time) (store.Change, error)

// addressed returns fn with the events it emits addressed in the same
// commit (tasks.Address) to the job's webhook_url and the endpoints as
// they are now. inTask marks the change of a task handler, which runs
// again if it dies before its flush while it has retries left (comesBack),
// and flushes then (Change.Redone): every handler does on finding its work
// done. The sweeper, and a task that was given up, do not come back. The
// endpoints are read once, when the first event needs them; if they cannot
// be read, the events keep their fan-out tasks, which address them later.
//
// The commit also takes the delivery slots of its first event's inline
// attempt (inlineSlots), in its round trip.
func (h *Handlers) addressed(ctx context.Context, log *zap.Logger, inTask bool, fn updateFunc) updateFunc {
	var endpoints []store.Endpoint
	var read, unreadable bool
	redone := inTask && comesBack(ctx)
	holders := map[string]string{} // event id → slot holder, one across attempts
	return func(j *store.Job, now time.Time) (store.Change, error) {
		change, err := fn(j, now)
		change.Redone = redone
		if err != nil || len(change.Events) == 0 || unreadable {
			return change, err
		}
		if !read {
			var readErr error
			if endpoints, readErr = h.endpoints(ctx); readErr != nil {
				unreadable = true
				log.Warn("endpoints not read; the events go through fan-out tasks", zap.Error(readErr))
				return change, nil
			}
			read = true
		}
		tasks.Address(&change, j, now, endpoints)
		change.Slots = h.inlineSlots(ctx, j, change, now, holders)
		return change, nil
	}
}

// inlineSlots are the slots the inline attempt of change's first event
// takes before its name lookup (see send), to take in the commit's round
// trip instead of one of their own; nil when no attempt will follow (no
// webhook_url, or its host in backoff). flushDelivering hands them to
// that attempt, or gives them back. A host name's address slot is still
// taken after the lookup; an IP literal's is its domain slot.
func (h *Handlers) inlineSlots(ctx context.Context, j *store.Job, change store.Change, now time.Time, holders map[string]string) *store.SlotTake {
	if len(change.Events) == 0 {
		return nil
	}
	ev := change.Events[0]
	if _, ok := jobEntry(j.ID, ev.ID, ev.Type, change.Outbox); !ok {
		return nil
	}
	dest, reason, err := h.resolve(ctx, *j, tasks.DestinationJob) // no store read for the job's own URL
	if err != nil || reason != "" || !h.inline.allowed(dest.url, now) {
		return nil
	}
	target, err := h.sender.Target(dest.url)
	if err != nil {
		return nil
	}
	holder, ok := holders[ev.ID]
	if !ok {
		holder = inlineHolder(store.MessageID(ev.ID, tasks.DestinationJob), now)
		holders[ev.ID] = holder
	}
	take := &store.SlotTake{Holder: holder, Lease: h.slotLease()}
	for _, sl := range h.firstSlots(target, j.ID, tasks.DestinationJob) {
		take.Slots = append(take.Slots, sl.storeSlot())
	}
	return take
}

// inlineHolder names the holder of an inline attempt's slots;
// isInlineHolder tells one of message msgID's.
func inlineHolder(msgID string, now time.Time) string {
	return inlineHolderPrefix(msgID) + fmt.Sprint(now.UnixNano())
}

func isInlineHolder(holder, msgID string) bool {
	return strings.HasPrefix(holder, inlineHolderPrefix(msgID))
}

func inlineHolderPrefix(msgID string) string { return "inline:" + msgID + "#" }

// comesBack reports whether the running task runs again should this run
// die before its flush: asynq re-runs a task that crashed, lost its lease
// or failed while it has retries left. A crash on its last retry is
// archived by asynq's recoverer, with no handler to notice: that run's
// commits index their outbox for the sweeper. Outside asynq (no retry
// counts in ctx) nothing comes back.
func comesBack(ctx context.Context) bool {
	retried, ok := asynq.GetRetryCount(ctx)
	maxRetry, okMax := asynq.GetMaxRetry(ctx)
	return ok && okMax && retried < maxRetry
}

// flushDelivering enqueues what a commit put in the outbox, after sending
// the job's own webhooks of the commit's events inline (see above). A
// message settled inline has its entry acknowledged with its record; when
// that leaves nothing else of a commit whose writer comes back should it
// die (Committed.Redone), there is nothing to flush.
//
// Such a commit's other entries (its next poll) are enqueued before the
// inline attempts, and acknowledged with the first record one saves,
// instead of in a round trip of their own after them. The next poll is
// then scheduled while the job's webhook is on its way; it is due a poll
// interval later, and should a push bring it forward during a slow
// attempt, the next event may reach the receiver first, as a retried
// webhook already may: receivers order events by their timestamps.
func (h *Handlers) flushDelivering(ctx context.Context, log *zap.Logger, job store.Job, c store.Committed) error {
	var inline []store.CommittedEvent
	inlineEntries := map[string]bool{}
	for _, ev := range c.Events {
		if id, ok := jobEntry(job.ID, ev.ID, ev.Type, c.Outbox); ok {
			inline = append(inline, ev)
			inlineEntries[id] = true
		}
	}
	settled := map[string]bool{}
	var ahead []string // enqueued, to be acknowledged with a record
	if c.Redone && len(inline) > 0 {
		ahead = h.enqueueAhead(ctx, log, c, inlineEntries)
		for _, id := range ahead {
			settled[id] = true
		}
	}
	taken := c.Slots // the commit's take, for the attempt it was made for
	acked := 0
	for _, ev := range inline {
		p := jobDelivery(job.ID, ev.ID, ev.Type)
		var slots *slotSet
		if taken != nil && isInlineHolder(taken.Holder, store.MessageID(ev.ID, tasks.DestinationJob)) {
			slots, taken = h.heldSlots(taken), nil
		}
		outcome, retryAfter, recorded := h.deliverInline(ctx, log, job, ev, p.TaskID(), ahead, slots)
		if recorded {
			acked += len(ahead)
			ahead = nil
		}
		switch outcome {
		case inlineSkipped:
			continue
		case inlineSettled:
			acked++
		case inlineFailed:
			// The task makes the next attempt, when the schedule says the
			// second one is due; should this enqueue fail, the entry's own
			// task is enqueued by the flush and retries at once.
			p.Attempted = 1
			at := h.now().Add(max(jitter(h.webhooks.Schedule[0]), min(retryAfter, maxHonouredWait)))
			if err := h.tasks.Enqueue(ctx, p, at); err != nil {
				log.Warn("the retry of an inline webhook attempt was not scheduled; its task runs now", zap.Error(err))
				continue
			}
		}
		settled[p.TaskID()] = true
	}
	if taken != nil {
		// Its event is not sent inline (one the record held already, whose
		// task sends it): given back before the tasks are enqueued.
		h.heldSlots(taken).release(ctx, log)
	}
	if c.Redone && acked == len(c.Outbox) {
		return nil
	}
	return h.tasks.FlushCommittedSettled(ctx, c, settled)
}

// jobDelivery is the delivery task of an event to the job's own webhook_url.
func jobDelivery(jobID, eventID string, eventType store.EventType) tasks.DeliverWebhook {
	return tasks.DeliverWebhook{JobID: jobID, EventID: eventID, EventType: string(eventType), Destination: tasks.DestinationJob}
}

// jobEntry is the id of the outbox entry of an event's delivery to the
// job's own webhook_url, and whether outbox holds it: whether the event
// goes there at all, and so whether it is sent inline.
func jobEntry(jobID, eventID string, eventType store.EventType, outbox []store.OutboxEntry) (string, bool) {
	id := jobDelivery(jobID, eventID, eventType).TaskID()
	return id, slices.ContainsFunc(outbox, func(e store.OutboxEntry) bool { return e.ID == id })
}

// enqueueAhead enqueues the entries of c but those inline attempts may make
// needless, and returns those done with. One whose enqueue failed is left
// to the flush, which tries again.
func (h *Handlers) enqueueAhead(ctx context.Context, log *zap.Logger, c store.Committed, inline map[string]bool) []string {
	var rest []store.OutboxEntry
	for _, e := range c.Outbox {
		if !inline[e.ID] {
			rest = append(rest, e)
		}
	}
	if len(rest) == 0 {
		return nil
	}
	done, _, err := h.tasks.EnqueueEntries(ctx, c.JobID, rest)
	if err != nil {
		log.Warn("outbox entries not enqueued ahead of the inline webhooks; the flush tries again", zap.Error(err))
	}
	return done
}

// inlineOutcome is what an attempt right after a commit came to.
type inlineOutcome int

const (
	// inlineSkipped: no attempt was made (or none recorded): the message's
	// task makes the first.
	inlineSkipped inlineOutcome = iota
	// inlineSettled: delivered, or failed for good; no task is needed.
	inlineSettled
	// inlineFailed: a failed attempt was recorded; a task retries it.
	inlineFailed
)

// deliverInline makes one attempt to deliver ev to the job's webhook_url
// and records it in the message. It reports the message settled when
// delivered, or failed because the receiver asked to stop or the failure
// cannot be retried, having acknowledged entry, the outbox entry of its
// delivery task, with the record; failed, with the receiver's
// Retry-After, when a retry is due; skipped when it made no attempt it
// could record. recorded says a record was saved, and with it the outbox
// entries ahead acknowledged. taken, when not nil, holds slots the commit
// took for this attempt (see inlineSlots); they are given back either way.
func (h *Handlers) deliverInline(ctx context.Context, log *zap.Logger, job store.Job, ev store.CommittedEvent, entry string, ahead []string, taken *slotSet) (_ inlineOutcome, retryAfter time.Duration, recorded bool) {
	msg := store.Message{
		ID: store.MessageID(ev.ID, tasks.DestinationJob), EventID: ev.ID, EventType: ev.Type,
		Destination: tasks.DestinationJob, Status: store.MessagePending, CreatedAt: job.UpdatedAt,
	}
	slots := taken
	if slots == nil {
		slots = h.newSlotSet(inlineHolder(msg.ID, h.now()))
	}
	defer slots.release(ctx, log) // the paths that save no record
	dest, reason, err := h.resolve(ctx, job, tasks.DestinationJob)
	if err != nil || reason != "" || !h.inline.allowed(dest.url, h.now()) {
		return inlineSkipped, 0, false // the task records why it is not sent
	}
	log = log.With(zap.String("message_id", msg.ID), zap.String("event_type", string(ev.Type)))
	attemptCtx, cancel := context.WithTimeout(ctx, inlineTimeout)
	defer cancel()
	out, err := h.send(attemptCtx, log, slots, job.ID, tasks.DestinationJob, dest, webhook.Message{ID: ev.ID, Body: ev.Body})
	if err != nil {
		return inlineSkipped, 0, false // a slot busy, or the store failing: the task waits its turn
	}
	res, sendErr := out.res, out.err
	if sendErr != nil && ctx.Err() != nil {
		return inlineSkipped, 0, false // shutting down: the task makes the attempt
	}
	if sendErr != nil {
		h.inline.failed(dest.url, h.now())
	}
	de, stop := h.recordAttempt(&msg, out)
	// The slots go back with the record, in one round trip, and a settled
	// message's task is acknowledged with it, as are the tasks ahead.
	acks := ahead
	if msg.Status != store.MessagePending {
		acks = append(slices.Clip(ahead), entry)
	}
	if err := slots.releaseSaving(ctx, log, job.ID, msg, acks); err != nil {
		// Unrecorded: the task sends it again, with the same webhook-id.
		log.Warn("inline delivery attempt not recorded; its task takes over", zap.Error(err))
		return inlineSkipped, 0, false
	}
	if stop != "" {
		h.recordHealth(ctx, log, job.ID, dest, sendErr, stop)
	}
	switch {
	case sendErr == nil:
		if job.FinishedAt != nil && ev.Type == store.FinalEvent(job.Status) {
			h.metrics.FinalWebhookDelivered(h.now().Sub(*job.FinishedAt))
		}
		log.Info("webhook delivered", zap.Int("status_code", res.StatusCode), zap.Duration("latency", res.Latency))
		return inlineSettled, 0, true
	case msg.Status == store.MessageFailed:
		log.Warn("webhook given up", zap.String("reason", msg.Reason), errorDetail(de))
		return inlineSettled, 0, true
	}
	log.Info("inline webhook attempt failed; its task retries", zap.Int("status_code", res.StatusCode), zap.Error(sendErr), errorDetail(de))
	return inlineFailed, res.RetryAfter, true
}

// inlineGate keeps inline attempts away from a receiver that failed one
// lately, so that a receiver that hangs holds a poll worker for
// inlineTimeout once per inlineBackoff, not once per event. It is keyed by
// the URL's host as written: its share of workers is bounded by the
// delivery slots, this only spares the handlers the wait.
type inlineGate struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func gateKey(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return strings.ToLower(u.Host)
	}
	return rawURL
}

// allowed reports whether an inline attempt to rawURL may be made now.
func (g *inlineGate) allowed(rawURL string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !now.Before(g.until[gateKey(rawURL)])
}

// failed keeps inline attempts away from rawURL's host for inlineBackoff.
func (g *inlineGate) failed(rawURL string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.until == nil {
		g.until = map[string]time.Time{}
	}
	if len(g.until) >= maxBackoffsKept {
		for host, t := range g.until {
			if !now.Before(t) {
				delete(g.until, host)
			}
		}
	}
	g.until[gateKey(rawURL)] = now.Add(inlineBackoff)
}
