package webhook

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks' asymmetric scheme: ed25519 over the same signed
// content as v1, announced as "v1a,<base64 signature>". The sender keeps a
// "whsk_" secret key; the receiver needs only the "whpk_" public key, so a
// leaked receiver configuration lets nobody forge a webhook.
//
// The spec says "standard ed25519 key pair, base64 encoded" without fixing
// the private key's form. A whsk_ key here is the base64 of the 32-byte
// seed (RFC 8032's private key, what the reference Go library's asymmetric
// branch and pyca's from_private_bytes take); the 64-byte form that Go and
// libsodium call the private key (seed followed by the public key) is
// accepted as well, and its public half must match the seed.
const (
	signingKeyPrefix   = "whsk_"
	publicKeyPrefix    = "whpk_"
	redactedSigningKey = signingKeyPrefix + "[redacted]"

	asymmetricVersion = "v1a"
)

// SigningKey is an ed25519 private key for v1a signatures. Like Secret,
// every textual form of it is the fixed string "whsk_[redacted]", and the
// key sits behind a pointer so reflection-based printing shows an address.
// The zero SigningKey does not sign.
type SigningKey struct {
	k *signingKey
}

type signingKey struct {
	priv ed25519.PrivateKey
}

// PublicKey is an ed25519 public key that verifies v1a signatures. It is
// not secret.
type PublicKey struct {
	b ed25519.PublicKey
}

// IsSigningKey reports whether s has the whsk_ prefix of a SigningKey.
func IsSigningKey(s string) bool { return strings.HasPrefix(s, signingKeyPrefix) }

// ParseSigningKey parses a "whsk_" key: base64 (padded or not) of a 32-byte
// ed25519 seed or of a 64-byte private key. Errors never repeat the input.
func ParseSigningKey(s string) (SigningKey, error) {
	enc, ok := strings.CutPrefix(s, signingKeyPrefix)
	if !ok {
		return SigningKey{}, errors.New("webhook: signing key must start with " + signingKeyPrefix)
	}
	raw, err := decodeBase64(enc)
	if err != nil {
		return SigningKey{}, errors.New("webhook: signing key is not valid standard base64")
	}
	var priv ed25519.PrivateKey
	switch len(raw) {
	case ed25519.SeedSize:
		priv = ed25519.NewKeyFromSeed(raw)
	case ed25519.PrivateKeySize:
		priv = ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
		if !bytes.Equal(priv[ed25519.SeedSize:], raw[ed25519.SeedSize:]) {
			return SigningKey{}, errors.New("webhook: signing key's public half does not belong to its seed")
		}
	default:
		return SigningKey{}, fmt.Errorf("webhook: signing key must decode to %d or %d bytes, got %d", ed25519.SeedSize, ed25519.PrivateKeySize, len(raw))
	}
	return SigningKey{k: &signingKey{priv: priv}}, nil
}

// ParsePublicKey parses a "whpk_" key: base64 (padded or not) of a 32-byte
// ed25519 public key.
func ParsePublicKey(s string) (PublicKey, error) {
	enc, ok := strings.CutPrefix(s, publicKeyPrefix)
	if !ok {
		return PublicKey{}, errors.New("webhook: public key must start with " + publicKeyPrefix)
	}
	raw, err := decodeBase64(enc)
	if err != nil {
		return PublicKey{}, errors.New("webhook: public key is not valid standard base64")
	}
	if len(raw) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("webhook: public key must decode to %d bytes, got %d", ed25519.PublicKeySize, len(raw))
	}
	return PublicKey{b: ed25519.PublicKey(raw)}, nil
}

func decodeBase64(enc string) ([]byte, error) {
	if strings.HasSuffix(enc, "=") {
		return base64.StdEncoding.DecodeString(enc)
	}
	return base64.RawStdEncoding.DecodeString(enc)
}

// GenerateSigningKey returns a new key pair from crypto/rand: the whsk_
// secret key (padded base64 of the seed), to be stored and never shown,
// and the whpk_ public key, to be given to the receiver.
func GenerateSigningKey() (secret, public string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("webhook: generate signing key: %w", err)
	}
	return signingKeyPrefix + base64.StdEncoding.EncodeToString(priv.Seed()), encodePublicKey(pub), nil
}

func encodePublicKey(pub ed25519.PublicKey) string {
	return publicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// IsZero reports whether k holds no key.
func (k SigningKey) IsZero() bool { return k.k == nil || len(k.k.priv) != ed25519.PrivateKeySize }

// Public returns the key's whpk_ public key; "" for the zero SigningKey.
func (k SigningKey) Public() string {
	if k.IsZero() {
		return ""
	}
	return encodePublicKey(k.k.priv.Public().(ed25519.PublicKey))
}

// String returns the redacted form "whsk_[redacted]".
func (k SigningKey) String() string { return redactedSigningKey }

// GoString returns the redacted form, so %#v does not leak the key.
func (k SigningKey) GoString() string { return redactedSigningKey }

// Format prints the redacted form for every verb.
func (k SigningKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redactedSigningKey)) }

// MarshalText returns the redacted form.
func (k SigningKey) MarshalText() ([]byte, error) { return []byte(redactedSigningKey), nil }

// MarshalJSON returns the redacted form as a JSON string.
func (k SigningKey) MarshalJSON() ([]byte, error) { return []byte(`"` + redactedSigningKey + `"`), nil }

// LogValue returns the redacted form for log/slog.
func (k SigningKey) LogValue() slog.Value { return slog.StringValue(redactedSigningKey) }

// String returns the whpk_ form of the public key.
func (p PublicKey) String() string { return encodePublicKey(p.b) }

// signAsymmetric returns the base64 ed25519 signature of "id.unix.body".
func signAsymmetric(priv ed25519.PrivateKey, id string, unix int64, body []byte) []byte {
	sig := ed25519.Sign(priv, signedContent(id, unix, body))
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sig)))
	base64.StdEncoding.Encode(out, sig)
	return out
}

// signedContent is the Standard Webhooks signed content "id.unix.body".
func signedContent(id string, unix int64, body []byte) []byte {
	b := make([]byte, 0, len(id)+len(body)+22)
	b = append(b, id...)
	b = append(b, '.')
	b = strconv.AppendInt(b, unix, 10)
	b = append(b, '.')
	return append(b, body...)
}

// VerifyAsymmetric is Verify for v1a: the headers and the timestamp are
// checked the same way, and at least one "v1a,<sig>" entry must be a valid
// ed25519 signature under pub. Entries of other versions are ignored. The
// returned error wraps the same sentinels as Verify's.
func VerifyAsymmetric(pub PublicKey, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, unix, sigs, err := checkHeaders(h, now, tolerance)
	if err != nil {
		return err
	}
	if len(pub.b) != ed25519.PublicKeySize {
		return fmt.Errorf("webhook: verify: zero public key: %w", ErrNoMatchingSignature)
	}
	msg := signedContent(id, unix, body)
	for entry := range strings.SplitSeq(sigs, " ") {
		version, enc, ok := strings.Cut(entry, ",")
		if !ok || version != asymmetricVersion {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(enc)
		if err == nil && ed25519.Verify(pub.b, msg, sig) {
			return nil
		}
	}
	return fmt.Errorf("webhook: verify: %w", ErrNoMatchingSignature)
}
