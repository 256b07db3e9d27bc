package webhook_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/webhook"
)

// RFC 8032 section 7.1, TEST 1: a seed and the public key it derives.
const (
	rfc8032Seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	rfc8032Pub  = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)

// v1aVector was computed outside Go, by pyca/cryptography 48 and, byte for
// byte the same, by the OpenSSL 3 command line (openssl pkeyutl -sign
// -rawin): the ed25519 signature of "id.timestamp.body" under the seed that
// the Standard Webhooks Go library's asymmetric tests use.
var v1aVector = struct {
	seed, id, body, public, signature string
	timestamp                         int64
}{
	seed:      "WEBHOOKASYMMETRICTESTPRIVATEKEY1",
	id:        "msg_p5jXN8AQM9LWM0D4loKWxJek",
	timestamp: 1614265330,
	body:      `{"test": 2432232314}`,
	public:    "whpk_4rQZjjkCnn4m/ciYBaRPSZTA+Y/UwqgD6hgxOllF28g=",
	signature: "v1a,wY2SZc3TRkb1YQ3GVtlawNyAeN6SEYiztr+FExZJzpEd7BY8kO2olVTahf5NW2nn86HK/3ZM9G2VRPMiA51jDA==",
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSigningKeyForms: a whsk_ key is the base64 of the 32-byte seed or of
// the 64-byte seed||public form; either derives RFC 8032's public key.
func TestSigningKeyForms(t *testing.T) {
	seed, pub := mustHex(t, rfc8032Seed), mustHex(t, rfc8032Pub)
	wantPub := "whpk_" + base64.StdEncoding.EncodeToString(pub)
	other := bytes.Repeat([]byte{7}, 32)
	tests := []struct {
		name    string
		key     string
		wantErr string
	}{
		{name: "seed, padded", key: "whsk_" + base64.StdEncoding.EncodeToString(seed)},
		{name: "seed, unpadded", key: "whsk_" + base64.RawStdEncoding.EncodeToString(seed)},
		{name: "64-byte private key", key: "whsk_" + base64.StdEncoding.EncodeToString(append(append([]byte{}, seed...), pub...))},
		{name: "64-byte key with a foreign public half", key: "whsk_" + base64.StdEncoding.EncodeToString(append(append([]byte{}, seed...), other...)), wantErr: "does not belong"},
		{name: "wrong length", key: "whsk_" + base64.StdEncoding.EncodeToString(seed[:31]), wantErr: "32 or 64 bytes, got 31"},
		{name: "not base64", key: "whsk_" + rfc8032Seed + "!", wantErr: "not valid standard base64"},
		{name: "an HMAC secret", key: "whsec_" + base64.StdEncoding.EncodeToString(seed), wantErr: "must start with whsk_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := webhook.ParseSigningKey(tt.key)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), strings.TrimPrefix(tt.key, "whsk_")[:10]) {
					t.Fatalf("the error repeats the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Public(); got != wantPub {
				t.Fatalf("public key %s, want RFC 8032's %s", got, wantPub)
			}
			if _, err := webhook.ParsePublicKey(k.Public()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestV1aMatchesIndependentVector: our v1a signature is the one two other
// ed25519 implementations computed, and VerifyAsymmetric accepts it and
// nothing altered.
func TestV1aMatchesIndependentVector(t *testing.T) {
	v := v1aVector
	k, err := webhook.ParseSigningKey("whsk_" + base64.StdEncoding.EncodeToString([]byte(v.seed)))
	if err != nil {
		t.Fatal(err)
	}
	if k.Public() != v.public {
		t.Fatalf("public key %s, want %s", k.Public(), v.public)
	}
	ts := time.Unix(v.timestamp, 0)
	if got := webhook.NewAsymmetricSigner(k).Signature(v.id, ts, []byte(v.body)); got != v.signature {
		t.Fatalf("signature\n %s\nwant\n %s", got, v.signature)
	}
	pub, err := webhook.ParsePublicKey(v.public)
	if err != nil {
		t.Fatal(err)
	}
	headers := func(id, sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", strconv.FormatInt(v.timestamp, 10))
		h.Set("webhook-signature", sig)
		return h
	}
	_, otherPubRaw, _ := ed25519.GenerateKey(nil)
	otherPub, _ := webhook.ParsePublicKey("whpk_" + base64.StdEncoding.EncodeToString(otherPubRaw.Public().(ed25519.PublicKey)))
	tests := []struct {
		name string
		pub  webhook.PublicKey
		h    http.Header
		body string
		want error
	}{
		{name: "valid", pub: pub, h: headers(v.id, v.signature), body: v.body},
		{name: "valid beside other entries", pub: pub, h: headers(v.id, "v1,bm9wZQ== "+v.signature+" v2,x"), body: v.body},
		{name: "body changed", pub: pub, h: headers(v.id, v.signature), body: v.body + " ", want: webhook.ErrNoMatchingSignature},
		{name: "id changed", pub: pub, h: headers(v.id+"x", v.signature), body: v.body, want: webhook.ErrNoMatchingSignature},
		{name: "another public key", pub: otherPub, h: headers(v.id, v.signature), body: v.body, want: webhook.ErrNoMatchingSignature},
		{name: "v1a signature announced as v1", pub: pub, h: headers(v.id, "v1,"+strings.TrimPrefix(v.signature, "v1a,")), body: v.body, want: webhook.ErrNoMatchingSignature},
		{name: "zero public key", h: headers(v.id, v.signature), body: v.body, want: webhook.ErrNoMatchingSignature},
		{name: "no signature", pub: pub, h: headers(v.id, ""), body: v.body, want: webhook.ErrMissingHeaders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := webhook.VerifyAsymmetric(tt.pub, tt.h, []byte(tt.body), ts, 0)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if err := webhook.VerifyAsymmetric(pub, headers(v.id, v.signature), []byte(v.body), ts.Add(6*time.Minute), 0); !errors.Is(err, webhook.ErrTimestampTooOld) {
		t.Fatalf("an old v1a message: %v", err)
	}
}

// TestSignerForMixedKeys: during a switch from v1 to v1a (or a rotation),
// stored keys of both kinds sign every message; a receiver of either kind
// verifies, the v1a one with crypto/ed25519 straight from the spec.
func TestSignerForMixedKeys(t *testing.T) {
	_, whsec := newSecret(t)
	whsk, whpk, err := webhook.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(whsk, "whsk_") || !strings.HasPrefix(whpk, "whpk_") {
		t.Fatalf("generated %q / %q", whsk[:5], whpk)
	}
	signer, err := webhook.SignerFor(whsec, whsk)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"type":"preview.done"}`)
	now := time.Now()
	h := http.Header{}
	signer.Headers(h, "msg_1", now, body)
	entries := strings.Split(h.Get("webhook-signature"), " ")
	if len(entries) != 2 || !strings.HasPrefix(entries[0], "v1,") || !strings.HasPrefix(entries[1], "v1a,") {
		t.Fatalf("signature header %q", h.Get("webhook-signature"))
	}
	if err := referenceReceiver(t, whsec).Verify(body, h); err != nil {
		t.Fatalf("the reference library refused the v1 entry beside a v1a one: %v", err)
	}
	pubRaw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(whpk, "whpk_"))
	if err != nil || len(pubRaw) != ed25519.PublicKeySize {
		t.Fatalf("whpk_ is not base64 of 32 bytes: %v", err)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(entries[1], "v1a,"))
	if err != nil {
		t.Fatal(err)
	}
	content := fmt.Sprintf("%s.%d.%s", h.Get("webhook-id"), now.Unix(), body)
	if !ed25519.Verify(pubRaw, []byte(content), sig) {
		t.Fatal("the v1a entry does not verify under the public key")
	}

	for _, bad := range []string{"whsk_AAAA", "whsec_AAAA", "plain"} {
		if _, err := webhook.SignerFor(whsec, bad); err == nil {
			t.Errorf("SignerFor accepted %q", bad)
		}
	}
}

// TestSigningKeyRedacted: no textual form of a signing key, or of a Signer
// holding one, shows key material.
func TestSigningKeyRedacted(t *testing.T) {
	whsk, _, err := webhook.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := webhook.ParseSigningKey(whsk)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(whsk, "whsk_"))
	priv := ed25519.NewKeyFromSeed(seed)
	signer := webhook.NewAsymmetricSigner(k)
	type wrapped struct{ k webhook.SigningKey }
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d"} {
		outputs = append(outputs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, &k), fmt.Sprintf(verb, wrapped{k}),
			fmt.Sprintf(verb, signer), fmt.Sprintf(verb, *signer))
	}
	j, _ := json.Marshal(struct{ K webhook.SigningKey }{k})
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", k)
	outputs = append(outputs, string(j), logged.String())
	forbidden := []string{strings.TrimPrefix(whsk, "whsk_")[:12], fmt.Sprintf("%x", seed[:6]), fmt.Sprint(seed[:4])[1:], fmt.Sprintf("%x", priv[:6])}
	for _, out := range outputs {
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Errorf("output %q contains key material %q", out, f)
			}
		}
	}
	if got := fmt.Sprint(k); got != "whsk_[redacted]" {
		t.Errorf("fmt.Sprint = %q", got)
	}
}
