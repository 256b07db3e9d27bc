package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

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
