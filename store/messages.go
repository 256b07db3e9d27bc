package store

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// MessageStatus is the delivery state of one event to one destination.
type MessageStatus string

// Message statuses.
const (
	MessagePending   MessageStatus = "pending"   // not yet delivered; a delivery task owns it
	MessageDelivered MessageStatus = "delivered" // a 2xx was received
	// MessageFailed: given up (retries exhausted, not retryable, or its
	// task archived), with the reason; it can be replayed.
	MessageFailed MessageStatus = "failed"
)

// Message is the delivery record of one event to one destination.
type Message struct {
	ID          string        `json:"id"`
	EventID     string        `json:"event_id"`
	EventType   EventType     `json:"event_type"`
	Destination string        `json:"destination"`
	Status      MessageStatus `json:"status"`
	Reason      string        `json:"reason,omitempty"` // why a failed message was given up
	CreatedAt   time.Time     `json:"created_at"`
	Replays     int           `json:"replays,omitempty"`
	AttemptsN   int           `json:"attempt_count"`
	Attempts    []Attempt     `json:"attempts"` // the most recent ones, oldest first
	DeliveredAt *time.Time    `json:"delivered_at,omitempty"`
}

// Attempt is one delivery attempt.
type Attempt struct {
	At         time.Time     `json:"at"`
	StatusCode int           `json:"status_code,omitempty"`
	Error      string        `json:"error,omitempty"`
	Latency    time.Duration `json:"latency_ns"`
	Response   string        `json:"response,omitempty"` // a short prefix of the response body
}

// maxAttemptsKept bounds a message's attempt log.
const maxAttemptsKept = 20

// AddAttempt appends an attempt, keeping the log bounded.
func (m *Message) AddAttempt(a Attempt) {
	m.AttemptsN++
	if len(m.Attempts) >= maxAttemptsKept {
		m.Attempts = m.Attempts[1:]
	}
	m.Attempts = append(m.Attempts, a)
}

// Message returns a delivery record, or ErrNotFound.
func (s *Store) Message(ctx context.Context, jobID, msgID string) (Message, error) {
	_, m, found, err := s.loadMessage(ctx, jobID, msgID)
	if err != nil {
		return Message{}, err
	}
	if !found {
		return Message{}, fmt.Errorf("message %s of job %s: %w", msgID, jobID, ErrNotFound)
	}
	return m, nil
}

// loadMessage reads a message's record and decodes it: found is false
// when neither of its fields holds one.
func (s *Store) loadMessage(ctx context.Context, jobID, msgID string) (messageRecord, Message, bool, error) {
	rec, err := s.readMessage(ctx, jobID, msgID)
	if err != nil {
		return messageRecord{}, Message{}, false, err
	}
	m, found, err := rec.message(jobID)
	if err != nil {
		return messageRecord{}, Message{}, false, fmt.Errorf("decode message %s of job %s: %w", msgID, jobID, err)
	}
	return rec, m, found, nil
}

// messageRecord is what the fields of one message hold, as read: the
// record's field and its bytes, and the legacy field (see msgrecord.go; ""
// when there is none) and its bytes ("" where a field holds nothing).
type messageRecord struct {
	field, legacy string
	stored        string
	legacyStored  string
}

// newMessageRecord is the empty record of message msgID of jobID: its
// fields, nothing read yet.
func newMessageRecord(jobID, msgID string) messageRecord {
	field, legacy := messageFields(jobID, msgID)
	return messageRecord{field: field, legacy: legacy}
}

// readMessage reads both fields a message's record may be under, in one
// command.
func (s *Store) readMessage(ctx context.Context, jobID, msgID string) (messageRecord, error) {
	rec := newMessageRecord(jobID, msgID)
	if rec.legacy == "" {
		raw, err := s.rdb.HGet(ctx, s.messagesKey(jobID), rec.field).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return rec, fmt.Errorf("read message %s of job %s: %w", msgID, jobID, err)
		}
		rec.stored = raw
		return rec, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.messagesKey(jobID), rec.field, rec.legacy).Result()
	if err != nil {
		return rec, fmt.Errorf("read message %s of job %s: %w", msgID, jobID, err)
	}
	rec.stored, _ = vals[0].(string)
	rec.legacyStored, _ = vals[1].(string)
	return rec, nil
}

// message decodes the record that is the message (the further along of
// the two if both fields hold one); found is false when neither does.
func (rec messageRecord) message(jobID string) (m Message, found bool, err error) {
	if rec.stored != "" {
		if m, err = decodeMessage(jobID, rec.field, []byte(rec.stored)); err != nil {
			return Message{}, false, err
		}
		found = true
	}
	if rec.legacyStored != "" {
		legacy, err := decodeMessage(jobID, rec.legacy, []byte(rec.legacyStored))
		if err != nil {
			return Message{}, false, err
		}
		if !found || further(legacy, m) {
			m = legacy
		}
		found = true
	}
	return m, found, nil
}

// SaveMessage writes a delivery record blindly. Only the delivery task that
// owns a pending message writes it this way (one writer at a time); writes
// that may race others go through UpdateMessage.
func (s *Store) SaveMessage(ctx context.Context, jobID string, m Message) error {
	return s.writeMessage(ctx, recordMessageScript, "save", jobID, m, "") // no seat to give back
}

// SaveMessageReleasing is SaveMessage for a delivery that still holds its
// slots: holder's slots of destinations are given back (ReleaseSlots) in
// the same round trip, so that the attempt's last two writes cost one; the
// job's own seat (JobSlot) in the save's script itself.
// The job's outbox entries named in acks (the task the record makes
// needless, or tasks already enqueued) are acknowledged atomically with
// the save. It returns the save's error and the release's apart: they are
// independent, and a slot not given back is freed by its lease.
func (s *Store) SaveMessageReleasing(ctx context.Context, jobID string, m Message, acks []string, holder string, destinations []string) (saveErr, releaseErr error) {
	keys, args, err := s.messageWrite(jobID, m)
	if err != nil {
		return err, s.ReleaseSlots(ctx, holder, destinations)
	}
	seat := ""
	if i := slices.Index(destinations, jobSlotDestination(jobID)); i >= 0 {
		seat = holder
		destinations = slices.Delete(slices.Clone(destinations), i, i+1)
	}
	args = append(args, seat)
	for _, entry := range acks {
		args = append(args, outboxFieldPrefix+entry)
	}
	var releases []redis.Cmder
	err = s.runScriptAlong(ctx, recordMessageScript, keys, args, nil, func(p redis.Pipeliner) {
		releases = s.releaseSlotsIn(ctx, p, holder, destinations)
	}).Err()
	releaseErr = slotReleaseErr(destinations, releases)
	if err != nil {
		return fmt.Errorf("save message %s of job %s: %w", m.ID, jobID, err), releaseErr
	}
	return nil, releaseErr
}

// writeMessage runs a script that writes a message record beside its job,
// expiring with it.
func (s *Store) writeMessage(ctx context.Context, script *redis.Script, op, jobID string, m Message, extra ...any) error {
	keys, args, err := s.messageWrite(jobID, m)
	if err != nil {
		return err
	}
	args = append(args, extra...)
	if err := script.Run(ctx, s.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("%s message %s of job %s: %w", op, m.ID, jobID, err)
	}
	return nil
}

// messageWrite returns the keys and arguments of a message-writing script
// (record_message.lua, create_message.lua).
func (s *Store) messageWrite(jobID string, m Message) ([]string, []any, error) {
	raw, err := encodeMessage(m)
	if err != nil {
		return nil, nil, fmt.Errorf("encode message %s: %w", m.ID, err)
	}
	field, legacy := messageFields(jobID, m.ID)
	return []string{s.messagesKey(jobID), s.jobKey(jobID)}, []any{field, legacy, raw, s.retention.Milliseconds()}, nil
}

//go:embed lua/update_message.lua
var updateMessageSource string

var updateMessageScript = redis.NewScript(updateMessageSource)

// ErrMessageContention means a message update lost its compare-and-set too
// many times in a row.
var ErrMessageContention = errors.New("message update contention")

// UpdateMessage changes one delivery record through fn, a compare-and-set
// on the record's exact bytes: fn gets the record as stored (found false,
// and a zero Message, when there is none) and changes it; the result is
// written, with the outbox entries fn returns, only if nobody wrote the
// record meanwhile, else fn runs again on the fresh record. fn returning
// ErrNoChange ends the update without writing. The outbox entries are
// committed with the record and indexed for the sweeper, so a task they
// carry is enqueued even if the caller's own enqueue never happens. A
// record an earlier version stored under the message's full id is moved
// to its short field by the write (see msgrecord.go); the compare covers
// both fields.
func (s *Store) UpdateMessage(ctx context.Context, jobID, msgID string, fn func(m *Message, found bool) ([]OutboxEntry, error)) (Message, error) {
	for range maxUpdateAttempts {
		rec, m, found, err := s.loadMessage(ctx, jobID, msgID)
		if err != nil {
			return Message{}, err
		}
		outbox, err := fn(&m, found)
		if errors.Is(err, ErrNoChange) {
			return m, nil
		}
		if err != nil {
			return m, err
		}
		m.ID = msgID
		raw, err := encodeMessage(m)
		if err != nil {
			return m, fmt.Errorf("encode message %s: %w", msgID, err)
		}
		if len(outbox) > 0 {
			// Indexed before the write, as a job's commit does: a crash
			// between the two leaves an index entry pointing at nothing.
			if err := s.indexOutbox(ctx, jobID); err != nil {
				return m, err
			}
		}
		args := []any{rec.field, rec.legacy, rec.stored, rec.legacyStored, raw, s.retention.Milliseconds(), len(outbox)}
		args = appendOutboxFields(args, outbox)
		keys := []string{s.messagesKey(jobID), s.jobKey(jobID)}
		res, err := updateMessageScript.Run(ctx, s.rdb, keys, args...).Text()
		if err != nil {
			return m, fmt.Errorf("update message %s of job %s: %w", msgID, jobID, err)
		}
		switch res {
		case "ok":
			return m, nil
		case "nojob":
			return m, fmt.Errorf("message %s: job %s: %w", msgID, jobID, ErrNotFound)
		}
	}
	return Message{}, fmt.Errorf("update message %s of job %s: %w", msgID, jobID, ErrMessageContention)
}

// Messages returns every delivery record of a job, oldest event first: a
// message whose record is under both its fields (see msgrecord.go) once.
func (s *Store) Messages(ctx context.Context, jobID string) ([]Message, error) {
	fields, err := s.rdb.HGetAll(ctx, s.messagesKey(jobID)).Result()
	if err != nil {
		return nil, fmt.Errorf("read messages of job %s: %w", jobID, err)
	}
	// Grouped by message, so that the record read is the one Message reads.
	byID := make(map[string]*messageRecord, len(fields))
	for field, raw := range fields {
		id := messageOfField(jobID, field)
		rec := byID[id]
		if rec == nil {
			r := newMessageRecord(jobID, id)
			rec = &r
			byID[id] = rec
		}
		if field == rec.field {
			rec.stored = raw
		} else {
			rec.legacyStored = raw
		}
	}
	out := make([]Message, 0, len(byID))
	for id, rec := range byID {
		msg, _, err := rec.message(jobID)
		if err != nil {
			return nil, fmt.Errorf("decode message %s of job %s: %w", id, jobID, err)
		}
		out = append(out, msg)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// DestinationJob is the destination of a message to the job's own
// webhook_url; any other destination is an endpoint's id.
const DestinationJob = "job"

// MessageID names the message of an event to a destination.
func MessageID(eventID, destination string) string { return eventID + "." + destination }

// SplitMessageID returns the event id and destination of a message id.
func SplitMessageID(msgID string) (eventID, destination string, ok bool) {
	return strings.Cut(msgID, ".")
}

// CreateMessage stores a pending delivery record unless the message exists
// (fan-out may run more than once). A message is found by its id alone
// because its event's id carries the job's (see JobOfEvent); only an event
// made by an older version, whose fan-out runs after an upgrade, gets the
// lookup key its own version would have written.
func (s *Store) CreateMessage(ctx context.Context, jobID string, m Message) error {
	if err := s.writeMessage(ctx, createMessageScript, "create", jobID, m); err != nil {
		return err
	}
	if !isLegacyEventID(m.EventID) {
		return nil
	}
	if err := s.rdb.Set(ctx, s.eventJobKey(m.EventID), jobID, s.retention+24*time.Hour).Err(); err != nil {
		return fmt.Errorf("index event %s: %w", m.EventID, err)
	}
	return nil
}

// Event ids come in two shapes, both made by tasks.EventID: "evt_" + the
// job id's 32 hex digits + 16 hex digits of a hash of the fact (since
// events carry their job), and "evt_" + 32 hex digits of a UUIDv5 (older
// events, whose job is found through a lookup key).
const (
	eventIDPrefix = "evt_"
	// eventFactLen is the fact's part of an event id that carries its
	// job, unique within the job (a message's record is stored under it:
	// messageFields).
	eventFactLen     = 16
	eventIDLen       = len(eventIDPrefix) + 32 + eventFactLen
	legacyEventIDLen = len(eventIDPrefix) + 32
)

// JobOfEvent returns the id of the job an event id carries, or false for an
// id of another shape (an older event's, or not an event id at all). The
// id carries the job's 32 hex digits: the job id is them in the UUID form
// job ids have (tasks.JobID), so the job of a message needs no lookup.
func JobOfEvent(eventID string) (jobID string, ok bool) {
	if len(eventID) != eventIDLen || !strings.HasPrefix(eventID, eventIDPrefix) || !isLowerHex(eventID[len(eventIDPrefix):]) {
		return "", false
	}
	h := eventID[len(eventIDPrefix) : len(eventIDPrefix)+32]
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], true
}

// IsEventID reports whether id has either shape of event id: the one that
// carries its job (JobOfEvent), or an older event's.
func IsEventID(id string) bool {
	_, carriesJob := JobOfEvent(id)
	return carriesJob || isLegacyEventID(id)
}

// isLegacyEventID reports whether id has the shape of an event made before
// event ids carried their job: only those have a lookup key.
func isLegacyEventID(id string) bool {
	return len(id) == legacyEventIDLen && strings.HasPrefix(id, eventIDPrefix) && isLowerHex(id[len(eventIDPrefix):])
}

func isLowerHex(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func (s *Store) eventJobKey(eventID string) string { return s.ns + ":event:" + eventID }

// EventLookupKey is the key that maps an event made before event ids
// carried their job to its job (outside the job's hash tag, as it is found
// by event id alone). Only such an older event's fan-out still writes one
// (CreateMessage); the ones left expire with their events' retention, and
// tests write one by hand to check that JobOfMessage still reads them.
func (s *Store) EventLookupKey(eventID string) string { return s.eventJobKey(eventID) }

// JobOfMessage returns the id of the job a message belongs to (ErrNotFound
// when its id names no event). A message of an event whose id carries its
// job costs no Redis command; one of an older event is found through its
// event's lookup key, while that lasts. Whether the message exists is for
// the caller's read of it to say.
func (s *Store) JobOfMessage(ctx context.Context, msgID string) (string, error) {
	eventID, _, ok := SplitMessageID(msgID)
	if !ok {
		return "", fmt.Errorf("message %q: %w", msgID, ErrNotFound)
	}
	if jobID, ok := JobOfEvent(eventID); ok {
		return jobID, nil
	}
	if !isLegacyEventID(eventID) {
		// No lookup key was ever written for an id of no known shape.
		return "", fmt.Errorf("message %s: %w", msgID, ErrNotFound)
	}
	jobID, err := s.rdb.Get(ctx, s.eventJobKey(eventID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("message %s: %w", msgID, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("find message %s: %w", msgID, err)
	}
	return jobID, nil
}
