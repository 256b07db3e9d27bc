package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

// WebhookPolicy sets how webhooks are delivered.
type WebhookPolicy struct {
	// Schedule is the wait before each retry; when it runs out the message
	// is given up. Default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
	Schedule []time.Duration
	// PerDestination bounds deliveries in flight to one receiver across
	// all workers, counted twice: by the address dialled and by the
	// registrable domain of the URL's host (see slots.go). Default 4.
	PerDestination int
	// PerJob bounds one job's deliveries in flight across all workers, so
	// that one caller's events cannot take every webhook worker. Default 2.
	PerJob int
	// DisableAfter disables an endpoint that has failed continuously for
	// this long. Default 5 days.
	DisableAfter time.Duration
	// AttemptTimeout is the sender's timeout; it bounds how long a
	// delivery holds a destination slot. Default 15 s.
	AttemptTimeout time.Duration
}

// DefaultWebhookSchedule spans about a day and a half after the first
// attempt, which is made at once.
var DefaultWebhookSchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

func (p *WebhookPolicy) defaults() {
	if len(p.Schedule) == 0 {
		p.Schedule = DefaultWebhookSchedule
	}
	if p.PerDestination <= 0 {
		p.PerDestination = 4
	}
	if p.PerJob <= 0 {
		p.PerJob = 2
	}
	if p.DisableAfter <= 0 {
		p.DisableAfter = 5 * 24 * time.Hour
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = 15 * time.Second
	}
}

// errDestinationBusy snoozes a delivery whose receiver already has its
// share of deliveries in flight; it is not a failure and spends no retry.
var errDestinationBusy = errors.New("destination busy: its delivery slots are taken")

// FanoutWebhook addresses one event to its destinations as they are now:
// the job's webhook_url and every enabled endpoint subscribed to the
// event's type. Each (event, destination) pair becomes one message with its
// own delivery task and history. Running it twice changes nothing.
func (h *Handlers) FanoutWebhook(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode[tasks.FanoutWebhook](t)
	if err != nil {
		return err
	}
	log := h.taskLogger(ctx, t, p.JobID, "").With(zap.String("event_id", p.EventID), zap.String("event_type", p.EventType))
	job, err := h.store.Get(ctx, p.JobID)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("job expired before its event was sent; dropping")
		return nil
	}
	if err != nil {
		return err
	}
	dests, err := h.destinations(ctx, job, store.EventType(p.EventType))
	if err != nil {
		return err
	}
	now := h.now()
	for _, dest := range dests {
		msg := store.Message{
			ID: store.MessageID(p.EventID, dest), EventID: p.EventID, EventType: store.EventType(p.EventType),
			Destination: dest, Status: store.MessagePending, CreatedAt: now,
		}
		// The message is created before its task is enqueued: a message
		// that does not exist has no task, which is what settleFanout
		// relies on when this task is given up.
		if err := h.store.CreateMessage(ctx, p.JobID, msg); err != nil {
			return err
		}
		if dest != tasks.DestinationJob {
			if err := h.store.IndexEndpointMessage(ctx, dest, msg.ID, now); err != nil {
				return err
			}
		}
		if err := h.tasks.Enqueue(ctx, tasks.DeliverWebhook{
			JobID: p.JobID, EventID: p.EventID, EventType: p.EventType, Destination: dest,
		}, time.Time{}); err != nil {
			return err
		}
	}
	return nil
}

// destinations lists where an event goes: the job's webhook_url and every
// enabled endpoint subscribed to its type. On an error it returns the
// destinations it could list with the error.
func (h *Handlers) destinations(ctx context.Context, job store.Job, typ store.EventType) ([]string, error) {
	endpoints, err := h.store.Endpoints(ctx)
	if err != nil {
		return tasks.Destinations(&job, nil, typ), err
	}
	return tasks.Destinations(&job, endpoints, typ), nil
}

// destination is where a message goes and how it is signed.
type destination struct {
	url      string
	signer   *webhook.Signer
	endpoint *store.Endpoint // nil for the job's own webhook_url
}

// DeliverWebhook sends one message: a stored event to one destination.
// Every attempt sends the event's id and exact body bytes, with a fresh
// timestamp and signature, and is logged in the message's record.
//
// It keeps "every message ends delivered or failed, with the reason": a
// settled message, or one a newer replay owns, is never sent again; the
// settled record rides through a Redis outage, and if it still cannot be
// written the task fails rather than leaving it pending (a delivery is
// then re-sent with the same webhook-id; a give-up is settled by
// handleError, as is any delivery task archived for another reason).
func (h *Handlers) DeliverWebhook(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode[tasks.DeliverWebhook](t)
	if err != nil {
		return err
	}
	msgID := store.MessageID(p.EventID, p.Destination)
	log := h.taskLogger(ctx, t, p.JobID, "").With(zap.String("message_id", msgID), zap.String("event_type", p.EventType))
	job, err := h.store.Get(ctx, p.JobID)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("job expired before its webhook was delivered; dropping")
		return nil
	}
	if err != nil {
		return err
	}
	ev, err := h.store.Event(ctx, p.JobID, p.EventID)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("event expired before it was delivered; dropping")
		return nil
	}
	if err != nil {
		return err
	}
	msg, err := h.store.Message(ctx, p.JobID, msgID)
	if errors.Is(err, store.ErrNotFound) {
		msg = store.Message{ID: msgID, EventID: p.EventID, EventType: store.EventType(p.EventType), Destination: p.Destination,
			Status: store.MessagePending, CreatedAt: h.now()}
	} else if err != nil {
		return err
	}
	if msg.Status != store.MessagePending {
		return nil // a duplicate task for a settled message
	}
	if p.Replay < msg.Replays {
		return nil // a task of an earlier round; the replay's own task sends it
	}

	dest, reason, err := h.resolve(ctx, job, p.Destination)
	if err != nil {
		return err
	}
	if reason != "" {
		msg.Status, msg.Reason = store.MessageFailed, reason
		log.Info("webhook not sent", zap.String("reason", reason))
		if err := h.saveMessage(ctx, p.JobID, msg); err != nil {
			// Archived: handleError settles the message with the reason.
			return fmt.Errorf("%s (record not saved: %w): %w", reason, err, asynq.SkipRetry)
		}
		return nil
	}

	taskID, _ := asynq.GetTaskID(ctx)
	slots := h.newSlotSet(taskID + "#" + fmt.Sprint(h.now().UnixNano()))
	defer slots.release(ctx, log) // should send panic
	out, err := h.send(ctx, log, slots, p.JobID, p.Destination, dest, webhook.Message{ID: ev.ID, Body: ev.Body})
	// Given back before the record is saved: a save riding out a Redis
	// outage (saveMessage) must not hold the receiver's slots meanwhile.
	slots.release(ctx, log)
	if err != nil {
		return err // a slot busy (a snooze), or the store failing
	}
	res, sendErr := out.res, out.err
	if sendErr != nil && ctx.Err() != nil {
		return ctx.Err() // shutting down: the attempt was cut short, not failed
	}
	de, stop := h.recordAttempt(&msg, out)
	retried, _ := asynq.GetRetryCount(ctx)
	retried += p.Attempted // attempts before the task count against the schedule too
	switch {
	case sendErr == nil:
		if job.FinishedAt != nil && msg.EventType == store.FinalEvent(job.Status) && msg.Replays == 0 {
			h.metrics.FinalWebhookDelivered(h.now().Sub(*job.FinishedAt))
		}
	case msg.Status == store.MessagePending && retried >= len(h.webhooks.Schedule):
		msg.Status, msg.Reason = store.MessageFailed, fmt.Sprintf("gave up after %d attempts", retried+1)
	}
	saveErr := h.saveMessage(ctx, p.JobID, msg)
	h.recordHealth(ctx, log, job.ID, dest, sendErr, stop)

	log = log.With(zap.Int("status_code", res.StatusCode), zap.Duration("latency", res.Latency))
	switch {
	case saveErr != nil && sendErr == nil:
		// Delivered, but the record still says pending: run again. The
		// receiver may get the event twice, with the same webhook-id.
		log.Error("webhook delivered but its record not saved; it will be re-sent", zap.Error(saveErr))
		return fmt.Errorf("delivery record of message %s not saved: %w", msgID, saveErr)
	case saveErr != nil && msg.Status == store.MessageFailed:
		// Archived: handleError settles the message with the reason.
		log.Error("webhook given up but its record not saved", zap.String("reason", msg.Reason), zap.Error(saveErr))
		return fmt.Errorf("%s (record not saved: %w): %w", msg.Reason, saveErr, asynq.SkipRetry)
	case saveErr != nil:
		log.Warn("delivery attempt not recorded", zap.Error(saveErr)) // still pending; the retry records its own
	}
	switch {
	case sendErr == nil:
		log.Info("webhook delivered")
		return nil
	case msg.Status == store.MessageFailed:
		log.Warn("webhook given up", zap.String("reason", msg.Reason), zap.Error(sendErr), errorDetail(de))
		return fmt.Errorf("%s: %w", msg.Reason, asynq.SkipRetry)
	default:
		log.Warn("webhook delivery failed; will retry", zap.Error(sendErr), errorDetail(de))
		return retryAfterError{err: sendErr, after: res.RetryAfter}
	}
}

// attemptResult is one delivery attempt: when it was sent, the receiver's
// answer, and why it failed.
type attemptResult struct {
	at  time.Time
	res webhook.Result
	err error
}

// send makes one attempt to deliver msg to dest within the delivery slots
// of the receiver (slots.go), taken into slots, which the caller gives
// back. It returns errDestinationBusy when a slot is taken, and the
// store's error when the slots cannot be read; the attempt's own failure
// is in the result.
//
// The deliveries in flight are bounded per receiver domain, per address
// dialled and, to the job's own webhook_url, per job, so that a receiver
// that hangs, under however many names, holds a few workers and the others
// keep delivering. The domain's and the job's slots are taken before the
// name is looked up, so a receiver whose DNS hangs is held to its share
// too; the address's slot after, and the attempt dials exactly that
// address.
func (h *Handlers) send(ctx context.Context, log *zap.Logger, slots *slotSet, jobID, destID string, dest destination, msg webhook.Message) (attemptResult, error) {
	out := attemptResult{at: h.now()}
	target, err := h.sender.Target(dest.url)
	if err != nil {
		out.err = err
		return out, nil
	}
	if ok, err := slots.take(ctx, log, h.firstSlots(target, jobID, destID)...); err != nil || !ok {
		return out, busyOr(err)
	}
	if target, out.err = h.sender.Resolve(ctx, target); out.err != nil {
		return out, nil
	}
	if ok, err := slots.take(ctx, log, h.addrSlot(target)); err != nil || !ok {
		return out, busyOr(err)
	}
	out.at = h.now()
	out.res, out.err = h.sender.SendTo(ctx, target, dest.signer, msg, out.at)
	return out, nil
}

// recordAttempt adds one attempt to msg's log and settles what the attempt
// alone decides: delivered, or failed for good when the receiver asked to
// stop or the failure cannot be retried; otherwise msg stays pending for
// the caller's retry rule. It counts the attempt and returns the sender's
// DeliveryError (nil when there is none) and the receiver's stop reason.
func (h *Handlers) recordAttempt(msg *store.Message, out attemptResult) (*webhook.DeliveryError, string) {
	attempt := store.Attempt{At: out.at, StatusCode: out.res.StatusCode, Latency: out.res.Latency, Response: out.res.ResponsePrefix}
	var de *webhook.DeliveryError
	if out.err != nil {
		attempt.Error = out.err.Error()
		errors.As(out.err, &de)
	}
	msg.AddAttempt(attempt)
	stop := stopReason(out.res, de)
	switch {
	case out.err == nil:
		at := out.at
		msg.Status, msg.DeliveredAt = store.MessageDelivered, &at
	case stop != "":
		msg.Status, msg.Reason = store.MessageFailed, stop
	case de != nil && !de.Retryable:
		msg.Status, msg.Reason = store.MessageFailed, "not retryable: "+out.err.Error()
	}
	h.metrics.WebhookAttempt(deliveryOutcome(out.err, de), out.res.Latency)
	return de, stop
}

// resolve finds where a message goes. A non-empty reason means it must not
// be sent at all (and why).
func (h *Handlers) resolve(ctx context.Context, job store.Job, dest string) (destination, string, error) {
	if dest == tasks.DestinationJob {
		switch {
		case job.WebhookURL == "":
			return destination{}, "the job has no webhook_url", nil
		case job.WebhookGoneAt != nil:
			return destination{}, "the job's webhook_url answered 410 Gone earlier", nil
		}
		return destination{url: job.WebhookURL, signer: h.signer}, "", nil
	}
	ep, err := h.store.Endpoint(ctx, dest)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return destination{}, "the endpoint was deleted", nil
	case err != nil:
		return destination{}, "", err
	case !ep.Enabled:
		return destination{}, "the endpoint is disabled: " + ep.DisabledReason, nil
	}
	signer, err := webhook.SignerFor(ep.ActiveSecrets(h.now())...) // whsec_ signs v1, whsk_ v1a
	if err != nil {
		return destination{}, "the endpoint's secret is unusable", nil
	}
	return destination{url: ep.URL, signer: signer, endpoint: &ep}, "", nil
}

// recordHealth keeps destinations' health: a receiver asking to stop (a 410,
// or "webhook-delivery: disable" with any status; stop is the reason) stops
// deliveries to that destination (and disables an endpoint); an endpoint
// failing for longer than DisableAfter is disabled; a success ends a
// failure streak.
func (h *Handlers) recordHealth(ctx context.Context, log *zap.Logger, jobID string, dest destination, sendErr error, stop string) {
	ctx, cancel := bookkeeping(ctx)
	defer cancel()
	if dest.endpoint == nil {
		if stop == "" {
			return
		}
		_, err := h.store.Update(ctx, jobID, func(j *store.Job, now time.Time) (store.Change, error) {
			if j.WebhookGoneAt != nil {
				return store.Change{}, store.ErrNoChange
			}
			j.WebhookGoneAt = &now
			j.Note(now, "webhook_url: "+stop+": no more deliveries to it")
			return store.Change{}, nil
		})
		if err != nil {
			log.Warn("could not record the receiver's stop on the job", zap.String("reason", stop), zap.Error(err))
		}
		return
	}
	if sendErr == nil && stop == "" && dest.endpoint.FailingSince == nil {
		return // healthy and still healthy: nothing to write
	}
	var disabled string
	_, err := h.store.UpdateEndpoint(ctx, dest.endpoint.ID, func(e *store.Endpoint, now time.Time) error {
		disabled = ""
		switch {
		case stop != "":
			if e.Enabled {
				e.Disable(now, stop)
				disabled = e.DisabledReason
			}
		case sendErr == nil:
			e.FailingSince = nil
		default:
			if e.FailingSince == nil {
				e.FailingSince = &now
			}
			if now.Sub(*e.FailingSince) >= h.webhooks.DisableAfter && e.Enabled {
				e.Disable(now, "failing since "+e.FailingSince.UTC().Format(time.RFC3339))
				disabled = e.DisabledReason
			}
		}
		return nil
	})
	if err != nil {
		log.Warn("could not record the endpoint's health", zap.Error(err))
		return
	}
	if disabled != "" {
		log.Warn("endpoint disabled", zap.String("endpoint_id", dest.endpoint.ID), zap.String("reason", disabled))
	}
}

// saveMessage writes a delivery record, riding through a Redis outage the
// length of a failover: a record that says pending after its webhook was
// delivered or given up would stay so, with no task to settle it.
func (h *Handlers) saveMessage(ctx context.Context, jobID string, msg store.Message) error {
	return h.persist(ctx, h.log, "save the delivery record", func(ctx context.Context) error {
		return h.store.SaveMessage(ctx, jobID, msg)
	})
}

// giveUpMessages settles what an archived delivery or fan-out task leaves
// behind (a panic, retries exhausted, a record that could not be saved),
// so that no message waits pending for a task that will never run:
//   - a delivery: its message, if still pending in the task's round, is
//     failed with the reason (and can be replayed);
//   - a fan-out: each destination's message that was never created is
//     created failed with the reason; one created but perhaps never
//     enqueued gets its delivery task (task ids make that idempotent).
func (h *Handlers) giveUpMessages(ctx context.Context, log *zap.Logger, t *asynq.Task, attempts int, cause error) {
	reason := fmt.Sprintf("given up: the %s task was archived after %d attempts: %v", t.Type(), attempts, cause)
	switch t.Type() {
	case tasks.TypeDeliverWebhook:
		p, err := tasks.Decode[tasks.DeliverWebhook](t)
		if err != nil {
			return // malformed: nothing to settle
		}
		msgID := store.MessageID(p.EventID, p.Destination)
		err = h.persist(ctx, log, "settle the message of a delivery given up", func(ctx context.Context) error {
			_, err := h.store.UpdateMessage(ctx, p.JobID, msgID, func(m *store.Message, found bool) ([]store.OutboxEntry, error) {
				if !found {
					*m = store.Message{EventID: p.EventID, EventType: store.EventType(p.EventType), Destination: p.Destination,
						Status: store.MessagePending, CreatedAt: h.now(), Replays: p.Replay}
				}
				if m.Status != store.MessagePending || m.Replays != p.Replay {
					return nil, store.ErrNoChange // settled, or a newer round owns it
				}
				m.Status, m.Reason = store.MessageFailed, reason
				return nil, nil
			})
			return err
		})
		if err != nil {
			log.Error("could not settle the message of a delivery given up", zap.String("message_id", msgID), zap.Error(err))
		}
	case tasks.TypeFanoutWebhook:
		p, err := tasks.Decode[tasks.FanoutWebhook](t)
		if err != nil {
			return
		}
		if err := h.persist(ctx, log, "settle the messages of a fan-out given up", func(ctx context.Context) error {
			return h.settleFanout(ctx, log, p, reason)
		}); err != nil {
			log.Error("could not settle the messages of a fan-out given up", zap.String("event_id", p.EventID), zap.Error(err))
		}
	}
}

// settleFanout does for an archived fan-out what it could not: every
// destination it can list ends with a message that is settled or owned by
// a delivery task. Each step is safe to repeat.
func (h *Handlers) settleFanout(ctx context.Context, log *zap.Logger, p tasks.FanoutWebhook, reason string) error {
	job, err := h.store.Get(ctx, p.JobID)
	if err != nil {
		return err // ErrNotFound: the job expired, nothing to settle
	}
	dests, listErr := h.destinations(ctx, job, store.EventType(p.EventType))
	if listErr != nil {
		// Settle those it can list (the job's own URL at least); the
		// endpoints' messages are left to a replay by endpoint.
		log.Warn("fan-out given up: endpoints not listed", zap.Error(listErr))
	}
	now := h.now()
	for _, dest := range dests {
		msg := store.Message{
			ID: store.MessageID(p.EventID, dest), EventID: p.EventID, EventType: store.EventType(p.EventType),
			Destination: dest, Status: store.MessageFailed, Reason: reason, CreatedAt: now,
		}
		// The fan-out creates a message before it enqueues its task, so a
		// message that does not exist has no task: create it failed.
		if err := h.store.CreateMessage(ctx, p.JobID, msg); err != nil {
			return err
		}
		if dest != tasks.DestinationJob {
			if err := h.store.IndexEndpointMessage(ctx, dest, msg.ID, now); err != nil {
				return err
			}
		}
		stored, err := h.store.Message(ctx, p.JobID, msg.ID)
		if err != nil {
			return err
		}
		if stored.Status == store.MessagePending {
			if err := h.tasks.Enqueue(ctx, tasks.DeliverWebhook{
				JobID: p.JobID, EventID: p.EventID, EventType: p.EventType, Destination: dest, Replay: stored.Replays,
			}, time.Time{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// busyOr is what a delivery returns when it could not take its slots: the
// store's error, or the snooze that spends no retry.
func busyOr(err error) error {
	if err != nil {
		return err
	}
	return errDestinationBusy
}

// stopReason says why the receiver asked to stop deliveries to it, or "".
func stopReason(res webhook.Result, de *webhook.DeliveryError) string {
	switch {
	case de != nil && de.Gone:
		return "the receiver answered 410 Gone"
	case res.Disable:
		return "the receiver asked to stop (webhook-delivery: disable)"
	}
	return ""
}

// errorDetail logs what the sender found out that the attempt log must not
// show (resolver and addresses; see webhook.DeliveryError.Detail).
func errorDetail(de *webhook.DeliveryError) zap.Field {
	if de == nil || de.Detail == "" {
		return zap.Skip()
	}
	return zap.String("error_detail", de.Detail)
}

// retryAfterError carries a receiver's Retry-After to the retry pacing.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e retryAfterError) Error() string             { return e.err.Error() }
func (e retryAfterError) Unwrap() error             { return e.err }
func (e retryAfterError) RetryDelay() time.Duration { return e.after }

func deliveryOutcome(err error, de *webhook.DeliveryError) string {
	switch {
	case err == nil:
		return "delivered"
	case de == nil:
		return "error"
	case de.Blocked:
		return "blocked"
	case de.Gone, de.Disable:
		return "gone"
	case de.StatusCode != 0:
		return "http_error"
	}
	return "transport_error"
}
