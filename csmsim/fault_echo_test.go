package csmsim_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/previewd/previewd/csmsim"
)

// TestFaultEchoKey: the echo fault puts the request's own key at the asked
// offset of its message, on either endpoint, with the asked status (503
// when unset), and the message runs past a 300-byte cut at every offset.
func TestFaultEchoKey(t *testing.T) {
	for _, ep := range []csmsim.Endpoint{csmsim.EndpointGetSession, csmsim.EndpointPreview} {
		for _, tc := range []struct {
			offset, status, wantStatus int
		}{{0, 0, 503}, {17, 0, 503}, {290, http.StatusBadRequest, 400}, {-3, 0, 503}} {
			sim, _ := newSim(t, csmsim.SessionConfig{Faults: []csmsim.Fault{{
				Endpoint: ep, Kind: csmsim.FaultEchoKey, EchoOffset: tc.offset, EchoStatus: tc.status,
			}}})
			method, path := http.MethodGet, sessionPath(code)
			if ep == csmsim.EndpointPreview {
				method, path = http.MethodPost, previewPath(code)
			}
			rec := serve(t, sim, method, path, turboBody(0))
			if rec.Code != tc.wantStatus {
				t.Fatalf("%s offset %d: status %d, want %d", ep, tc.offset, rec.Code, tc.wantStatus)
			}
			msg, _ := decode(t, rec)["message"].(string)
			if got, want := strings.Index(msg, apiKey), max(tc.offset, 0); got != want {
				t.Errorf("%s offset %d: key at %d of %q", ep, tc.offset, got, msg)
			}
			if len(msg) <= 300 {
				t.Errorf("%s offset %d: message of %d bytes, want more than 300", ep, tc.offset, len(msg))
			}
			if ep == csmsim.EndpointPreview && sim.AcceptedPreviews(code) != 0 {
				t.Errorf("the echo fault accepted a preview")
			}
		}
	}
}
