package config_test

import (
	"strings"
	"testing"

	"github.com/previewd/previewd/config"
)

// TestWeakTokensRefused: every token setting refuses, at start-up, tokens
// shorter than 16 characters and the placeholders of templates and
// examples (CHANGE-ME from deployments/k8s/secret.yaml among them, in any
// case), naming the variable and never quoting the token; a random token of
// 16 characters or more is accepted.
func TestWeakTokensRefused(t *testing.T) {
	envs := []string{"PREVIEWD_API_TOKENS", "PREVIEWD_DASHBOARD_READONLY_TOKENS", "PREVIEWD_METRICS_TOKEN", "PREVIEWD_CSM_WEBHOOK_TOKEN"}
	refused := []struct{ name, token string }{
		{"k8s template", "CHANGE-ME"},
		{"changeme", "changeme"},
		{"change_me upper", "CHANGE_ME"},
		{"change me, padded to length", "change-me-please-now"},
		{"secret", "Secret"},
		{"password", "PASSWORD"},
		{"token", "token"},
		{"example", "example"},
		{"x run", "xxxxxxxxxxxxxxxxxxxxxxxx"},
		{"X run", "XXXXXXXXXXXXXXXXXXXX"},
		{"zero run", "00000000000000000000"},
		{"your-token-here", "your-token-here"},
		{"your token, long", "YOUR_TOKEN_HERE_0123456789"},
		{"replace-with", "REPLACE-WITH-openssl-rand-hex-32"},
		{"15 characters", "a1b2c3d4e5f6g7h"},
		{"short", "k3y"},
	}
	for _, env := range envs {
		for _, tc := range refused {
			t.Run(env+"/"+tc.name, func(t *testing.T) {
				_, err := config.FromEnv(envOf(map[string]string{env: tc.token}))
				errs := configErrors(t, err)
				if len(errs) != 1 || errs[0].Env != env || errs[0].Flag != flagName(env) {
					t.Fatalf("%s=<%d chars>: errors %v, want one naming %s", env, len(tc.token), err, env)
				}
				// (A token as short as "token" is a word of the message.)
				if len(tc.token) >= 8 && strings.Contains(err.Error(), tc.token) {
					t.Fatalf("the error quotes the token: %v", err)
				}
			})
		}
	}

	good := "3f9c1e7a5b2d4c6e8f0a1b3c5d7e9f1a"
	for _, env := range envs {
		if _, err := config.FromEnv(envOf(map[string]string{env: good})); err != nil {
			t.Errorf("%s with a random 32-character token: %v", env, err)
		}
	}
	// A list is checked token by token; the error names the token's place.
	for _, env := range []string{"PREVIEWD_API_TOKENS", "PREVIEWD_DASHBOARD_READONLY_TOKENS"} {
		if _, err := config.FromEnv(envOf(map[string]string{env: good + ", " + good + "x"})); err != nil {
			t.Errorf("%s with two good tokens: %v", env, err)
		}
		_, err := config.FromEnv(envOf(map[string]string{env: good + ",CHANGE-ME"}))
		if err == nil || !strings.Contains(err.Error(), env) || !strings.Contains(err.Error(), "token 2 of 2") {
			t.Errorf("%s with a placeholder second: %v", env, err)
		}
	}
}
