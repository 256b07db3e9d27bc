package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// Backoff bounds.
const (
	requestBackoffMax = 5 * time.Minute
	pollBackoffMax    = time.Minute
	maxHonouredWait   = time.Hour
)

// retryDelay is the asynq RetryDelayFunc: it paces the retries of each task
// type, and honours an upstream's or receiver's Retry-After as a floor.
func (w *Worker) retryDelay(n int, err error, t *asynq.Task) time.Duration {
	switch {
	case errors.Is(err, context.Canceled):
		// Cut short by a shutdown: let the next worker take it right away.
		return time.Second
	case errors.Is(err, store.ErrNotReplicated):
		// The intent did not reach enough replicas: a replica is down or
		// lagging, not an upstream fault. Look again soon, on a flat pace:
		// a backoff would leave requests minutes behind a short outage.
		return 2*time.Second + time.Duration(rand.Int64N(int64(time.Second)))
	case errors.Is(err, errDestinationBusy):
		// Snoozed: look again soon, spread so snoozed tasks do not return
		// in a herd.
		return time.Second + time.Duration(rand.Int64N(int64(2*time.Second)))
	}
	var d time.Duration
	schedule := w.opts.Webhooks.Schedule
	switch t.Type() {
	case tasks.TypeDeliverWebhook:
		if p, err := tasks.Decode[tasks.DeliverWebhook](t); err == nil {
			n += p.Attempted // attempts before the task count too
		}
		d = schedule[min(n, len(schedule)-1)]
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

// sleepSpread waits about d, spread by ±25% so that the rounds of many
// workers do not run in step, and reports false if ctx ends first.
func sleepSpread(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(time.Duration(float64(d) * (0.75 + 0.5*rand.Float64())))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
