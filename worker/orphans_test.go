package worker_test

import (
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// TestDequeuedTaskWithALostReplyIsRescued loses the reply of asynq's
// dequeue script on the Redis link: the task is active, leased, and no
// worker has it (go-redis re-sent the script, which found nothing more).
// asynq alone brings it back only after its 30 s lease and its recoverer's
// tick; the orphan scan gives it to a worker in seconds.
func TestDequeuedTaskWithALostReplyIsRescued(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.HeartbeatInterval = 100 * time.Millisecond
	h.opts.DeadAfter = time.Second
	h.opts.RescueInterval = 300 * time.Millisecond
	proxy := lossyRedis(t, h)
	code := "SESSION_ORPHAN_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
	// The dequeue script is the only command naming the queue's paused key.
	proxy.LoseReplyTo("{" + h.queues.Previews + "}:paused")
	start := time.Now()
	h.start()
	testutil.Eventually(t, 10*time.Second, "the dequeue reply to be lost", func() bool { return proxy.Lost() == 1 })
	active, err := h.inspector.ListActiveTasks(h.queues.Previews)
	if err != nil || len(active) != 1 {
		t.Fatalf("active tasks after the lost dequeue reply: %d (%v), want the stranded one", len(active), err)
	}
	// Under asynq's own recovery the job cannot move before the stranded
	// task's 30 s lease expires; the bound below is well inside it.
	done := h.waitFinal(job.ID, 25*time.Second)
	if done.Status != store.StatusDone {
		t.Fatalf("status = %s %+v", done.Status, done.Error)
	}
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Fatalf("accepted preview POSTs = %d, want 1", got)
	}
	t.Logf("a task stranded by a lost dequeue reply moved again; the job was done %.1fs after the worker started", time.Since(start).Seconds())
}
