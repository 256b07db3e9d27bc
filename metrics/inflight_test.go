package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/metrics"
	"github.com/previewd/previewd/store"
)

// TestJobsInFlight: a scrape reports, per status not yet final, the jobs in
// it and the age since creation of the oldest, read from a real Redis; a
// status without jobs reports 0 for both, and final jobs count nowhere.
func TestJobsInFlight(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	clock := testutil.NewClock(time.Now().Truncate(time.Second))
	st := store.New(r.Client, store.Options{Namespace: r.Namespace, Retention: time.Hour})
	ctx := context.Background()
	create := func(age time.Duration, path ...store.Status) {
		t.Helper()
		at := clock.Now().Add(-age)
		job := store.Job{
			ID: uuid.NewString(), Status: store.StatusQueued, SessionCode: "SESSION_1",
			CreatedAt: at, UpdatedAt: at, Deadline: at.Add(3 * time.Hour),
			History: []store.Transition{{At: at, Status: store.StatusQueued}},
		}
		if _, _, _, err := st.Create(ctx, job, "fp", nil); err != nil {
			t.Fatal(err)
		}
		for _, to := range path {
			if _, err := st.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				j.SetStatus(to, now, "test")
				return store.Change{}, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	create(90 * time.Second)
	create(30 * time.Second)
	create(10*time.Minute, store.StatusRequesting, store.StatusGenerating)
	create(2*time.Minute, store.StatusRequesting, store.StatusGenerating)
	create(time.Hour, store.StatusRequesting, store.StatusGenerating, store.StatusDone)

	m := metrics.New(metrics.Sources{Store: st, Now: clock.Now})
	body := scrape(t, m.Handler())
	for _, want := range []string{
		`previewd_jobs_in_flight{status="queued"} 2`,
		`previewd_job_oldest_in_flight_seconds{status="queued"} 90`,
		`previewd_jobs_in_flight{status="requesting"} 0`,
		`previewd_job_oldest_in_flight_seconds{status="requesting"} 0`,
		`previewd_jobs_in_flight{status="generating"} 2`,
		`previewd_job_oldest_in_flight_seconds{status="generating"} 600`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("the scrape lacks %s", want)
		}
	}
	for _, final := range []string{"done", "failed", "timed_out", "canceled"} {
		if strings.Contains(body, `_in_flight{status="`+final+`"}`) || strings.Contains(body, `_in_flight_seconds{status="`+final+`"}`) {
			t.Errorf("the scrape reports final status %s as in flight", final)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", body)
	}
}
