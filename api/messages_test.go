package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestReplayMessageByID: POST /v1/messages/{id}/replay finds the message's
// job from its id alone, for an event id that carries its job (no key in
// Redis says where it is) and for an older one through the lookup key it
// got when it was made (written here by hand, as no code writes one any
// more); the replies match the OpenAPI document, event_id pattern
// included.
func TestReplayMessageByID(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	ctx := t.Context()
	resp, body := e.do(call{method: "POST", path: "/v1/previews", body: validRequest})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	job := decode[store.Job](t, body)
	olderEvent := "evt_" + testutil.RandomHex(16)
	if err := e.redis.Client.Set(ctx, e.control.Store().EventLookupKey(olderEvent), job.ID, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	for _, eventID := range []string{tasks.EventID(job.ID, "final"), olderEvent} {
		m := store.Message{
			ID: store.MessageID(eventID, tasks.DestinationJob), EventID: eventID, EventType: store.EventDone,
			Destination: tasks.DestinationJob, Status: store.MessageFailed, Reason: "gave up", CreatedAt: time.Now(),
		}
		if err := e.control.Store().CreateMessage(ctx, job.ID, m); err != nil {
			t.Fatal(err)
		}
		resp, body := e.do(call{method: "POST", path: "/v1/messages/" + m.ID + "/replay"})
		got := decode[store.Message](t, body)
		if resp.StatusCode != http.StatusAccepted || got.ID != m.ID || got.Status != store.MessagePending || got.Replays != 1 {
			t.Fatalf("replay of %s: %d %s", m.ID, resp.StatusCode, body)
		}
	}
	var lookups int
	iter := e.redis.Client.Scan(ctx, 0, e.redis.Namespace+":event:*", 100).Iterator()
	for iter.Next(ctx) {
		if !strings.HasSuffix(iter.Val(), olderEvent) {
			t.Errorf("a lookup key %s for a new event", iter.Val())
		}
		lookups++
	}
	if err := iter.Err(); err != nil || lookups != 1 {
		t.Fatalf("%d lookup keys, %v; want the older event's only", lookups, err)
	}
	_, body = e.do(call{method: "GET", path: "/v1/previews/" + job.ID + "/webhooks"})
	if !strings.Contains(string(body), olderEvent) || !strings.Contains(string(body), tasks.EventID(job.ID, "final")) {
		t.Fatalf("the job's messages: %s", body)
	}
}
