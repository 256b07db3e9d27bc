package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"
)

// redisLog takes go-redis's own log lines ("connection pool: failed to
// dial after 5 attempts", ...), which it otherwise prints raw on stderr,
// beside previewd's structured logs and in the middle of a command's one
// line of error. A long-running process routes them to its logger at debug
// level; a command drops them: its error says what failed (Redis is
// unreachable at its redacted URL). go-redis has one logger per process,
// hence one value here.
var redisLog = &redisLogger{}

type redisLogger struct{ log atomic.Pointer[zap.Logger] }

// routeTo sends go-redis's lines to log from now on.
func (l *redisLogger) routeTo(log *zap.Logger) { l.log.Store(log) }

func (l *redisLogger) Printf(_ context.Context, format string, v ...any) {
	if log := l.log.Load(); log != nil {
		log.Debug("redis client", zap.String("message", fmt.Sprintf(format, v...)))
	}
}
