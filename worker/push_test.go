package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/worker"
)

const pushToken = "push-token-0123456789abcdef"

// pushHarness is a harness whose simulator posts account webhooks to a real
// API server (the producer's, with the CSM events route open), and whose
// workers poll every 30 s as the safety net of pushes.
func pushHarness(t *testing.T, shape csmsim.PushShape, opts ...harnessOption) (*harness, string) {
	t.Helper()
	h := newHarness(t, opts...)
	h.opts.Polling.PushInterval = 30 * time.Second
	srv := api.New(h.producer, api.Options{
		Logger:    h.log,
		CSMEvents: &api.CSMEvents{Target: tasks.NewPusher(h.redis.Client, h.redis.Namespace), Token: pushToken},
	})
	apiSrv := httptest.NewServer(srv.Handler())
	t.Cleanup(apiSrv.Close)
	pushURL := apiSrv.URL + api.CSMEventsPath + "?token=" + pushToken
	sim, simURL := testutil.NewSim(t, csmsim.Options{Push: csmsim.PushOptions{URL: pushURL, Shape: shape}})
	h.sim, h.simURL = sim, simURL
	return h, pushURL
}

// inFlight counts the session reads under way, through the real client.
type inFlight struct {
	*csm.Client
	now, peak atomic.Int32
}

func (c *inFlight) GetSession(ctx context.Context, code string) (*csm.Session, error) {
	n := c.now.Add(1)
	defer c.now.Add(-1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return c.Client.GetSession(ctx, code)
}

// TestPushDetectsTheEndAtOnce: with 30 s polling, the push CSM sends when
// the preview is done makes the job poll at once, so the job finishes, and
// its final webhook is out, long before the first scheduled poll could run:
// every poll is a pushed one. Measures the detection delay (the sim's
// end of generation to the receiver's preview.done) over 100 jobs, both
// webhook shapes alternating. Before the CSM events route existed the jobs
// waited for their 30 s poll, and this test timed out.
func TestPushDetectsTheEndAtOnce(t *testing.T) {
	h, _ := pushHarness(t, csmsim.PushAlternate)
	h.opts.Concurrency, h.opts.WebhookConcurrency = 10, 10
	// Every job's receiver is the same URL here: its cap (4 by default)
	// would measure snoozes of the busy receiver, not the push path.
	h.opts.Webhooks.PerDestination = 10
	h.start()

	const jobs = 100
	gen := func(i int) time.Duration { return time.Second + time.Duration(i%10)*200*time.Millisecond }
	ids := make([]string, jobs)
	codes := make([]string, jobs)
	for i := range jobs {
		codes[i] = "SESSION_PUSH_" + testutil.RandomHex(6)
		schema := csmsim.SchemaLegacy
		if i%2 == 1 {
			schema = csmsim.Schema2025
		}
		ids[i] = h.request(codes[i], csmsim.SessionConfig{Schema: schema, GenerationTime: gen(i)}).ID
	}
	var delays, commits []time.Duration
	for i, id := range ids {
		job := h.waitFinal(id, 25*time.Second) // the first scheduled poll is 27 s or more away
		if job.Status != store.StatusDone {
			t.Fatalf("job %d: %s %+v", i, job.Status, job.Error)
		}
		// Pushed polls only: the start's (when it finds the job generating
		// already) and the end's; no scheduled one.
		if job.Polls > 2 {
			t.Errorf("job %d took %d polls, want the pushed ones only", i, job.Polls)
		}
		h.waitEvent(id, store.EventDone, 10*time.Second)
		call, _ := h.sim.LastPreview(codes[i])
		ready := call.At.Add(gen(i))
		commits = append(commits, job.FinishedAt.Sub(ready))
		for _, d := range h.rcv.Deliveries() {
			if evs := h.events(id, []testutil.Delivery{d}); len(evs) == 1 && evs[0].Type == store.EventDone {
				delays = append(delays, d.At.Sub(ready))
				break
			}
		}
	}
	slices.Sort(delays)
	slices.Sort(commits)
	t.Logf("push detection delay over %d jobs (sim's end of generation to preview.done received): median %s, p95 %s, worst %s",
		len(delays), delays[len(delays)/2], delays[len(delays)*95/100], delays[len(delays)-1])
	t.Logf("of which to the final commit: median %s, p95 %s, worst %s",
		commits[len(commits)/2], commits[len(commits)*95/100], commits[len(commits)-1])
	if ok, failed := h.sim.PushesSent(); failed != 0 || ok < jobs {
		t.Fatalf("pushes answered 2xx: %d, not: %d", ok, failed)
	}
}

// TestPushFloodCostsOnePollAtATime: 100 pushes at once, then another 100,
// for one generating job. Each push hurries the job's next poll step; none
// adds a poll: at most one session read is ever in flight for the job, the
// reads are far fewer than the pushes, and once the flood is over the chain
// is back on its 30 s schedule (a single chain, not a fork of them).
func TestPushFloodCostsOnePollAtATime(t *testing.T) {
	h, pushURL := pushHarness(t, csmsim.PushLegacy)
	var counter *inFlight
	h.wrapCSM = func(c *csm.Client) worker.CSM { counter = &inFlight{Client: c}; return counter }
	h.start()
	code := "SESSION_FLOOD_" + testutil.RandomHex(6)
	// Stuck: the job stays generating whatever the pushes say; each read
	// takes 300 ms, so a flood overlaps polls.
	job := h.request(code, csmsim.SessionConfig{Stuck: true, Latency: 300 * time.Millisecond})
	testutil.Eventually(t, 10*time.Second, "job generating", func() bool {
		return h.job(job.ID).Status == store.StatusGenerating
	})

	const pushes = 100
	body := `{"type":"preview_done","payload":{"session_id":"` + code + `","status":"preview_done"}}`
	for range 2 {
		var wg sync.WaitGroup
		for range pushes {
			wg.Go(func() {
				resp, err := http.Post(pushURL, "application/json", strings.NewReader(body))
				if err != nil {
					t.Errorf("push: %v", err)
					return
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					t.Errorf("push answered %d, want 204", resp.StatusCode)
				}
			})
		}
		wg.Wait()
	}
	// The flood is over: the chain settles on a poll 27 s or more away.
	testutil.Eventually(t, 20*time.Second, "the chain back on its schedule", func() bool {
		j := h.job(job.ID)
		return counter.now.Load() == 0 && j.Poll.NextAt != nil && time.Until(*j.Poll.NextAt) > 20*time.Second
	})
	reads := h.sim.Requests(code, csmsim.EndpointGetSession)
	t.Logf("%d pushes: %d session reads, at most %d in flight", 2*pushes, reads, counter.peak.Load())
	if p := counter.peak.Load(); p != 1 {
		t.Fatalf("%d session reads in flight at once for one job, want 1", p)
	}
	if reads < 2 || reads > 20 {
		t.Fatalf("%d session reads for %d pushes: want a few (one per push that found no poll due or running)", reads, 2*pushes)
	}
	if j := h.job(job.ID); j.Status != store.StatusGenerating {
		t.Fatalf("the unsigned pushes said preview_done; the job must follow the session (stuck), not them: %s", j.Status)
	}
}
