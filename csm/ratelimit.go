package csm

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// RedisLimiter is a Limiter shared by every worker process through Redis
// (a GCRA bucket in one key), so that adding workers never multiplies the
// rate previewd sends to CSM.
//
// Polls of running jobs and new requests share the one rate CSM allows.
// With a share reserved for polls (ReservePolls), a new request also takes
// a turn of a second, smaller bucket first (WaitRequest): requests use at
// most (1-share) of the rate, so a backlog of requests never leaves the
// running jobs' polls less than share of it, while polls may use all of it
// when there is no backlog.
type RedisLimiter struct {
	limiter  *redis_rate.Limiter
	key      string
	limit    redis_rate.Limit
	requests *redis_rate.Limit // nil: no share reserved
	// OnTurn, when set, is told of every turn granted, by class ("poll" or
	// "request"), and how long it was waited for: the budget-use metric.
	OnTurn func(class string, waited time.Duration)
}

// NewRedisLimiter allows perSecond calls a second with the given burst.
func NewRedisLimiter(rdb redis.UniversalClient, key string, perSecond, burst int) *RedisLimiter {
	limit := redis_rate.PerSecond(perSecond)
	if burst > 0 {
		limit.Burst = burst
	}
	return &RedisLimiter{limiter: redis_rate.NewLimiter(rdb), key: key, limit: limit}
}

// ReservePolls keeps share (0 < share < 1) of the rate for calls made by
// Wait (polls): WaitRequest (new requests) is held to the rest, at least
// one call a second. It returns l, and is meant for set-up, before use.
func (l *RedisLimiter) ReservePolls(share float64) *RedisLimiter {
	if share <= 0 || share >= 1 {
		l.requests = nil
		return l
	}
	rate := max(int(float64(l.limit.Rate)*(1-share)), 1)
	burst := max(int(float64(l.limit.Burst)*(1-share)), 1)
	l.requests = &redis_rate.Limit{Rate: rate, Burst: burst, Period: l.limit.Period}
	return l
}

// Wait blocks until a call is allowed or ctx is done: the turn of a poll.
func (l *RedisLimiter) Wait(ctx context.Context) error {
	start := time.Now()
	if err := l.wait(ctx, l.key, l.limit); err != nil {
		return err
	}
	l.observe("poll", start)
	return nil
}

// WaitRequest is Wait for a new request: within the requests' share first
// (when one is reserved), then within the shared rate.
func (l *RedisLimiter) WaitRequest(ctx context.Context) error {
	start := time.Now()
	if l.requests != nil {
		if err := l.wait(ctx, l.key+":requests", *l.requests); err != nil {
			return err
		}
	}
	if err := l.wait(ctx, l.key, l.limit); err != nil {
		return err
	}
	l.observe("request", start)
	return nil
}

func (l *RedisLimiter) observe(class string, start time.Time) {
	if l.OnTurn != nil {
		l.OnTurn(class, time.Since(start))
	}
}

// wait takes one turn of the bucket at key.
//
// Each Allow runs redis_rate's GCRA script on the one bucket key. go-redis
// re-sends a command after a network error (MaxRetries), so a script whose
// reply was lost can run twice: the bucket then counts a call that was
// never made. A blind re-run is safe here: a double count only
// over-throttles (one spare turn is lost and the next caller waits a little
// longer); it never lets more calls through than the limit.
func (l *RedisLimiter) wait(ctx context.Context, key string, limit redis_rate.Limit) error {
	for {
		res, err := l.limiter.Allow(ctx, key, limit)
		if err != nil {
			return fmt.Errorf("shared rate limit: %w", err)
		}
		if res.Allowed > 0 {
			return nil
		}
		wait := max(res.RetryAfter, 5*time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
