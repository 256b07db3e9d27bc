package testutil

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// CommandCounter is a go-redis hook (Client.AddHook) counting the commands
// a client sends, pipelined ones one by one: every command, or only those
// Match accepts (set it before the client sends anything).
type CommandCounter struct {
	Match func(cmd redis.Cmder) bool
	n     atomic.Int64
}

// Load returns the count so far.
func (c *CommandCounter) Load() int64 { return c.n.Load() }

func (c *CommandCounter) count(cmds ...redis.Cmder) {
	for _, cmd := range cmds {
		if c.Match == nil || c.Match(cmd) {
			c.n.Add(1)
		}
	}
}

// DialHook implements redis.Hook.
func (c *CommandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (c *CommandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.count(cmd)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (c *CommandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.count(cmds...)
		return next(ctx, cmds)
	}
}
