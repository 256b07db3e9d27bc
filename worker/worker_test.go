package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestEndToEnd drives the worker code path from enqueue to a verified final
// webhook: one preview POST with the resolved spin, the job's story in its
// record, and signed accepted/progress/done webhooks.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	code := "SESSION_E2E_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: 2 * time.Second}, func(r *tasks.PreviewRequest) {
		r.ExternalID = "order-42"
	})
	if job.Status != store.StatusQueued {
		t.Fatalf("new job status = %s, want queued", job.Status)
	}
	done := h.waitFinal(job.ID, 20*time.Second)
	evs := h.waitEvent(job.ID, store.EventDone, 10*time.Second)

	if done.Status != store.StatusDone || done.Error != nil {
		t.Fatalf("job = %s %+v, want done without error", done.Status, done.Error)
	}
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Errorf("accepted preview POSTs = %d, want 1", got)
	}
	call, _ := h.sim.LastPreview(code)
	if want := csmsim.DefaultBaseAssetURL + "/spins/" + code + "/1.png"; call.SelectedSpin != want || call.SelectedSpinIndex != 1 {
		t.Errorf("POST sent spin %d %q, want 1 %q", call.SelectedSpinIndex, call.SelectedSpin, want)
	}
	if !slices.Equal(call.ScaledBBox, []float64{1, 2, 3}) || !slices.Equal(call.PivotPoint, []float64{0, -0.5, 0.25}) {
		t.Errorf("POST sent bbox %v pivot %v", call.ScaledBBox, call.PivotPoint)
	}
	if done.UniqueTrialKey == "" || done.UniqueTrialKey != call.UniqueTrialKey {
		t.Errorf("unique_trial_key = %q, want %q", done.UniqueTrialKey, call.UniqueTrialKey)
	}
	if done.UpstreamStatus != "preview_done" || done.MeshURLs["glb"] == "" {
		t.Errorf("upstream_status %q mesh_urls %v", done.UpstreamStatus, done.MeshURLs)
	}
	if done.ExternalID != "order-42" || done.Polls < 1 || done.FinishedAt == nil {
		t.Errorf("external_id %q polls %d finished_at %v", done.ExternalID, done.Polls, done.FinishedAt)
	}
	var statuses []store.Status
	for _, tr := range done.History {
		if len(statuses) == 0 || statuses[len(statuses)-1] != tr.Status {
			statuses = append(statuses, tr.Status)
		}
	}
	if want := []store.Status{store.StatusQueued, store.StatusRequesting, store.StatusGenerating, store.StatusDone}; !slices.Equal(statuses, want) {
		t.Errorf("history statuses = %v, want %v", statuses, want)
	}
	if evs[0].Type != store.EventAccepted || count(evs, store.EventDone) != 1 || count(evs, store.EventProgress) < 1 {
		t.Errorf("events = %v, want accepted, progress..., done", types(evs))
	}
	last := evs[len(evs)-1]
	if last.Type != store.EventDone || last.Data.Status != store.StatusDone || last.Data.MeshURLs["glb"] != done.MeshURLs["glb"] {
		t.Errorf("final webhook = %s with data %s %v", last.Type, last.Data.Status, last.Data.MeshURLs)
	}
	// Each event became one message to the job's webhook_url, delivered at
	// the first attempt (the record is saved just after the receiver answers).
	testutil.Eventually(t, 20*time.Second, "every message recorded as delivered", func() bool {
		msgs, err := h.store.Messages(context.Background(), job.ID)
		if err != nil || len(msgs) != len(evs) {
			return false
		}
		for _, m := range msgs {
			if m.Status != store.MessageDelivered || m.AttemptsN != 1 || m.Destination != tasks.DestinationJob {
				return false
			}
		}
		return true
	})
}

// TestScenarios runs jobs through the faults a real run meets and checks
// how each ends and how many previews CSM was asked to bill.
func TestScenarios(t *testing.T) {
	t.Parallel()
	legacy := csmsim.SessionConfig{GenerationTime: 2 * time.Second}
	cases := []struct {
		name     string
		session  csmsim.SessionConfig
		missing  bool // no such session upstream
		opts     []harnessOption
		status   store.Status
		code     string // error code of a job that did not end done
		accepted int    // preview POSTs CSM accepted
		outcome  string
		timeout  time.Duration
	}{
		{name: "legacy", session: legacy, status: store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "2025 schema, complete before the POST is not our preview",
			session: csmsim.SessionConfig{Schema: csmsim.Schema2025, QueueTime: 2 * time.Second, GenerationTime: 2 * time.Second},
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "upstream lag after the POST",
			session: csmsim.SessionConfig{QueueTime: 2 * time.Second, GenerationTime: time.Second},
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "429 with Retry-After, then accepted",
			session: withFaults(legacy, csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault429, RetryAfter: time.Second}),
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "rate-limit 400, then accepted",
			session: withFaults(legacy, csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultRateLimit400}),
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "accepted but answered 502: reconciled, not re-sent",
			session: withFaults(legacy, csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThen502}),
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeUnknown},
		{name: "accepted then connection reset: reconciled",
			session: withFaults(legacy, csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenReset}),
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeUnknown},
		{name: "accepted then no answer until our timeout: reconciled",
			session: withFaults(legacy, csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenHang}),
			opts:    []harnessOption{withCSMTimeout(time.Second)},
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeUnknown},
		{name: "500 without accepting: unconfirmed after the grace period, never re-sent",
			session: withFaults(csmsim.SessionConfig{Stuck: true}, csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault500}),
			opts:    []harnessOption{withGrace(2 * time.Second)},
			status:  store.StatusFailed, code: store.CodePreviewUnconfirmed, accepted: 0, outcome: store.OutcomeUnknown},
		{name: "error inside an HTTP 200 while polling",
			session: withFaults(legacy, csmsim.Fault{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.FaultEnvelopeError}),
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "unknown status while generating",
			session: csmsim.SessionConfig{UnknownStatus: "training_preview_v9", GenerationTime: 4 * time.Second},
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "auto refine passes preview_done between polls",
			session: csmsim.SessionConfig{AutoRefine: true, GenerationTime: time.Second},
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "preview failed upstream", session: csmsim.SessionConfig{Fail: true, GenerationTime: time.Second},
			status: store.StatusFailed, code: store.CodePreviewFailed, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "2025 failed", session: csmsim.SessionConfig{Schema: csmsim.Schema2025, Fail: true, GenerationTime: time.Second},
			status: store.StatusFailed, code: store.CodePreviewFailed, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "unknown session: failed before paying", missing: true,
			status: store.StatusFailed, code: store.CodeSessionNotFound, accepted: 0},
		{name: "404 while polling", session: csmsim.SessionConfig{Stuck: true, GoneAfter: 1500 * time.Millisecond},
			status: store.StatusFailed, code: store.CodeSessionNotFound, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "stuck until the deadline", session: csmsim.SessionConfig{Stuck: true},
			opts:   []harnessOption{withDeadline(4 * time.Second)},
			status: store.StatusTimedOut, code: store.CodeDeadlineExceeded, accepted: 1, outcome: store.OutcomeAccepted},
		{name: "spins never ready: no POST, timed out", session: csmsim.SessionConfig{SpinsNotReady: true},
			opts:   []harnessOption{withDeadline(4 * time.Second)},
			status: store.StatusTimedOut, code: store.CodeDeadlineExceeded, accepted: 0},
		{name: "403 on the POST: a configuration fault, retried until it clears",
			session: withFaults(legacy, csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault403}),
			status:  store.StatusDone, accepted: 1, outcome: store.OutcomeAccepted, timeout: 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tc.opts...)
			h.start()
			code := "SESSION_" + testutil.RandomHex(6)
			if tc.missing {
				job, err := h.producer.RequestPreview(context.Background(), tasks.PreviewRequest{SessionCode: code, WebhookURL: h.rcv.URL})
				if err != nil {
					t.Fatal(err)
				}
				tc.session = csmsim.SessionConfig{}
				h.check(t, job.ID, code, tc.status, tc.code, tc.accepted, tc.outcome, tc.timeout)
				return
			}
			job := h.request(code, tc.session)
			h.check(t, job.ID, code, tc.status, tc.code, tc.accepted, tc.outcome, tc.timeout)
		})
	}
}

func (h *harness) check(t *testing.T, id, code string, status store.Status, errCode string, accepted int, outcome string, timeout time.Duration) {
	t.Helper()
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	job := h.waitFinal(id, timeout)
	evs := h.waitEvent(id, store.FinalEvent(job.Status), 10*time.Second)
	if job.Status != status {
		t.Fatalf("status = %s (error %+v), want %s; history %+v", job.Status, job.Error, status, job.History)
	}
	if errCode != "" && (job.Error == nil || job.Error.Code != errCode) {
		t.Errorf("error = %+v, want code %s", job.Error, errCode)
	}
	if errCode == "" && job.Error != nil {
		t.Errorf("error = %+v, want none", job.Error)
	}
	if got := h.sim.AcceptedPreviews(code); got != accepted {
		t.Errorf("accepted preview POSTs = %d, want %d", got, accepted)
	}
	if job.Request.Outcome != outcome {
		t.Errorf("request outcome = %q, want %q", job.Request.Outcome, outcome)
	}
	if status == store.StatusDone && len(job.MeshURLs) == 0 {
		t.Error("done without mesh URLs")
	}
	if n := count(evs, store.FinalEvent(status)); n != 1 {
		t.Errorf("%d %s webhooks, want exactly 1 (events %v)", n, store.FinalEvent(status), types(evs))
	}
}

func withFaults(cfg csmsim.SessionConfig, faults ...csmsim.Fault) csmsim.SessionConfig {
	cfg.Faults = faults
	return cfg
}

// TestDrainDuringPostRecordsTheOutcome drains the worker (a rolling deploy's
// SIGTERM) while CSM holds the answer to a POST it has already accepted and
// billed. The drain must not cut the POST: its answer is recorded (trial key,
// outcome accepted) before the worker stops, and the job finishes with
// exactly one accepted POST. Cut by the drain, the POST would end with an
// unknown outcome and, maybe, a job failed as preview_unconfirmed.
func TestDrainDuringPostRecordsTheOutcome(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCSMTimeout(10*time.Second))
	stop1 := h.start()
	var once sync.Once
	drained := make(chan struct{})
	h.sim.OnPreviewAccepted(func(string) {
		once.Do(func() {
			go func() { stop1(); close(drained) }()
			// Hold the answer while the drain cancels the handlers' contexts.
			time.Sleep(time.Second)
		})
	})
	code := "SESSION_DRAIN_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: 2 * time.Second})
	select {
	case <-drained:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not drain after CSM accepted its POST")
	}
	j := h.job(job.ID)
	if j.Request.Outcome != store.OutcomeAccepted || j.UniqueTrialKey == "" || j.Status != store.StatusGenerating {
		t.Fatalf("after the drain: outcome %q, trial key %q, status %s; want the accepted POST recorded",
			j.Request.Outcome, j.UniqueTrialKey, j.Status)
	}
	h.start()
	done := h.waitFinal(job.ID, 20*time.Second)
	if done.Status != store.StatusDone {
		t.Fatalf("status = %s %+v", done.Status, done.Error)
	}
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Fatalf("accepted preview POSTs = %d, want 1", got)
	}
}

// TestRedeliveryAfterCrashBeforeOutcome replays the state a crash between
// POST and write leaves (intent recorded, no outcome) and redelivers the
// request task: it must reconcile, not POST again.
func TestRedeliveryAfterCrashBeforeOutcome(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code := "SESSION_CRASH_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: time.Second})
	w := h.newWorker()
	ctx := context.Background()
	// What the crashed worker did: record the intent, POST (accepted), die.
	if _, err := h.store.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		j.SetStatus(store.StatusRequesting, now, "")
		j.Request.IntentAt = &now
		j.Request.Attempts = 1
		j.Request.BaselineStatus = "spin_generate_done"
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	postDirect(t, h.simURL, code)

	task := mustTask(t, tasks.RequestPreview{JobID: job.ID, SessionCode: code})
	for range 3 { // redelivered, even several times
		if err := w.Handlers().RequestPreview(ctx, task); err != nil {
			t.Fatalf("redelivered request: %v", err)
		}
	}
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Fatalf("accepted preview POSTs = %d, want 1", got)
	}
	j := h.job(job.ID)
	if j.Status != store.StatusGenerating || j.Request.Outcome != store.OutcomeUnknown || j.Request.Attempts != 1 {
		t.Fatalf("after redelivery: status %s outcome %q attempts %d", j.Status, j.Request.Outcome, j.Request.Attempts)
	}
	h.start()
	if done := h.waitFinal(job.ID, 20*time.Second); done.Status != store.StatusDone {
		t.Fatalf("status = %s %+v", done.Status, done.Error)
	}
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Fatalf("accepted preview POSTs = %d, want 1", got)
	}
}

// postDirect sends a preview POST to the simulator the way a worker that
// then crashed would have.
func postDirect(t *testing.T, simURL, code string) {
	t.Helper()
	body := fmt.Sprintf(`{"selected_spin_index":1,"selected_spin":%q}`, csmsim.DefaultBaseAssetURL+"/spins/"+code+"/1.png")
	req, _ := http.NewRequest(http.MethodPost, simURL+"/image-to-3d-sessions/get-3d/preview/"+code, strings.NewReader(body))
	req.Header.Set("x-api-key", testutil.SimAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("direct POST: %d", resp.StatusCode)
	}
}

func mustTask(t *testing.T, p tasks.Payload) *asynq.Task {
	t.Helper()
	task, err := tasks.NewTask(p, tasks.Queues{Previews: "x", Webhooks: "y"}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// TestDuplicateEnqueuesOnePost enqueues the same request many times at once.
func TestDuplicateEnqueuesOnePost(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code := "SESSION_DUP_" + testutil.RandomHex(4)
	h.sim.AddSession(code, csmsim.SessionConfig{GenerationTime: time.Second})
	req := tasks.PreviewRequest{SessionCode: code, WebhookURL: h.rcv.URL, IdempotencyKey: "dup-" + code}
	ids := make([]string, 20)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			job, err := h.producer.RequestPreview(context.Background(), req)
			if err != nil {
				t.Error(err)
			}
			ids[i] = job.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("duplicate enqueues returned different jobs: %v", ids)
		}
	}
	h.start()
	h.check(t, ids[0], code, store.StatusDone, "", 1, store.OutcomeAccepted, 0)
	if _, err := h.producer.RequestPreview(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	// A repeat after the job finished returns it and sends nothing.
	time.Sleep(1500 * time.Millisecond)
	if got := h.sim.AcceptedPreviews(code); got != 1 {
		t.Fatalf("accepted preview POSTs = %d after a late duplicate, want 1", got)
	}
}

// TestStaleAndDuplicatePollsDoNothing delivers polls out of turn and twice.
func TestStaleAndDuplicatePollsDoNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code := "SESSION_POLL_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{Stuck: true})
	// The worker reaches the simulator through a gate that, once armed, holds
	// each session read until two have arrived: both polls then have read the
	// job (seq 1) before either commits, so the duplicate below really
	// overlaps and only the commit-time check can stop the second one.
	var armed atomic.Bool
	var arrived atomic.Int32
	bothIn, pollReturned := make(chan struct{}), make(chan struct{})
	var returnedOnce sync.Once
	gate := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if armed.Load() && r.Method == http.MethodGet {
			if arrived.Add(1) == 2 {
				close(bothIn)
			}
			select { // a poll that returned without reading cannot be waited for
			case <-bothIn:
			case <-pollReturned:
			case <-r.Context().Done():
				return
			}
		}
		h.sim.ServeHTTP(rw, r)
	}))
	t.Cleanup(gate.Close)
	h.simURL = gate.URL
	w := h.newWorker()
	ctx := context.Background()
	if err := w.Handlers().RequestPreview(ctx, mustTask(t, tasks.RequestPreview{JobID: job.ID, SessionCode: code})); err != nil {
		t.Fatal(err)
	}
	j := h.job(job.ID)
	if j.Status != store.StatusGenerating || j.Poll.Seq != 1 {
		t.Fatalf("after request: %s seq %d", j.Status, j.Poll.Seq)
	}
	before := h.sim.Requests(code, csmsim.EndpointGetSession)
	for _, seq := range []int{2, 7} { // not the poll the chain expects
		if err := w.Handlers().PollPreview(ctx, mustTask(t, tasks.PollPreview{JobID: job.ID, SessionCode: code, Seq: seq})); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.sim.Requests(code, csmsim.EndpointGetSession); got != before {
		t.Fatalf("stale polls read the session %d times", got-before)
	}
	// The expected poll, delivered twice at once: one counts.
	armed.Store(true)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			defer returnedOnce.Do(func() { close(pollReturned) })
			if err := w.Handlers().PollPreview(ctx, mustTask(t, tasks.PollPreview{JobID: job.ID, SessionCode: code, Seq: 1})); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	armed.Store(false)
	j = h.job(job.ID)
	if j.Polls != 1 || j.Poll.Seq != 2 {
		t.Fatalf("after a duplicated poll: polls %d seq %d, want 1 and 2", j.Polls, j.Poll.Seq)
	}
	// Redelivering poll 1 again only makes sure poll 2 is enqueued.
	if err := w.Handlers().PollPreview(ctx, mustTask(t, tasks.PollPreview{JobID: job.ID, SessionCode: code, Seq: 1})); err != nil {
		t.Fatal(err)
	}
	if info := h.taskInfo(h.queues.Polls, "poll:"+job.ID+":2"); info == nil || info.State != asynq.TaskStateScheduled {
		t.Fatalf("poll 2 task: %+v, want scheduled", info)
	}
	if h.job(job.ID).Polls != 1 {
		t.Fatal("a redelivered poll counted again")
	}
}

// TestCancelStopsTheJob cancels a generating job: one canceled webhook, and
// the poll chain ends.
func TestCancelStopsTheJob(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	code := "SESSION_CANCEL_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{Stuck: true})
	testutil.Eventually(t, 15*time.Second, "generating", func() bool { return h.job(job.ID).Polls >= 1 })
	canceled, err := h.producer.Cancel(context.Background(), job.ID)
	if err != nil || canceled.Status != store.StatusCanceled {
		t.Fatalf("Cancel = %s, %v", canceled.Status, err)
	}
	evs := h.waitEvent(job.ID, store.EventCanceled, 10*time.Second)
	if count(evs, store.EventCanceled) != 1 {
		t.Fatalf("events %v", types(evs))
	}
	polls := h.job(job.ID).Polls
	time.Sleep(2500 * time.Millisecond) // more than two poll intervals
	if after := h.job(job.ID); after.Polls != polls || after.Status != store.StatusCanceled {
		t.Fatalf("after cancel: %s with %d polls (was %d)", after.Status, after.Polls, polls)
	}
	if _, err := h.producer.Cancel(context.Background(), job.ID); err != nil {
		t.Fatalf("canceling twice: %v", err)
	}
}
