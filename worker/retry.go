package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/tasks"
)

// webhookSchedule is the wait before each webhook retry: with the first
// attempt at once, deliveries span about a day and a half before the last
// retry (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
var webhookSchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// Backoff bounds.
const (
	requestBackoffMax = 5 * time.Minute
	pollBackoffMax    = time.Minute
	maxHonouredWait   = time.Hour
)

// RetryDelay is the asynq RetryDelayFunc: it paces the retries of each task
// type, and honours an upstream's or receiver's Retry-After as a floor.
func RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	if errors.Is(err, context.Canceled) {
		// Cut short by a shutdown: let the next worker take it right away.
		return time.Second
	}
	var d time.Duration
	switch t.Type() {
	case tasks.TypeDeliverWebhook:
		d = webhookSchedule[min(n, len(webhookSchedule)-1)]
	case tasks.TypeRequestPreview:
		d = exponential(n, requestBackoffMax)
	default:
		d = exponential(n, pollBackoffMax)
	}
	d = jitter(d)
	var hinted interface{ RetryDelay() time.Duration }
	if errors.As(err, &hinted) {
		d = max(d, min(hinted.RetryDelay(), maxHonouredWait))
	}
	return d
}

// exponential is 1 s, 2 s, 4 s... up to limit.
func exponential(n int, limit time.Duration) time.Duration {
	if n > 30 {
		return limit
	}
	return min(time.Second<<n, limit)
}

// jitter spreads d by ±10% so that tasks failing together do not retry
// together.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}
