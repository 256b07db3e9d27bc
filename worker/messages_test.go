package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
	"github.com/previewd/previewd/worker"
)

// The tests of a webhook message's life: every message ends delivered or
// failed (given up, with the reason, and replayable), whatever fails on
// the way, and a settled message is never sent again by a stray task.

// jobWithEvent creates a job whose webhook_url is url and stores one
// preview.accepted event for it, with no task in flight: the test decides
// which tasks exist.
func (h *harness) jobWithEvent(url string) (store.Job, string) {
	h.t.Helper()
	ctx := context.Background()
	job := h.request("SESSION_MSG_"+testutil.RandomHex(4), csmsim.SessionConfig{Stuck: true},
		func(r *tasks.PreviewRequest) { r.WebhookURL = url })
	if err := h.inspector.DeleteTask(h.queues.Previews, tasks.RequestPreview{JobID: job.ID}.TaskID()); err != nil {
		h.t.Fatalf("delete the request task: %v", err)
	}
	eventID := tasks.EventID(job.ID, string(store.EventAccepted))
	if _, err := h.store.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		return store.Change{Events: []store.NewEvent{{ID: eventID, Type: store.EventAccepted}}}, nil
	}); err != nil {
		h.t.Fatalf("store the event: %v", err)
	}
	return job, eventID
}

// createMessage stores the record the fan-out writes for (event, job URL).
func (h *harness) createMessage(jobID, eventID string, status store.MessageStatus) store.Message {
	h.t.Helper()
	m := store.Message{
		ID: store.MessageID(eventID, tasks.DestinationJob), EventID: eventID, EventType: store.EventAccepted,
		Destination: tasks.DestinationJob, Status: status, CreatedAt: time.Now(),
	}
	if err := h.store.CreateMessage(context.Background(), jobID, m); err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *harness) message(jobID, msgID string) store.Message {
	h.t.Helper()
	m, err := h.store.Message(context.Background(), jobID, msgID)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// enqueueRaw enqueues a task of ours with asynq options of the test's
// choosing (MaxRetry(0): its first failure archives it).
func (h *harness) enqueueRaw(p tasks.Payload, opts ...asynq.Option) {
	h.t.Helper()
	task, err := tasks.NewTask(p, h.queues, time.Time{})
	if err != nil {
		h.t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(h.redis.Client)
	opts = append([]asynq.Option{asynq.TaskID(p.TaskID()), asynq.Queue(h.queues.Webhooks)}, opts...)
	if _, err := client.Enqueue(asynq.NewTask(task.Type(), task.Payload()), opts...); err != nil {
		h.t.Fatal(err)
	}
}

func deliverTask(t *testing.T, h *harness, p tasks.DeliverWebhook) *asynq.Task {
	t.Helper()
	task, err := tasks.NewTask(p, h.queues, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// TestDuplicateDeliveryOfSettledMessageSendsNothing: asynq may run a
// delivery task again (a lease expiry, an operator re-enqueueing it); once
// its message is delivered, that run sends nothing.
func TestDuplicateDeliveryOfSettledMessageSendsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	job, eventID := h.jobWithEvent(h.rcv.URL)
	msg := h.createMessage(job.ID, eventID, store.MessagePending)
	handlers := h.newWorker().Handlers()
	task := deliverTask(t, h, tasks.DeliverWebhook{JobID: job.ID, EventID: eventID, EventType: string(store.EventAccepted), Destination: tasks.DestinationJob})
	ctx := context.Background()
	if err := handlers.DeliverWebhook(ctx, task); err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	if got := h.message(job.ID, msg.ID); got.Status != store.MessageDelivered || len(h.rcv.Deliveries()) != 1 {
		t.Fatalf("after the first delivery: message %s, %d requests; want delivered, 1", got.Status, len(h.rcv.Deliveries()))
	}
	if err := handlers.DeliverWebhook(ctx, task); err != nil {
		t.Fatalf("duplicate delivery: %v", err)
	}
	if n := len(h.rcv.Deliveries()); n != 1 {
		t.Fatalf("the receiver got %d requests; a duplicate task re-sent a delivered message", n)
	}
	if got := h.message(job.ID, msg.ID); got.AttemptsN != 1 {
		t.Fatalf("message has %d attempts after a duplicate task, want 1", got.AttemptsN)
	}
}

// TestRetryAfterIsAFloorOfTheRetryDelay: a receiver's Retry-After longer
// than the schedule's next wait postpones the retry to at least then.
func TestRetryAfterIsAFloorOfTheRetryDelay(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.Webhooks.Schedule = []time.Duration{time.Second, time.Second}
	const retryAfter = time.Hour
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Retry-After", fmt.Sprint(int(retryAfter.Seconds())))
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(busy.Close)
	job, eventID := h.jobWithEvent(busy.URL + "/hooks")
	h.createMessage(job.ID, eventID, store.MessagePending)
	p := tasks.DeliverWebhook{JobID: job.ID, EventID: eventID, EventType: string(store.EventAccepted), Destination: tasks.DestinationJob}
	h.enqueueRaw(p, asynq.MaxRetry(5))
	h.start()
	var info *asynq.TaskInfo
	testutil.Eventually(t, 15*time.Second, "the delivery to wait for its retry", func() bool {
		info = h.taskInfo(h.queues.Webhooks, p.TaskID())
		return info != nil && info.State == asynq.TaskStateRetry
	})
	if wait := info.NextProcessAt.Sub(info.LastFailedAt); wait < retryAfter-time.Minute {
		t.Fatalf("retry scheduled %s after the 503 with Retry-After %s; the schedule's %s won", wait, retryAfter, h.opts.Webhooks.Schedule[0])
	}
}

// TestArchivedDeliveryGivesUpItsMessage: a delivery task archived by asynq
// (its retries spent) leaves its message failed with the reason, not
// pending, and the message can be replayed.
func TestArchivedDeliveryGivesUpItsMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.rcv.SetStatus(http.StatusInternalServerError)
	job, eventID := h.jobWithEvent(h.rcv.URL)
	msg := h.createMessage(job.ID, eventID, store.MessagePending)
	p := tasks.DeliverWebhook{JobID: job.ID, EventID: eventID, EventType: string(store.EventAccepted), Destination: tasks.DestinationJob}
	h.enqueueRaw(p, asynq.MaxRetry(0))
	h.start()
	testutil.Eventually(t, 15*time.Second, "the delivery task to be archived", func() bool {
		info := h.taskInfo(h.queues.Webhooks, p.TaskID())
		return info != nil && info.State == asynq.TaskStateArchived
	})
	testutil.Eventually(t, 10*time.Second, "the message to be given up", func() bool {
		return h.message(job.ID, msg.ID).Status != store.MessagePending
	})
	got := h.message(job.ID, msg.ID)
	if got.Status != store.MessageFailed || !strings.Contains(got.Reason, "archived") || got.AttemptsN != 1 {
		t.Fatalf("message after its task was archived: %s, reason %q, %d attempts", got.Status, got.Reason, got.AttemptsN)
	}
	h.rcv.SetStatus(http.StatusOK)
	if _, err := h.producer.Replay(context.Background(), msg.ID); err != nil {
		t.Fatalf("replay a given-up message: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "the replay to be delivered", func() bool {
		m := h.message(job.ID, msg.ID)
		return m.Status == store.MessageDelivered && m.Replays == 1
	})
}

// TestArchivedFanoutGivesUpItsMessages: a fan-out task archived before it
// addressed its event leaves a failed message for each destination it
// could not address (replayable), and gives a message it created but
// never enqueued its delivery task.
func TestArchivedFanoutGivesUpItsMessages(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		created bool // the fan-out created the job URL's message before it died
		want    store.MessageStatus
	}{
		{"never created", false, store.MessageFailed},
		{"created, never enqueued", true, store.MessageDelivered},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			ctx := context.Background()
			job, eventID := h.jobWithEvent(h.rcv.URL)
			// An endpoint record this version cannot read makes every
			// fan-out fail before it creates a message.
			ep, _ := h.addEndpoint(testutil.NewReceiver(t).URL)
			if err := h.redis.Client.HSet(ctx, h.redis.Namespace+":endpoint:{"+ep.ID+"}", "doc", "{not json").Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := h.store.Endpoints(ctx); err == nil {
				t.Fatal("the corrupt endpoint reads back: the test proves nothing")
			}
			msgID := store.MessageID(eventID, tasks.DestinationJob)
			if tc.created {
				h.createMessage(job.ID, eventID, store.MessagePending)
			}
			p := tasks.FanoutWebhook{JobID: job.ID, EventID: eventID, EventType: string(store.EventAccepted)}
			h.enqueueRaw(p, asynq.MaxRetry(0))
			h.start()
			testutil.Eventually(t, 15*time.Second, "the fan-out task to be archived", func() bool {
				info := h.taskInfo(h.queues.Webhooks, p.TaskID())
				return info != nil && info.State == asynq.TaskStateArchived
			})
			var got store.Message
			testutil.Eventually(t, 10*time.Second, "the job URL's message to settle", func() bool {
				var err error
				got, err = h.store.Message(ctx, job.ID, msgID)
				return err == nil && got.Status != store.MessagePending
			})
			if got.Status != tc.want {
				t.Fatalf("message %s, reason %q; want %s", got.Status, got.Reason, tc.want)
			}
			if got.Status == store.MessageFailed {
				if !strings.Contains(got.Reason, "archived") {
					t.Fatalf("reason %q does not say the fan-out was given up", got.Reason)
				}
				if _, mjob, err := h.producer.Message(ctx, msgID); err != nil || mjob != job.ID {
					t.Fatalf("the given-up message is not found by its id: %v", err)
				}
				if _, err := h.producer.Replay(ctx, msgID); err != nil {
					t.Fatalf("replay: %v", err)
				}
				testutil.Eventually(t, 10*time.Second, "the replay to be delivered", func() bool {
					return h.message(job.ID, msgID).Status == store.MessageDelivered
				})
			}
		})
	}
}

// TestDeliveredRecordRidesThroughARedisOutage: Redis goes away while the
// receiver answers 2xx (a failover takes seconds); the delivery's record
// is still saved delivered once Redis is back, not left pending.
func TestDeliveredRecordRidesThroughARedisOutage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if !h.redis.Real() {
		t.Skip("needs a real Redis behind a TCP proxy")
	}
	cutClient, proxy := h.redis.LossyClient(t)
	cutStore := store.New(cutClient, store.Options{Namespace: h.redis.Namespace})

	const outage = 2 * time.Second
	var hits atomic.Int32
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hits.Add(1)
		proxy.Outage(outage) // a failover begins as the receiver answers
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rcv.Close)
	job, eventID := h.jobWithEvent(rcv.URL + "/hooks")
	msg := h.createMessage(job.ID, eventID, store.MessagePending)

	handlers := newWorkerOn(t, h, cutStore).Handlers()
	task := deliverTask(t, h, tasks.DeliverWebhook{JobID: job.ID, EventID: eventID, EventType: string(store.EventAccepted), Destination: tasks.DestinationJob})
	derr := handlers.DeliverWebhook(context.Background(), task)
	if hits.Load() != 1 {
		t.Fatalf("the receiver got %d requests, want 1", hits.Load())
	}
	got := h.message(job.ID, msg.ID)
	switch {
	case got.Status == store.MessageDelivered && derr == nil:
	case got.Status == store.MessagePending && derr != nil && !errors.Is(derr, asynq.SkipRetry):
		// Acceptable only as the fallback: the task retries and settles it.
		t.Fatalf("record not saved through a %s outage (the task would re-send): %v", outage, derr)
	default:
		t.Fatalf("after a 2xx and a %s Redis outage: message %s, handler returned %v", outage, got.Status, derr)
	}
}

// newWorkerOn builds a worker like the harness's, whose store talks to
// Redis through st's connection (asynq keeps the direct one).
func newWorkerOn(t *testing.T, h *harness, st *store.Store) *worker.Worker {
	t.Helper()
	client, err := csm.New(csm.Options{BaseURL: h.simURL, APIKey: testutil.SimAPIKey, Timeout: h.csmTimeout})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := webhook.ParseSecret(h.secretText)
	if err != nil {
		t.Fatal(err)
	}
	return worker.New(h.redis.Client, worker.Deps{
		Store:  st,
		CSM:    client,
		Sender: webhook.NewSender(webhook.SenderOptions{Timeout: 5 * time.Second, AllowPrivate: true}),
		Signer: webhook.NewSigner(secret),
	}, h.opts)
}

// TestReplayWhoseEnqueueFailsIsNotStuck: a replay whose enqueue fails (here
// the producer's Redis user may not write asynq's keys) is committed with
// its task in the job's outbox: the sweeper enqueues it, the message is
// delivered, and it can be replayed again. It never stays pending with no
// task behind it.
func TestReplayWhoseEnqueueFailsIsNotStuck(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if !h.redis.Real() {
		t.Skip("needs a real Redis with ACLs")
	}
	ctx := context.Background()
	job, eventID := h.jobWithEvent(h.rcv.URL)
	msg := h.createMessage(job.ID, eventID, store.MessageFailed)

	// A Redis user that may touch previewd's keys of this namespace only.
	user, pass := "previewd-test-"+h.redis.Namespace, testutil.RandomHex(16)
	if err := h.redis.Client.Do(ctx, "ACL", "SETUSER", user, "on", ">"+pass, "resetkeys", "~"+h.redis.Namespace+":*", "+@all").Err(); err != nil {
		t.Skipf("cannot create a Redis ACL user: %v", err)
	}
	t.Cleanup(func() { h.redis.Client.Do(context.Background(), "ACL", "DELUSER", user) })
	opts, err := redis.ParseURL(h.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	opts.Username, opts.Password = user, pass
	limited := redis.NewClient(opts)
	t.Cleanup(func() { _ = limited.Close() })
	producer := tasks.NewClient(limited, tasks.ClientOptions{Namespace: h.redis.Namespace, JobDeadline: h.deadline, AllowPrivateWebhooks: true})

	_, err = producer.Replay(ctx, msg.ID)
	if !errors.Is(err, tasks.ErrEnqueuePending) {
		t.Fatalf("replay with asynq unwritable: %v, want ErrEnqueuePending", err)
	}
	if got := h.message(job.ID, msg.ID); got.Status != store.MessagePending || got.Replays != 1 {
		t.Fatalf("replayed message: %s, %d replays; want pending, 1", got.Status, got.Replays)
	}
	// A second replay now would be a second delivery of one request.
	if _, err := h.producer.Replay(ctx, msg.ID); !errors.Is(err, tasks.ErrNotReplayable) {
		t.Fatalf("replay of a message whose replay is pending: %v, want ErrNotReplayable", err)
	}

	h.start()
	sweeperOpts := h.opts
	sweeperOpts.Now = func() time.Time { return time.Now().Add(time.Minute) } // past the sweeper's grace
	sweeper := newWorkerOpts(t, h, sweeperOpts)
	testutil.Eventually(t, 15*time.Second, "the replay to be delivered", func() bool {
		if err := sweeper.Sweep(ctx); err != nil {
			t.Logf("sweep: %v", err)
		}
		m := h.message(job.ID, msg.ID)
		return m.Status == store.MessageDelivered && m.Replays == 1
	})
	ds := h.rcv.Deliveries()
	if len(ds) != 1 || ds[0].Header.Get("webhook-id") != eventID {
		t.Fatalf("receiver got %d deliveries, want the replay of %s once", len(ds), eventID)
	}
	if _, err := h.producer.Replay(ctx, msg.ID); err != nil {
		t.Fatalf("a delivered message cannot be replayed again: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "the second replay to be delivered", func() bool {
		m := h.message(job.ID, msg.ID)
		return m.Status == store.MessageDelivered && m.Replays == 2
	})
}

// newWorkerOpts builds a harness worker with other options.
func newWorkerOpts(t *testing.T, h *harness, opts worker.Options) *worker.Worker {
	t.Helper()
	saved := h.opts
	h.opts = opts
	defer func() { h.opts = saved }()
	return h.newWorker()
}
