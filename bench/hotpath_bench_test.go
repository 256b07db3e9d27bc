package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
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

// The hot paths of one job, each alone: a store commit, the request
// handler (session read, intent, billed POST, outcome), one poll, one
// webhook delivery. The handlers are called directly, as asynq would call
// them, on the Redis at PREVIEWD_REDIS_URL with the simulator and a
// receiver on loopback; no worker runs, so nothing else competes. With
// redis-server on PATH each benchmark gets a server of its own and reports
// redis-cmds/op too (INFO commandstats, script calls included).
//
//	go test -run '^$' -bench . -benchmem ./bench/

type hot struct {
	rdb      *testutil.Redis
	sim      *csmsim.Server
	rcv      *testutil.Receiver
	producer *tasks.Client
	store    *store.Store
	queues   tasks.Queues
	handlers *worker.Handlers
	insp     *asynq.Inspector
	isolated bool // the Redis is the benchmark's own: commandstats are ours
	// session is every job's session: legacy, generating for generation.
	session csmsim.SessionConfig
}

func newHot(b *testing.B, generation time.Duration) *hot {
	b.Helper()
	isolated := false
	if _, err := exec.LookPath("redis-server"); err == nil {
		b.Setenv("PREVIEWD_REDIS_URL", testutil.StartRedisServer(b).URL())
		isolated = true
	}
	r := testutil.NewRedis(b)
	sim, simURL := testutil.NewSim(b, csmsim.Options{})
	secretText, err := webhook.GenerateSecret()
	if err != nil {
		b.Fatal(err)
	}
	secret, err := webhook.ParseSecret(secretText)
	if err != nil {
		b.Fatal(err)
	}
	client, err := csm.New(csm.Options{BaseURL: simURL, APIKey: testutil.SimAPIKey, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	h := &hot{rdb: r, sim: sim, rcv: testutil.NewReceiver(b), queues: tasks.QueuesFor(r.Namespace),
		insp: asynq.NewInspectorFromRedisClient(r.Client), isolated: isolated}
	h.producer = tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace, AllowPrivateWebhooks: true})
	h.store = h.producer.Store()
	w := worker.New(r.Client, worker.Deps{
		Store:  h.store,
		CSM:    client,
		Sender: webhook.NewSender(webhook.SenderOptions{AllowPrivate: true}),
		Signer: webhook.NewSigner(secret),
	}, worker.Options{Queues: h.queues, Polling: worker.PollPolicy{Interval: time.Second, MaxInterval: time.Second}})
	h.handlers = w.Handlers()
	h.session = csmsim.SessionConfig{Schema: csmsim.SchemaLegacy, GenerationTime: generation}
	return h
}

// jobs creates n queued jobs, each with a session of its own, and returns
// their request tasks.
func (h *hot) jobs(b *testing.B, n int, webhookURL string) []*asynq.Task {
	b.Helper()
	ctx := context.Background()
	out := make([]*asynq.Task, n)
	for i := range n {
		code := fmt.Sprintf("HOT_%s_%06d", h.rdb.Namespace, i)
		h.sim.AddSession(code, h.session)
		job, err := h.producer.RequestPreview(ctx, tasks.PreviewRequest{SessionCode: code, SelectedSpinIndex: i % 4, WebhookURL: webhookURL})
		if err != nil {
			b.Fatal(err)
		}
		if out[i], err = tasks.NewTask(tasks.RequestPreview{JobID: job.ID, SessionCode: code}, h.queues, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// countCommands returns a function that reports the Redis commands run
// since, per op, as redis-cmds/op (on an isolated server only).
func (h *hot) countCommands(b *testing.B) func(ops int) {
	b.Helper()
	if !h.isolated {
		return func(int) {}
	}
	before, err := readCommandStats(context.Background(), h.rdb.Client)
	if err != nil {
		b.Fatal(err)
	}
	return func(ops int) {
		after, err := readCommandStats(context.Background(), h.rdb.Client)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(after.sub(before).total())/float64(ops), "redis-cmds/op")
	}
}

// pending returns the tasks of type typ waiting in queue.
func (h *hot) pending(b *testing.B, queue, typ string) []*asynq.Task {
	b.Helper()
	var out []*asynq.Task
	for page := 1; ; page++ {
		infos, err := h.insp.ListPendingTasks(queue, asynq.Page(page), asynq.PageSize(500))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil // nothing was ever enqueued there
		}
		if err != nil {
			b.Fatal(err)
		}
		for _, ti := range infos {
			if ti.Type == typ {
				out = append(out, asynq.NewTask(ti.Type, ti.Payload))
			}
		}
		if len(infos) < 500 {
			return out
		}
	}
}

// BenchmarkStoreUpdate is one commit through store.Update, the one door
// every job change goes through (its Lua script, the record's encoding).
func BenchmarkStoreUpdate(b *testing.B) {
	h := newHot(b, time.Hour)
	p, err := tasks.Decode[tasks.RequestPreview](h.jobs(b, 1, "")[0])
	if err != nil {
		b.Fatal(err)
	}
	id := p.JobID
	ctx := context.Background()
	b.ReportAllocs()
	ops := 0
	report := h.countCommands(b)
	for b.Loop() {
		ops++
		if _, err := h.store.Update(ctx, id, func(j *store.Job, now time.Time) (store.Change, error) {
			j.Polls++
			return store.Change{}, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	report(ops)
}

// BenchmarkRequestHandler is the request task of one job: the session
// read, the intent, the billed POST and its outcome, the poll enqueued.
func BenchmarkRequestHandler(b *testing.B) {
	h := newHot(b, time.Hour)
	reqs := h.jobs(b, b.N, "")
	ctx := context.Background()
	b.ReportAllocs()
	report := h.countCommands(b)
	b.ResetTimer()
	for i := range b.N {
		if err := h.handlers.RequestPreview(ctx, reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	report(b.N)
	if got := h.sim.TotalAcceptedPreviews(); got != b.N {
		b.Fatalf("%d preview POSTs accepted for %d jobs", got, b.N)
	}
}

// BenchmarkPollHandler is one poll of a job still generating: the session
// read, the record's update and the next poll scheduled.
func BenchmarkPollHandler(b *testing.B) {
	h := newHot(b, time.Hour)
	req := h.jobs(b, 1, "")[0]
	ctx := context.Background()
	if err := h.handlers.RequestPreview(ctx, req); err != nil {
		b.Fatal(err)
	}
	p, err := tasks.Decode[tasks.RequestPreview](req)
	if err != nil {
		b.Fatal(err)
	}
	job, err := h.store.Get(ctx, p.JobID)
	if err != nil {
		b.Fatal(err)
	}
	seq := job.Poll.Seq
	b.ReportAllocs()
	report := h.countCommands(b)
	for b.Loop() {
		t, err := tasks.NewTask(tasks.PollPreview{JobID: p.JobID, SessionCode: p.SessionCode, Seq: seq}, h.queues, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		if err := h.handlers.PollPreview(ctx, t); err != nil {
			b.Fatal(err)
		}
		seq++
	}
	b.StopTimer()
	report(seq - job.Poll.Seq)
	if job, err = h.store.Get(ctx, p.JobID); err != nil || job.Poll.Seq != seq {
		b.Fatalf("after the polls the job's poll seq is %d (err %v), want %d: a poll did nothing", job.Poll.Seq, err, seq)
	}
}

// BenchmarkDelivery is one webhook delivery: the stored event read, the
// destination's slot, the signed POST to the receiver, the record settled.
func BenchmarkDelivery(b *testing.B) {
	h := newHot(b, time.Hour)
	ctx := context.Background()
	for _, req := range h.jobs(b, b.N, h.rcv.URL) {
		if err := h.handlers.RequestPreview(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	// Each accepted job emitted its accepted event: fan each out into its
	// delivery task, untimed.
	for _, queue := range h.queues.Deliveries() {
		for _, t := range h.pending(b, queue, tasks.TypeFanoutWebhook) {
			if err := h.handlers.FanoutWebhook(ctx, t); err != nil {
				b.Fatal(err)
			}
		}
	}
	var deliveries []*asynq.Task
	for _, queue := range h.queues.Deliveries() {
		deliveries = append(deliveries, h.pending(b, queue, tasks.TypeDeliverWebhook)...)
	}
	if len(deliveries) < b.N {
		b.Fatalf("%d delivery tasks for %d jobs", len(deliveries), b.N)
	}
	b.ReportAllocs()
	report := h.countCommands(b)
	b.ResetTimer()
	for i := range b.N {
		if err := h.handlers.DeliverWebhook(ctx, deliveries[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	report(b.N)
	if got := len(h.rcv.Deliveries()); got < b.N {
		b.Fatalf("the receiver got %d deliveries, want %d", got, b.N)
	}
}

// BenchmarkRoundTrip is what one Redis round trip costs the worker's
// process, one command or two pipelined: CPU (user and system, from
// getrusage) per round trip, as cpu-µs/op. Round trips, more than
// commands, are what a job's CPU follows.
func BenchmarkRoundTrip(b *testing.B) {
	r := testutil.NewRedis(b)
	ctx := context.Background()
	key := r.Namespace + ":roundtrip"
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("%d commands", n), func(b *testing.B) {
			start := processCPU(b)
			ops := 0
			for b.Loop() {
				ops++
				if _, err := r.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
					for range n {
						p.Get(ctx, key)
					}
					return nil
				}); err != nil && !errors.Is(err, redis.Nil) {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((processCPU(b)-start).Microseconds())/float64(ops), "cpu-µs/op")
		})
	}
}

// processCPU is the process's CPU time so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
