package store

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
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
	raw, err := s.rdb.HGet(ctx, s.messagesKey(jobID), msgID).Bytes()
	if errors.Is(err, redis.Nil) {
		return Message{}, fmt.Errorf("message %s of job %s: %w", msgID, jobID, ErrNotFound)
	}
	if err != nil {
		return Message{}, fmt.Errorf("read message %s of job %s: %w", msgID, jobID, err)
	}
	var m Message
	if err := unmarshalRecord(raw, &m); err != nil {
		return Message{}, fmt.Errorf("decode message %s of job %s: %w", msgID, jobID, err)
	}
	return m, nil
}

// SaveMessage writes a delivery record blindly. Only the delivery task that
// owns a pending message writes it this way (one writer at a time); writes
// that may race others go through UpdateMessage.
func (s *Store) SaveMessage(ctx context.Context, jobID string, m Message) error {
	return s.writeMessage(ctx, recordMessageScript, "save", jobID, m)
}

// writeMessage runs a script that writes a message record beside its job,
// expiring with it.
func (s *Store) writeMessage(ctx context.Context, script *redis.Script, op, jobID string, m Message) error {
	raw, err := marshalRecord(m)
	if err != nil {
		return fmt.Errorf("encode message %s: %w", m.ID, err)
	}
	keys := []string{s.messagesKey(jobID), s.jobKey(jobID)}
	if err := script.Run(ctx, s.rdb, keys, m.ID, raw, s.retention.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("%s message %s of job %s: %w", op, m.ID, jobID, err)
	}
	return nil
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
// carry is enqueued even if the caller's own enqueue never happens.
func (s *Store) UpdateMessage(ctx context.Context, jobID, msgID string, fn func(m *Message, found bool) ([]OutboxEntry, error)) (Message, error) {
	for range maxUpdateAttempts {
		old, err := s.rdb.HGet(ctx, s.messagesKey(jobID), msgID).Result()
		found := err == nil
		if err != nil && !errors.Is(err, redis.Nil) {
			return Message{}, fmt.Errorf("read message %s of job %s: %w", msgID, jobID, err)
		}
		var m Message
		if found {
			if err := unmarshalRecord([]byte(old), &m); err != nil {
				return Message{}, fmt.Errorf("decode message %s of job %s: %w", msgID, jobID, err)
			}
		}
		outbox, err := fn(&m, found)
		if errors.Is(err, ErrNoChange) {
			return m, nil
		}
		if err != nil {
			return m, err
		}
		m.ID = msgID
		raw, err := marshalRecord(m)
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
		args := []any{msgID, old, raw, s.retention.Milliseconds(), len(outbox)}
		for _, e := range outbox {
			args = append(args, e.ID, e.Data)
		}
		keys := []string{s.messagesKey(jobID), s.jobKey(jobID), s.outboxKey(jobID)}
		res, err := updateMessageScript.Run(ctx, s.rdb, keys, args...).Text()
		if err != nil {
			return m, fmt.Errorf("update message %s of job %s: %w", msgID, jobID, err)
		}
		if res == "ok" {
			return m, nil
		}
	}
	return Message{}, fmt.Errorf("update message %s of job %s: %w", msgID, jobID, ErrMessageContention)
}

// Messages returns every delivery record of a job, oldest event first.
func (s *Store) Messages(ctx context.Context, jobID string) ([]Message, error) {
	m, err := s.rdb.HGetAll(ctx, s.messagesKey(jobID)).Result()
	if err != nil {
		return nil, fmt.Errorf("read messages of job %s: %w", jobID, err)
	}
	out := make([]Message, 0, len(m))
	for id, raw := range m {
		var msg Message
		if err := unmarshalRecord([]byte(raw), &msg); err != nil {
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
	eventIDPrefix    = "evt_"
	eventIDLen       = len(eventIDPrefix) + 32 + 16
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
