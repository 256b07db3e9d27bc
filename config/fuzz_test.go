package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/previewd/previewd/config"
)

// FuzzFromEnv sets one setting to an arbitrary value: loading never panics,
// a refusal is a *config.Error naming a setting, and the value of a secret
// never appears in the error or in the printed configuration.
func FuzzFromEnv(f *testing.F) {
	names := config.EnvNames()
	for i, v := range []string{"soon", "-1s", "0", "99999999999999999999h", "true", "maybe", "redis://:pw@h:1/99", "x,,y", "whsec_", " 5s ", "1e9"} {
		f.Add(uint8(i), v)
	}
	f.Fuzz(func(t *testing.T, idx uint8, value string) {
		name := names[int(idx)%len(names)]
		cfg, err := config.FromEnv(func(k string) string {
			if k == name {
				return value
			}
			return ""
		})
		secret := strings.Contains(name, "SECRET") || strings.Contains(name, "KEY") || strings.Contains(name, "TOKENS")
		// Long enough not to be a piece of the message's own words.
		leaks := func(s string) bool { return secret && len(value) >= 24 && strings.Contains(s, value) }
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) || !strings.HasPrefix(ce.Env, "PREVIEWD_") {
				t.Fatalf("%s=%q: error %v does not name a setting", name, value, err)
			}
			if leaks(err.Error()) {
				t.Fatalf("%s: the error shows the secret: %v", name, err)
			}
			return
		}
		for _, e := range cfg.Entries() {
			if leaks(e.Value) {
				t.Fatalf("%s: the printed configuration shows the secret", name)
			}
		}
	})
}
