package csm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
)

// shortCtx bounds a Wait that must not have to wait: the limiter's interval
// here is a second, so a Wait that had to wait would miss this deadline.
func shortCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRedisLimiter(t *testing.T) {
	r := testutil.NewRedis(t)
	key := r.Namespace + ":ratelimit:csm"
	// One call a second with a burst of two: two calls pass at once, the
	// third has to wait about a second.
	l := csm.NewRedisLimiter(r.Client, key, 1, 2)

	for i := range 2 {
		if err := l.Wait(shortCtx(t, 500*time.Millisecond)); err != nil {
			t.Fatalf("Wait %d within the burst: %v", i+1, err)
		}
	}
	if err := l.Wait(shortCtx(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third Wait = %v, want context.DeadlineExceeded: it should have had to wait", err)
	}

	t.Run("shared by every limiter on the key", func(t *testing.T) {
		other := csm.NewRedisLimiter(r.Client, key, 1, 2)
		if err := other.Wait(shortCtx(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait on a second limiter = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("other keys are not throttled", func(t *testing.T) {
		other := csm.NewRedisLimiter(r.Client, r.Namespace+":ratelimit:other", 1, 2)
		if err := other.Wait(shortCtx(t, 500*time.Millisecond)); err != nil {
			t.Errorf("Wait on another key: %v", err)
		}
	})
	t.Run("state lives in Redis", func(t *testing.T) {
		n, err := r.Client.Exists(t.Context(), "rate:"+key).Result()
		if err != nil || n != 1 {
			t.Errorf("EXISTS rate:%s = %d, %v; want 1", key, n, err)
		}
	})
}

func TestRedisLimiterRedisDown(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := rdb.Close(); err != nil {
		t.Fatal(err)
	}
	l := csm.NewRedisLimiter(rdb, "unused", 1, 1)
	err := l.Wait(shortCtx(t, 5*time.Second))
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a closed Redis client = %v, want the Redis error", err)
	}
	if !errors.Is(err, redis.ErrClosed) {
		t.Errorf("err = %v, want it to wrap redis.ErrClosed", err)
	}
}

// TestClientWaitsOnRedisLimiter: a throttled call fails as retryable
// before anything is sent.
func TestClientWaitsOnRedisLimiter(t *testing.T) {
	r := testutil.NewRedis(t)
	sim, base := testutil.NewSim(t, csmsim.Options{})
	sim.AddSession(legacyCode, csmsim.SessionConfig{})
	c := newClient(t, base, func(o *csm.Options) {
		o.Limiter = csm.NewRedisLimiter(r.Client, r.Namespace+":ratelimit:csm", 1, 1)
	})
	if _, err := c.GetSession(shortCtx(t, 500*time.Millisecond), legacyCode); err != nil {
		t.Fatalf("first GetSession: %v", err)
	}
	_, err := c.GetSession(shortCtx(t, 100*time.Millisecond), legacyCode)
	checkError(t, err, "get session", wantError{Kind: csm.KindTransport, Retryable: true})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if n := sim.Requests(legacyCode, csmsim.EndpointGetSession); n != 1 {
		t.Errorf("Requests = %d, want 1: the throttled call must not be sent", n)
	}
}

// TestAwaitTurnTakesTheRedisTurnAndRequestPreviewDoesNot: with the shared
// bucket spent, AwaitTurn has to wait (here: past the client's Timeout,
// which bounds it) while RequestPreview is written at once and does not
// take a turn of its own.
func TestAwaitTurnTakesTheRedisTurnAndRequestPreviewDoesNot(t *testing.T) {
	r := testutil.NewRedis(t)
	key := r.Namespace + ":ratelimit:csm"
	sim, base := testutil.NewSim(t, csmsim.Options{})
	sim.AddSession(legacyCode, csmsim.SessionConfig{})
	c := newClient(t, base, func(o *csm.Options) {
		o.Limiter = csm.NewRedisLimiter(r.Client, key, 1, 1)
		o.Timeout = 100 * time.Millisecond // shorter than the second a spent bucket needs
	})

	if err := c.AwaitTurn(t.Context()); err != nil {
		t.Fatalf("first AwaitTurn: %v", err)
	}
	if _, err := c.RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 0)); err != nil {
		t.Fatalf("RequestPreview after its turn: %v", err)
	}
	err := c.AwaitTurn(t.Context())
	checkError(t, err, "await turn", wantError{Kind: csm.KindTransport, Retryable: true})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second AwaitTurn = %v, want it to wrap context.DeadlineExceeded (bounded by Options.Timeout)", err)
	}
	// The bucket is spent, and still the POST goes out: it never waits.
	if _, err := c.RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 0)); err != nil {
		t.Fatalf("RequestPreview with the bucket spent: %v", err)
	}
	if n := sim.Requests(legacyCode, csmsim.EndpointPreview); n != 2 {
		t.Errorf("preview requests = %d, want 2", n)
	}
	if n := sim.Requests(legacyCode, csmsim.EndpointGetSession); n != 0 {
		t.Errorf("AwaitTurn sent %d requests, want 0", n)
	}
}
