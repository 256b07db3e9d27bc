package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// messageFixture is a job with an event whose id carries it, and the
// message of that event to the job's webhook_url.
func messageFixture(t *testing.T, s *store.Store) (store.Job, store.Message) {
	t.Helper()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(context.Background(), job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	eventID := "evt_" + strings.ReplaceAll(job.ID, "-", "") + "0123456789abcdef"
	return job, store.Message{
		ID: store.MessageID(eventID, store.DestinationJob), EventID: eventID, EventType: store.EventAccepted,
		Destination: store.DestinationJob, Status: store.MessagePending, CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
	}
}

// storedMessages returns the job's messages hash as Redis holds it, each
// record unpacked.
func storedMessages(t *testing.T, s *store.Store, r *testutil.Redis, jobID string) map[string]string {
	t.Helper()
	fields, err := r.Client.HGetAll(context.Background(), s.KeysOf(jobID)[3]).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for field, raw := range fields {
		js, err := store.Unpack([]byte(raw))
		if err != nil {
			t.Fatalf("unpack %s: %v", field, err)
		}
		out[field] = string(js)
	}
	return out
}

// TestMessageRecordsAreShort: a record is stored under the event id's own
// 16 hex digits and the destination, and keeps no id, event id or
// destination (the field and the job say them), however it was written;
// every read gives them back.
func TestMessageRecordsAreShort(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job, m := messageFixture(t, s)
	endpoint := "ep_0123456789abcdef0123456789abcdef"
	fanned := m
	fanned.ID, fanned.Destination = store.MessageID(m.EventID, endpoint), endpoint
	if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		return store.Change{Events: []store.NewEvent{{ID: m.EventID, Type: store.EventAccepted}}, Messages: []store.Message{m}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMessage(ctx, job.ID, fanned); err != nil {
		t.Fatal(err)
	}
	replayed := m
	replayed.Status = store.MessageFailed
	if err := s.SaveMessage(ctx, job.ID, replayed); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateMessage(ctx, job.ID, m.ID, func(got *store.Message, found bool) ([]store.OutboxEntry, error) {
		got.Status, got.Replays = store.MessagePending, 1
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}

	stored := storedMessages(t, s, r, job.ID)
	wantFields := []string{"0123456789abcdef." + endpoint, "0123456789abcdef.job"}
	fields := slices.Sorted(maps.Keys(stored))
	if !slices.Equal(fields, wantFields) {
		t.Fatalf("fields %q, want %q", fields, wantFields)
	}
	for field, js := range stored {
		var keys map[string]json.RawMessage
		if err := json.Unmarshal([]byte(js), &keys); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"id", "event_id", "destination"} {
			if _, ok := keys[k]; ok {
				t.Errorf("record %s keeps %q: %s", field, k, js)
			}
		}
	}

	m.Replays = 1
	fanned.Replays = 0
	for _, want := range []store.Message{m, fanned} {
		got, err := s.Message(ctx, job.ID, want.ID)
		if err != nil || got.ID != want.ID || got.EventID != want.EventID || got.Destination != want.Destination || got.Replays != want.Replays {
			t.Fatalf("Message(%s) = %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	list, err := s.Messages(ctx, job.ID)
	if err != nil || len(list) != 2 {
		t.Fatalf("Messages = %+v, %v; want two", list, err)
	}
	for _, got := range list {
		if eventID, dest, _ := store.SplitMessageID(got.ID); got.EventID != eventID || got.Destination != dest || eventID != m.EventID {
			t.Errorf("listed %+v: id, event id and destination disagree", got)
		}
	}
}

// writeLegacyMessage stores m as versions before short fields did: under
// its full id, with its id, event id and destination in the record.
func writeLegacyMessage(t *testing.T, s *store.Store, r *testutil.Redis, jobID string, m store.Message) {
	t.Helper()
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"event_id":"`+m.EventID+`"`) {
		t.Fatalf("the legacy record %s lacks its event id", js)
	}
	packed, err := store.Pack(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Client.HSet(context.Background(), s.KeysOf(jobID)[3], m.ID, packed).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyMessageRecords: a record an earlier version stored under the
// message's full id is read and listed once; a write that changes it moves
// it to the short field, and a write that only creates a record if there
// is none leaves it where it is.
func TestLegacyMessageRecords(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		write func(ctx context.Context, s *store.Store, job store.Job, m store.Message) error
		moved bool // the record is under the short field after the write, else still under the legacy one
	}{
		{name: "update", moved: true, write: func(ctx context.Context, s *store.Store, job store.Job, m store.Message) error {
			_, err := s.UpdateMessage(ctx, job.ID, m.ID, func(got *store.Message, found bool) ([]store.OutboxEntry, error) {
				if !found || got.Status != store.MessageFailed {
					t.Errorf("the update got %+v (found %v), want the legacy record", got, found)
				}
				got.Status, got.Reason, got.Replays = store.MessagePending, "", got.Replays+1
				return []store.OutboxEntry{{ID: "deliver", Data: []byte("x")}}, nil
			})
			return err
		}},
		{name: "save", moved: true, write: func(ctx context.Context, s *store.Store, job store.Job, m store.Message) error {
			m.Status, m.Reason, m.Replays = store.MessagePending, "", m.Replays+1
			return s.SaveMessage(ctx, job.ID, m)
		}},
		{name: "create", write: func(ctx context.Context, s *store.Store, job store.Job, m store.Message) error {
			m.Status, m.Reason = store.MessagePending, ""
			return s.CreateMessage(ctx, job.ID, m)
		}},
		{name: "commit re-making its event", write: func(ctx context.Context, s *store.Store, job store.Job, m store.Message) error {
			m.Status, m.Reason = store.MessagePending, ""
			_, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				return store.Change{Events: []store.NewEvent{{ID: m.EventID, Type: store.EventAccepted}}, Messages: []store.Message{m}}, nil
			})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, r := newStore(t, nil)
			ctx := context.Background()
			job, m := messageFixture(t, s)
			// The event is in the job's record, as its commit left it.
			if _, err := s.Update(ctx, job.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				return store.Change{Events: []store.NewEvent{{ID: m.EventID, Type: store.EventAccepted}}}, nil
			}); err != nil {
				t.Fatal(err)
			}
			m.Status, m.Reason, m.AttemptsN = store.MessageFailed, "gave up", 8
			writeLegacyMessage(t, s, r, job.ID, m)

			got, err := s.Message(ctx, job.ID, m.ID)
			if err != nil || got.Status != store.MessageFailed || got.Reason != "gave up" || got.EventID != m.EventID || got.Destination != m.Destination {
				t.Fatalf("Message of a legacy record = %+v, %v; want %+v", got, err, m)
			}
			list, err := s.Messages(ctx, job.ID)
			if err != nil || len(list) != 1 || list[0].ID != m.ID || list[0].Status != store.MessageFailed {
				t.Fatalf("Messages with a legacy record = %+v, %v; want it once", list, err)
			}

			if err := tt.write(ctx, s, job, m); err != nil {
				t.Fatal(err)
			}
			short := "0123456789abcdef.job"
			wantField, wantStatus := m.ID, store.MessageFailed
			if tt.moved {
				wantField, wantStatus = short, store.MessagePending
			}
			stored := storedMessages(t, s, r, job.ID)
			if _, ok := stored[wantField]; !ok || len(stored) != 1 {
				t.Fatalf("after the write the messages hash is %q, want one record under %q", slices.Sorted(maps.Keys(stored)), wantField)
			}
			got, err = s.Message(ctx, job.ID, m.ID)
			if err != nil || got.Status != wantStatus || got.ID != m.ID || got.EventID != m.EventID || got.Destination != m.Destination {
				t.Fatalf("Message after the write = %+v, %v; want %s", got, err, wantStatus)
			}
		})
	}
}

// TestMessageUnderBothFields: where an older version's delivery wrote the
// legacy field beside this version's record (a rolling upgrade), the
// record further along is the message, for reads, listings and the
// update, which moves it and deletes the other.
func TestMessageUnderBothFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		short, legacy store.MessageStatus
		replays       [2]int // short's, legacy's
		want          store.MessageStatus
		wantReplays   int
	}{
		{name: "the legacy record delivered it", short: store.MessagePending, legacy: store.MessageDelivered, want: store.MessageDelivered},
		{name: "the short record delivered it", short: store.MessageDelivered, legacy: store.MessagePending, want: store.MessageDelivered},
		{name: "the short record is a later replay", short: store.MessagePending, legacy: store.MessageFailed, replays: [2]int{1, 0}, want: store.MessagePending, wantReplays: 1},
		{name: "the legacy record is a later replay", short: store.MessageFailed, legacy: store.MessagePending, replays: [2]int{0, 1}, want: store.MessagePending, wantReplays: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, r := newStore(t, nil)
			ctx := context.Background()
			job, m := messageFixture(t, s)
			short := m
			short.Status, short.Replays = tt.short, tt.replays[0]
			if err := s.SaveMessage(ctx, job.ID, short); err != nil {
				t.Fatal(err)
			}
			legacy := m
			legacy.Status, legacy.Replays = tt.legacy, tt.replays[1]
			writeLegacyMessage(t, s, r, job.ID, legacy)

			got, err := s.Message(ctx, job.ID, m.ID)
			if err != nil || got.Status != tt.want || got.Replays != tt.wantReplays {
				t.Fatalf("Message = %s, replays %d (%v); want %s, %d", got.Status, got.Replays, err, tt.want, tt.wantReplays)
			}
			list, err := s.Messages(ctx, job.ID)
			if err != nil || len(list) != 1 || list[0].Status != tt.want || list[0].Replays != tt.wantReplays {
				t.Fatalf("Messages = %+v, %v; want one, %s with %d replays", list, err, tt.want, tt.wantReplays)
			}
			if _, err := s.UpdateMessage(ctx, job.ID, m.ID, func(got *store.Message, found bool) ([]store.OutboxEntry, error) {
				if got.Status != tt.want || got.Replays != tt.wantReplays {
					t.Errorf("the update got %s, %d replays; want %s, %d", got.Status, got.Replays, tt.want, tt.wantReplays)
				}
				got.Reason = "looked at"
				return nil, nil
			}); err != nil {
				t.Fatal(err)
			}
			stored := storedMessages(t, s, r, job.ID)
			if js, ok := stored["0123456789abcdef.job"]; !ok || len(stored) != 1 || !strings.Contains(js, `"reason":"looked at"`) {
				t.Fatalf("after the update the messages hash is %q, want only the updated short field", stored)
			}
		})
	}
}

// TestLegacyMessageMovedDespiteALostReply: the update that moves a legacy
// record is re-sent by go-redis after its reply was lost; the re-run
// recognises its own write (the legacy field it deleted is no conflict),
// so the update function runs once and the record is moved.
func TestLegacyMessageMovedDespiteALostReply(t *testing.T) {
	t.Parallel()
	s, proxy, r := lossyStore(t)
	plain := store.New(r.Client, store.Options{Namespace: r.Namespace, Retention: time.Hour})
	ctx := context.Background()
	job, m := messageFixture(t, plain)
	// Load the script into Redis's cache, so that the lost reply is the
	// write's, not a NOSCRIPT answer's.
	if _, err := plain.UpdateMessage(ctx, job.ID, store.MessageID(m.EventID, "warm"), func(*store.Message, bool) ([]store.OutboxEntry, error) {
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	m.Status = store.MessageFailed
	writeLegacyMessage(t, plain, r, job.ID, m)

	calls := 0
	proxy.LoseReplyTo(`"reason":"moved after a lost reply"`)
	if _, err := s.UpdateMessage(ctx, job.ID, m.ID, func(got *store.Message, found bool) ([]store.OutboxEntry, error) {
		calls++
		got.Reason = "moved after a lost reply"
		return nil, nil
	}); err != nil {
		t.Fatalf("update whose reply was lost: %v", err)
	}
	if proxy.Lost() != 1 {
		t.Fatalf("the proxy lost %d replies, want 1: the test proves nothing", proxy.Lost())
	}
	if calls != 1 {
		t.Fatalf("the update function ran %d times, want 1: the re-run was taken for a conflict", calls)
	}
	stored := storedMessages(t, plain, r, job.ID)
	if _, ok := stored["0123456789abcdef.job"]; !ok || len(stored) != 2 { // the record and the warm-up's
		t.Fatalf("messages hash %q, want the record moved", slices.Sorted(maps.Keys(stored)))
	}
	if _, ok := stored[m.ID]; ok {
		t.Fatalf("the legacy field %s is still there", m.ID)
	}
}

// TestUpdateMessageDeliveryOfAGoneJob: a message update that asks for a
// delivery (outbox entries, which are fields of the job's record) of a job
// that has expired is refused as not found, and leaves no record behind:
// neither a job hash of outbox fields alone nor the message.
func TestUpdateMessageDeliveryOfAGoneJob(t *testing.T) {
	t.Parallel()
	s, r := newStore(t, nil)
	ctx := context.Background()
	job, m := messageFixture(t, s)
	if err := s.SaveMessage(ctx, job.ID, m); err != nil {
		t.Fatal(err)
	}
	if err := r.Client.Del(ctx, s.KeysOf(job.ID)[0]).Err(); err != nil { // the job expired; its messages have not yet
		t.Fatal(err)
	}
	_, err := s.UpdateMessage(ctx, job.ID, m.ID, func(got *store.Message, found bool) ([]store.OutboxEntry, error) {
		got.Status, got.Replays = store.MessagePending, 1
		return []store.OutboxEntry{{ID: "webhook:replay", Data: []byte("x")}}, nil
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateMessage of a gone job = %v, want ErrNotFound", err)
	}
	if n := r.Client.Exists(ctx, s.KeysOf(job.ID)[0]).Val(); n != 0 {
		t.Errorf("the update made a job hash of outbox fields alone")
	}
	if got, err := s.Message(ctx, job.ID, m.ID); err != nil || got.Replays != 0 {
		t.Errorf("message after the refused update = %+v, %v; want it unchanged", got, err)
	}
}
