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

// DeliverWebhook sends one stored event to one destination. Every attempt
// sends the event's stored id and body bytes, with a fresh timestamp and
// signature, and is logged in the message's delivery record.
func (h *Handlers) DeliverWebhook(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode[tasks.DeliverWebhook](t)
	if err != nil {
		return err
	}
	log := h.taskLogger(ctx, t, p.JobID, "").With(zap.String("event_id", p.EventID), zap.String("event_type", p.EventType))
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
	if job.WebhookURL == "" {
		return nil
	}
	msgID := p.EventID + ":" + p.Destination
	msg, err := h.store.Message(ctx, p.JobID, msgID)
	if errors.Is(err, store.ErrNotFound) {
		msg = store.Message{ID: msgID, EventID: p.EventID, EventType: store.EventType(p.EventType), Destination: p.Destination, Status: store.MessagePending}
	} else if err != nil {
		return err
	}
	if msg.Status != store.MessagePending {
		return nil // a duplicate task for a message already settled
	}

	now := h.now()
	res, sendErr := h.sender.Send(ctx, job.WebhookURL, h.signer, webhook.Message{ID: ev.ID, Body: ev.Body}, now)
	if sendErr != nil && ctx.Err() != nil {
		return ctx.Err() // shutting down: the attempt was cut short, not failed
	}
	attempt := store.Attempt{At: now, StatusCode: res.StatusCode, Latency: res.Latency, Response: res.ResponsePrefix}
	var de *webhook.DeliveryError
	retryable := true
	if sendErr != nil {
		attempt.Error = sendErr.Error()
		if errors.As(sendErr, &de) {
			retryable = de.Retryable
		}
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	msg.AddAttempt(attempt)
	switch {
	case sendErr == nil:
		msg.Status = store.MessageDelivered
		msg.DeliveredAt = &now
	case !retryable || retried >= maxRetry:
		msg.Status = store.MessageFailed
	}
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	saveErr := h.store.SaveMessage(bctx, p.JobID, msg)
	h.metrics.WebhookAttempt(deliveryOutcome(sendErr, de), res.Latency)

	log = log.With(zap.Int("status_code", res.StatusCode), zap.Duration("latency", res.Latency))
	switch {
	case sendErr == nil:
		log.Info("webhook delivered")
		if saveErr != nil {
			log.Warn("delivery record not saved", zap.Error(saveErr))
		}
		return nil
	case !retryable:
		log.Warn("webhook not deliverable; giving up", zap.Error(sendErr))
		return fmt.Errorf("%w: %w", sendErr, asynq.SkipRetry)
	default:
		log.Warn("webhook delivery failed; will retry", zap.Error(sendErr))
		return retryAfterError{err: sendErr, after: res.RetryAfter}
	}
}

// retryAfterError carries a receiver's Retry-After to RetryDelay.
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
	case de.Gone:
		return "gone"
	case de.StatusCode != 0:
		return "http_error"
	}
	return "transport_error"
}
