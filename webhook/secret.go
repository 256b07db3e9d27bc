package webhook

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

const (
	secretPrefix   = "whsec_"
	redactedSecret = secretPrefix + "[redacted]"

	// Standard Webhooks asks for 24..64 bytes of key material.
	minSecretLen = 24
	maxSecretLen = 64
	genSecretLen = 32
)

// Secret is a Standard Webhooks signing secret ("whsec_" followed by the
// standard base64 encoding of 24..64 random bytes).
//
// Every textual form of a Secret (String, GoString, fmt verbs, JSON, text
// and slog encodings) is the fixed string "whsec_[redacted]". The key sits
// behind a pointer so that even reflection-based printing of a struct that
// embeds a Secret in an unexported field shows an address, not key bytes.
// The zero Secret is not usable for signing.
type Secret struct {
	k *secretKey
}

type secretKey struct {
	b []byte
}

// ParseSecret parses a "whsec_"-prefixed secret. The base64 may be padded or
// not. Errors describe the problem without repeating the input, because the
// input is the secret.
func ParseSecret(s string) (Secret, error) {
	enc, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return Secret{}, errors.New("webhook: secret must start with " + secretPrefix)
	}
	codec := base64.RawStdEncoding
	if strings.HasSuffix(enc, "=") {
		codec = base64.StdEncoding
	}
	key, err := codec.DecodeString(enc)
	if err != nil {
		// Deliberately not wrapping err: it is harmless today, but the
		// message of a decoding error is not ours to keep secret-free.
		return Secret{}, errors.New("webhook: secret is not valid standard base64")
	}
	if len(key) < minSecretLen || len(key) > maxSecretLen {
		return Secret{}, fmt.Errorf("webhook: secret must decode to %d..%d bytes, got %d", minSecretLen, maxSecretLen, len(key))
	}
	return Secret{k: &secretKey{b: key}}, nil
}

// GenerateSecret returns a new secret: "whsec_" plus the padded standard
// base64 of 32 bytes from crypto/rand. It is returned as a string because
// its one use is to be shown to the user once and stored.
func GenerateSecret() (string, error) {
	key := make([]byte, genSecretLen)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("webhook: generate secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// IsZero reports whether s holds no key (the zero Secret).
func (s Secret) IsZero() bool { return s.k == nil || len(s.k.b) == 0 }

// key returns the raw key bytes; nil for the zero Secret.
func (s Secret) key() []byte {
	if s.k == nil {
		return nil
	}
	return s.k.b
}

// String returns the redacted form "whsec_[redacted]".
func (s Secret) String() string { return redactedSecret }

// GoString returns the redacted form, so %#v does not leak the key.
func (s Secret) GoString() string { return redactedSecret }

// Format implements fmt.Formatter so that every verb (%v, %x, %d, ...)
// prints the redacted form; without it %d or %x would format the fields.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redactedSecret)) }

// MarshalText returns the redacted form.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redactedSecret), nil }

// MarshalJSON returns the redacted form as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redactedSecret + `"`), nil }

// LogValue returns the redacted form for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redactedSecret) }
