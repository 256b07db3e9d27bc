package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// TestEventsNeedNoFanoutHop: an event's messages are created by the commit
// that creates the event, and the job's own webhook is delivered right
// after it. Judged from asynq's own counters: with only the job's
// webhook_url, a job run to the end leaves no task processed on either
// webhook queue; with an endpoint too, exactly one delivery task per event
// (the endpoint's), no fan-out.
func TestEventsNeedNoFanoutHop(t *testing.T) {
	tests := []struct {
		name      string
		endpoints int
	}{
		{"job webhook only", 0},
		{"and an endpoint", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			ctx := context.Background()
			var ep store.Endpoint
			if tt.endpoints > 0 {
				ep, _ = h.addEndpoint(testutil.NewReceiver(t).URL)
			}
			h.start()
			job := h.request("SESSION_ADDR_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
			h.waitFinal(job.ID, 30*time.Second)
			h.waitEvent(job.ID, store.EventDone, 10*time.Second)
			evs, err := h.store.Events(ctx, job.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := len(evs) * (1 + tt.endpoints)
			testutil.Eventually(t, 10*time.Second, "every message delivered", func() bool {
				msgs, _ := h.store.Messages(ctx, job.ID)
				n := 0
				for _, m := range msgs {
					if m.Status == store.MessageDelivered {
						n++
					}
				}
				return n == want
			})
			msgs, _ := h.store.Messages(ctx, job.ID)
			for _, m := range msgs {
				if m.Destination == "job" && m.AttemptsN != 1 {
					t.Errorf("message %s: %d attempts, want the one made right after the commit", m.ID, m.AttemptsN)
				}
				if tt.endpoints > 0 && m.Destination != "job" && m.Destination != ep.ID {
					t.Errorf("message %s to %q", m.ID, m.Destination)
				}
			}
			processed := 0
			for _, q := range h.queues.Deliveries() {
				info, err := h.inspector.GetQueueInfo(q)
				if err != nil {
					continue // a queue never used does not exist
				}
				processed += info.Processed
			}
			if wantTasks := len(evs) * tt.endpoints; processed != wantTasks {
				t.Fatalf("%d events, %d endpoints: %d webhook tasks processed, want %d (one delivery per endpoint message, no fan-out)",
					len(evs), tt.endpoints, processed, wantTasks)
			}
		})
	}
}
