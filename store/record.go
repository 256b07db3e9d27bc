package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// A job's events live in its record, beside the job: an event's body is a
// snapshot of the job's public view, so packed with the job it costs only
// what it differs by (about a tenth of its size packed alone), and the
// commit that makes an event writes no other key for it. Events made
// before this layout are in the job's events hash (eventsKey), read as a
// fallback and left to expire with the job.
//
// An event's body is stored as a JSON value inside the record: json.Marshal
// copies a RawMessage as it is (its bytes are compact, HTML-escaped JSON,
// as json.Marshal made them), so the bytes read back are the bytes sent.

// storedEvent is an event as the job's record keeps it.
type storedEvent struct {
	ID   string          `json:"id"`
	Body json.RawMessage `json:"body"`
}

// record is a job's stored document: the job, and its latest events
// (maxRecordEvents at most), in the order they were made. Update functions
// see only the Job; the store carries the events from the record it read
// to the one it writes. EventsSpilled says older events went to the events
// hash.
type record struct {
	Job
	Events        []storedEvent `json:"events,omitempty"`
	EventsSpilled bool          `json:"events_spilled,omitempty"`
}

// maxRecordEvents bounds the events a record holds, so that a job that
// reports progress at every poll does not make every commit and every read
// of its record carry all of them: the older ones spill to the events hash,
// where each costs what it did before events moved into the record.
const maxRecordEvents = 16

// spill moves the events beyond maxRecordEvents, the oldest, out of the
// record and returns them, for the commit to store in the events hash.
// Event ids name facts that happen once (tasks.EventID), so an event that
// spilled is never made again.
func (r *record) spill() []storedEvent {
	n := len(r.Events) - maxRecordEvents
	if n <= 0 {
		return nil
	}
	out := slices.Clone(r.Events[:n])
	r.Events = slices.Clone(r.Events[n:])
	r.EventsSpilled = true
	return out
}

// eventsOnly decodes a record's events and skips the rest.
type eventsOnly struct {
	Events []storedEvent `json:"events"`
}

// has reports whether the record holds the event id.
func (r *record) has(id string) bool {
	for _, e := range r.Events {
		if e.ID == id {
			return true
		}
	}
	return false
}

// Event returns a stored event.
func (s *Store) Event(ctx context.Context, jobID, eventID string) (Event, error) {
	doc, err := s.rdb.HGet(ctx, s.jobKey(jobID), "doc").Bytes()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Event{}, fmt.Errorf("read event %s of job %s: %w", eventID, jobID, err)
	}
	if len(doc) > 0 {
		var r eventsOnly
		if err := unmarshalRecord(doc, &r); err != nil {
			return Event{}, fmt.Errorf("event %s of job %s: %w", eventID, jobID, err)
		}
		for _, e := range r.Events {
			if e.ID == eventID {
				return Event{ID: eventID, Body: e.Body}, nil
			}
		}
	}
	body, err := s.rdb.HGet(ctx, s.eventsKey(jobID), eventID).Bytes()
	if errors.Is(err, redis.Nil) {
		return Event{}, fmt.Errorf("event %s of job %s: %w", eventID, jobID, ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("read event %s of job %s: %w", eventID, jobID, err)
	}
	if body, err = unpack(body); err != nil {
		return Event{}, fmt.Errorf("event %s of job %s: %w", eventID, jobID, err)
	}
	return Event{ID: eventID, Body: body}, nil
}

// Events returns every stored event of a job, keyed by id, in one round
// trip: those of its record and those an earlier version stored in the
// events hash (where an id is in both, the earlier body, sent first, wins).
func (s *Store) Events(ctx context.Context, jobID string) (map[string][]byte, error) {
	var doc *redis.StringCmd
	var legacy *redis.MapStringStringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		doc = p.HGet(ctx, s.jobKey(jobID), "doc")
		legacy = p.HGetAll(ctx, s.eventsKey(jobID))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read events of job %s: %w", jobID, err)
	}
	out := make(map[string][]byte, len(legacy.Val()))
	if raw, _ := doc.Bytes(); len(raw) > 0 {
		var r eventsOnly
		if err := unmarshalRecord(raw, &r); err != nil {
			return nil, fmt.Errorf("events of job %s: %w", jobID, err)
		}
		for _, e := range r.Events {
			out[e.ID] = e.Body
		}
	}
	for k, v := range legacy.Val() {
		body, err := unpack([]byte(v))
		if err != nil {
			return nil, fmt.Errorf("event %s of job %s: %w", k, jobID, err)
		}
		out[k] = body
	}
	return out, nil
}
