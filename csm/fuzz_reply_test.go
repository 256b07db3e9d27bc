package csm_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/internal/testutil"
)

// FuzzPreviewReply: whatever CSM answers to the billed POST (any status, any
// Retry-After, any body), the client neither panics nor reports success
// without a trial key, and a failure is a *csm.Error with a kind, a wait of
// at most an hour and no API key in its text.
func FuzzPreviewReply(f *testing.F) {
	f.Add(uint16(200), "", []byte(`{"message":"Generating Mesh","data":{"scenario":"SESSION_1","unique_trial_key":"k","status":"unprocessed"}}`))
	f.Add(uint16(200), "", []byte(`{"statusCode":500,"error":"boom"}`))
	f.Add(uint16(429), "120", []byte(`{"message":"too many requests"}`))
	f.Add(uint16(503), "Wed, 21 Oct 2099 07:28:00 GMT", []byte(`<html>`))
	f.Add(uint16(400), "", []byte(`{"message":"rate limit exceeded"}`))
	f.Add(uint16(408), "-1", []byte(``))
	f.Add(uint16(302), "", []byte(`moved`))

	const key = "fuzz-api-key-0123456789"
	srv := testutil.NewReplyServer(f)
	c, err := csm.New(csm.Options{BaseURL: srv.URL, APIKey: key, Timeout: 5 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, code uint16, ra string, b []byte) {
		// net/http only writes statuses 200..999 as given; informational
		// ones would leave the exchange open.
		status := 200 + int(code)%400
		header := http.Header{}
		if ra != "" && testutil.SendableHeaderValue(ra) {
			header.Set("Retry-After", ra)
		}
		srv.Answer(status, header, b)
		job, err := c.RequestPreview(context.Background(), "SESSION_1", csm.PreviewParams{})
		if err == nil {
			if job == nil || job.UniqueTrialKey == "" {
				t.Fatalf("success without a trial key: %+v", job)
			}
			if status < 200 || status > 299 {
				t.Fatalf("status %d reported as success", status)
			}
			return
		}
		var ce *csm.Error
		if !errors.As(err, &ce) {
			t.Fatalf("error %v is not a *csm.Error", err)
		}
		if ce.Kind == "" {
			t.Fatalf("error %v has no kind", err)
		}
		if ce.RetryAfter < 0 || ce.RetryAfter > time.Hour {
			t.Fatalf("RetryAfter = %v, want 0..1h", ce.RetryAfter)
		}
		if strings.Contains(err.Error(), key) {
			t.Fatalf("error shows the API key: %v", err)
		}
	})
}
