package store_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

// TestEventsLiveInTheirJobsRecord: an event is stored in its job's record,
// no key of its own, and read back byte for byte as the commit reported it
// (characters that JSON may escape included), alone and with the others.
func TestEventsLiveInTheirJobsRecord(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	job.ExternalID = `<order & "co"> é ` + "\u2028"
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	var sent []store.CommittedEvent
	for i, typ := range []store.EventType{store.EventAccepted, store.EventDone} {
		_, c, err := s.UpdateCommitted(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
			j.Polls = i
			return store.Change{Events: []store.NewEvent{{ID: fmt.Sprintf("evt-%d", i), Type: typ}}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Events) != 1 {
			t.Fatalf("commit %d reports %d fresh events, want 1", i, len(c.Events))
		}
		sent = append(sent, c.Events[0])
	}
	if n := r.Client.Exists(ctx, s.EventsKey(job.ID)).Val(); n != 0 {
		t.Fatalf("an events hash exists for a job with 2 events; they belong in its record")
	}
	all, err := s.Events(ctx, job.ID)
	if err != nil || len(all) != len(sent) {
		t.Fatalf("Events = %d events, %v; want %d", len(all), err, len(sent))
	}
	for _, ev := range sent {
		got, err := s.Event(ctx, job.ID, ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Body, ev.Body) || !bytes.Equal(all[ev.ID], ev.Body) {
			t.Fatalf("event %s read back as\n%s\nand\n%s\nsent as\n%s", ev.ID, got.Body, all[ev.ID], ev.Body)
		}
	}
	if _, err := s.Event(ctx, job.ID, "evt-none"); err == nil {
		t.Fatal("Event of an unknown id succeeded")
	}
}

// TestOlderEventsSpillToTheEventsHash: a job with more events than a record
// holds keeps the latest in its record and the older ones in the events
// hash, every one readable, each body the one first stored, and the hash
// moves to the retention with the job when it finishes.
func TestOlderEventsSpillToTheEventsHash(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	n := store.MaxRecordEvents + 5
	sent := map[string][]byte{}
	for i := range n {
		_, c, err := s.UpdateCommitted(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
			j.Polls = i + 1
			return store.Change{Events: []store.NewEvent{{ID: fmt.Sprintf("evt-%02d", i), Type: store.EventProgress}}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range c.Events {
			sent[ev.ID] = ev.Body
		}
	}
	if got := r.Client.HLen(ctx, s.EventsKey(job.ID)).Val(); got != int64(n-store.MaxRecordEvents) {
		t.Fatalf("events hash holds %d events, want the %d oldest", got, n-store.MaxRecordEvents)
	}
	if _, err := r.Client.HGet(ctx, s.EventsKey(job.ID), "evt-00").Result(); err != nil {
		t.Fatalf("the oldest event is not in the events hash: %v", err)
	}
	all, err := s.Events(ctx, job.ID)
	if err != nil || len(all) != n || len(sent) != n {
		t.Fatalf("Events = %d, %v; %d sent; want %d", len(all), err, len(sent), n)
	}
	for id, body := range sent {
		got, err := s.Event(ctx, job.ID, id)
		if err != nil || !bytes.Equal(got.Body, body) || !bytes.Equal(all[id], body) {
			t.Fatalf("event %s: %v\n%s\nwant\n%s", id, err, got.Body, body)
		}
	}
	// A final commit that spills nothing still moves the hash's expiry.
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		j.Finish(store.StatusDone, now, nil, "")
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if ttl := r.Client.PTTL(ctx, s.EventsKey(job.ID)).Val(); ttl < 55*time.Minute || ttl > time.Hour {
		t.Fatalf("events hash TTL = %s after the job finished, want about the 1h retention", ttl)
	}
}

// TestEventsOfAnEarlierVersionAreRead: events an earlier version stored in
// the events hash are still found, beside those in the record.
func TestEventsOfAnEarlierVersionAreRead(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	old := []byte(`{"type":"preview.accepted","data":{"id":"` + job.ID + `"}}`)
	packed, err := store.Pack(old)
	if err != nil {
		t.Fatal(err)
	}
	r.Client.HSet(ctx, s.EventsKey(job.ID), "evt-old", packed)
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		return store.Change{Events: []store.NewEvent{{ID: "evt-new", Type: store.EventProgress}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Event(ctx, job.ID, "evt-old")
	if err != nil || !bytes.Equal(got.Body, old) {
		t.Fatalf("Event(evt-old) = %s, %v; want the earlier version's body", got.Body, err)
	}
	all, err := s.Events(ctx, job.ID)
	if err != nil || len(all) != 2 || !bytes.Equal(all["evt-old"], old) || all["evt-new"] == nil {
		t.Fatalf("Events = %d events, %v; want the old and the new", len(all), err)
	}
}
