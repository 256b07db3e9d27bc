package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestBacklogOfRequestsDoesNotDelayRunningJobs: jobs already generating
// when a burst of new requests arrives get their outcome while the burst is
// still being sent upstream. Their polls are due before the burst's
// requests are taken, and their done webhooks are the most urgent
// deliveries; in one FIFO with the requests, the polls would wait for the
// whole burst (which is what the test saw before the queues were split:
// every request of the burst was sent before any running job finished).
func TestBacklogOfRequestsDoesNotDelayRunningJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("enqueues a backlog of 2,000 jobs")
	}
	t.Parallel()
	const running, backlog = 5, 2000
	h := newHarness(t, withDeadline(10*time.Minute))
	ctx := context.Background()
	prefix := "SESSION_PRIO_" + testutil.RandomHex(4) + "_"

	// The running jobs: accepted upstream, then their worker goes away with
	// their next polls scheduled (a minute on: they stay scheduled while
	// the burst is queued).
	h.opts.Polling.Interval, h.opts.Polling.MaxInterval = time.Minute, time.Minute
	stopFirst := h.start()
	h.opts.Polling.Interval, h.opts.Polling.MaxInterval = time.Second, time.Second
	codes := make([]string, running)
	jobs := map[string]bool{}
	for i := range codes {
		codes[i] = fmt.Sprintf("%sRUN_%d", prefix, i)
		jobs[h.request(codes[i], csmsim.SessionConfig{GenerationTime: 3 * time.Second}).ID] = true
	}
	var polls []string
	testutil.Eventually(t, 20*time.Second, "the running jobs to be generating, their next polls scheduled", func() bool {
		polls = polls[:0]
		for id := range jobs {
			j := h.job(id)
			poll := tasks.PollPreview{JobID: id, SessionCode: j.SessionCode, Seq: j.Poll.Seq}
			info := h.taskInfo(h.queues.For(poll), poll.TaskID())
			if j.Status != store.StatusGenerating || info == nil || info.State != asynq.TaskStateScheduled {
				return false
			}
			polls = append(polls, poll.TaskID())
		}
		return true
	})
	stopFirst()
	for _, c := range codes {
		if n := h.sim.AcceptedPreviews(c); n != 1 {
			t.Fatalf("%d accepted previews for running session %s, want 1", n, c)
		}
	}

	// The burst, all queued before any worker runs.
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				h.request(fmt.Sprintf("%sNEW_%d", prefix, i), csmsim.SessionConfig{GenerationTime: time.Millisecond})
			}
		})
	}
	for i := range backlog {
		next <- i
	}
	close(next)
	wg.Wait()
	if n, err := h.inspector.GetQueueInfo(h.queues.Previews); err != nil || n.Pending != backlog {
		t.Fatalf("request backlog: %+v (%v), want %d pending", n, err, backlog)
	}

	// The running jobs' sessions are done upstream by now.
	client, err := csm.New(csm.Options{BaseURL: h.simURL, APIKey: testutil.SimAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the running jobs' sessions to be done upstream", func() bool {
		for _, c := range codes {
			s, err := client.GetSession(ctx, c)
			if err != nil || s.Phase() != csm.PhaseDone {
				return false
			}
		}
		return true
	})

	// The running jobs' polls fall due now, behind the burst: moved to their
	// queue's pending list as asynq's forwarder moves every due task.
	for _, id := range polls {
		if err := h.inspector.RunTask(h.queues.For(tasks.PollPreview{}), id); err != nil {
			t.Fatalf("make poll %s due: %v", id, err)
		}
	}
	start := time.Now()
	h.start()
	var lastDone time.Time
	h.rcv.WaitFor(t, 5*time.Minute, "the running jobs' done webhooks", func(ds []testutil.Delivery) bool {
		seen := map[string]bool{}
		for _, d := range ds {
			var body store.EventBody
			if json.Unmarshal(d.Body, &body) == nil && body.Type == store.EventDone && jobs[body.Data.ID] {
				seen[body.Data.ID] = true
				lastDone = d.At
			}
		}
		return len(seen) == running
	})
	sent := h.sim.TotalAcceptedPreviews() - running
	t.Logf("the %d running jobs' done webhooks arrived %.2fs after the worker started, when %d of the %d queued requests had been sent upstream",
		running, lastDone.Sub(start).Seconds(), sent, backlog)
	if sent >= backlog {
		t.Fatalf("every one of the %d queued requests was sent upstream before the running jobs' done webhooks arrived: polls and final webhooks waited behind the backlog", backlog)
	}
	if info, err := h.inspector.GetQueueInfo(h.queues.Previews); err == nil {
		t.Logf("requests still queued then: %d pending", info.Pending)
	}
}

// TestMeasureDetectionUnderBacklog measures how late running jobs learn
// that their session is done (job finished_at minus the simulator's done
// time) while N new requests are queued, for N = 100 and 10,000. It asserts
// nothing about speed: set PREVIEWD_MEASURE_BACKLOG=1 and read the log.
func TestMeasureDetectionUnderBacklog(t *testing.T) {
	if os.Getenv("PREVIEWD_MEASURE_BACKLOG") == "" {
		t.Skip("a measurement: set PREVIEWD_MEASURE_BACKLOG=1")
	}
	for _, backlog := range []int{100, 10000} {
		t.Run(strconv.Itoa(backlog), func(t *testing.T) { measureDetection(t, backlog) })
	}
}

func measureDetection(t *testing.T, backlog int) {
	const running = 100
	const generation = 20 * time.Second // outlasts queueing the backlog
	h := newHarness(t, withDeadline(30*time.Minute))
	h.opts.Concurrency = 10
	h.log = zap.NewNop()
	h.opts.Logger = h.log
	prefix := "SESSION_MEASURE_" + testutil.RandomHex(4) + "_"
	h.start()
	codes := make([]string, running)
	gen := map[string]time.Duration{}
	ids := map[string]string{}
	for i := range codes {
		codes[i] = fmt.Sprintf("%sRUN_%d", prefix, i)
		// Done times spread over 10 s, so that they fall while the backlog
		// is being worked through.
		gen[codes[i]] = generation + time.Duration(i)*100*time.Millisecond
		ids[codes[i]] = h.request(codes[i], csmsim.SessionConfig{GenerationTime: gen[codes[i]]}).ID
	}
	testutil.Eventually(t, time.Minute, "the running jobs' previews to be accepted", func() bool {
		for _, c := range codes {
			if h.sim.AcceptedPreviews(c) != 1 {
				return false
			}
		}
		return true
	})
	queued := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				h.request(fmt.Sprintf("%sNEW_%d", prefix, i), csmsim.SessionConfig{GenerationTime: time.Millisecond})
			}
		})
	}
	for i := range backlog {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("%d requests queued in %.1fs", backlog, time.Since(queued).Seconds())
	var delays []time.Duration
	var pendingAtLast int
	testutil.Eventually(t, 30*time.Minute, "the running jobs to finish", func() bool {
		for _, c := range codes {
			if !h.job(ids[c]).Status.Final() {
				return false
			}
		}
		if info, err := h.inspector.GetQueueInfo(h.queues.Previews); err == nil {
			pendingAtLast = info.Pending
		}
		return true
	})
	for _, c := range codes {
		j := h.job(ids[c])
		call, _ := h.sim.LastPreview(c)
		delays = append(delays, j.FinishedAt.Sub(call.At.Add(gen[c])))
	}
	slices.Sort(delays)
	p := func(q float64) time.Duration { return delays[min(len(delays)-1, int(q*float64(len(delays))))] }
	t.Logf("backlog %d: detection delay over %d running jobs p50 %s p99 %s max %s; %d requests still pending when the last finished",
		backlog, running, p(0.5).Round(time.Millisecond), p(0.99).Round(time.Millisecond), delays[len(delays)-1].Round(time.Millisecond), pendingAtLast)
}

// TestTasksOfThePreviousVersionAreServed: during a rolling upgrade the
// queues hold tasks that an older version enqueued, polls in the previews
// queue among them. They are served, and the job ends with its webhook.
func TestTasksOfThePreviousVersionAreServed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.Polling.Interval, h.opts.Polling.MaxInterval = time.Minute, time.Minute
	stop := h.start()
	code := "SESSION_UPGRADE_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Millisecond})
	var poll tasks.PollPreview
	testutil.Eventually(t, 20*time.Second, "the job's next poll to be scheduled", func() bool {
		j := h.job(job.ID)
		poll = tasks.PollPreview{JobID: job.ID, SessionCode: code, Seq: j.Poll.Seq}
		info := h.taskInfo(h.queues.Polls, poll.TaskID())
		return j.Status == store.StatusGenerating && info != nil && info.State == asynq.TaskStateScheduled
	})
	stop()
	// Where the previous version put it, by that version's name for the
	// queue of requests and polls, due now.
	legacy := h.redis.Namespace + ":previews"
	if err := h.inspector.DeleteTask(h.queues.Polls, poll.TaskID()); err != nil {
		t.Fatal(err)
	}
	task, err := tasks.NewTask(poll, h.queues, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(h.redis.Client).Enqueue(task, asynq.Queue(legacy)); err != nil {
		t.Fatal(err)
	}
	h.start()
	if done := h.waitFinal(job.ID, 20*time.Second); done.Status != store.StatusDone {
		t.Fatalf("status %s %+v, want done", done.Status, done.Error)
	}
	h.waitEvent(job.ID, store.EventDone, 10*time.Second)
}
