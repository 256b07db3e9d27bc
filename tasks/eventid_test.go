package tasks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestMessageOfAnOlderEvent: an event made before ids carried their job
// has a lookup key from then (written here by hand: no code writes one any
// more), and its messages stay readable and replayable by id alone while
// the key lives out its retention; without the key such a message is not
// found, as nothing else tells its job.
func TestMessageOfAnOlderEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	job := e.request(t, tasks.PreviewRequest{SessionCode: "SESSION_OLD_" + testutil.RandomHex(4)})
	eventID := "evt_" + testutil.RandomHex(16)
	m := store.Message{
		ID: store.MessageID(eventID, tasks.DestinationJob), EventID: eventID, EventType: store.EventDone,
		Destination: tasks.DestinationJob, Status: store.MessageFailed, Reason: "gave up after 8 attempts", CreatedAt: e.clock.Now(),
	}
	// Its record as it would be if its lookup key were gone (SaveMessage
	// writes the record only; CreateMessage would write the key).
	if err := e.c.Store().SaveMessage(ctx, job.ID, m); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.c.Message(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Message of an older event with no lookup key: %v, want ErrNotFound", err)
	}

	if err := e.r.Client.Set(ctx, e.c.Store().EventLookupKey(eventID), job.ID, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	got, jobID, err := e.c.Message(ctx, m.ID)
	if err != nil || jobID != job.ID || got.ID != m.ID || got.Status != store.MessageFailed {
		t.Fatalf("Message = %+v of job %q, %v; want the failed message of %s", got, jobID, err, job.ID)
	}
	replayed, err := e.c.Replay(ctx, m.ID)
	if err != nil || replayed.Status != store.MessagePending || replayed.Replays != 1 {
		t.Fatalf("Replay = %s with %d replays, %v; want pending, 1", replayed.Status, replayed.Replays, err)
	}
	want := tasks.DeliverWebhook{JobID: job.ID, EventID: eventID, EventType: string(store.EventDone), Destination: tasks.DestinationJob, Replay: 1}.TaskID()
	var found bool
	for _, ti := range e.pending(t, e.q.FinalWebhooks) {
		found = found || ti.ID == want
	}
	for _, ti := range e.pending(t, e.q.Webhooks) {
		found = found || ti.ID == want
	}
	if !found {
		t.Fatalf("no delivery task %s for the replay of an older event", want)
	}
}

// TestMessageNotFound: a message id that names no message, whatever the
// shape of its event id, is not found by Message or Replay, and the
// attempt writes nothing (a replay of an id that carries an unknown job
// must not create a record there).
func TestMessageNotFound(t *testing.T) {
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	job := e.request(t, tasks.PreviewRequest{SessionCode: "SESSION_NF_" + testutil.RandomHex(4)})
	before := len(e.allKeys(t))
	for _, tt := range []struct{ name, id string }{
		{name: "an event of an unknown job", id: tasks.EventID(uuid.NewString(), "final") + ".job"},
		{name: "an unknown event of a job", id: tasks.EventID(job.ID, "final") + ".job"},
		{name: "an older event without its lookup key", id: "evt_" + testutil.RandomHex(16) + ".job"},
		{name: "no event id", id: "evt_x.job"},
		{name: "no destination", id: tasks.EventID(job.ID, "final")},
		{name: "key pattern", id: "*.job"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := e.c.Message(ctx, tt.id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Message(%q) = %v, want ErrNotFound", tt.id, err)
			}
			if _, err := e.c.Replay(ctx, tt.id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Replay(%q) = %v, want ErrNotFound", tt.id, err)
			}
		})
	}
	if keys := e.allKeys(t); len(keys) != before {
		t.Errorf("lookups of unknown messages wrote keys: %q", keys)
	}
}
