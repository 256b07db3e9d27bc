package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// Write budget: how long a write that must happen (what became of a POST,
// a webhook message's settled record) keeps retrying. Sized to ride
// through a Sentinel or Cluster failover, during which every Redis call
// fails for a few seconds.
const (
	defaultWriteBudget = 20 * time.Second
	writeBackoffFirst  = 50 * time.Millisecond
	writeBackoffMax    = 2 * time.Second
)

// persist runs write until it succeeds, fails for a reason no retry can
// cure, or the write budget runs out; it runs detached from ctx's
// cancellation, so a drain does not cut it short. Only writes that are
// safe to repeat may be persisted: each try may have landed with its reply
// lost.
func (h *Handlers) persist(ctx context.Context, log *zap.Logger, what string, write func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.writeBudget)
	defer cancel()
	backoff := writeBackoffFirst
	for {
		err := write(ctx)
		if err == nil || !transientStoreError(err) {
			return err
		}
		log.Warn("store write failed; retrying", zap.String("write", what), zap.Error(err))
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: still failing after %s: %w", what, h.writeBudget, err)
		case <-t.C:
		}
		backoff = min(2*backoff, writeBackoffMax)
	}
}

// transientStoreError reports whether a store error may go away on its own
// (Redis unreachable, a failover, a read-only replica); the store's own
// verdicts on the job never do.
func transientStoreError(err error) bool {
	for _, final := range []error{store.ErrNotFound, store.ErrIllegalTransition, store.ErrNotReplicated, tasks.ErrMalformed} {
		if errors.Is(err, final) {
			return false
		}
	}
	return true
}
