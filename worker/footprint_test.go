package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// BenchmarkFinishedJobFootprint runs real jobs to the end (accepted,
// progress and done events, all delivered) and reports the Redis memory one
// finished job keeps for its retention period, measured with MEMORY USAGE on
// every key of the job, asynq's task keys included.
//
//	go test -run '^$' -bench FinishedJobFootprint ./worker/
func BenchmarkFinishedJobFootprint(b *testing.B) {
	h := newHarness(b)
	if !h.redis.Real() {
		b.Skip("MEMORY USAGE needs a real Redis")
	}
	h.start()
	ctx := context.Background()
	var total, keys, taskBytes int64
	for i := range b.N {
		code := fmt.Sprintf("SESSION_FOOTPRINT_%s_%d", testutil.RandomHex(3), i)
		job := h.request(code, csmsim.SessionConfig{QueueTime: time.Second, GenerationTime: 2 * time.Second})
		done := h.waitFinal(job.ID, 30*time.Second)
		h.waitEvent(job.ID, store.EventDone, 10*time.Second)
		testutil.Eventually(b, 10*time.Second, "every message delivered", func() bool {
			msgs, _ := h.store.Messages(ctx, job.ID)
			evs, _ := h.store.Events(ctx, job.ID)
			for _, m := range msgs {
				if m.Status != store.MessageDelivered {
					return false
				}
			}
			return len(msgs) == len(evs)
		})
		for _, k := range h.store.KeysOf(done.ID) {
			n, err := h.redis.Client.MemoryUsage(ctx, k).Result()
			if err == nil {
				total += n
				keys++
			}
		}
		// Tasks that completed are deleted by asynq (no Retention): count
		// whatever is left of this job's tasks in either queue.
		for _, q := range []string{h.queues.Previews, h.queues.Webhooks} {
			iter := h.redis.Client.Scan(ctx, 0, "asynq:{"+q+"}:t:*"+done.ID+"*", 1000).Iterator()
			for iter.Next(ctx) {
				if n, err := h.redis.Client.MemoryUsage(ctx, iter.Val()).Result(); err == nil {
					taskBytes += n
				}
			}
		}
	}
	b.ReportMetric(float64(total+taskBytes)/float64(b.N), "redis-bytes/job")
	b.ReportMetric(float64(taskBytes)/float64(b.N), "task-bytes/job")
	b.ReportMetric(float64(keys)/float64(b.N), "keys/job")
}
