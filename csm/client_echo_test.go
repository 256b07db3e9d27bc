package csm_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
)

// echoedKey is an API key of letters that do not occur in hex, UUIDs or
// timestamps, so that any four of its characters in a row found in an
// error can only have come from the key.
const echoedKey = "ZQXJqzvkWYJXqQZVkwYZ"

// keyFragment returns the longest prefix or suffix of key, four characters
// or more, that text contains, "" when none.
func keyFragment(text, key string) string {
	for n := len(key); n >= 4; n-- {
		if p := key[:n]; strings.Contains(text, p) {
			return p
		}
		if s := key[len(key)-n:]; strings.Contains(text, s) {
			return s
		}
	}
	return ""
}

// TestEchoedKeyNeverLeaksAPrefix: an upstream that echoes our key at any
// offset of its message, including one where the 300-byte cut of messages
// falls inside the key, leaves no four-character prefix or suffix of the key
// in the error, whose text goes to logs, job errors and asynq's last_err.
// (Before the fix the message was cut first and scrubbed after, so a key
// straddling the cut survived as a prefix.)
func TestEchoedKeyNeverLeaksAPrefix(t *testing.T) {
	sim, simURL := testutil.NewSim(t, csmsim.Options{APIKey: echoedKey})
	c := newClient(t, simURL, func(o *csm.Options) { o.APIKey = echoedKey })
	const maxOffset = 330 // past the cut, whatever the prefix the client puts before the message
	for _, ep := range []csmsim.Endpoint{csmsim.EndpointGetSession, csmsim.EndpointPreview} {
		for _, status := range []int{http.StatusServiceUnavailable, http.StatusBadRequest} {
			for k := 0; k <= maxOffset; k++ {
				code := fmt.Sprintf("SESSION_ECHO_%d_%d_%d", ep, status, k)
				sim.AddSession(code, csmsim.SessionConfig{Faults: []csmsim.Fault{{
					Endpoint: ep, Kind: csmsim.FaultEchoKey, EchoOffset: k, EchoStatus: status,
				}}})
				var err error
				if ep == csmsim.EndpointGetSession {
					_, err = c.GetSession(context.Background(), code)
				} else {
					_, err = c.RequestPreview(context.Background(), code, turboParams(code, 0))
				}
				if err == nil {
					t.Fatalf("%s %d offset %d: no error", ep, status, k)
				}
				if f := keyFragment(err.Error(), echoedKey); f != "" {
					t.Fatalf("%s %d offset %d: error carries %q of the key: %s", ep, status, k, f, err)
				}
				if ce := asError(t, err); ce.StatusCode != status {
					t.Fatalf("%s %d offset %d: status %d", ep, status, k, ce.StatusCode)
				}
			}
		}
	}
}
