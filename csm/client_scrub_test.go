package csm_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/previewd/previewd/csm"
)

// TestUpstreamEchoOfTheKeyIsRedacted: should CSM (or a proxy) echo our API
// key in an error message, the key never reaches the error, which ends up
// in logs and in the job's error.
func TestUpstreamEchoOfTheKeyIsRedacted(t *testing.T) {
	const key = "csm-live-key-echoed-back-0123"
	cases := []struct {
		name   string
		status int
		body   string
	}{
		{"4xx message", http.StatusBadRequest, `{"message":"invalid key ` + key + `","statusCode":400}`},
		{"error inside a 200", http.StatusOK, `{"error":"key ` + key + ` revoked","statusCode":403}`},
		{"plain text 5xx", http.StatusBadGateway, "upstream refused x-api-key: " + key},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			c, err := csm.New(csm.Options{BaseURL: srv.URL, APIKey: key})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.RequestPreview(context.Background(), "SESSION_1", csm.PreviewParams{})
			if err == nil {
				t.Fatal("RequestPreview succeeded")
			}
			if msg := err.Error(); strings.Contains(msg, key) || !strings.Contains(msg, "[redacted]") {
				t.Fatalf("error %q: want the key replaced by [redacted]", msg)
			}
		})
	}
}
