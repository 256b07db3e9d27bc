package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/worker"
)

// fastLiveness makes heartbeats and rescues quick enough for a test.
func fastLiveness(h *harness) {
	h.opts.HeartbeatInterval = 100 * time.Millisecond
	h.opts.DeadAfter = time.Second
	h.opts.RescueInterval = 200 * time.Millisecond
}

// deadWorker registers a worker that beat once and died while running p:
// its heartbeat expires, its in-flight record stays.
func (h *harness) deadWorker(p tasks.Payload, retried, maxRetry int) string {
	h.t.Helper()
	ctx := context.Background()
	id := "dead-" + testutil.RandomHex(4)
	if err := h.store.Beat(ctx, id, "test", 20*time.Millisecond); err != nil {
		h.t.Fatal(err)
	}
	h.recordInflight(id, p, retried, maxRetry)
	testutil.Eventually(h.t, 5*time.Second, "the dead worker's heartbeat to expire", func() bool {
		alive, err := h.store.Alive(ctx, []string{id})
		return err == nil && !alive[id]
	})
	return id
}

func (h *harness) recordInflight(workerID string, p tasks.Payload, retried, maxRetry int) {
	h.t.Helper()
	raw, err := json.Marshal(p)
	if err != nil {
		h.t.Fatal(err)
	}
	queue := h.queues.For(p)
	if _, _, err := h.store.StartTask(context.Background(), workerID, p.TaskID(), store.InflightTask{
		Type: p.TaskType(), Queue: queue, Payload: raw, Retried: retried, MaxRetry: maxRetry, StartedAt: time.Now(),
	}, store.ReadAhead{}); err != nil {
		h.t.Fatal(err)
	}
}

// rescueTasks lists the rescue copies asynq holds in a queue, in any state.
func (h *harness) rescueTasks(queue string) []*asynq.TaskInfo {
	h.t.Helper()
	var out []*asynq.TaskInfo
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		h.inspector.ListPendingTasks, h.inspector.ListActiveTasks, h.inspector.ListScheduledTasks,
		h.inspector.ListRetryTasks, h.inspector.ListArchivedTasks, h.inspector.ListCompletedTasks,
	}
	for _, list := range lists {
		infos, err := list(queue, asynq.PageSize(1000))
		if err != nil && !strings.Contains(err.Error(), "queue not found") {
			h.t.Fatal(err)
		}
		for _, info := range infos {
			if strings.Contains(info.ID, "~r") {
				out = append(out, info)
			}
		}
	}
	return out
}

// TestRescuersRacingMakeOneCopy lets many rescuers in three workers race
// over one dead worker's task: exactly one rescue copy exists, with the
// original's remaining retry budget, and the dead worker's records are gone.
// A rescuer that read the record before it was removed and acts after the
// copy completed makes no second copy either.
func TestRescuersRacingMakeOneCopy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastLiveness)
	ctx := context.Background()
	// A poll of a job that does not exist: the copy completes at once.
	poll := tasks.PollPreview{JobID: uuid.NewString(), SessionCode: "SESSION_RACE_" + testutil.RandomHex(4), Seq: 3}
	dead := h.deadWorker(poll, 2, 10)

	rescuers := []*worker.Worker{h.newWorker(), h.newWorker(), h.newWorker()}
	var created atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, w := range rescuers {
		for range 4 {
			wg.Go(func() {
				<-start
				n, err := w.Rescue(ctx)
				if err != nil {
					t.Errorf("Rescue: %v", err)
				}
				created.Add(int64(n))
			})
		}
	}
	close(start)
	wg.Wait()

	copies := h.rescueTasks(h.queues.Polls)
	if len(copies) != 1 || created.Load() != 1 {
		t.Fatalf("%d rescue copies in asynq, %d reported created; want 1 and 1", len(copies), created.Load())
	}
	rid := worker.RescueTaskID(poll.TaskID(), dead)
	if c := copies[0]; c.ID != rid || c.Type != tasks.TypePollPreview || string(c.Payload) != mustJSON(t, poll) || c.MaxRetry != 8 {
		t.Errorf("rescue copy = id %s type %s payload %s max retry %d; want %s, the original's payload, 10-2 retries",
			c.ID, c.Type, c.Payload, c.MaxRetry, rid)
	}
	if recs, err := h.store.InflightTasks(ctx, dead); err != nil || len(recs) != 0 {
		t.Errorf("dead worker's in-flight record after the rescue: %v (err %v)", recs, err)
	}
	beats, err := h.store.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range beats {
		if b.ID == dead {
			t.Error("the dead worker is still registered after its tasks were rescued")
		}
	}

	// The copy runs and completes; a stale rescuer then acts on the record
	// it read before it was removed.
	stop := h.start()
	testutil.Eventually(t, 10*time.Second, "the rescue copy to complete", func() bool {
		info := h.taskInfo(h.queues.Polls, rid)
		return info == nil || info.State == asynq.TaskStateCompleted
	})
	stop()
	if err := h.store.Beat(ctx, dead, "test", 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	h.recordInflight(dead, poll, 2, 10)
	time.Sleep(50 * time.Millisecond) // the heartbeat's 20 ms TTL runs out
	if n, err := rescuers[0].Rescue(ctx); err != nil || n != 0 {
		t.Errorf("a stale rescue after the copy completed created %d copies (err %v), want 0", n, err)
	}
	if copies := h.rescueTasks(h.queues.Polls); len(copies) != 1 {
		t.Errorf("%d rescue copies after a stale rescue, want 1", len(copies))
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLiveWorkersTasksAreNeverRescued runs a job whose every upstream call
// takes three times the heartbeat's TTL on two live workers, whose rescuers
// run (and are called by hand besides): no task of a live worker is ever
// copied, and the job ends done with one POST.
func TestLiveWorkersTasksAreNeverRescued(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastLiveness)
	ctx := context.Background()
	busy := h.newWorker()
	h.run(busy)
	rescuer := h.newWorker()
	h.run(rescuer)

	code := "SESSION_LIVE_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{Latency: 3 * time.Second, GenerationTime: time.Second})
	var sawInflight bool
	deadline := time.Now().Add(time.Minute)
	for {
		j := h.job(job.ID)
		if j.Status.Final() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job still %s after a minute", j.Status)
		}
		for _, w := range []*worker.Worker{busy, rescuer} { // both serve the queues
			recs, err := h.store.InflightTasks(ctx, w.ID())
			if err != nil {
				t.Fatal(err)
			}
			sawInflight = sawInflight || len(recs) > 0
		}
		if _, err := rescuer.Rescue(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !sawInflight {
		t.Error("the busy worker never had an in-flight record: the test proved nothing")
	}
	for _, q := range h.queues.All() {
		for _, c := range h.rescueTasks(q) {
			t.Errorf("a live worker's task was rescued: %s", c.ID)
		}
	}
	h.check(t, job.ID, code, store.StatusDone, "", 1, store.OutcomeAccepted, 0)
}

// TestSupersededOriginalDoesNothing: after a rescue, the original task
// comes back (asynq's recoverer re-runs a dead worker's task a minute
// later) while its copy waits out a Retry-After. The original must not run:
// it would POST again inside the window CSM asked for and fork the job's
// request retries into two chains.
func TestSupersededOriginalDoesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastLiveness)
	ctx := context.Background()
	code := "SESSION_SUPERSEDED_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second,
		Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault429, RetryAfter: 10 * time.Second}}})
	original := tasks.RequestPreview{JobID: job.ID, SessionCode: code}
	// The task as a dead worker left it; asynq brings the original back
	// later (below), so take it out of the queue meanwhile.
	if err := h.inspector.DeleteTask(h.queues.Previews, original.TaskID()); err != nil {
		t.Fatal(err)
	}
	dead := h.deadWorker(original, 0, 60)
	w := h.newWorker()
	if n, err := w.Rescue(ctx); err != nil || n != 1 {
		t.Fatalf("Rescue = %d, %v; want 1 copy", n, err)
	}
	h.run(w)
	rid := worker.RescueTaskID(original.TaskID(), dead)
	testutil.Eventually(t, 10*time.Second, "the copy's POST to be refused and retried", func() bool {
		info := h.taskInfo(h.queues.Previews, rid)
		return info != nil && info.State == asynq.TaskStateRetry
	})

	// asynq's recovery of the original, as its recoverer does it.
	task, err := tasks.NewTask(original, h.queues, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(h.redis.Client).Enqueue(task); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the original to be processed", func() bool {
		return h.taskInfo(h.queues.Previews, original.TaskID()) == nil
	})
	if n := h.sim.Requests(code, csmsim.EndpointPreview); n != 1 {
		t.Errorf("%d preview POSTs inside the Retry-After window, want 1: the superseded original ran", n)
	}
	h.check(t, job.ID, code, store.StatusDone, "", 1, store.OutcomeAccepted, 0)
}

// strand leaves a pending task as asynq leaves one whose state update after
// the handler's return was lost: active, under a lease nobody extends, with
// no failure recorded. (asynq v0.26.0 retries that update with the task's
// cancelled context, so only its recoverer would bring the task back.)
func (h *harness) strand(queue, id string) {
	h.t.Helper()
	ctx := context.Background()
	rdb := h.redis.Client
	prefix := "asynq:{" + queue + "}:"
	if n, err := rdb.LRem(ctx, prefix+"pending", 0, id).Result(); err != nil || n != 1 {
		h.t.Fatalf("task %s not pending (%d, %v)", id, n, err)
	}
	if err := rdb.LPush(ctx, prefix+"active", id).Err(); err != nil {
		h.t.Fatal(err)
	}
	if err := rdb.HSet(ctx, prefix+"t:"+id, "state", "active").Err(); err != nil {
		h.t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, prefix+"lease", redis.Z{Score: float64(time.Now().Add(time.Hour).Unix()), Member: id}).Err(); err != nil {
		h.t.Fatal(err)
	}
}

// TestTaskStrandedAfterItsReturnIsRescued: a handler returned an error and
// asynq's update that should have scheduled the retry was lost, so the task
// sits active until asynq's recoverer (a minute or more). The worker's own
// rescue round finds its record marked returned, sees the task stranded and
// enqueues a copy; a returned task that asynq did take back gets none.
func TestTaskStrandedAfterItsReturnIsRescued(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		stranded bool
		copies   int
	}{
		{"stranded as active", true, 1},
		{"taken back by asynq", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, fastLiveness)
			ctx := context.Background()
			code := "SESSION_STRANDED_" + testutil.RandomHex(4)
			job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
			req := tasks.RequestPreview{JobID: job.ID, SessionCode: code}
			if tc.stranded {
				h.strand(h.queues.Previews, req.TaskID())
			}
			w := h.newWorker()
			raw := mustJSON(t, req)
			returned := time.Now().Add(-5 * time.Second)
			if err := h.store.RecordTask(ctx, w.ID(), req.TaskID(), store.InflightTask{
				Type: req.TaskType(), Queue: h.queues.Previews, Payload: json.RawMessage(raw), Retried: 0, MaxRetry: 60,
				StartedAt: returned.Add(-time.Second), ReturnedAt: returned, RetryAt: returned.Add(time.Second), Failed: true,
			}); err != nil {
				t.Fatal(err)
			}
			n, err := w.Rescue(ctx)
			if err != nil || n != tc.copies {
				t.Fatalf("Rescue = %d, %v; want %d copies", n, err, tc.copies)
			}
			if recs, err := h.store.InflightTasks(ctx, w.ID()); err != nil || len(recs) != 0 {
				t.Errorf("own record after the round: %v (err %v), want it settled", recs, err)
			}
			if tc.stranded {
				c := h.taskInfo(h.queues.Previews, worker.RescueTaskID(req.TaskID(), w.ID()))
				if c == nil || c.MaxRetry != 59 {
					t.Fatalf("rescue copy %+v, want one with 60-0-1 retries left", c)
				}
			}
			h.run(w)
			h.check(t, job.ID, code, store.StatusDone, "", 1, store.OutcomeAccepted, 0)
		})
	}
}

// TestEndedTasksRecordsAreCleared: the in-flight records of tasks that
// ended well are removed soon after, in batches, without waiting for a
// rescue round (slowed here past the test's length).
func TestEndedTasksRecordsAreCleared(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(h *harness) {
		h.opts.HeartbeatInterval = 100 * time.Millisecond
		h.opts.DeadAfter = time.Minute
		h.opts.RescueInterval = time.Minute
	})
	ctx := context.Background()
	w := h.newWorker()
	h.run(w)
	// Polls of jobs that do not exist: each ends at once, well.
	const n = 30
	for i := range n {
		h.enqueueRaw(tasks.PollPreview{JobID: uuid.NewString(), SessionCode: "SESSION_ENDED_" + testutil.RandomHex(4), Seq: i + 1},
			asynq.Queue(h.queues.Polls))
	}
	testutil.Eventually(t, 10*time.Second, "every poll to complete", func() bool {
		info, err := h.inspector.GetQueueInfo(h.queues.Polls)
		return err == nil && info.Pending == 0 && info.Active == 0 && info.Processed >= n
	})
	testutil.Eventually(t, 10*time.Second, "the ended tasks' records to be cleared", func() bool {
		recs, err := h.store.InflightTasks(ctx, w.ID())
		return err == nil && len(recs) == 0
	})
}
