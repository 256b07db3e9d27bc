package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
)

// bare times no-op tasks through one asynq.Server: the most any pipeline
// on asynq and this Redis can do per second, each job being at least one
// task. The tasks are enqueued first, then the server drains them.
func (r *rig) bare(ctx context.Context) (Phase, error) {
	queue := r.namespace("bare")
	defer r.cleanup(queue)
	n := r.opts.Jobs
	var handled atomic.Int64
	var drainEnd time.Time
	drained := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(r.rdb, asynq.Config{
		Concurrency:              2 * r.opts.Concurrency,
		Queues:                   map[string]int{queue: 1},
		LogLevel:                 asynq.ErrorLevel,
		TaskCheckInterval:        r.opts.checkInterval(),
		DelayedTaskCheckInterval: r.opts.checkInterval(),
	})
	client := asynq.NewClientFromRedisClient(r.rdb)
	m, err := r.startMeter(ctx)
	if err != nil {
		return Phase{}, err
	}
	err = enqueueAll(ctx, n, func(ctx context.Context, _ int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask("bench:noop", nil), asynq.Queue(queue))
		return err
	})
	if err != nil {
		return Phase{}, err
	}
	// The drain is timed from the server's start: the queue is full, so no
	// processor sleeps on an empty queue and the rate is asynq's own.
	drainStart := time.Now()
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		if handled.Add(1) == int64(n) {
			drainEnd = time.Now()
			close(drained)
		}
		return nil
	})); err != nil {
		return Phase{}, fmt.Errorf("start asynq server: %w", err)
	}
	defer srv.Shutdown()
	select {
	case <-drained:
	case <-ctx.Done():
		return Phase{}, fmt.Errorf("waiting for the no-op tasks: %w (%d of %d handled)", ctx.Err(), handled.Load(), n)
	case <-time.After(r.limit()):
		return Phase{}, fmt.Errorf("gave up after %s with %d of %d no-op tasks handled", r.limit(), handled.Load(), n)
	}
	drain := drainEnd.Sub(drainStart)
	w, err := m.stop(ctx)
	if err != nil {
		return Phase{}, err
	}
	srv.Shutdown()
	p := Phase{Name: "bare", Jobs: n, Finished: int(handled.Load())}
	w.elapsed = drain // commands and CPU: the enqueue and the drain
	p.finish(w)
	use, err := namespaceMemory(ctx, r.rdb, "asynq:{"+queue+"}:*")
	if err != nil {
		return Phase{}, err
	}
	p.setMemory(use)
	return p, nil
}

// cleanup deletes a phase's keys: its own and asynq's for its queues.
func (r *rig) cleanup(prefix string) {
	ctx := context.Background()
	deleteKeys(ctx, r.rdb, prefix+":*", "asynq:{"+prefix+"*", "rate:"+prefix+":*")
	iter := r.rdb.SScan(ctx, "asynq:queues", 0, prefix+"*", 100).Iterator()
	var queues []any
	for iter.Next(ctx) {
		queues = append(queues, iter.Val())
	}
	if len(queues) > 0 {
		r.rdb.SRem(ctx, "asynq:queues", queues...)
	}
}

// randomToken returns 16 random hex digits.
func randomToken() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
