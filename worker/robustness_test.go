package worker_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
	"github.com/previewd/previewd/worker"
)

// TestShutdownDrainsWithoutSpendingARetry stops a worker while a request is
// in flight: Run returns promptly, the task is not counted as failed, and
// the next worker finishes the job.
func TestShutdownDrainsWithoutSpendingARetry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.ShutdownTimeout = 30 * time.Second // only the cancelled context can make Run return early
	stop := h.start()
	code := "SESSION_DRAIN_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{Latency: time.Minute, GenerationTime: time.Second})
	taskID := "request:" + job.ID
	testutil.Eventually(t, 10*time.Second, "the request task to be active", func() bool {
		info := h.taskInfo(h.queues.Previews, taskID)
		return info != nil && info.State == asynq.TaskStateActive
	})
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("worker did not drain: Run still waiting on the in-flight task")
	}
	info := h.taskInfo(h.queues.Previews, taskID)
	if info == nil {
		t.Fatal("the interrupted request task is gone")
	}
	if info.Retried != 0 {
		t.Errorf("interrupted task retried count = %d, want 0", info.Retried)
	}
	if h.sim.AcceptedPreviews(code) != 0 {
		t.Fatal("a POST was accepted although the baseline read never returned")
	}
	h.sim.AddSession(code, csmsim.SessionConfig{GenerationTime: time.Second}) // the slowness clears
	h.start()
	h.check(t, job.ID, code, store.StatusDone, "", 1, store.OutcomeAccepted, 0)
}

// TestMalformedTasksAreArchived sends tasks no handler can process: they
// are archived with the reason on the first attempt and the worker goes on.
func TestMalformedTasksAreArchived(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	client := asynq.NewClientFromRedisClient(h.redis.Client)
	bad := []struct {
		id, typ, payload, reason string
	}{
		{"bad-json", tasks.TypePollPreview, `{"job_id":`, "malformed"},
		{"bad-field", tasks.TypeRequestPreview, `{"job_id":"not-a-uuid","session_code":"S"}`, "job_id"},
		{"unknown-field", tasks.TypeRequestPreview, `{"job_id":"7f1c2a51-8c3e-4d49-9a0e-6b1f2f6d0c3a","session_code":"S","x":1}`, "unknown field"},
		{"unknown-type", "preview:teleport", `{}`, "unknown task type"},
	}
	for _, b := range bad {
		if _, err := client.Enqueue(asynq.NewTask(b.typ, []byte(b.payload)), asynq.Queue(h.queues.Previews), asynq.TaskID(b.id), asynq.MaxRetry(5)); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range bad {
		testutil.Eventually(t, 10*time.Second, b.id+" archived", func() bool {
			info := h.taskInfo(h.queues.Previews, b.id)
			return info != nil && info.State == asynq.TaskStateArchived
		})
		info := h.taskInfo(h.queues.Previews, b.id)
		if info.Retried != 0 || !strings.Contains(info.LastErr, b.reason) {
			t.Errorf("%s: retried %d, last error %q (want it to mention %q)", b.id, info.Retried, info.LastErr, b.reason)
		}
	}
	// The worker is still alive and working.
	code := "SESSION_AFTER_BAD_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
	h.check(t, job.ID, code, store.StatusDone, "", 1, store.OutcomeAccepted, 0)
}

// panickyCSM panics on its first session read.
type panickyCSM struct {
	worker.CSM
	panicked atomic.Bool
}

func (p *panickyCSM) GetSession(ctx context.Context, code string) (*csm.Session, error) {
	if p.panicked.CompareAndSwap(false, true) {
		var spins []string
		_ = spins[len(code)] // an index out of range: a real bug, not a thrown string
	}
	return p.CSM.GetSession(ctx, code)
}

// TestPanicIsArchivedAndTheJobFailed: a handler bug archives the task with
// the panic, fails the job with the reason, and the worker keeps running.
func TestPanicIsArchivedAndTheJobFailed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	real, err := csm.New(csm.Options{BaseURL: h.simURL, APIKey: testutil.SimAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := webhook.ParseSecret(h.secretText)
	w := worker.New(h.redis.Client, worker.Deps{
		Store: h.store, CSM: &panickyCSM{CSM: real},
		Sender: webhook.NewSender(webhook.SenderOptions{AllowPrivate: true}), Signer: webhook.NewSigner(secret),
	}, h.opts)
	h.run(w)
	code := "SESSION_PANIC_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
	failed := h.waitFinal(job.ID, 10*time.Second)
	if failed.Status != store.StatusFailed || failed.Error == nil || failed.Error.Code != store.CodeRetriesExhausted ||
		!strings.Contains(failed.Error.Message, "panic") {
		t.Fatalf("job after a panic: %s %+v", failed.Status, failed.Error)
	}
	// The job is failed from asynq's error handler, just before asynq archives the task.
	testutil.Eventually(t, 20*time.Second, "the task to be archived", func() bool {
		info := h.taskInfo(h.queues.Previews, "request:"+job.ID)
		return info != nil && info.State == asynq.TaskStateArchived
	})
	info := h.taskInfo(h.queues.Previews, "request:"+job.ID)
	if info.Retried != 0 || !strings.Contains(info.LastErr, "index out of range") {
		t.Fatalf("task after a panic: %+v", info)
	}
	code2 := "SESSION_AFTER_PANIC_" + testutil.RandomHex(4)
	job2 := h.request(code2, csmsim.SessionConfig{GenerationTime: time.Second})
	h.check(t, job2.ID, code2, store.StatusDone, "", 1, store.OutcomeAccepted, 0)
}

// TestSweeperFinishesWhatCrashesLeft: an outbox a dead producer never
// flushed is enqueued, and a job whose tasks are gone times out.
func TestSweeperFinishesWhatCrashesLeft(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	now := time.Now()

	// A producer that died between creating the job and enqueueing its task.
	orphan := store.Job{ID: "0b9e4ef6-5d8e-4d7b-9a54-" + testutil.RandomHex(6), Status: store.StatusQueued, SessionCode: "SESSION_ORPHAN",
		CreatedAt: now, UpdatedAt: now, Deadline: now.Add(time.Hour), History: []store.Transition{{At: now, Status: store.StatusQueued}}}
	entry := tasks.OutboxEntry(tasks.RequestPreview{JobID: orphan.ID, SessionCode: orphan.SessionCode}, time.Time{})
	if _, _, _, err := h.store.Create(ctx, orphan, "fp", []store.OutboxEntry{entry}); err != nil {
		t.Fatal(err)
	}
	// A job whose poll chain died (say, its task was deleted from the dashboard).
	lost := h.request("SESSION_LOST_"+testutil.RandomHex(4), csmsim.SessionConfig{})
	if n, err := h.inspector.DeleteAllPendingTasks(h.queues.Previews); err != nil || n != 1 {
		t.Fatalf("deleting pending tasks: %d, %v", n, err)
	}

	// Run the sweep as if two hours had passed.
	h.opts.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	w := h.newWorker()
	if err := w.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if info := h.taskInfo(h.queues.Previews, "request:"+orphan.ID); info == nil {
		t.Error("the orphaned outbox was not enqueued")
	}
	if outbox, _ := h.store.Outbox(ctx, orphan.ID); len(outbox) != 0 {
		t.Errorf("outbox still holds %d entries", len(outbox))
	}
	j := h.job(lost.ID)
	if j.Status != store.StatusTimedOut || j.Error.Code != store.CodeDeadlineExceeded {
		t.Fatalf("job with a dead chain: %s %+v", j.Status, j.Error)
	}
	events, _ := h.store.Events(ctx, lost.ID)
	if len(events) != 1 {
		t.Errorf("%d events stored, want the one timed_out event", len(events))
	}
	// A second sweep finds nothing more to do.
	if err := w.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if again := h.job(lost.ID); again.UpdatedAt != j.UpdatedAt {
		t.Error("a second sweep changed the job again")
	}
}

// TestWebhookRetriesResendTheSameMessage: a failing receiver gets the same
// webhook-id and body bytes again, with a fresh signature that verifies.
func TestWebhookRetriesResendTheSameMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.rcv.SetStatus(http.StatusServiceUnavailable)
	h.start()
	code := "SESSION_RETRY_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{Stuck: true}, func(r *tasks.PreviewRequest) {})
	first := h.rcv.WaitFor(t, 10*time.Second, "a first attempt", func(ds []testutil.Delivery) bool { return len(ds) >= 1 })[0]
	h.rcv.SetStatus(http.StatusOK)
	ds := h.rcv.WaitFor(t, 20*time.Second, "a retry of the first message", func(ds []testutil.Delivery) bool {
		for _, d := range ds[1:] {
			if d.Header.Get("webhook-id") == first.Header.Get("webhook-id") {
				return true
			}
		}
		return false
	})
	h.events(job.ID, ds) // every attempt verifies with the reference library
	for _, d := range ds[1:] {
		if d.Header.Get("webhook-id") != first.Header.Get("webhook-id") {
			continue
		}
		if !bytes.Equal(d.Body, first.Body) {
			t.Fatal("the retry sent different body bytes")
		}
		if d.Header.Get("webhook-signature") == "" {
			t.Fatal("the retry is unsigned")
		}
	}
	evID := first.Header.Get("webhook-id")
	testutil.Eventually(t, 20*time.Second, "the delivery record", func() bool {
		m, err := h.store.Message(context.Background(), job.ID, store.MessageID(evID, "job"))
		return err == nil && m.Status == store.MessageDelivered && m.AttemptsN == 2 && m.Attempts[0].StatusCode == http.StatusServiceUnavailable
	})
}

// TestWebhookGoneIsNotRetried: a 410 settles the message as failed at once.
func TestWebhookGoneIsNotRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.rcv.SetStatus(http.StatusGone)
	h.start()
	job := h.request("SESSION_GONE_"+testutil.RandomHex(4), csmsim.SessionConfig{Stuck: true})
	first := h.rcv.WaitFor(t, 10*time.Second, "a first attempt", func(ds []testutil.Delivery) bool { return len(ds) >= 1 })[0]
	evID := first.Header.Get("webhook-id")
	msgID := store.MessageID(evID, "job")
	testutil.Eventually(t, 20*time.Second, "the message to fail", func() bool {
		m, err := h.store.Message(context.Background(), job.ID, msgID)
		return err == nil && m.Status == store.MessageFailed
	})
	// The first attempt is made right after the accepted commit, and a
	// 410 there settles the message without a delivery task; one made by
	// a task (the inline attempt skipped) is archived without a retry.
	time.Sleep(2 * time.Second) // a delivery task, had one been enqueued, has run by now (and one retrying shows it)
	sameMessage := 0
	for _, d := range h.rcv.Deliveries() {
		if d.Header.Get("webhook-id") == evID {
			sameMessage++
		}
	}
	info := h.taskInfo(h.queues.Webhooks, "webhook:"+evID+":job")
	if sameMessage != 1 || (info != nil && (info.State != asynq.TaskStateArchived || info.Retried != 0)) {
		t.Fatalf("after a 410: %d attempts of the message, delivery task %+v", sameMessage, info)
	}
}

// keySwitch routes session reads to a client with a wrong API key while
// bad is set: the real simulator answers 401.
type keySwitch struct {
	good, bad *csm.Client
	useBad    atomic.Bool
}

func (k *keySwitch) GetSession(ctx context.Context, code string) (*csm.Session, error) {
	if k.useBad.Load() {
		return k.bad.GetSession(ctx, code)
	}
	return k.good.GetSession(ctx, code)
}

func (k *keySwitch) AwaitTurn(ctx context.Context) error { return k.good.AwaitTurn(ctx) }

func (k *keySwitch) RequestPreview(ctx context.Context, code string, p csm.PreviewParams) (*csm.PreviewJob, error) {
	return k.good.RequestPreview(ctx, code, p)
}

// TestAuthFaultWhilePollingWaits: a revoked key is loud in the logs, the job
// keeps waiting, and it completes once the key works again.
func TestAuthFaultWhilePollingWaits(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	core, logs := observer.New(zapcore.WarnLevel)
	h.opts.Logger = zap.New(core)
	good, _ := csm.New(csm.Options{BaseURL: h.simURL, APIKey: testutil.SimAPIKey})
	bad, _ := csm.New(csm.Options{BaseURL: h.simURL, APIKey: "revoked-key-7781"})
	ks := &keySwitch{good: good, bad: bad}
	secret, _ := webhook.ParseSecret(h.secretText)
	h.run(worker.New(h.redis.Client, worker.Deps{
		Store: h.store, CSM: ks, Sender: webhook.NewSender(webhook.SenderOptions{AllowPrivate: true}), Signer: webhook.NewSigner(secret),
	}, h.opts))
	code := "SESSION_AUTH_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: 2 * time.Second})
	testutil.Eventually(t, 10*time.Second, "generating", func() bool { return h.job(job.ID).Status == store.StatusGenerating })
	ks.useBad.Store(true)
	testutil.Eventually(t, 10*time.Second, "an auth fault to be logged", func() bool {
		return logs.FilterMessageSnippet("CSM refused our API key").FilterLevelExact(zapcore.ErrorLevel).Len() > 0
	})
	if j := h.job(job.ID); j.Status != store.StatusGenerating || !strings.Contains(j.Poll.LastError, "auth") {
		t.Fatalf("during the auth fault: %s, last poll error %q", j.Status, j.Poll.LastError)
	}
	ks.useBad.Store(false)
	h.check(t, job.ID, code, store.StatusDone, "", 1, store.OutcomeAccepted, 0)
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "revoked-key-7781") || strings.Contains(f.String, testutil.SimAPIKey) {
				t.Fatalf("an API key appears in a log line: %s %v", e.Message, f)
			}
		}
	}
}
