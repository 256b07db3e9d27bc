package tasks_test

import (
	"context"
	"testing"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// failedMessage creates a job and a given-up message of one of its events.
func failedMessage(t *testing.T, e *env) (jobID string, m store.Message) {
	t.Helper()
	ctx := context.Background()
	job, err := e.c.RequestPreview(ctx, tasks.PreviewRequest{SessionCode: "SESSION_REPLAY_" + testutil.RandomHex(4)})
	if err != nil {
		t.Fatal(err)
	}
	eventID := tasks.EventID(job.ID, "final")
	m = store.Message{
		ID: store.MessageID(eventID, tasks.DestinationJob), EventID: eventID, EventType: store.EventDone,
		Destination: tasks.DestinationJob, Status: store.MessageFailed, Reason: "gave up after 8 attempts", CreatedAt: e.clock.Now(),
	}
	if err := e.c.Store().CreateMessage(ctx, job.ID, m); err != nil {
		t.Fatal(err)
	}
	return job.ID, m
}

// TestReplayWithALostReplyIsOneReplay: the reply to the replay's write is
// lost and go-redis runs the script again. The re-run must recognise the
// write as its own: one replay, not "pending, not replayable" for a
// replay that did happen, and one delivery task.
func TestReplayWithALostReplyIsOneReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{})
	if !e.r.Real() {
		t.Skip("needs a real Redis behind a proxy")
	}
	ctx := context.Background()
	// Load the script into Redis's cache first, so that the lost reply is
	// that of the write itself, not of a NOSCRIPT answer.
	warmJob, warm := failedMessage(t, e)
	if _, err := e.c.Replay(ctx, warm.ID); err != nil {
		t.Fatal(err)
	}

	jobID, m := failedMessage(t, e)
	lossy, proxy := e.r.LossyClient(t)
	c := tasks.NewClient(lossy, tasks.ClientOptions{Namespace: e.r.Namespace, Now: e.clock.Now})

	// Only the replay's new record carries this (its first replay round):
	// the lost reply is the write's, after Redis ran it. A stored record
	// names neither its message nor its event (its field does), but this
	// is the only replay through the proxy.
	proxy.LoseReplyTo(`"replays":1,"attempt_count":`)
	got, err := c.Replay(ctx, m.ID)
	if err != nil {
		t.Fatalf("replay whose reply was lost: %v", err)
	}
	if proxy.Lost() != 1 {
		t.Fatalf("the proxy lost %d replies, want 1: the test proves nothing", proxy.Lost())
	}
	stored, err := e.c.Store().Message(ctx, jobID, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Replays != 1 || stored.Replays != 1 || stored.Status != store.MessagePending {
		t.Fatalf("after one replay: returned %d replays, stored %s with %d; want pending, 1", got.Replays, stored.Status, stored.Replays)
	}
	want := tasks.DeliverWebhook{JobID: jobID, EventID: m.EventID, EventType: string(m.EventType), Destination: tasks.DestinationJob, Replay: 1}.TaskID()
	var ids []string
	for _, ti := range e.pending(t, e.q.Webhooks) {
		if ti.ID != (tasks.DeliverWebhook{JobID: warmJob, EventID: warm.EventID, EventType: string(warm.EventType), Destination: tasks.DestinationJob, Replay: 1}).TaskID() {
			ids = append(ids, ti.ID)
		}
	}
	if len(ids) != 1 || ids[0] != want {
		t.Fatalf("delivery tasks of the replay: %v, want [%s]", ids, want)
	}
}
