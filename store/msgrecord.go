package store

import (
	"strings"
)

// A message's delivery record is stored in its job's messages hash under a
// short field, and without what the field and the job already say: for a
// message of an event whose id carries the job (JobOfEvent), the field is
// the event id's own 16 hex digits (the hash of the fact, unique within the
// job) and the destination, "<fact>.<destination>", and the record leaves
// out id, event_id and destination (about 130 bytes a job less in the
// bench, whose packed records are mostly those hex digits). A message of
// an event of an older shape keeps its full id as the field (the job's id
// cannot be read from the event's).
//
// Versions before this one stored every record under its full message id
// (the legacy field), with id, event_id and destination in the record.
// Such a record is read where the short field holds none, and moved to the
// short field by its next write (in the same script run, so a message is
// never in neither). Where both fields hold a record (an older version's
// delivery wrote one beside a newer's during a rolling upgrade), the one
// further along is the message (further).

// messageFields returns the field of a message's record in its job's
// messages hash, "<fact>.<destination>" when the message's event id carries
// the job, else the message id itself; and legacy, the field an earlier
// version kept the record under, or "" when that is the same field.
func messageFields(jobID, msgID string) (field, legacy string) {
	eventID, dest, ok := SplitMessageID(msgID)
	if !ok {
		return msgID, ""
	}
	if j, carries := JobOfEvent(eventID); !carries || j != jobID {
		return msgID, ""
	}
	return eventID[eventIDLen-eventFactLen:] + "." + dest, msgID
}

// messageOfField is the message id a field of jobID's messages hash names
// (messageFields' inverse; a legacy field is the id itself).
func messageOfField(jobID, field string) string {
	fact, dest, ok := strings.Cut(field, ".")
	if !ok || len(fact) != eventFactLen || !isLowerHex(fact) {
		return field
	}
	eventID := eventIDPrefix + strings.ReplaceAll(jobID, "-", "") + fact
	if j, carries := JobOfEvent(eventID); !carries || j != jobID {
		return field
	}
	return MessageID(eventID, dest)
}

// storedMessage is a delivery record as stored: the outer fields shadow
// the Message's and are left empty, so that the JSON leaves out what the
// field says (encoding/json keeps the shallower of two fields of one name).
// A legacy record's values decode into them and are not needed.
type storedMessage struct {
	Message
	ID          string `json:"id,omitempty"`
	EventID     string `json:"event_id,omitempty"`
	Destination string `json:"destination,omitempty"`
}

// encodeMessage returns the stored bytes of m, whose id names its record's
// field. An id that does not say its event and destination (only tests
// make one) keeps them in the record.
func encodeMessage(m Message) ([]byte, error) {
	stored := storedMessage{Message: m}
	if eventID, dest, ok := SplitMessageID(m.ID); !ok || eventID != m.EventID || dest != m.Destination {
		stored.EventID, stored.Destination = m.EventID, m.Destination
	}
	return marshalRecord(stored)
}

// decodeMessage reads a record stored under field of jobID's messages hash,
// in either layout: the id comes from the field, and so do the event id
// and destination when the record leaves them out.
func decodeMessage(jobID, field string, raw []byte) (Message, error) {
	var stored storedMessage
	if err := unmarshalRecord(raw, &stored); err != nil {
		return Message{}, err
	}
	m := stored.Message
	m.ID = messageOfField(jobID, field)
	m.EventID, m.Destination = stored.EventID, stored.Destination
	if m.EventID == "" && m.Destination == "" {
		m.EventID, m.Destination, _ = SplitMessageID(m.ID)
	}
	return m, nil
}

// further reports whether record a of a message is further along than b:
// a later replay round, then settled over pending, then more attempts.
// One record's history only ever moves that way, so of two records of one
// message (written side by side by two versions) the further is the newer.
func further(a, b Message) bool {
	if a.Replays != b.Replays {
		return a.Replays > b.Replays
	}
	if aSettled, bSettled := a.Status != MessagePending, b.Status != MessagePending; aSettled != bSettled {
		return aSettled
	}
	return a.AttemptsN > b.AttemptsN
}
