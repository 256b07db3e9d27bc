package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
	"github.com/previewd/previewd/worker"
)

// harness is everything a worker test needs, real parts only: Redis (an
// isolated namespace), the CSM simulator, a webhook receiver, the producer
// and a worker factory.
type harness struct {
	t          testing.TB
	redis      *testutil.Redis
	sim        *csmsim.Server
	simURL     string
	rcv        *testutil.Receiver
	secretText string
	producer   *tasks.Client
	store      *store.Store
	inspector  *asynq.Inspector
	queues     tasks.Queues
	opts       worker.Options
	csmTimeout time.Duration
	deadline   time.Duration
	log        *zap.Logger

	// Optional parts of the workers newWorker builds.
	workerRedis redis.UniversalClient        // default redis.Client: e.g. through a LossyProxy
	minReplicas int                          // the workers' store.Options.MinReplicas
	limiter     csm.Limiter                  // the CSM client's rate limiter
	wrapCSM     func(*csm.Client) worker.CSM // wraps the real client, e.g. to inject a fault on its return
}

type harnessOption func(*harness)

func withDeadline(d time.Duration) harnessOption { return func(h *harness) { h.deadline = d } }
func withCSMTimeout(d time.Duration) harnessOption {
	return func(h *harness) { h.csmTimeout = d }
}
func withGrace(d time.Duration) harnessOption {
	return func(h *harness) { h.opts.Polling.ReconcileGrace = d }
}

// withRedisServer runs the harness on a Redis server of the test's own
// (e.g. a primary with a replica) instead of the shared one.
func withRedisServer(rs *testutil.RedisServer) harnessOption {
	return func(h *harness) {
		h.redis = &testutil.Redis{Client: rs.Client(), URL: rs.URL(), Namespace: h.redis.Namespace}
		h.inspector = asynq.NewInspectorFromRedisClient(h.redis.Client)
	}
}

func newHarness(t testing.TB, options ...harnessOption) *harness {
	t.Helper()
	r := testutil.NewRedis(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	secretText, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t: t, redis: r, sim: sim, simURL: simURL, rcv: testutil.NewReceiver(t), secretText: secretText,
		queues:     tasks.QueuesFor(r.Namespace),
		csmTimeout: 5 * time.Second,
		deadline:   time.Minute,
		log:        zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		inspector:  asynq.NewInspectorFromRedisClient(r.Client),
	}
	h.opts = worker.Options{
		Queues: h.queues,
		Polling: worker.PollPolicy{
			Interval: time.Second, MaxInterval: time.Second, ReconcileGrace: time.Minute,
		},
		Concurrency: 4, WebhookConcurrency: 4,
		ShutdownTimeout: 5 * time.Second,
		SweepInterval:   time.Hour, // tests call Sweep themselves
		Logger:          h.log,
	}
	for _, o := range options {
		o(h)
	}
	h.producer = tasks.NewClient(h.redis.Client, tasks.ClientOptions{
		Namespace: h.redis.Namespace, JobDeadline: h.deadline, AllowPrivateWebhooks: true,
	})
	h.store = h.producer.Store()
	return h
}

// newWorker builds a worker talking to the simulator.
func (h *harness) newWorker() *worker.Worker {
	h.t.Helper()
	client, err := csm.New(csm.Options{BaseURL: h.simURL, APIKey: testutil.SimAPIKey, Timeout: h.csmTimeout, Limiter: h.limiter})
	if err != nil {
		h.t.Fatal(err)
	}
	var upstream worker.CSM = client
	if h.wrapCSM != nil {
		upstream = h.wrapCSM(client)
	}
	// Each worker has a Store of its own, as each process does: seats it
	// keeps for reuse are its own.
	rdb := h.redis.Client
	if h.workerRedis != nil {
		rdb = h.workerRedis
	}
	st := store.New(rdb, store.Options{Namespace: h.redis.Namespace, MinReplicas: h.minReplicas, SlotReuse: store.DefaultSlotReuse})
	secret, err := webhook.ParseSecret(h.secretText)
	if err != nil {
		h.t.Fatal(err)
	}
	return worker.New(rdb, worker.Deps{
		Store:  st,
		CSM:    upstream,
		Sender: webhook.NewSender(webhook.SenderOptions{Timeout: 5 * time.Second, AllowPrivate: true}),
		Signer: webhook.NewSigner(secret),
	}, h.opts)
}

// start runs a worker until the returned stop is called (or the test ends).
func (h *harness) start() (stop func()) {
	h.t.Helper()
	return h.run(h.newWorker())
}

func (h *harness) run(w *worker.Worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("worker.Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			h.t.Error("worker did not stop within 20s")
		}
	}
	h.t.Cleanup(stop)
	return stop
}

// request enqueues a preview of a new simulated session.
func (h *harness) request(code string, cfg csmsim.SessionConfig, mods ...func(*tasks.PreviewRequest)) store.Job {
	h.t.Helper()
	h.sim.AddSession(code, cfg)
	req := tasks.PreviewRequest{SessionCode: code, SelectedSpinIndex: 1, WebhookURL: h.rcv.URL, ScaledBBox: []float64{1, 2, 3}, PivotPoint: []float64{0, -0.5, 0.25}}
	for _, m := range mods {
		m(&req)
	}
	job, err := h.producer.RequestPreview(context.Background(), req)
	if err != nil {
		h.t.Fatalf("RequestPreview: %v", err)
	}
	return job
}

// waitFinal waits for the job to reach a final status.
func (h *harness) waitFinal(id string, timeout time.Duration) store.Job {
	h.t.Helper()
	var job store.Job
	testutil.Eventually(h.t, timeout, "job "+id+" to finish", func() bool {
		var err error
		job, err = h.store.Get(context.Background(), id)
		if err != nil {
			h.t.Fatalf("get job: %v", err)
		}
		return job.Status.Final()
	})
	return job
}

func (h *harness) job(id string) store.Job {
	h.t.Helper()
	j, err := h.store.Get(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return j
}

// events verifies every delivery with the reference Standard Webhooks
// library and returns the decoded bodies of those for the job.
func (h *harness) events(jobID string, ds []testutil.Delivery) []store.EventBody {
	h.t.Helper()
	wh, err := standardwebhooks.NewWebhook(h.secretText)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []store.EventBody
	for _, d := range ds {
		if err := wh.Verify(d.Body, d.Header); err != nil {
			h.t.Fatalf("delivery fails Standard Webhooks verification: %v", err)
		}
		var ev store.EventBody
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			h.t.Fatalf("delivery body: %v", err)
		}
		if ev.Data.ID == jobID {
			out = append(out, ev)
		}
	}
	return out
}

// waitEvent waits for a delivery of the given event type for the job.
func (h *harness) waitEvent(jobID string, typ store.EventType, timeout time.Duration) []store.EventBody {
	h.t.Helper()
	var evs []store.EventBody
	h.rcv.WaitFor(h.t, timeout, string(typ)+" webhook", func(ds []testutil.Delivery) bool {
		evs = h.events(jobID, ds)
		for _, e := range evs {
			if e.Type == typ {
				return true
			}
		}
		return false
	})
	return evs
}

func types(evs []store.EventBody) []store.EventType {
	out := make([]store.EventType, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func count(evs []store.EventBody, typ store.EventType) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// taskInfo returns a task's state in asynq, or nil when asynq has no such task.
func (h *harness) taskInfo(queue, id string) *asynq.TaskInfo {
	h.t.Helper()
	info, err := h.inspector.GetTaskInfo(queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	if err != nil {
		h.t.Fatalf("GetTaskInfo(%s, %s): %v", queue, id, err)
	}
	return info
}
