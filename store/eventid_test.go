package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

func TestJobOfEvent(t *testing.T) {
	const (
		jobID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
		hexes = "6ba7b8109dad11d180b400c04fd430c8"
	)
	tests := []struct {
		name    string
		eventID string
		want    string // "" for no job
	}{
		{name: "carries its job", eventID: "evt_" + hexes + "0123456789abcdef", want: jobID},
		{name: "older shape, 32 hex", eventID: "evt_" + hexes},
		{name: "47 hex", eventID: "evt_" + hexes + "0123456789abcde"},
		{name: "49 hex", eventID: "evt_" + hexes + "0123456789abcdef0"},
		{name: "upper-case hex", eventID: "evt_" + strings.ToUpper(hexes) + "0123456789abcdef"},
		{name: "not hex", eventID: "evt_" + hexes + "0123456789abcdeg"},
		{name: "no prefix", eventID: "ev_x" + hexes + "0123456789abcdef"},
		{name: "dashes kept", eventID: "evt_" + jobID + "0123456789ab"},
		{name: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := store.JobOfEvent(tt.eventID)
			if got != tt.want || ok != (tt.want != "") {
				t.Fatalf("JobOfEvent(%q) = %q, %v; want %q", tt.eventID, got, ok, tt.want)
			}
		})
	}
}

// TestJobOfMessage: a message of an event that carries its job is found
// with no key in Redis; one of an older event through the lookup key its
// event got when it was made (written here by hand, as no code writes one
// any more), and only an id of the older shape is looked up.
func TestJobOfMessage(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	newEvent := "evt_" + strings.ReplaceAll(job.ID, "-", "") + "0123456789abcdef"
	oldEvent := "evt_0123456789abcdef0123456789abcdef"
	unknownEvent := "evt_packed"
	for _, id := range []string{oldEvent, unknownEvent} {
		if err := r.Client.Set(ctx, s.EventLookupKey(id), job.ID, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		msgID string
		want  string // "" for ErrNotFound
	}{
		{name: "new event, job destination", msgID: store.MessageID(newEvent, store.DestinationJob), want: job.ID},
		{name: "new event, an endpoint", msgID: store.MessageID(newEvent, "ep_0123456789abcdef0123456789abcdef"), want: job.ID},
		{name: "older event with its lookup key", msgID: store.MessageID(oldEvent, store.DestinationJob), want: job.ID},
		{name: "older event without one", msgID: store.MessageID("evt_ffffffffffffffffffffffffffffffff", store.DestinationJob)},
		{name: "an id of no known shape, even with a key", msgID: store.MessageID(unknownEvent, store.DestinationJob)},
		{name: "no destination", msgID: newEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.JobOfMessage(ctx, tt.msgID)
			if tt.want == "" {
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("JobOfMessage(%q) = %q, %v; want ErrNotFound", tt.msgID, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("JobOfMessage(%q) = %q, %v; want %s", tt.msgID, got, err, tt.want)
			}
		})
	}
}

// TestMessagesWriteNoLookupKey: neither a message created with its job's
// commit nor one created on its own (a fan-out's) leaves a key outside
// the job's: its id finds its job by itself.
func TestMessagesWriteNoLookupKey(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	eventID := "evt_" + strings.ReplaceAll(job.ID, "-", "") + "0123456789abcdef"
	endpoint := "ep_0123456789abcdef0123456789abcdef"
	atCommit := store.Message{ID: store.MessageID(eventID, store.DestinationJob), EventID: eventID, EventType: store.EventAccepted,
		Destination: store.DestinationJob, Status: store.MessagePending}
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		return store.Change{Events: []store.NewEvent{{ID: eventID, Type: store.EventAccepted}}, Messages: []store.Message{atCommit}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	fanned := atCommit
	fanned.ID, fanned.Destination = store.MessageID(eventID, endpoint), endpoint
	if err := s.CreateMessage(ctx, job.ID, fanned); err != nil {
		t.Fatal(err)
	}
	var keys []string
	iter := r.Client.Scan(ctx, 0, r.Namespace+":event:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil || len(keys) != 0 {
		t.Fatalf("event keys %q, %v; want none", keys, err)
	}
	for _, m := range []store.Message{atCommit, fanned} {
		jobID, err := s.JobOfMessage(ctx, m.ID)
		if err != nil || jobID != job.ID {
			t.Fatalf("JobOfMessage(%s) = %q, %v", m.ID, jobID, err)
		}
		if _, err := s.Message(ctx, jobID, m.ID); err != nil {
			t.Fatalf("Message(%s): %v", m.ID, err)
		}
	}
}

// TestOlderEventFannedOutAfterAnUpgrade: an event made by an older version
// (its id does not carry its job) whose fan-out runs after an upgrade gets
// the lookup key its version would have written, so its messages are found
// by their ids alone.
func TestOlderEventFannedOutAfterAnUpgrade(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	eventID := "evt_0123456789abcdef0123456789abcdef"
	m := store.Message{ID: store.MessageID(eventID, store.DestinationJob), EventID: eventID, EventType: store.EventAccepted,
		Destination: store.DestinationJob, Status: store.MessagePending}
	if err := s.CreateMessage(ctx, job.ID, m); err != nil {
		t.Fatal(err)
	}
	jobID, err := s.JobOfMessage(ctx, m.ID)
	if err != nil || jobID != job.ID {
		t.Fatalf("JobOfMessage(%s) = %q, %v; want %s", m.ID, jobID, err, job.ID)
	}
}
