package webhook_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/previewd/previewd/webhook"
)

func TestParseSecret(t *testing.T) {
	key := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 1)
		}
		return b
	}
	std := func(n int) string { return base64.StdEncoding.EncodeToString(key(n)) }
	raw := func(n int) string { return base64.RawStdEncoding.EncodeToString(key(n)) }

	tests := []struct {
		name    string
		in      string
		wantErr string // substring; "" means success
	}{
		{name: "padded 32 bytes", in: "whsec_" + std(32)},
		{name: "unpadded 32 bytes", in: "whsec_" + raw(32)},
		{name: "minimum 24 bytes", in: "whsec_" + std(24)},
		{name: "maximum 64 bytes", in: "whsec_" + std(64)},
		{name: "no prefix", in: std(32), wantErr: "must start with whsec_"},
		{name: "wrong prefix", in: "wh_" + std(32), wantErr: "must start with whsec_"},
		{name: "empty", in: "", wantErr: "must start with whsec_"},
		{name: "bad base64", in: "whsec_" + std(32)[:20] + "!!" + std(32)[22:], wantErr: "not valid standard base64"},
		{name: "url-safe alphabet", in: "whsec_" + strings.NewReplacer("+", "-", "/", "_").Replace(std(48)) + "-_", wantErr: "not valid standard base64"},
		{name: "too short", in: "whsec_" + std(23), wantErr: "24..64 bytes, got 23"},
		{name: "too long", in: "whsec_" + std(65), wantErr: "24..64 bytes, got 65"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := webhook.ParseSecret(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseSecret: %v", err)
				}
				if s.IsZero() {
					t.Fatal("parsed secret is zero")
				}
				return
			}
			if err == nil {
				t.Fatal("ParseSecret succeeded, want error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
			if enc := strings.TrimPrefix(tt.in, "whsec_"); len(enc) > 8 && strings.Contains(err.Error(), enc[:8]) {
				t.Errorf("error %q repeats the input", err)
			}
			if !s.IsZero() {
				t.Error("failed parse returned a non-zero secret")
			}
		})
	}
}

func TestGenerateSecret(t *testing.T) {
	a, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two generated secrets are equal")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "whsec_"))
	if err != nil || len(key) != 32 || !strings.HasPrefix(a, "whsec_") {
		t.Fatalf("generated secret is not whsec_ + base64(32 bytes): len %d, err %v", len(key), err)
	}
	if _, err := webhook.ParseSecret(a); err != nil {
		t.Fatalf("generated secret does not parse: %v", err)
	}
}

// TestSecretNeverPrinted checks every way a Secret commonly reaches a log:
// fmt verbs, JSON, and being a field (exported or not) of a printed struct.
func TestSecretNeverPrinted(t *testing.T) {
	enc, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s, err := webhook.ParseSecret(enc)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(enc, "whsec_"))
	type exported struct{ S webhook.Secret }
	type unexported struct{ s webhook.Secret }
	signer := webhook.NewSigner(s)

	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		outputs = append(outputs,
			fmt.Sprintf(verb, s), fmt.Sprintf(verb, &s),
			fmt.Sprintf(verb, exported{s}), fmt.Sprintf(verb, unexported{s}),
			fmt.Sprintf(verb, signer), fmt.Sprintf(verb, *signer))
	}
	for _, v := range []any{s, &s, exported{s}, signer} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		outputs = append(outputs, string(j))
	}
	txt, _ := s.MarshalText()
	outputs = append(outputs, string(txt), s.String(), s.GoString())

	forbidden := []string{
		strings.TrimPrefix(enc, "whsec_")[:12],
		string(key[:8]),
		fmt.Sprint(key[:4])[1:], // "[12 34 56 78" as %v/%d would print it
		fmt.Sprintf("%x", key[:6]),
		fmt.Sprintf("%X", key[:6]),
	}
	for _, out := range outputs {
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Errorf("output %q contains key material %q", out, f)
			}
		}
	}
	if got := fmt.Sprint(s); got != "whsec_[redacted]" {
		t.Errorf("fmt.Sprint = %q, want whsec_[redacted]", got)
	}
	if j, _ := json.Marshal(s); string(j) != `"whsec_[redacted]"` {
		t.Errorf("json = %s", j)
	}
}
