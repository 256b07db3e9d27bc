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
type RedisLimiter struct {
	limiter *redis_rate.Limiter
	key     string
	limit   redis_rate.Limit
}

// NewRedisLimiter allows perSecond calls a second with the given burst.
func NewRedisLimiter(rdb redis.UniversalClient, key string, perSecond, burst int) *RedisLimiter {
	limit := redis_rate.PerSecond(perSecond)
	if burst > 0 {
		limit.Burst = burst
	}
	return &RedisLimiter{limiter: redis_rate.NewLimiter(rdb), key: key, limit: limit}
}

// Wait blocks until a call is allowed or ctx is done.
//
// Each Allow runs redis_rate's GCRA script on the one bucket key. go-redis
// re-sends a command after a network error (MaxRetries), so a script whose
// reply was lost can run twice: the bucket then counts a call that was
// never made. A blind re-run is safe here: a double count only
// over-throttles (one spare turn is lost and the next caller waits a little
// longer); it never lets more calls through than the limit.
func (l *RedisLimiter) Wait(ctx context.Context) error {
	for {
		res, err := l.limiter.Allow(ctx, l.key, l.limit)
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
