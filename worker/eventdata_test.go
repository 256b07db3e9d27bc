package worker_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestEndpointsDoNotSeeAnotherDestinationsCredentials: a job whose
// webhook_url carries credentials in its path and query runs through a
// real worker; an endpoint (another party's receiver) gets every event, and
// none of them carries those credentials or previewd's bookkeeping.
func TestEndpointsDoNotSeeAnotherDestinationsCredentials(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	other := testutil.NewReceiver(t)
	h.addEndpoint(other.URL)
	h.start()

	jobURL := h.rcv.URL + "/T0/pathsecret?token=querysecret"
	u, err := url.Parse(jobURL)
	if err != nil {
		t.Fatal(err)
	}
	job := h.request("SESSION_PUB_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second},
		func(r *tasks.PreviewRequest) { r.WebhookURL = jobURL })
	jobEvents := h.waitEvent(job.ID, store.EventDone, 20*time.Second)

	got := other.WaitFor(t, 10*time.Second, "every event at the endpoint", func(ds []testutil.Delivery) bool {
		return len(ds) >= len(jobEvents)
	})
	for _, d := range got {
		for _, secret := range []string{"pathsecret", "querysecret", "token="} {
			if strings.Contains(string(d.Body), secret) {
				t.Errorf("the endpoint got %q: %s", secret, d.Body)
			}
		}
		var ev struct {
			Type store.EventType            `json:"type"`
			Data map[string]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			t.Fatal(err)
		}
		for _, internal := range []string{"request", "poll"} {
			if _, ok := ev.Data[internal]; ok {
				t.Errorf("%s event data carries %q", ev.Type, internal)
			}
		}
		var whURL string
		if err := json.Unmarshal(ev.Data["webhook_url"], &whURL); err != nil || whURL != u.Scheme+"://"+u.Host+"/" {
			t.Errorf("%s event data webhook_url %q, want the origin %s://%s/", ev.Type, whURL, u.Scheme, u.Host)
		}
	}
	// The job's own receiver got its events too, at the URL with its query:
	// the job keeps its webhook_url whole, only what is shown to others is cut.
	if j := h.job(job.ID); j.WebhookURL != jobURL {
		t.Errorf("stored webhook_url %q, want %q", j.WebhookURL, jobURL)
	}
	if len(jobEvents) == 0 {
		t.Fatal("the job's own receiver got nothing")
	}
}
