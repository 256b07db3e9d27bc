package config_test

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/config"
)

// TestLoadReadOnly: the read-only commands ignore what only workers and
// the server use, and still refuse what they use themselves.
func TestLoadReadOnly(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string // "" for none
		// loadRefuses: Load (what a worker runs) refuses the same input.
		loadRefuses bool
		check       func(t *testing.T, c config.Config)
	}{
		{name: "no worker secrets", env: map[string]string{}},
		{name: "worker settings that do not parse keep their default",
			env:         map[string]string{"PREVIEWD_CONCURRENCY": "many", "PREVIEWD_POLL_INTERVAL": "soon", "PREVIEWD_WEBHOOK_RETRY_SCHEDULE": "x"},
			loadRefuses: true,
			check: func(t *testing.T, c config.Config) {
				if c.Concurrency != 10 || c.PollInterval != 5*time.Second || len(c.WebhookRetrySchedule) != 7 {
					t.Errorf("got concurrency %d, poll interval %s, schedule %v: want the defaults", c.Concurrency, c.PollInterval, c.WebhookRetrySchedule)
				}
			}},
		{name: "worker settings that do not validate", env: map[string]string{
			"PREVIEWD_CSM_BASE_URL": "ftp://x", "PREVIEWD_API_TOKENS": "changeme", "PREVIEWD_CONCURRENCY": "0", "PREVIEWD_RETENTION": "1s"}, loadRefuses: true},
		{name: "a worker setting given as a flag", args: []string{"--concurrency=-1"}, loadRefuses: true},
		{name: "the namespace", env: map[string]string{"PREVIEWD_NAMESPACE": "a b"}, wantErr: "PREVIEWD_NAMESPACE"},
		{name: "the Redis URL", env: map[string]string{"PREVIEWD_REDIS_URL": "http://x"}, wantErr: "PREVIEWD_REDIS_URL"},
		{name: "sentinels without a primary", args: []string{"--redis-sentinels=a:1"}, wantErr: "PREVIEWD_REDIS_MASTER"},
		{name: "the log level", env: map[string]string{"PREVIEWD_LOG_LEVEL": "loud"}, wantErr: "PREVIEWD_LOG_LEVEL"},
		{name: "the values it uses", env: map[string]string{"PREVIEWD_NAMESPACE": "staging", "PREVIEWD_CONCURRENCY": "x"},
			check: func(t *testing.T, c config.Config) {
				if c.Namespace != "staging" {
					t.Errorf("namespace %q", c.Namespace)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("previewd", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			flags := config.RegisterFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			c, err := flags.LoadReadOnly(envOf(tc.env))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("LoadReadOnly: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("LoadReadOnly: %v, want an error naming %s", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
			if _, err := flags.Load(envOf(tc.env)); tc.loadRefuses && err == nil {
				t.Errorf("Load accepted what a worker must refuse")
			}
		})
	}
}
