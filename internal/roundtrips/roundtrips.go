// Package roundtrips counts a go-redis client's round trips, for the bench
// and for tests that hold a path to its number of round trips.
package roundtrips

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Counter is a go-redis hook (add it with AddHook) that counts the
// client's round trips: a command, or a pipeline (which one write and one
// read carry), whatever its length. A process's CPU follows round trips
// more than commands, so the bench reports both.
type Counter struct{ n atomic.Int64 }

// Count is the number of round trips so far.
func (c *Counter) Count() int64 { return c.n.Load() }

// DialHook leaves dialling as it is.
func (c *Counter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook counts a command sent alone.
func (c *Counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook counts a pipeline (or a transaction) as one.
func (c *Counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}
