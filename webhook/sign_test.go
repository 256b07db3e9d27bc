package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/previewd/previewd/webhook"
)

// newSecret returns a fresh secret in both forms: ours and the string the
// reference library takes.
func newSecret(t *testing.T) (webhook.Secret, string) {
	t.Helper()
	enc, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s, err := webhook.ParseSecret(enc)
	if err != nil {
		t.Fatal(err)
	}
	return s, enc
}

func referenceReceiver(t *testing.T, enc string) *standardwebhooks.Webhook {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(enc)
	if err != nil {
		t.Fatal(err)
	}
	return wh
}

// TestSignatureAgainstReference signs with our Signer and verifies with both
// the reference library (which always uses time.Now and a 5 minute
// tolerance) and our Verify, which must agree.
func TestSignatureAgainstReference(t *testing.T) {
	old, oldEnc := newSecret(t)
	cur, curEnc := newSecret(t)
	_, otherEnc := newSecret(t)
	body := []byte(`{"type":"preview.completed","data":{"job_id":"j_1"}}`)

	tests := []struct {
		name       string
		signWith   []webhook.Secret
		verifyWith string
		age        time.Duration // how long ago the message was signed
		tamper     bool
		wantRef    error // reference library sentinel; nil means valid
		wantOurs   error
	}{
		{name: "valid", signWith: []webhook.Secret{cur}, verifyWith: curEnc},
		{name: "rotation, receiver has old secret", signWith: []webhook.Secret{old, cur}, verifyWith: oldEnc},
		{name: "rotation, receiver has new secret", signWith: []webhook.Secret{old, cur}, verifyWith: curEnc},
		{name: "rotation, receiver has unrelated secret", signWith: []webhook.Secret{old, cur}, verifyWith: otherEnc,
			wantRef: standardwebhooks.ErrNoMatchingSignature, wantOurs: webhook.ErrNoMatchingSignature},
		{name: "tampered body", signWith: []webhook.Secret{cur}, verifyWith: curEnc, tamper: true,
			wantRef: standardwebhooks.ErrNoMatchingSignature, wantOurs: webhook.ErrNoMatchingSignature},
		{name: "stale timestamp", signWith: []webhook.Secret{cur}, verifyWith: curEnc, age: 10 * time.Minute,
			wantRef: standardwebhooks.ErrMessageTooOld, wantOurs: webhook.ErrTimestampTooOld},
		{name: "future timestamp", signWith: []webhook.Secret{cur}, verifyWith: curEnc, age: -10 * time.Minute,
			wantRef: standardwebhooks.ErrMessageTooNew, wantOurs: webhook.ErrTimestampTooNew},
		{name: "slightly old is fine", signWith: []webhook.Secret{cur}, verifyWith: curEnc, age: 4 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			h := http.Header{}
			webhook.NewSigner(tt.signWith...).Headers(h, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now.Add(-tt.age), body)
			got := body
			if tt.tamper {
				got = []byte(strings.Replace(string(body), "j_1", "j_2", 1))
			}

			if err := referenceReceiver(t, tt.verifyWith).Verify(got, h); !errors.Is(err, tt.wantRef) || (tt.wantRef == nil) != (err == nil) {
				t.Errorf("reference Verify = %v, want %v", err, tt.wantRef)
			}
			sec, err := webhook.ParseSecret(tt.verifyWith)
			if err != nil {
				t.Fatal(err)
			}
			if err := webhook.Verify(sec, h, got, now, 5*time.Minute); !errors.Is(err, tt.wantOurs) || (tt.wantOurs == nil) != (err == nil) {
				t.Errorf("our Verify = %v, want %v", err, tt.wantOurs)
			}
		})
	}
}

// TestVerifyAcceptsReferenceSignature checks the other direction: what the
// reference library signs, our Verify accepts.
func TestVerifyAcceptsReferenceSignature(t *testing.T) {
	sec, enc := newSecret(t)
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"a":1}`)
	sig, err := referenceReceiver(t, enc).Sign("msg_1", now, body)
	if err != nil {
		t.Fatal(err)
	}
	ours := webhook.NewSigner(sec).Signature("msg_1", now, body)
	if sig != ours {
		t.Errorf("signatures differ: reference %q, ours %q", sig, ours)
	}
	h := http.Header{}
	h.Set("webhook-id", "msg_1")
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", "v0,ignored "+sig)
	if err := webhook.Verify(sec, h, body, now, 0); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestVerifyHeaders(t *testing.T) {
	sec, _ := newSecret(t)
	now := time.Unix(1_700_000_000, 0)
	body := []byte("{}")
	valid := http.Header{}
	webhook.NewSigner(sec).Headers(valid, "msg_1", now, body)

	tests := []struct {
		name   string
		modify func(h http.Header)
		want   error
	}{
		{name: "valid", modify: func(http.Header) {}},
		{name: "missing id", modify: func(h http.Header) { h.Del("webhook-id") }, want: webhook.ErrMissingHeaders},
		{name: "missing timestamp", modify: func(h http.Header) { h.Del("webhook-timestamp") }, want: webhook.ErrMissingHeaders},
		{name: "missing signature", modify: func(h http.Header) { h.Del("webhook-signature") }, want: webhook.ErrMissingHeaders},
		{name: "timestamp not a number", modify: func(h http.Header) { h.Set("webhook-timestamp", "yesterday") }, want: webhook.ErrMissingHeaders},
		{name: "timestamp huge", modify: func(h http.Header) { h.Set("webhook-timestamp", "9223372036854775807") }, want: webhook.ErrTimestampTooNew},
		{name: "timestamp very negative", modify: func(h http.Header) { h.Set("webhook-timestamp", "-9223372036854775808") }, want: webhook.ErrTimestampTooOld},
		{name: "other id", modify: func(h http.Header) { h.Set("webhook-id", "msg_2") }, want: webhook.ErrNoMatchingSignature},
		{name: "only other versions", modify: func(h http.Header) {
			h.Set("webhook-signature", strings.Replace(h.Get("webhook-signature"), "v1,", "v2,", 1))
		}, want: webhook.ErrNoMatchingSignature},
		{name: "garbage signature list", modify: func(h http.Header) { h.Set("webhook-signature", "  , v1 v1, ,,") }, want: webhook.ErrNoMatchingSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := valid.Clone()
			tt.modify(h)
			err := webhook.Verify(sec, h, body, now, 5*time.Minute)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("zero secret never verifies", func(t *testing.T) {
		h := http.Header{}
		webhook.NewSigner(webhook.Secret{}).Headers(h, "msg_1", now, body)
		h.Set("webhook-signature", "v1,anything")
		if err := webhook.Verify(webhook.Secret{}, h, body, now, 0); !errors.Is(err, webhook.ErrNoMatchingSignature) {
			t.Errorf("Verify with zero secret = %v", err)
		}
	})
}

func TestSignerSkipsZeroSecrets(t *testing.T) {
	sec, _ := newSecret(t)
	now := time.Unix(1_700_000_000, 0)
	one := webhook.NewSigner(sec).Signature("id", now, nil)
	withZero := webhook.NewSigner(webhook.Secret{}, sec).Signature("id", now, nil)
	if one != withZero {
		t.Errorf("zero secret changed the signature: %q vs %q", one, withZero)
	}
	if got := webhook.NewSigner().Signature("id", now, nil); got != "" {
		t.Errorf("empty signer signature = %q, want empty", got)
	}
	if parts := strings.Split(webhook.NewSigner(sec, sec).Signature("id", now, nil), " "); len(parts) != 2 {
		t.Errorf("two secrets gave %d signatures", len(parts))
	}
}

// FuzzVerify feeds arbitrary header values to Verify: it must never panic
// and never accept a signature it did not compute.
func FuzzVerify(f *testing.F) {
	f.Add("msg_1", "1700000000", "v1,abc v1,def", []byte("{}"))
	f.Add("", "", "", []byte(nil))
	f.Add("a", "-1", "v1,", []byte("x"))
	enc := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	sec, err := webhook.ParseSecret(enc)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", sig)
		if err := webhook.Verify(sec, h, body, now, time.Hour); err == nil {
			if !strings.Contains(sig, webhook.NewSigner(sec).Signature(id, mustUnix(t, ts), body)) {
				t.Fatalf("accepted a signature that is not ours: %q", sig)
			}
		}
	})
}

func mustUnix(t *testing.T, ts string) time.Time {
	t.Helper()
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Fatalf("Verify accepted timestamp %q", ts)
	}
	return time.Unix(n, 0)
}
