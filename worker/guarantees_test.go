package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/worker"
)

// The tests of this file break the promise "one billed preview per job, and
// every job reaches a final status with its final webhook" the ways
// production does: replies lost on the Redis link, a failover that forgets
// an acknowledged write, Redis unreachable at the worst moment, overlapping
// deliveries of one task. Each is judged from the simulator's own counts.

// lossyRedis routes the harness's workers through a proxy that really loses
// Redis replies.
func lossyRedis(t *testing.T, h *harness) *testutil.LossyProxy {
	t.Helper()
	client, proxy := h.redis.LossyClient(t)
	h.workerRedis = client
	return proxy
}

// TestLostReplyOnTheIntentStillPosts loses the reply of the script that
// records the intent. go-redis re-sends it; the re-run must recognise its
// own write, not answer "conflict" and leave the handler believing another
// attempt got there first (which stranded the job in requesting, no POST,
// no poll, until its deadline).
func TestLostReplyOnTheIntentStillPosts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	proxy := lossyRedis(t, h)
	code := "SESSION_LOSTINTENT_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
	w := h.newWorker()
	proxy.LoseReplyTo(`"intent_at"`)
	if err := w.Handlers().RequestPreview(context.Background(), mustTask(t, tasks.RequestPreview{JobID: job.ID, SessionCode: code})); err != nil {
		t.Fatalf("RequestPreview: %v", err)
	}
	if proxy.Lost() != 1 {
		t.Fatalf("the proxy lost %d replies, want 1: the fault was not injected", proxy.Lost())
	}
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Fatalf("accepted preview POSTs = %d after a lost intent reply, want 1 (job %s, %+v)", got, h.job(job.ID).Status, h.job(job.ID).Request)
	}
	h.run(w)
	if done := h.waitFinal(job.ID, 20*time.Second); done.Status != store.StatusDone {
		t.Fatalf("status = %s %+v", done.Status, done.Error)
	}
}

// TestLostReplyOnTheAcceptedCommitOneEvent loses the reply of the commit
// that records the accepted POST: one preview.accepted, one webhook id.
func TestLostReplyOnTheAcceptedCommitOneEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	proxy := lossyRedis(t, h)
	proxy.LoseReplyTo(`"outcome":"accepted"`)
	h.start()
	code := "SESSION_LOSTACCEPT_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
	if done := h.waitFinal(job.ID, 20*time.Second); done.Status != store.StatusDone {
		t.Fatalf("status = %s %+v", done.Status, done.Error)
	}
	h.waitEvent(job.ID, store.EventDone, 10*time.Second)
	if proxy.Lost() != 1 {
		t.Fatalf("the proxy lost %d replies, want 1: the fault was not injected", proxy.Lost())
	}
	stored, err := h.store.Events(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for _, body := range stored {
		if strings.Contains(string(body), `"type":"preview.accepted"`) {
			accepted++
		}
	}
	if accepted != 1 {
		t.Fatalf("%d preview.accepted events stored, want 1 (one event per fact)", accepted)
	}
	ids := map[string]bool{}
	for _, d := range h.rcv.Deliveries() {
		if strings.Contains(string(d.Body), `"type":"preview.accepted"`) && strings.Contains(string(d.Body), job.ID) {
			ids[d.Header.Get("webhook-id")] = true
		}
	}
	if len(ids) != 1 {
		t.Fatalf("preview.accepted arrived under %d webhook ids, want 1: %v", len(ids), ids)
	}
}

// TestFailoverThatForgetsTheIntentNeverBillsTwice: the intent was
// acknowledged by a primary that died before replicating it; the promoted
// replica shows the job queued while the first run's POST is accepted. The
// first run must adopt its accepted POST, and a re-run must not POST again.
func TestFailoverThatForgetsTheIntentNeverBillsTwice(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code := "SESSION_FAILOVER_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
	ctx := context.Background()
	jobKey := h.store.KeysOf(job.ID)[0]
	before, err := h.redis.Client.HGetAll(ctx, jobKey).Result()
	if err != nil || len(before) == 0 {
		t.Fatalf("snapshot of the job: %v %v", before, err)
	}
	var once sync.Once
	h.sim.OnPreviewAccepted(func(string) {
		once.Do(func() { // the failover: the job as the replica last saw it
			pipe := h.redis.Client.TxPipeline()
			pipe.Del(ctx, jobKey)
			pipe.HSet(ctx, jobKey, before)
			if _, err := pipe.Exec(ctx); err != nil {
				t.Error(err)
			}
		})
	})
	w := h.newWorker()
	task := mustTask(t, tasks.RequestPreview{JobID: job.ID, SessionCode: code})
	for range 3 { // the first run, then redeliveries
		if err := w.Handlers().RequestPreview(ctx, task); err != nil {
			t.Fatalf("RequestPreview: %v", err)
		}
	}
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Fatalf("accepted preview POSTs = %d, want 1", got)
	}
	if j := h.job(job.ID); j.Status != store.StatusGenerating || j.UniqueTrialKey == "" {
		t.Fatalf("after the failover: status %s, trial key %q; want generating with the key adopted", j.Status, j.UniqueTrialKey)
	}
	h.run(w)
	if done := h.waitFinal(job.ID, 20*time.Second); done.Status != store.StatusDone {
		t.Fatalf("status = %s %+v", done.Status, done.Error)
	}
}

// TestNoPostWhenAPostIsOnRecord: whatever the status says, a job with a
// trial key or a recorded outcome is never POSTed again.
func TestNoPostWhenAPostIsOnRecord(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		set  func(j *store.Job, now time.Time)
	}{
		{"trial key", func(j *store.Job, now time.Time) { j.UniqueTrialKey = "trial_earlier" }},
		{"outcome accepted", func(j *store.Job, now time.Time) { j.Request.Outcome = store.OutcomeAccepted }},
		{"outcome unknown", func(j *store.Job, now time.Time) { j.Request.Outcome = store.OutcomeUnknown }},
		{"foreign intent", func(j *store.Job, now time.Time) { j.Request.IntentAt, j.Request.IntentID = &now, "another-run" }},
	}
	h := newHarness(t)
	w := h.newWorker()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code := "SESSION_ONRECORD_" + testutil.RandomHex(4)
			job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
			if _, err := h.store.Update(context.Background(), job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				tc.set(j, now)
				return store.Change{}, nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := w.Handlers().RequestPreview(context.Background(), mustTask(t, tasks.RequestPreview{JobID: job.ID, SessionCode: code})); err != nil {
				t.Fatalf("RequestPreview: %v", err)
			}
			if got := h.sim.Requests(code, csmsim.EndpointPreview); got != 0 {
				t.Fatalf("preview POSTs = %d, want 0", got)
			}
			if j := h.job(job.ID); j.Status != store.StatusGenerating {
				t.Fatalf("status %s, want generating (reconciling by polling)", j.Status)
			}
		})
	}
}

// TestOverlappingRunsOfOneRequestPostOnce runs one request task twice at
// once (a redelivery after a lease expiry while the first run is alive):
// both read the job and the session before either records its intent, and
// only one may POST.
func TestOverlappingRunsOfOneRequestPostOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code := "SESSION_OVERLAP_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second, Latency: 300 * time.Millisecond})
	w := h.newWorker()
	task := mustTask(t, tasks.RequestPreview{JobID: job.ID, SessionCode: code})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := w.Handlers().RequestPreview(context.Background(), task); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := h.sim.Requests(code, csmsim.EndpointGetSession); got < 2 {
		t.Fatalf("session reads = %d: the runs did not overlap", got)
	}
	if got := h.sim.Requests(code, csmsim.EndpointPreview); got != 1 {
		t.Fatalf("preview POSTs = %d from two overlapping runs, want 1", got)
	}
}

// TestIntentIsDurableBeforeThePost: with MinReplicas set, a POST is sent
// only after a replica acknowledged its intent. Against a Redis without
// replicas nothing is sent and the intent is withdrawn; against a real
// primary with a replica the job runs to done.
func TestIntentIsDurableBeforeThePost(t *testing.T) {
	t.Parallel()
	t.Run("no replica", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.minReplicas = 1
		code := "SESSION_NOREPLICA_" + testutil.RandomHex(4)
		job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
		err := h.newWorker().Handlers().RequestPreview(context.Background(), mustTask(t, tasks.RequestPreview{JobID: job.ID, SessionCode: code}))
		if !errors.Is(err, store.ErrNotReplicated) {
			t.Fatalf("RequestPreview = %v, want ErrNotReplicated", err)
		}
		if got := h.sim.Requests(code, csmsim.EndpointPreview); got != 0 {
			t.Fatalf("preview POSTs = %d with an unreplicated intent, want 0", got)
		}
		if j := h.job(job.ID); j.Request.IntentAt != nil || j.Request.Attempts != 0 {
			t.Fatalf("intent %v attempts %d: want the intent withdrawn and no POST counted", j.Request.IntentAt, j.Request.Attempts)
		}
	})
	t.Run("with a replica", func(t *testing.T) {
		t.Parallel()
		primary := testutil.StartRedisServer(t)
		replica := testutil.StartRedisServer(t, "--replicaof", "127.0.0.1", primary.Addr()[strings.LastIndexByte(primary.Addr(), ':')+1:])
		testutil.Eventually(t, 10*time.Second, "the replica to sync", func() bool {
			info, err := replica.Client().Info(context.Background(), "replication").Result()
			return err == nil && strings.Contains(info, "master_link_status:up")
		})
		h := newHarness(t, withRedisServer(primary))
		h.minReplicas = 1
		h.start()
		code := "SESSION_REPLICA_" + testutil.RandomHex(4)
		job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
		if done := h.waitFinal(job.ID, 20*time.Second); done.Status != store.StatusDone {
			t.Fatalf("status = %s %+v", done.Status, done.Error)
		}
		if got := h.sim.AcceptedPreviews(code); got != 1 {
			t.Fatalf("accepted preview POSTs = %d, want 1", got)
		}
	})
}

// limiterFunc is a csm.Limiter.
type limiterFunc func(ctx context.Context) error

func (f limiterFunc) Wait(ctx context.Context) error { return f(ctx) }

// TestNoWaitBetweenIntentAndPost: the rate limiter is waited on before the
// intent is recorded, never after: a worker killed in that wait leaves no
// intent behind, so no later attempt mistakes a POST never written for one
// of unknown outcome.
func TestNoWaitBetweenIntentAndPost(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code := "SESSION_LIMITER_" + testutil.RandomHex(4)
	var jobID atomic.Value
	var waitsWithIntent, waits atomic.Int32
	h.limiter = limiterFunc(func(ctx context.Context) error {
		if id, ok := jobID.Load().(string); ok {
			waits.Add(1)
			if j, err := h.store.Get(ctx, id); err == nil && j.Request.IntentAt != nil {
				waitsWithIntent.Add(1)
			}
		}
		time.Sleep(100 * time.Millisecond) // the wait a backlog makes
		return nil
	})
	var intentBeforePost atomic.Bool
	h.sim.OnPreviewAccepted(func(string) {
		if j, err := h.store.Get(context.Background(), jobID.Load().(string)); err == nil && j.Request.IntentAt != nil {
			intentBeforePost.Store(true)
		}
	})
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
	jobID.Store(job.ID)
	if err := h.newWorker().Handlers().RequestPreview(context.Background(), mustTask(t, tasks.RequestPreview{JobID: job.ID, SessionCode: code})); err != nil {
		t.Fatalf("RequestPreview: %v", err)
	}
	if waits.Load() == 0 {
		t.Fatal("the limiter was never waited on")
	}
	if n := waitsWithIntent.Load(); n != 0 {
		t.Fatalf("%d limiter waits happened with the intent recorded, want 0", n)
	}
	if !intentBeforePost.Load() {
		t.Fatal("the POST reached CSM before its intent was recorded")
	}
}

// outageOnRefusal makes Redis unreachable for a while right after CSM
// refuses a preview POST: when the handler must withdraw its intent.
type outageOnRefusal struct {
	*csm.Client
	proxy  *testutil.LossyProxy
	outage time.Duration
	once   sync.Once
}

func (o *outageOnRefusal) RequestPreview(ctx context.Context, code string, p csm.PreviewParams) (*csm.PreviewJob, error) {
	pj, err := o.Client.RequestPreview(ctx, code, p)
	if err != nil {
		o.once.Do(func() { o.proxy.Outage(o.outage) })
	}
	return pj, err
}

// TestIntentWithdrawalRidesThroughAnOutage: CSM refuses the POST (429)
// and Redis is unreachable for 3 s, as in a failover. The write that
// withdraws the intent must ride through; left behind, the intent makes the
// next attempt reconcile a POST CSM never accepted, and the job fails as
// preview_unconfirmed.
func TestIntentWithdrawalRidesThroughAnOutage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withGrace(3*time.Second))
	proxy := lossyRedis(t, h)
	h.wrapCSM = func(c *csm.Client) worker.CSM {
		return &outageOnRefusal{Client: c, proxy: proxy, outage: 3 * time.Second}
	}
	h.start()
	code := "SESSION_OUTAGE_" + testutil.RandomHex(4)
	job := h.request(code, withFaults(csmsim.SessionConfig{GenerationTime: time.Second},
		csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault429}))
	done := h.waitFinal(job.ID, 40*time.Second)
	if done.Status != store.StatusDone {
		t.Fatalf("status = %s %+v; want done after the refused POST was retried", done.Status, done.Error)
	}
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Fatalf("accepted preview POSTs = %d, want 1", got)
	}
}
