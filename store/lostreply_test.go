package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// lossyStore is a store whose Redis link loses replies for real (see
// testutil.LossyProxy), with go-redis's default retries.
func lossyStore(t *testing.T) (*store.Store, *testutil.LossyProxy, *testutil.Redis) {
	t.Helper()
	r := testutil.NewRedis(t)
	client, proxy := r.LossyClient(t)
	return store.New(client, store.Options{Namespace: r.Namespace, Retention: time.Hour}), proxy, r
}

// TestLostRepliesAreRecognised: every job script, re-sent by go-redis after
// its reply was lost, recognises its own earlier run and answers as that run
// did: a create stays "created", an update is applied and announced once.
func TestLostRepliesAreRecognised(t *testing.T) {
	t.Parallel()
	s, proxy, _ := lossyStore(t)
	ctx := context.Background()
	job := newJob(time.Now())

	proxy.LoseReplyTo("lost-create-reply") // only the create script carries the outbox entry's data
	_, created, _, err := s.Create(ctx, job, "fp", []store.OutboxEntry{{ID: "a", Data: []byte("lost-create-reply")}})
	if err != nil || !created {
		t.Fatalf("Create after a lost reply = created %v, %v; want created", created, err)
	}

	calls := 0
	proxy.LoseReplyTo(`"note":"lost reply"`)
	got, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		calls++
		j.Note(now, "lost reply")
		return store.Change{Events: []store.NewEvent{{ID: "evt_once", Type: store.EventProgress}}}, nil
	})
	if err != nil {
		t.Fatalf("Update after a lost reply: %v", err)
	}
	if proxy.Lost() != 2 {
		t.Fatalf("the proxy lost %d replies, want 2: the faults were not injected", proxy.Lost())
	}
	if calls != 1 {
		t.Fatalf("the update function ran %d times, want 1: the re-sent script was taken for a conflict", calls)
	}
	notes := 0
	for _, tr := range got.History {
		if tr.Note == "lost reply" {
			notes++
		}
	}
	stored, err := s.Get(ctx, job.ID)
	if err != nil || notes != 1 || len(stored.History) != len(got.History) {
		t.Fatalf("history has the change %d times (stored %d entries, returned %d; %v), want once", notes, len(stored.History), len(got.History), err)
	}
}
