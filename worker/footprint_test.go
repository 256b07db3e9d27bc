package worker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// BenchmarkFinishedJobFootprint runs real jobs to the end (accepted,
// progress and done events, all delivered) and reports the Redis memory one
// finished job keeps for its retention period, measured with MEMORY USAGE on
// every key of the job (its record, events and delivery records: its
// events' ids carry the job, so there is no event-to-job lookup key), asynq's
// task keys included. Listing index entries
// (two sorted-set members) come on top.
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
		for _, q := range h.queues.All() {
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

// BenchmarkWebhookDeliveries measures the deliveries per second one worker
// sustains to a fast local receiver (fan-out, signing, sending, delivery
// records included), and the Redis bytes each stored message costs with its
// attempt log, beside the event body it points at.
//
//	go test -run '^$' -bench WebhookDeliveries -benchtime 2000x ./worker/
func BenchmarkWebhookDeliveries(b *testing.B) {
	h := newHarness(b)
	h.opts.WebhookConcurrency = 10
	h.opts.Webhooks.PerDestination = 10
	var received atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		received.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	ctx := context.Background()
	now := time.Now()
	job := store.Job{ID: uuid.NewString(), Status: store.StatusGenerating, SessionCode: "SESSION_BENCH", WebhookURL: srv.URL,
		CreatedAt: now, UpdatedAt: now, Deadline: now.Add(time.Hour), History: []store.Transition{{At: now, Status: store.StatusGenerating}}}
	if _, _, _, err := h.store.Create(ctx, job, "fp", nil); err != nil {
		b.Fatal(err)
	}
	for done := 0; done < b.N; {
		batch := min(200, b.N-done)
		if _, err := h.store.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
			var change store.Change
			for range batch {
				j.Polls++
				tasks.Emit(&change, j, store.EventProgress)
			}
			return change, nil
		}); err != nil {
			b.Fatal(err)
		}
		done += batch
	}
	enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(h.redis.Client), h.store, h.queues)
	if err := enq.Flush(ctx, job.ID); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	stop := h.start()
	testutil.Eventually(b, 10*time.Minute, "every delivery", func() bool { return received.Load() >= int64(b.N) })
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
	if h.redis.Real() {
		keys := h.store.KeysOf(job.ID)
		events, _ := h.redis.Client.MemoryUsage(ctx, keys[1]).Result()
		messages, _ := h.redis.Client.MemoryUsage(ctx, keys[3]).Result()
		b.ReportMetric(float64(messages)/float64(b.N), "redis-bytes/message")
		b.ReportMetric(float64(events)/float64(b.N), "redis-bytes/event")
	}
}
