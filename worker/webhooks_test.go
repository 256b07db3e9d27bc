package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// addEndpoint registers an endpoint on a receiver and returns its secret.
func (h *harness) addEndpoint(url string, types ...string) (store.Endpoint, string) {
	h.t.Helper()
	ep, secret, err := h.producer.AddEndpoint(context.Background(), tasks.EndpointRequest{URL: url, EventTypes: types})
	if err != nil {
		h.t.Fatalf("AddEndpoint: %v", err)
	}
	return ep, secret
}

// verifiedTypes verifies every delivery with secret (reference library)
// and returns the event types received for the job, in arrival order.
func verifiedTypes(t *testing.T, secret, jobID string, ds []testutil.Delivery) []store.EventType {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.EventType
	for _, d := range ds {
		if err := wh.Verify(d.Body, d.Header); err != nil {
			t.Fatalf("delivery fails verification with the endpoint's secret: %v", err)
		}
		var ev store.EventBody
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Data.ID == jobID {
			out = append(out, ev.Type)
		}
	}
	return out
}

// TestEndpointsReceiveTheirSubscriptions: every event goes to the job's
// webhook_url and to each enabled endpoint subscribed to its type, signed
// with that destination's own secret, as one message per destination.
func TestEndpointsReceiveTheirSubscriptions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	all, onlyDone, disabled := testutil.NewReceiver(t), testutil.NewReceiver(t), testutil.NewReceiver(t)
	epAll, secretAll := h.addEndpoint(all.URL)
	epDone, secretDone := h.addEndpoint(onlyDone.URL, string(store.EventDone))
	epOff, _ := h.addEndpoint(disabled.URL)
	if _, err := h.producer.SetEndpointEnabled(context.Background(), epOff.ID, false, "testing"); err != nil {
		t.Fatal(err)
	}
	h.start()
	code := "SESSION_EP_" + testutil.RandomHex(4)
	job := h.request(code, csmsim.SessionConfig{GenerationTime: 2 * time.Second})
	jobEvents := h.waitEvent(job.ID, store.EventDone, 20*time.Second)

	gotAll := all.WaitFor(t, 10*time.Second, "preview.done at the catch-all endpoint", func(ds []testutil.Delivery) bool {
		return len(ds) >= len(jobEvents)
	})
	gotDone := onlyDone.WaitFor(t, 10*time.Second, "preview.done at the done-only endpoint", func(ds []testutil.Delivery) bool { return len(ds) >= 1 })
	if got, want := verifiedTypes(t, secretAll, job.ID, gotAll), types(jobEvents); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("catch-all endpoint got %v, the job's URL got %v", got, want)
	}
	if got := verifiedTypes(t, secretDone, job.ID, gotDone); !slices.Equal(got, []store.EventType{store.EventDone}) {
		t.Errorf("done-only endpoint got %v", got)
	}
	// Each endpoint has its own secret: the job URL's secret does not verify there.
	wh, _ := standardwebhooks.NewWebhook(h.secretText)
	if err := wh.Verify(gotAll[0].Body, gotAll[0].Header); err == nil {
		t.Error("an endpoint's delivery verifies with the global secret")
	}
	// Same event, same webhook-id at every destination.
	ids := map[string]bool{}
	for _, d := range h.rcv.Deliveries() {
		ids[d.Header.Get("webhook-id")] = true
	}
	for _, d := range gotAll {
		if !ids[d.Header.Get("webhook-id")] {
			t.Errorf("endpoint got webhook-id %s the job URL never got", d.Header.Get("webhook-id"))
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(disabled.Deliveries()); n != 0 {
		t.Errorf("a disabled endpoint got %d deliveries", n)
	}
	testutil.Eventually(t, 20*time.Second, "one message per event and destination", func() bool {
		msgs, _ := h.store.Messages(context.Background(), job.ID)
		perDest := map[string]int{}
		for _, m := range msgs {
			if m.Status == store.MessageDelivered {
				perDest[m.Destination]++
			}
		}
		return perDest["job"] == len(jobEvents) && perDest[epAll.ID] == len(jobEvents) && perDest[epDone.ID] == 1 && len(perDest) == 3
	})
}

func sorted(ts []store.EventType) []store.EventType {
	out := slices.Clone(ts)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestSecretRotation: during the rotation window every request carries one
// signature per active secret, and receivers verifying with the old or
// the new secret both pass.
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rcv := testutil.NewReceiver(t)
	ep, oldSecret := h.addEndpoint(rcv.URL)
	_, newSecret, err := h.producer.RotateEndpointSecret(context.Background(), ep.ID)
	if err != nil || newSecret == oldSecret {
		t.Fatalf("rotate: %v", err)
	}
	h.start()
	job := h.request("SESSION_ROT_"+testutil.RandomHex(4), csmsim.SessionConfig{Stuck: true})
	ds := rcv.WaitFor(t, 10*time.Second, "a delivery", func(ds []testutil.Delivery) bool { return len(ds) >= 1 })
	for _, secret := range []string{oldSecret, newSecret} {
		verifiedTypes(t, secret, job.ID, ds[:1])
	}
	if sigs := bytes.Count([]byte(ds[0].Header.Get("webhook-signature")), []byte("v1,")); sigs != 2 {
		t.Fatalf("webhook-signature carries %d signatures during the rotation window, want 2", sigs)
	}
	// A tampered body is rejected by the reference library.
	wh, _ := standardwebhooks.NewWebhook(newSecret)
	tampered := bytes.Replace(ds[0].Body, []byte(job.ID), []byte("00000000-0000-0000-0000-000000000000"), 1)
	if err := wh.Verify(tampered, ds[0].Header); err == nil {
		t.Fatal("a tampered body verifies")
	}
}

// TestGoneStopsDeliveries: a 410 from an endpoint disables it, with the
// reason recorded, and it gets nothing more: no message is retried after
// its 410, and a later job's events never reach it. (Deliveries of one
// job's events already under way when the first 410 came back may each
// still arrive once: they run concurrently, and a request sent cannot be
// recalled.)
func TestGoneStopsDeliveries(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	gone := testutil.NewReceiver(t)
	gone.SetStatus(http.StatusGone)
	ep, _ := h.addEndpoint(gone.URL)
	h.start()
	first := h.request("SESSION_410_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: 2 * time.Second})
	h.waitEvent(first.ID, store.EventDone, 20*time.Second)
	testutil.Eventually(t, 20*time.Second, "the endpoint to be disabled", func() bool {
		e, err := h.producer.Endpoint(context.Background(), ep.ID)
		return err == nil && !e.Enabled && e.DisabledReason == "the receiver answered 410 Gone"
	})
	later := h.request("SESSION_410_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
	h.waitEvent(later.ID, store.EventDone, 20*time.Second)

	perMessage := map[string]int{}
	for _, d := range gone.Deliveries() {
		var body store.EventBody
		if err := json.Unmarshal(d.Body, &body); err != nil {
			t.Fatalf("delivery body %s: %v", d.Body, err)
		}
		if body.Data.ID != first.ID {
			t.Errorf("the disabled endpoint got %s of a later job", body.Type)
		}
		perMessage[d.Header.Get("webhook-id")]++
	}
	if len(perMessage) == 0 {
		t.Fatal("the 410 endpoint got no request")
	}
	for id, n := range perMessage {
		if n != 1 {
			t.Errorf("event %s reached the 410 endpoint %d times, want once (no retry after a 410)", id, n)
		}
	}
}

// TestFailingEndpointIsDisabled: an endpoint that keeps failing for the
// configured period is disabled automatically, with the reason.
func TestFailingEndpointIsDisabled(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.Webhooks.Schedule = []time.Duration{time.Second, time.Second, time.Second, time.Second, time.Second}
	h.opts.Webhooks.DisableAfter = 2 * time.Second
	failing := testutil.NewReceiver(t)
	failing.SetStatus(http.StatusInternalServerError)
	ep, _ := h.addEndpoint(failing.URL, string(store.EventAccepted))
	h.start()
	job := h.request("SESSION_FAILING_"+testutil.RandomHex(4), csmsim.SessionConfig{Stuck: true})
	testutil.Eventually(t, 20*time.Second, "the endpoint to be disabled", func() bool {
		e, _ := h.producer.Endpoint(context.Background(), ep.ID)
		return !e.Enabled
	})
	e, _ := h.producer.Endpoint(context.Background(), ep.ID)
	if e.FailingSince == nil || e.DisabledAt == nil || e.DisabledAt.Sub(*e.FailingSince) < 2*time.Second || !bytes.Contains([]byte(e.DisabledReason), []byte("failing since")) {
		t.Fatalf("disabled endpoint: %+v", e)
	}
	// Attempts are a second apart, each picked up by asynq's 1 s tick: 20 s,
	// not 5, for a loaded CI machine (5 s timed out once there).
	testutil.Eventually(t, 20*time.Second, "the message to be given up", func() bool {
		msgs, _ := h.store.Messages(context.Background(), job.ID)
		for _, m := range msgs {
			if m.Destination == ep.ID {
				return m.Status == store.MessageFailed && m.AttemptsN >= 3
			}
		}
		return false
	})
}

// TestReplayResendsTheStoredMessage: a message given up is re-sent on
// request with its original id and body, and delivered.
func TestReplayResendsTheStoredMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.Webhooks.Schedule = []time.Duration{time.Second}
	h.rcv.SetStatus(http.StatusServiceUnavailable)
	h.start()
	job := h.request("SESSION_REPLAY_"+testutil.RandomHex(4), csmsim.SessionConfig{Stuck: true})
	ctx := context.Background()
	var failed store.Message
	testutil.Eventually(t, 15*time.Second, "the accepted message to be given up", func() bool {
		msgs, _ := h.store.Messages(ctx, job.ID)
		for _, m := range msgs {
			if m.EventType == store.EventAccepted && m.Status == store.MessageFailed {
				failed = m
				return true
			}
		}
		return false
	})
	first := h.rcv.Deliveries()[0]
	h.rcv.SetStatus(http.StatusOK)
	if _, err := h.producer.Replay(ctx, failed.ID); err != nil {
		t.Fatal(err)
	}
	ds := h.rcv.WaitFor(t, 10*time.Second, "the replayed message", func(ds []testutil.Delivery) bool {
		last := ds[len(ds)-1]
		return last.Header.Get("webhook-id") == failed.EventID && h.job(job.ID).ID != "" && bytes.Equal(last.Body, first.Body)
	})
	h.events(job.ID, ds[len(ds)-1:])
	testutil.Eventually(t, 20*time.Second, "the replay to be recorded", func() bool {
		m, _, err := h.producer.Message(ctx, failed.ID)
		return err == nil && m.Status == store.MessageDelivered && m.Replays == 1 && m.AttemptsN == failed.AttemptsN+1
	})
	// Replaying by job touches only failed messages unless asked for all.
	replayed, err := h.producer.ReplayMany(ctx, tasks.ReplaySelection{JobID: job.ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range replayed {
		if m.ID == failed.ID {
			t.Error("a delivered message was replayed without --all")
		}
	}
}

// hangingReceiver answers nothing until the client gives up.
func hangingReceiver(t *testing.T) (url string, hits func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		// Read the body first: only then does the server notice the client
		// hanging up and cancel r.Context().
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/hang", func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestSlowReceiverDoesNotDelayOthers: while one receiver hangs on every
// request, another still gets each webhook within 2 s of its event.
func TestSlowReceiverDoesNotDelayOthers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.WebhookConcurrency = 4
	h.opts.Webhooks.PerDestination = 2
	h.opts.Webhooks.AttemptTimeout = 4 * time.Second
	hangURL, hangHits := hangingReceiver(t)
	fast := testutil.NewReceiver(t)
	h.addEndpoint(hangURL)
	h.addEndpoint(fast.URL)
	h.start()
	const jobs = 8
	var ids []string
	for i := range jobs {
		job := h.request("SESSION_FAIR_"+testutil.RandomHex(3), csmsim.SessionConfig{GenerationTime: time.Duration(1+i%3) * time.Second})
		ids = append(ids, job.ID)
	}
	for _, id := range ids {
		h.waitFinal(id, 30*time.Second)
	}
	want := 0
	for _, id := range ids {
		evs, _ := h.store.Events(context.Background(), id)
		want += len(evs)
	}
	ds := fast.WaitFor(t, 20*time.Second, "every event at the fast receiver", func(ds []testutil.Delivery) bool { return len(ds) >= want })
	var delays []time.Duration
	for _, d := range ds {
		var ev store.EventBody
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			t.Fatal(err)
		}
		delays = append(delays, d.At.Sub(ev.Timestamp))
	}
	slices.Sort(delays)
	p50, worst := delays[len(delays)/2], delays[len(delays)-1]
	t.Logf("fast receiver: %d webhooks, delay after the event p50 %s, max %s; the hanging receiver got %d requests",
		len(delays), p50.Round(time.Millisecond), worst.Round(time.Millisecond), hangHits())
	if worst > 2*time.Second {
		t.Fatalf("a webhook reached the fast receiver %s after its event (limit 2s)", worst)
	}
	if hangHits() == 0 {
		t.Fatal("the hanging receiver was never tried: the test proves nothing")
	}
}

// TestReplayByEndpoint: the failed messages to one endpoint since a time
// are re-sent, and only those.
func TestReplayByEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.Webhooks.Schedule = []time.Duration{time.Second}
	down := testutil.NewReceiver(t)
	down.SetStatus(http.StatusBadGateway)
	ep, _ := h.addEndpoint(down.URL, string(store.EventAccepted))
	h.start()
	ctx := context.Background()
	job := h.request("SESSION_EP_REPLAY_"+testutil.RandomHex(4), csmsim.SessionConfig{Stuck: true})
	testutil.Eventually(t, 15*time.Second, "the endpoint's message to be given up", func() bool {
		msgs, _ := h.store.Messages(ctx, job.ID)
		for _, m := range msgs {
			if m.Destination == ep.ID {
				return m.Status == store.MessageFailed
			}
		}
		return false
	})
	before := len(down.Deliveries())
	down.SetStatus(http.StatusOK)
	if got, err := h.producer.ReplayMany(ctx, tasks.ReplaySelection{EndpointID: ep.ID, Since: time.Now().Add(time.Hour)}); err != nil || len(got) != 0 {
		t.Fatalf("replay since the future: %d messages, %v", len(got), err)
	}
	replayed, err := h.producer.ReplayMany(ctx, tasks.ReplaySelection{EndpointID: ep.ID, Since: time.Now().Add(-time.Hour)})
	if err != nil || len(replayed) != 1 || replayed[0].Destination != ep.ID {
		t.Fatalf("replay by endpoint: %+v, %v", replayed, err)
	}
	down.WaitFor(t, 10*time.Second, "the replay", func(ds []testutil.Delivery) bool { return len(ds) == before+1 })
}
