package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks header names. net/http canonicalises them on the wire
// (Webhook-Id, ...); receivers must match them case-insensitively anyway.
const (
	headerID        = "webhook-id"
	headerTimestamp = "webhook-timestamp"
	headerSignature = "webhook-signature"

	signatureVersion = "v1"

	// defaultTolerance is the Standard Webhooks recommendation, used when
	// Verify is given a non-positive tolerance.
	defaultTolerance = 5 * time.Minute
)

// Verification failures. Verify wraps exactly one of them, so callers can
// branch with errors.Is.
var (
	// ErrMissingHeaders means a webhook-id, webhook-timestamp or
	// webhook-signature header is absent, or the timestamp is not an
	// integer number of seconds.
	ErrMissingHeaders = errors.New("missing or malformed webhook headers")
	// ErrTimestampTooOld means the timestamp is further in the past than the
	// tolerance allows (a possible replay).
	ErrTimestampTooOld = errors.New("webhook timestamp too old")
	// ErrTimestampTooNew means the timestamp is further in the future than
	// the tolerance allows.
	ErrTimestampTooNew = errors.New("webhook timestamp too new")
	// ErrNoMatchingSignature means no v1 signature matched the secret (or,
	// for VerifyAsymmetric, no v1a signature verified under the public key).
	ErrNoMatchingSignature = errors.New("no matching webhook signature")
)

// Signer signs webhook messages with one or more keys: HMAC secrets (v1)
// and ed25519 signing keys (v1a). More than one is active during a
// rotation window, so receivers holding either the old or the new key
// accept the message. A Signer is immutable and safe for concurrent use.
type Signer struct {
	secrets []Secret
	keys    []SigningKey
}

// NewSigner returns a Signer for the given secrets, in order. Zero secrets
// are skipped: an empty HMAC key would produce signatures anyone can forge.
// A Signer without usable secrets produces an empty signature, which no
// receiver accepts.
func NewSigner(secrets ...Secret) *Signer {
	kept := make([]Secret, 0, len(secrets))
	for _, s := range secrets {
		if !s.IsZero() {
			kept = append(kept, s)
		}
	}
	return &Signer{secrets: kept}
}

// NewAsymmetricSigner returns a Signer that signs v1a with the given
// ed25519 keys, in order; zero keys are skipped.
func NewAsymmetricSigner(keys ...SigningKey) *Signer {
	kept := make([]SigningKey, 0, len(keys))
	for _, k := range keys {
		if !k.IsZero() {
			kept = append(kept, k)
		}
	}
	return &Signer{keys: kept}
}

// SignerFor parses stored keys, each a whsec_ secret (v1) or a whsk_
// signing key (v1a), and returns a Signer for them in order. The error
// never repeats a key.
func SignerFor(encoded ...string) (*Signer, error) {
	s := &Signer{}
	for _, enc := range encoded {
		if IsSigningKey(enc) {
			k, err := ParseSigningKey(enc)
			if err != nil {
				return nil, err
			}
			s.keys = append(s.keys, k)
			continue
		}
		sec, err := ParseSecret(enc)
		if err != nil {
			return nil, err
		}
		s.secrets = append(s.secrets, sec)
	}
	return s, nil
}

// Signature returns the webhook-signature header value: "v1,<base64
// HMAC-SHA256(key, id.unix_seconds.body)>" for each secret, then
// "v1a,<base64 ed25519 signature of the same content>" for each signing
// key, separated by spaces.
func (s *Signer) Signature(id string, ts time.Time, body []byte) string {
	var b strings.Builder
	for _, sec := range s.secrets {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(signatureVersion)
		b.WriteByte(',')
		b.Write(sign(sec.key(), id, ts.Unix(), body))
	}
	for _, k := range s.keys {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(asymmetricVersion)
		b.WriteByte(',')
		b.Write(signAsymmetric(k.k.priv, id, ts.Unix(), body))
	}
	return b.String()
}

// Headers sets webhook-id, webhook-timestamp (unix seconds) and
// webhook-signature on h, replacing any previous values.
func (s *Signer) Headers(h http.Header, id string, ts time.Time, body []byte) {
	h.Set(headerID, id)
	h.Set(headerTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(headerSignature, s.Signature(id, ts, body))
}

// sign returns the base64 HMAC-SHA256 of "id.unix.body" under key.
func sign(key []byte, id string, unix int64, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	var buf [32]byte
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(buf[:0], unix, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	sum := mac.Sum(nil)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sum)))
	base64.StdEncoding.Encode(out, sum)
	return out
}

// Verify checks a received webhook the Standard Webhooks way: the three
// headers are present, the timestamp is within tolerance of now in either
// direction, and at least one "v1,<sig>" entry in the space-separated
// signature list matches under secret (compared in constant time).
// Entries of other versions are ignored. A non-positive tolerance means the
// recommended 5 minutes. The returned error wraps one of ErrMissingHeaders,
// ErrTimestampTooOld, ErrTimestampTooNew or ErrNoMatchingSignature.
func Verify(secret Secret, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, unix, sigs, err := checkHeaders(h, now, tolerance)
	if err != nil {
		return err
	}
	// An empty key would make signatures forgeable; refuse instead of
	// "verifying" against it.
	if secret.IsZero() {
		return fmt.Errorf("webhook: verify: zero secret: %w", ErrNoMatchingSignature)
	}
	want := sign(secret.key(), id, unix, body)
	for entry := range strings.SplitSeq(sigs, " ") {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != signatureVersion {
			continue
		}
		if hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return fmt.Errorf("webhook: verify: %w", ErrNoMatchingSignature)
}

// checkHeaders reads the three headers and checks the timestamp against
// now within tolerance (5 minutes when not positive).
func checkHeaders(h http.Header, now time.Time, tolerance time.Duration) (id string, unix int64, sigs string, err error) {
	id = h.Get(headerID)
	tsRaw := h.Get(headerTimestamp)
	sigs = h.Get(headerSignature)
	if id == "" || tsRaw == "" || sigs == "" {
		return "", 0, "", fmt.Errorf("webhook: verify: %w", ErrMissingHeaders)
	}
	unix, err = strconv.ParseInt(tsRaw, 10, 64)
	if err != nil {
		return "", 0, "", fmt.Errorf("webhook: verify: timestamp is not unix seconds: %w", ErrMissingHeaders)
	}
	if tolerance <= 0 {
		tolerance = defaultTolerance
	}
	// Compare in seconds rather than with time.Time arithmetic, which
	// saturates and could let absurd timestamps through.
	nowUnix := now.Unix()
	tolSec := int64(tolerance / time.Second)
	switch {
	case unix < nowUnix-tolSec:
		return "", 0, "", fmt.Errorf("webhook: verify: %w", ErrTimestampTooOld)
	case unix > nowUnix+tolSec:
		return "", 0, "", fmt.Errorf("webhook: verify: %w", ErrTimestampTooNew)
	}
	return id, unix, sigs, nil
}
