package store

// SlotsKey exposes the key of destination's delivery slots, so that tests
// judge slots from Redis's own state.
func (s *Store) SlotsKey(destination string) string { return s.slotsKey(destination) }

// EventsKey exposes the key of the hash where a job's older events (and
// those of earlier versions) are, so that tests judge it from Redis.
func (s *Store) EventsKey(jobID string) string { return s.eventsKey(jobID) }

// MaxRecordEvents is how many events a job's record holds.
const MaxRecordEvents = maxRecordEvents

// Pack is the stored form of a record, as an earlier version wrote it.
func Pack(raw []byte) ([]byte, error) { return pack(raw) }
