package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

// TestRecordsArePacked: what a job leaves in Redis is packed (smaller than
// its JSON, and not JSON), and reads back as the same job and event bodies.
func TestRecordsArePacked(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	job.WebhookURL = "https://example.com/hooks"
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	updated, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		j.Note(now, "packed")
		return store.Change{Events: []store.NewEvent{{ID: "evt_packed", Type: store.EventProgress}}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := json.Marshal(updated)
	stored, err := r.Client.HGet(ctx, s.KeysOf(job.ID)[0], "doc").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if stored[0] == '{' || len(stored) >= len(plain) {
		t.Fatalf("the stored job is %d bytes beginning %q; want packed and smaller than its %d bytes of JSON", len(stored), stored[:1], len(plain))
	}
	got, err := s.Get(ctx, job.ID)
	if err != nil || got.History[len(got.History)-1].Note != "packed" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	ev, err := s.Event(ctx, job.ID, "evt_packed")
	if err != nil || !json.Valid(ev.Body) || !bytes.Contains(ev.Body, []byte(`"type":"preview.progress"`)) {
		t.Fatalf("Event = %q, %v; want the JSON body", ev.Body, err)
	}
	evs, err := s.Events(ctx, job.ID)
	if err != nil || !bytes.Equal(evs["evt_packed"], ev.Body) {
		t.Fatalf("Events = %q, %v; want the body Event returned", evs["evt_packed"], err)
	}
}

// TestRecordsWrittenAsJSONStillRead: records an earlier version wrote as
// plain JSON are read as they are, and updated into the packed form.
func TestRecordsWrittenAsJSONStillRead(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	legacy, _ := json.Marshal(job)
	key := s.KeysOf(job.ID)[0]
	if err := r.Client.HSet(ctx, key, "doc", legacy).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, job.ID); err != nil || got.SessionCode != job.SessionCode {
		t.Fatalf("Get of a JSON record = %+v, %v", got, err)
	}
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		j.Note(now, "repacked")
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	stored, _ := r.Client.HGet(ctx, key, "doc").Bytes()
	if len(stored) == 0 || stored[0] == '{' {
		t.Fatalf("after an update the record is still JSON")
	}
}

func TestUnpack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		stored  []byte
		want    string
		wantErr bool
	}{
		{name: "plain JSON object", stored: []byte(`{"a":1}`), want: `{"a":1}`},
		{name: "plain JSON array", stored: []byte(`[1]`), want: `[1]`},
		{name: "unknown format byte", stored: []byte{0x7f, 1, 2}, wantErr: true},
		{name: "corrupt packed record", stored: []byte{0x01, 0x28, 0xb5, 0x2f, 0xfd, 0xff}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := store.Unpack(tt.stored)
			if (err != nil) != tt.wantErr || (!tt.wantErr && string(got) != tt.want) {
				t.Fatalf("Unpack(%q) = %q, %v; want %q (error %v)", tt.stored, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// FuzzUnpack: whatever Redis holds under a record's field, reading it
// returns an error or bytes, never a panic or an unbounded allocation.
func FuzzUnpack(f *testing.F) {
	f.Add([]byte(`{"id":"x"}`))
	f.Add([]byte{0x01, 0x28, 0xb5, 0x2f, 0xfd, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = store.Unpack(b)
	})
}
