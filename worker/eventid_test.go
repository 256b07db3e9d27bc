package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestJobLeavesNoEventLookupKey: a job run through the workers leaves no
// <ns>:event:* key in Redis, whether its events were addressed in the
// worker's commits (a job that finishes) or by fan-out tasks (a job
// canceled through the API's client), and each of its messages is still
// read and replayed by its id alone: the event id carries the job.
func TestJobLeavesNoEventLookupKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ep, _ := h.addEndpoint(testutil.NewReceiver(t).URL)
	h.start()
	ctx := context.Background()
	job := h.request("SESSION_EVTID_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
	events := h.waitEvent(job.ID, store.EventDone, 20*time.Second)
	var msgs []store.Message
	testutil.Eventually(t, 10*time.Second, "every message delivered to the job's URL and the endpoint", func() bool {
		msgs, _ = h.store.Messages(ctx, job.ID)
		for _, m := range msgs {
			if m.Status != store.MessageDelivered {
				return false
			}
		}
		return len(msgs) == 2*len(events)
	})

	// A canceled job's event is committed by the client, with a fan-out
	// task that creates its messages (Store.CreateMessage).
	canceled := h.request("SESSION_EVTID_"+testutil.RandomHex(4), csmsim.SessionConfig{Stuck: true})
	if _, err := h.producer.Cancel(ctx, canceled.ID); err != nil {
		t.Fatal(err)
	}
	h.waitEvent(canceled.ID, store.EventCanceled, 20*time.Second)
	testutil.Eventually(t, 10*time.Second, "the canceled job's messages delivered", func() bool {
		ms, _ := h.store.Messages(ctx, canceled.ID)
		n := 0
		for _, m := range ms {
			if m.EventType == store.EventCanceled && m.Status == store.MessageDelivered {
				n++
			}
		}
		return n == 2
	})
	canceledMsgs, err := h.store.Messages(ctx, canceled.ID)
	if err != nil {
		t.Fatal(err)
	}

	if keys := h.scanKeys(h.redis.Namespace + ":event:*"); len(keys) != 0 {
		t.Fatalf("the jobs left event lookup keys %q", keys)
	}
	for _, m := range canceledMsgs {
		if got, jobID, err := h.producer.Message(ctx, m.ID); err != nil || jobID != canceled.ID || got.ID != m.ID {
			t.Fatalf("Message(%s) = %s of job %q, %v; want it, of %s", m.ID, got.ID, jobID, err, canceled.ID)
		}
	}
	var done store.Message
	for _, m := range msgs {
		got, jobID, err := h.producer.Message(ctx, m.ID)
		if err != nil || jobID != job.ID || got.ID != m.ID {
			t.Fatalf("Message(%s) = %s of job %q, %v; want it, of %s", m.ID, got.ID, jobID, err, job.ID)
		}
		if m.EventType == store.EventDone && m.Destination == ep.ID {
			done = m
		}
	}
	if done.ID == "" {
		t.Fatalf("no preview.done message to the endpoint among %d", len(msgs))
	}
	replayed, err := h.producer.Replay(ctx, done.ID)
	if err != nil || replayed.Replays != 1 {
		t.Fatalf("Replay(%s) = %d replays, %v", done.ID, replayed.Replays, err)
	}
	testutil.Eventually(t, 10*time.Second, "the replay delivered", func() bool {
		m, err := h.store.Message(ctx, job.ID, done.ID)
		return err == nil && m.Status == store.MessageDelivered && m.Replays == 1 && m.AttemptsN > done.AttemptsN
	})
	if keys := h.scanKeys(h.redis.Namespace + ":event:*"); len(keys) != 0 {
		t.Fatalf("the replay left event lookup keys %q", keys)
	}
	if _, ok := store.JobOfEvent(done.EventID); !ok || done.EventID != tasks.EventID(job.ID, "final") {
		t.Fatalf("the final event's id %s is not the one that carries its job", done.EventID)
	}
}

// scanKeys lists the keys matching pattern, with SCAN.
func (h *harness) scanKeys(pattern string) []string {
	h.t.Helper()
	ctx := context.Background()
	var keys []string
	iter := h.redis.Client.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		h.t.Fatalf("scan %s: %v", pattern, err)
	}
	return keys
}
