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

// TestLostCommitReplyKeepsItsSeat: a commit that takes its inline
// delivery's seat, re-sent by go-redis after its reply was lost, finds
// itself in the job's seat (the script's "ok-again:seat") and reports the
// slots held: the writer neither gives them back nor takes a second seat.
func TestLostCommitReplyKeepsItsSeat(t *testing.T) {
	t.Parallel()
	s, proxy, r := lossyStore(t)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	// A first commit loads the script, so that the lost one runs by its
	// hash and go-redis re-sends that very run.
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		j.Note(now, "loads the script")
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	take := &store.SlotTake{Holder: "inline:lost-seat-holder#1", Lease: time.Minute,
		Slots: []store.Slot{store.JobSlot(job.ID, 1), {Destination: "domain:lost-seat.example", Limit: 1}}}
	proxy.LoseReplyTo("lost-seat-holder")
	calls := 0
	_, c, err := s.UpdateCommitted(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		calls++
		j.Note(now, "with a seat")
		return store.Change{Slots: take}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if proxy.Lost() != 1 {
		t.Fatalf("the proxy lost %d replies, want 1: the fault was not injected", proxy.Lost())
	}
	if calls != 1 || c.Slots == nil {
		t.Fatalf("update ran %d times, Committed.Slots %+v; want once, held", calls, c.Slots)
	}
	for _, sl := range take.Slots {
		if got := slotHolders(t, s, r.Client, sl.Destination); len(got) != 1 || got[take.Holder] == 0 {
			t.Errorf("%s holds %v, want the writer once", sl.Destination, got)
		}
	}
}
