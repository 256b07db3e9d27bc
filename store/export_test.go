package store

// SlotsKey exposes the key of destination's delivery slots, so that tests
// judge slots from Redis's own state.
func (s *Store) SlotsKey(destination string) string { return s.slotsKey(destination) }
