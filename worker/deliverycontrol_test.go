package worker_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestDeliveryDisableStopsDestinations: a receiver answering
// "webhook-delivery: disable" is stopped as one answering 410 is: an
// endpoint is disabled with the reason (here after a 200, which still
// delivered), a job's webhook_url gets nothing more (here after a 503,
// which fails the message without a retry).
func TestDeliveryDisableStopsDestinations(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.Webhooks.Schedule = []time.Duration{time.Second, time.Second, time.Second}
	disable := http.Header{"Webhook-Delivery": {"disable"}}
	ep := testutil.NewReplyServer(t)
	ep.Answer(http.StatusOK, disable, nil)
	own := testutil.NewReplyServer(t)
	own.Answer(http.StatusServiceUnavailable, disable, nil)
	endpoint, _ := h.addEndpoint(ep.URL + "/hooks")
	h.start()
	ctx := context.Background()
	job := h.request("SESSION_DISABLE_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: 2 * time.Second},
		func(r *tasks.PreviewRequest) { r.WebhookURL = own.URL + "/hooks" })
	h.waitFinal(job.ID, 30*time.Second)

	const reason = "the receiver asked to stop (webhook-delivery: disable)"
	testutil.Eventually(t, 10*time.Second, "the endpoint disabled and the job's webhook_url stopped", func() bool {
		e, err := h.producer.Endpoint(ctx, endpoint.ID)
		return err == nil && !e.Enabled && e.DisabledReason == reason && h.job(job.ID).WebhookGoneAt != nil
	})
	evs, err := h.store.Events(ctx, job.ID)
	if err != nil || len(evs) < 2 {
		t.Fatalf("the job has %d events (%v); the test needs a first and a later one", len(evs), err)
	}
	// A stopped destination is left out of later fan-outs: wait until the
	// webhook queues have nothing left to run, then count.
	testutil.Eventually(t, 15*time.Second, "the webhook queues to drain", func() bool {
		for _, q := range []string{h.queues.FinalWebhooks, h.queues.Webhooks} {
			info, err := h.inspector.GetQueueInfo(q)
			if err == nil && info.Size-info.Archived-info.Completed > 0 {
				return false
			}
		}
		return true
	})
	// What a stop promises: no attempt to the destination starts after the
	// stop was recorded. A later event committed while the first delivery
	// was still in flight may have been sent before that (deliveries to one
	// destination run side by side), so the count of events sent is not
	// the judge; the attempts' times are.
	e, _ := h.producer.Endpoint(ctx, endpoint.ID)
	stopped := map[string]time.Time{endpoint.ID: *e.DisabledAt, tasks.DestinationJob: *h.job(job.ID).WebhookGoneAt}
	msgs, _ := h.store.Messages(ctx, job.ID)
	sent := map[string]int{}
	for _, m := range msgs {
		if m.AttemptsN > 0 {
			sent[m.Destination]++
		}
		switch {
		case m.Destination == endpoint.ID && m.AttemptsN > 0 && m.Status != store.MessageDelivered:
			t.Errorf("endpoint message %s is %s (%s), want delivered: the 200 delivered it", m.ID, m.Status, m.Reason)
		case m.Destination == tasks.DestinationJob && m.AttemptsN > 0 && (m.Status != store.MessageFailed || m.Reason != reason || m.AttemptsN != 1):
			t.Errorf("webhook_url message %s: %s, %q after %d attempts; want failed, %q, after 1", m.ID, m.Status, m.Reason, m.AttemptsN, reason)
		}
		for _, a := range m.Attempts {
			if at, ok := stopped[m.Destination]; ok && a.At.After(at) {
				t.Errorf("message %s was attempted at %s, after its destination stopped at %s", m.ID, a.At.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
			}
		}
	}
	t.Logf("%d events; messages sent per destination: %v", len(evs), sent)
	for _, d := range []string{endpoint.ID, tasks.DestinationJob} {
		if sent[d] == 0 {
			t.Errorf("destination %s was sent none of the job's %d events; want the first", d, len(evs))
		}
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestAttemptLogHidesResolvedAddress: a connection that fails to a name
// (localhost, on a port nothing listens on) is logged in the message's
// attempts without the address the name resolved to.
func TestAttemptLogHidesResolvedAddress(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.Webhooks.Schedule = []time.Duration{time.Second}
	port := strconv.Itoa(closedPort(t))
	h.start()
	ctx := context.Background()
	job := h.request("SESSION_ADDRLOG_"+testutil.RandomHex(4), csmsim.SessionConfig{Stuck: true},
		func(r *tasks.PreviewRequest) { r.WebhookURL = "http://localhost:" + port + "/hooks" })
	var attempts []store.Attempt
	testutil.Eventually(t, 15*time.Second, "a failed attempt logged", func() bool {
		msgs, _ := h.store.Messages(ctx, job.ID)
		for _, m := range msgs {
			if m.Destination == tasks.DestinationJob && len(m.Attempts) > 0 {
				attempts = m.Attempts
				return true
			}
		}
		return false
	})
	for _, a := range attempts {
		if !strings.Contains(a.Error, "could not connect to the receiver") {
			t.Errorf("attempt error %q does not say what failed", a.Error)
		}
		for _, leak := range []string{"127.0.0.1", "::1", "dial tcp"} {
			if strings.Contains(a.Error, leak) {
				t.Errorf("attempt error %q reveals %q", a.Error, leak)
			}
		}
	}
}
