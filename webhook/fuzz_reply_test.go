package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/webhook"
)

// FuzzReceiverReply: whatever a receiver answers (any status, Retry-After
// and body), Send does not panic, succeeds exactly on a 2xx, keeps only
// the first 256 bytes of the body, as valid UTF-8 (so at most 768 bytes
// once invalid bytes are replaced), clamps Retry-After to [0, 24h], and
// reports a failure as a *DeliveryError that is Gone exactly on a 410.
func FuzzReceiverReply(f *testing.F) {
	f.Add(uint16(0), "", []byte("ok"))
	f.Add(uint16(10), "", []byte{})
	f.Add(uint16(102), "", []byte("moved"))
	f.Add(uint16(210), "", []byte("gone"))
	f.Add(uint16(229), "99999999999999999999", []byte("slow down"))
	f.Add(uint16(303), "Wed, 21 Oct 2099 07:28:00 GMT", []byte("\xff\xfe broken utf-8"))
	f.Add(uint16(300), "-5", make([]byte, 70<<10))

	srv := testutil.NewReplyServer(f)
	secret, err := webhook.GenerateSecret()
	if err != nil {
		f.Fatal(err)
	}
	parsed, err := webhook.ParseSecret(secret)
	if err != nil {
		f.Fatal(err)
	}
	signer := webhook.NewSigner(parsed)
	sender := webhook.NewSender(webhook.SenderOptions{Timeout: 5 * time.Second, AllowPrivate: true})
	f.Fuzz(func(t *testing.T, code uint16, ra string, b []byte) {
		status := 200 + int(code)%400
		header := http.Header{}
		if ra != "" && testutil.SendableHeaderValue(ra) {
			header.Set("Retry-After", ra)
		}
		srv.Answer(status, header, b)
		res, err := sender.Send(context.Background(), srv.URL, signer, webhook.Message{ID: "msg_fuzz", Body: []byte(`{}`)}, time.Now())
		// 256 bytes of body, each invalid byte replaced by U+FFFD (3 bytes).
		if len(res.ResponsePrefix) > 3*256 || !utf8.ValidString(res.ResponsePrefix) {
			t.Fatalf("response prefix of %d bytes, valid UTF-8 %v", len(res.ResponsePrefix), utf8.ValidString(res.ResponsePrefix))
		}
		if res.RetryAfter < 0 || res.RetryAfter > 24*time.Hour {
			t.Fatalf("RetryAfter = %v, want 0..24h", res.RetryAfter)
		}
		ok := status >= 200 && status <= 299
		if (err == nil) != ok {
			t.Fatalf("status %d: Send = %v", status, err)
		}
		if err == nil {
			return
		}
		var de *webhook.DeliveryError
		if !errors.As(err, &de) {
			t.Fatalf("error %v is not a *DeliveryError", err)
		}
		if de.Gone != (status == http.StatusGone) || de.StatusCode != status {
			t.Fatalf("status %d: Gone %v, StatusCode %d", status, de.Gone, de.StatusCode)
		}
	})
}
