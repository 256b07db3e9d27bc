package worker_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestEventsNeedNoFanoutHop: an event's messages are created by the commit
// that creates the event, and the job's own webhook is delivered right
// after it. Judged from asynq's own counters: with only the job's
// webhook_url, a job run to the end leaves no task processed on either
// webhook queue; with an endpoint too, exactly one delivery task per event
// (the endpoint's), no fan-out; and leaves its outbox empty.
func TestEventsNeedNoFanoutHop(t *testing.T) {
	tests := []struct {
		name      string
		endpoints int
	}{
		{"job webhook only", 0},
		{"and an endpoint", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			ctx := context.Background()
			var ep store.Endpoint
			if tt.endpoints > 0 {
				ep, _ = h.addEndpoint(testutil.NewReceiver(t).URL)
			}
			h.start()
			job := h.request("SESSION_ADDR_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
			h.waitFinal(job.ID, 30*time.Second)
			h.waitEvent(job.ID, store.EventDone, 10*time.Second)
			evs, err := h.store.Events(ctx, job.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := len(evs) * (1 + tt.endpoints)
			testutil.Eventually(t, 10*time.Second, "every message delivered", func() bool {
				msgs, _ := h.store.Messages(ctx, job.ID)
				n := 0
				for _, m := range msgs {
					if m.Status == store.MessageDelivered {
						n++
					}
				}
				return n == want
			})
			msgs, _ := h.store.Messages(ctx, job.ID)
			for _, m := range msgs {
				if m.Destination == "job" && m.AttemptsN != 1 {
					t.Errorf("message %s: %d attempts, want the one made right after the commit", m.ID, m.AttemptsN)
				}
				if tt.endpoints > 0 && m.Destination != "job" && m.Destination != ep.ID {
					t.Errorf("message %s to %q", m.ID, m.Destination)
				}
			}
			processed := 0
			for _, q := range h.queues.Deliveries() {
				info, err := h.inspector.GetQueueInfo(q)
				if err != nil {
					continue // a queue never used does not exist
				}
				processed += info.Processed
			}
			if wantTasks := len(evs) * tt.endpoints; processed != wantTasks {
				t.Fatalf("%d events, %d endpoints: %d webhook tasks processed, want %d (one delivery per endpoint message, no fan-out)",
					len(evs), tt.endpoints, processed, wantTasks)
			}
			// The entries of messages delivered right after their commit
			// are acknowledged with their records, the rest by the flush.
			if ob, err := h.store.Outbox(ctx, job.ID); err != nil || len(ob) != 0 {
				t.Errorf("outbox after the job's end: %v (err %v), want it empty", ob, err)
			}
		})
	}
}

// TestOnlyALastRetryIndexesItsOutbox: a task handler's commits write no
// outbox index entry while the task has retries left (should the run die
// before its flush, asynq runs it again, and the re-run flushes), but on
// its last retry, which asynq archives after a crash with no handler left
// to flush, they do, for the sweeper. Judged from the index writes the
// worker's Redis client sent for the job, and the job's end.
func TestOnlyALastRetryIndexesItsOutbox(t *testing.T) {
	tests := []struct {
		name        string
		lastRetry   bool // the request task runs on its last retry
		wantIndexed bool
	}{
		{"retries left", false, false},
		{"last retry", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			ctx := context.Background()
			job := h.request("SESSION_LAST_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
			if tt.lastRetry {
				// The same task, but with no retry left.
				p := tasks.RequestPreview{JobID: job.ID, SessionCode: job.SessionCode}
				if err := h.inspector.DeleteTask(h.queues.Previews, p.TaskID()); err != nil {
					t.Fatalf("delete the request task: %v", err)
				}
				task, err := tasks.NewTask(p, h.queues, time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := asynq.NewClientFromRedisClient(h.redis.Client).EnqueueContext(ctx, task, asynq.MaxRetry(0)); err != nil {
					t.Fatal(err)
				}
			}
			// The outbox index writes the worker's client sends for the job:
			// the index script's calls naming it, whatever the pipeline.
			indexKey := h.redis.Namespace + ":index:outbox"
			writes := &testutil.CommandCounter{Match: func(cmd redis.Cmder) bool {
				args := cmd.Args()
				return len(args) >= 5 && (args[0] == "evalsha" || args[0] == "eval") && args[3] == indexKey && args[4] == job.ID
			}}
			opts, err := redis.ParseURL(h.redis.URL)
			if err != nil {
				t.Fatal(err)
			}
			rdb := redis.NewClient(opts)
			t.Cleanup(func() { _ = rdb.Close() })
			rdb.AddHook(writes)
			h.workerRedis = rdb
			h.start()
			if got := h.waitFinal(job.ID, 30*time.Second); got.Status != store.StatusDone {
				t.Fatalf("job %s, want done", got.Status)
			}
			h.waitEvent(job.ID, store.EventDone, 10*time.Second)
			if n := writes.Load(); (n > 0) != tt.wantIndexed {
				t.Fatalf("%d outbox index writes for the job, want some: %v", n, tt.wantIndexed)
			}
		})
	}
}

// inlineAnswers are what a receiver answers an inline attempt, one of
// each outcome: delivered, failed (its task retries), refused for good.
var inlineAnswers = []struct {
	name   string
	status int
}{
	{"delivered inline", http.StatusOK},
	{"failed inline, retried by its task", http.StatusServiceUnavailable},
	{"refused for good inline", http.StatusGone},
}

// TestTheNextPollGoesAheadOfTheInlineWebhook: the commit that records the
// accepted preview enqueues its next poll before the accepted webhook's
// inline attempt, and acknowledges the poll's outbox entry with that
// attempt's record, or, when the attempt saves none, in the flush. Either
// way the job's poll chain goes on to its end and no entry is left behind,
// whatever the receiver answers.
func TestTheNextPollGoesAheadOfTheInlineWebhook(t *testing.T) {
	for _, tt := range inlineAnswers {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.rcv.SetStatus(tt.status)
			h.start()
			ctx := context.Background()
			job := h.request("SESSION_AHEAD_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: 2 * time.Second})
			testutil.Eventually(t, 20*time.Second, "the accepted webhook's inline attempt", func() bool {
				return len(h.rcv.Deliveries()) > 0
			})
			if got := h.waitFinal(job.ID, 30*time.Second); got.Status != store.StatusDone {
				t.Fatalf("job ended %s, want done: the poll chain broke", got.Status)
			}
			testutil.Eventually(t, 10*time.Second, "the outbox acknowledged", func() bool {
				ob, err := h.store.Outbox(ctx, job.ID)
				return err == nil && len(ob) == 0
			})
		})
	}
}

// TestInlineAttemptsLeaveNoSlotHeld: the commit that makes an event takes
// the delivery slots of its inline attempt in its own round trip; every
// path after it gives them back (the attempt's record, or the release of
// an attempt not made), so once the job is done no slot is held, whatever
// the receiver answered. A slot left held would keep its set until its
// lease ended, 40 s on.
func TestInlineAttemptsLeaveNoSlotHeld(t *testing.T) {
	for _, tt := range inlineAnswers {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.opts.Webhooks.Schedule = []time.Duration{time.Hour} // the task's retry comes after the test
			h.rcv.SetStatus(tt.status)
			h.start()
			job := h.request("SESSION_SLOTS_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
			if got := h.waitFinal(job.ID, 30*time.Second); got.Status != store.StatusDone {
				t.Fatalf("job ended %s, want done", got.Status)
			}
			testutil.Eventually(t, 10*time.Second, "every inline attempt made", func() bool {
				return len(h.rcv.Deliveries()) >= 2 || (tt.status == http.StatusGone && len(h.rcv.Deliveries()) >= 1)
			})
			testutil.Eventually(t, 10*time.Second, "no delivery slot held", func() bool {
				return len(h.scanKeys(h.redis.Namespace+":slots:*")) == 0
			})
		})
	}
}
