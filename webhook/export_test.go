package webhook

import (
	"context"
	"net"
)

// SetDialResolver makes s resolve names with r, so tests can simulate DNS
// rebinding without a real DNS server. Call before first use.
func SetDialResolver(s *Sender, r *net.Resolver) { s.resolver = r }

// CheckURLWithoutLookup is CheckURL with name resolution skipped (what the
// Sender does): the same verdicts as CheckURL with a resolver that finds
// nothing, without the resolver's goroutines, so fuzzing it is deterministic.
func CheckURLWithoutLookup(raw string, allowPrivate bool) error {
	return checkURL(context.Background(), raw, allowPrivate, nil)
}

// CheckedURLWithoutLookup is CheckedURL with name resolution skipped.
func CheckedURLWithoutLookup(raw string, allowPrivate bool) (string, error) {
	return checkedURL(context.Background(), raw, allowPrivate, nil)
}
