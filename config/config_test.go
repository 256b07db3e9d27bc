package config_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/config"
)

// envOf returns a getenv reading only m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// flagName derives the flag of an environment variable, the convention the
// settings table follows: PREVIEWD_POLL_MAX_INTERVAL is --poll-max-interval.
func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, config.EnvPrefix)), "_", "-")
}

// sameSettings fails the test unless every exported field of got equals
// that of want.
func sameSettings(t *testing.T, got, want config.Config) {
	t.Helper()
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		f := gv.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if g, w := gv.Field(i).Interface(), wv.Field(i).Interface(); !reflect.DeepEqual(g, w) {
			t.Errorf("%s = %#v, want %#v", f.Name, g, w)
		}
	}
}

// configErrors returns every *config.Error joined in err.
func configErrors(t *testing.T, err error) []*config.Error {
	t.Helper()
	var out []*config.Error
	var walk func(error)
	walk = func(e error) {
		if ce, ok := e.(*config.Error); ok {
			out = append(out, ce)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range u.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		default:
			t.Errorf("error %v (%T) is not a *config.Error", e, e)
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// checkNames fails the test unless err consists of config errors naming
// exactly the given environment variables, each with its flag, and its text
// names each variable and flag.
func checkNames(t *testing.T, err error, wantEnvs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one naming %v", wantEnvs)
	}
	var got []string
	for _, ce := range configErrors(t, err) {
		got = append(got, ce.Env)
		if ce.Flag != flagName(ce.Env) {
			t.Errorf("error for %s names flag %q, want %q", ce.Env, ce.Flag, flagName(ce.Env))
		}
		if ce.Reason == "" {
			t.Errorf("error for %s has no reason", ce.Env)
		}
	}
	sort.Strings(got)
	want := slices.Clone(wantEnvs)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("errors name %q, want %q (error: %v)", got, want, err)
	}
	for _, env := range wantEnvs {
		if !strings.Contains(err.Error(), env) || !strings.Contains(err.Error(), "--"+flagName(env)) {
			t.Errorf("error text %q does not name %s and --%s", err.Error(), env, flagName(env))
		}
	}
}

func TestDefault(t *testing.T) {
	c := config.Default()
	want := []struct {
		name string
		got  any
		want any
	}{
		{"RedisURL", c.RedisURL, config.RedisURL("redis://127.0.0.1:6379/0")},
		{"RedisCluster", c.RedisCluster, false},
		{"RedisSentinels", len(c.RedisSentinels), 0},
		{"RedisMaster", c.RedisMaster, ""},
		{"RedisMinReplicas", c.RedisMinReplicas, 0},
		{"RedisReplicaTimeout", c.RedisReplicaTimeout, 500 * time.Millisecond},
		{"Namespace", c.Namespace, "previewd"},
		{"CSMBaseURL", c.CSMBaseURL, "https://api.csm.ai"},
		{"CSMAPIKey", c.CSMAPIKey, config.Secret("")},
		{"CSMTimeout", c.CSMTimeout, 30 * time.Second},
		{"CSMRateLimit", c.CSMRateLimit, 10},
		{"CSMRateBurst", c.CSMRateBurst, 20},
		{"WebhookSecret", c.WebhookSecret, config.Secret("")},
		{"WebhookTimeout", c.WebhookTimeout, 15 * time.Second},
		{"WebhookAllowPrivate", c.WebhookAllowPrivate, false},
		{"PollInterval", c.PollInterval, 5 * time.Second},
		{"PollMaxInterval", c.PollMaxInterval, time.Minute},
		{"JobDeadline", c.JobDeadline, 3 * time.Hour},
		{"ReconcileGrace", c.ReconcileGrace, 10 * time.Minute},
		{"Retention", c.Retention, 7 * 24 * time.Hour},
		{"Concurrency", c.Concurrency, 10},
		{"WebhookConcurrency", c.WebhookConcurrency, 10},
		{"ShutdownTimeout", c.ShutdownTimeout, 10 * time.Second},
		{"LogLevel", c.LogLevel, "info"},
		{"LogFormat", c.LogFormat, "json"},
	}
	for _, w := range want {
		t.Run(w.name, func(t *testing.T) {
			if w.got != w.want {
				t.Errorf("%s = %#v, want %#v", w.name, w.got, w.want)
			}
		})
	}

	fromEmptyEnv, err := config.FromEnv(envOf(nil))
	if err != nil {
		t.Fatalf("FromEnv with no variables: %v", err)
	}
	sameSettings(t, fromEmptyEnv, c)
	// The defaults Entries documents, given explicitly, give the defaults.
	documented := map[string]string{}
	for _, e := range c.Entries() {
		if c.Explicit(e.Flag) {
			t.Errorf("Explicit(%q) is true for a default", e.Flag)
		}
		documented[e.Env] = e.Default
	}
	fromDocumented, err := config.FromEnv(envOf(documented))
	if err != nil {
		t.Fatalf("FromEnv with every documented default: %v", err)
	}
	sameSettings(t, fromDocumented, c)
	if err := c.RequireWorkerSecrets(); err == nil {
		t.Error("defaults pass RequireWorkerSecrets, but they have no secrets")
	}
}

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want func(c *config.Config)
	}{
		{name: "redis with password and db", env: map[string]string{"PREVIEWD_REDIS_URL": "redis://:pw@10.0.0.5:6380/2"},
			want: func(c *config.Config) { c.RedisURL = "redis://:pw@10.0.0.5:6380/2" }},
		{name: "rediss", env: map[string]string{"PREVIEWD_REDIS_URL": "rediss://redis.internal:6380/0"},
			want: func(c *config.Config) { c.RedisURL = "rediss://redis.internal:6380/0" }},
		{name: "unix socket", env: map[string]string{"PREVIEWD_REDIS_URL": "unix:///run/redis.sock"},
			want: func(c *config.Config) { c.RedisURL = "unix:///run/redis.sock" }},
		{name: "cluster", env: map[string]string{"PREVIEWD_REDIS_URL": "redis://10.0.0.5:7000?addr=10.0.0.6:7000", "PREVIEWD_REDIS_CLUSTER": "true"},
			want: func(c *config.Config) { c.RedisURL = "redis://10.0.0.5:7000?addr=10.0.0.6:7000"; c.RedisCluster = true }},
		{name: "sentinels, commas and spaces", env: map[string]string{
			"PREVIEWD_REDIS_SENTINELS": "10.0.0.7:26379, sentinel-b.internal:26379,[::1]:26380",
			"PREVIEWD_REDIS_MASTER":    "mymaster", "PREVIEWD_REDIS_URL": "redis://app:pw@ignored:6379/3",
		}, want: func(c *config.Config) {
			c.RedisSentinels = []string{"10.0.0.7:26379", "sentinel-b.internal:26379", "[::1]:26380"}
			c.RedisMaster, c.RedisURL = "mymaster", "redis://app:pw@ignored:6379/3"
		}},
		{name: "sentinels over rediss", env: map[string]string{
			"PREVIEWD_REDIS_SENTINELS": "s1:26379", "PREVIEWD_REDIS_MASTER": "prod.eu-1", "PREVIEWD_REDIS_URL": "rediss://redis.internal/0",
		}, want: func(c *config.Config) {
			c.RedisSentinels, c.RedisMaster, c.RedisURL = []string{"s1:26379"}, "prod.eu-1", "rediss://redis.internal/0"
		}},
		{name: "min replicas and their timeout", env: map[string]string{"PREVIEWD_REDIS_MIN_REPLICAS": "2", "PREVIEWD_REDIS_REPLICA_TIMEOUT": "1ms"},
			want: func(c *config.Config) { c.RedisMinReplicas, c.RedisReplicaTimeout = 2, time.Millisecond }},
		{name: "namespace with dot and dash", env: map[string]string{"PREVIEWD_NAMESPACE": "prod.eu-1_b"},
			want: func(c *config.Config) { c.Namespace = "prod.eu-1_b" }},
		{name: "namespace of 64 chars", env: map[string]string{"PREVIEWD_NAMESPACE": strings.Repeat("n", 64)},
			want: func(c *config.Config) { c.Namespace = strings.Repeat("n", 64) }},
		{name: "csm base url, trailing slashes dropped", env: map[string]string{"PREVIEWD_CSM_BASE_URL": "http://csm.internal:8443/api//"},
			want: func(c *config.Config) { c.CSMBaseURL = "http://csm.internal:8443/api" }},
		{name: "secrets, whitespace trimmed", env: map[string]string{"PREVIEWD_CSM_API_KEY": "  key-1\n", "PREVIEWD_WEBHOOK_SECRET": "whsec_abc"},
			want: func(c *config.Config) { c.CSMAPIKey = "key-1"; c.WebhookSecret = "whsec_abc" }},
		{name: "durations", env: map[string]string{
			"PREVIEWD_CSM_TIMEOUT": "45s", "PREVIEWD_WEBHOOK_TIMEOUT": " 2s ", "PREVIEWD_POLL_INTERVAL": "1s",
			"PREVIEWD_POLL_MAX_INTERVAL": "1s", "PREVIEWD_JOB_DEADLINE": "1h30m", "PREVIEWD_RECONCILE_GRACE": "90s",
			"PREVIEWD_RETENTION": "1m", "PREVIEWD_SHUTDOWN_TIMEOUT": "500ms",
		}, want: func(c *config.Config) {
			c.CSMTimeout, c.WebhookTimeout, c.PollInterval = 45*time.Second, 2*time.Second, time.Second
			c.PollMaxInterval, c.JobDeadline, c.ReconcileGrace = time.Second, 90*time.Minute, 90*time.Second
			c.Retention, c.ShutdownTimeout = time.Minute, 500*time.Millisecond
		}},
		{name: "integers", env: map[string]string{
			"PREVIEWD_CSM_RATE_LIMIT": "50", "PREVIEWD_CSM_RATE_BURST": "1", "PREVIEWD_CONCURRENCY": "10000", "PREVIEWD_WEBHOOK_CONCURRENCY": "1",
		}, want: func(c *config.Config) {
			c.CSMRateLimit, c.CSMRateBurst, c.Concurrency, c.WebhookConcurrency = 50, 1, 10000, 1
		}},
		{name: "rate limit off allows burst 0", env: map[string]string{"PREVIEWD_CSM_RATE_LIMIT": "0", "PREVIEWD_CSM_RATE_BURST": "0"},
			want: func(c *config.Config) { c.CSMRateLimit, c.CSMRateBurst = 0, 0 }},
		{name: "bool TRUE", env: map[string]string{"PREVIEWD_WEBHOOK_ALLOW_PRIVATE": "TRUE"},
			want: func(c *config.Config) { c.WebhookAllowPrivate = true }},
		{name: "bool 1", env: map[string]string{"PREVIEWD_WEBHOOK_ALLOW_PRIVATE": "1"},
			want: func(c *config.Config) { c.WebhookAllowPrivate = true }},
		{name: "bool false", env: map[string]string{"PREVIEWD_WEBHOOK_ALLOW_PRIVATE": "false"},
			want: func(c *config.Config) {}},
		{name: "log level and format case-insensitive", env: map[string]string{"PREVIEWD_LOG_LEVEL": "DEBUG", "PREVIEWD_LOG_FORMAT": "Console"},
			want: func(c *config.Config) { c.LogLevel, c.LogFormat = "debug", "console" }},
		{name: "log level warn", env: map[string]string{"PREVIEWD_LOG_LEVEL": "warn"},
			want: func(c *config.Config) { c.LogLevel = "warn" }},
		{name: "unrelated variables ignored", env: map[string]string{"PREVIEWD_UNKNOWN": "x", "POLL_INTERVAL": "1ms"},
			want: func(c *config.Config) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.FromEnv(envOf(tt.env))
			if err != nil {
				t.Fatalf("FromEnv: %v", err)
			}
			want := config.Default()
			tt.want(&want)
			sameSettings(t, got, want)
			for env := range tt.env {
				if !strings.HasPrefix(env, config.EnvPrefix) || env == "PREVIEWD_UNKNOWN" {
					continue
				}
				if !got.Explicit(flagName(env)) {
					t.Errorf("Explicit(%q) = false though %s is set", flagName(env), env)
				}
			}
			for _, e := range got.Entries() {
				if _, set := tt.env[e.Env]; !set && got.Explicit(e.Flag) {
					t.Errorf("Explicit(%q) = true though %s is not set", e.Flag, e.Env)
				}
			}
		})
	}
}

// load parses args with a fresh flag set and loads the configuration.
func load(t *testing.T, env map[string]string, args ...string) (config.Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("previewd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	flags := config.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return flags.Load(envOf(env))
}

func TestLoadPrecedence(t *testing.T) {
	tests := []struct {
		name         string
		env          map[string]string
		args         []string
		get          func(c config.Config) any
		want         any
		flag         string
		wantExplicit bool
	}{
		{name: "default", get: func(c config.Config) any { return c.PollInterval }, want: 5 * time.Second, flag: "poll-interval"},
		{name: "env over default", env: map[string]string{"PREVIEWD_POLL_INTERVAL": "10s"},
			get: func(c config.Config) any { return c.PollInterval }, want: 10 * time.Second, flag: "poll-interval", wantExplicit: true},
		{name: "flag over env", env: map[string]string{"PREVIEWD_POLL_INTERVAL": "10s"}, args: []string{"--poll-interval=20s"},
			get: func(c config.Config) any { return c.PollInterval }, want: 20 * time.Second, flag: "poll-interval", wantExplicit: true},
		{name: "flag over default", args: []string{"-namespace", "staging"},
			get: func(c config.Config) any { return c.Namespace }, want: "staging", flag: "namespace", wantExplicit: true},
		{name: "flag equal to the default is explicit", args: []string{"--namespace=previewd"},
			get: func(c config.Config) any { return c.Namespace }, want: "previewd", flag: "namespace", wantExplicit: true},
		{name: "flag for one setting leaves env of another", env: map[string]string{"PREVIEWD_CONCURRENCY": "3"}, args: []string{"--webhook-concurrency=4"},
			get: func(c config.Config) any { return [2]int{c.Concurrency, c.WebhookConcurrency} }, want: [2]int{3, 4}, flag: "concurrency", wantExplicit: true},
		{name: "bool flag over env", env: map[string]string{"PREVIEWD_WEBHOOK_ALLOW_PRIVATE": "true"}, args: []string{"--webhook-allow-private=false"},
			get: func(c config.Config) any { return c.WebhookAllowPrivate }, want: false, flag: "webhook-allow-private", wantExplicit: true},
		{name: "secret flag over env", env: map[string]string{"PREVIEWD_CSM_API_KEY": "from-env"}, args: []string{"--csm-api-key=from-flag"},
			get: func(c config.Config) any { return c.CSMAPIKey.Reveal() }, want: "from-flag", flag: "csm-api-key", wantExplicit: true},
		{name: "flag fixes an invalid env value", env: map[string]string{"PREVIEWD_RETENTION": "30s"}, args: []string{"--retention=2h"},
			get: func(c config.Config) any { return c.Retention }, want: 2 * time.Hour, flag: "retention", wantExplicit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.env, tt.args...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := tt.get(c); got != tt.want {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
			if got := c.Explicit(tt.flag); got != tt.wantExplicit {
				t.Errorf("Explicit(%q) = %v, want %v", tt.flag, got, tt.wantExplicit)
			}
		})
	}
}

func TestInvalidValues(t *testing.T) {
	tests := []struct {
		name  string
		env   string // the variable set to value
		value string
		also  map[string]string // other variables
		want  []string          // variables named; default env
	}{
		{name: "duration without unit", env: "PREVIEWD_CSM_TIMEOUT", value: "30"},
		{name: "duration garbage", env: "PREVIEWD_JOB_DEADLINE", value: "three hours"},
		{name: "duration empty after trim", env: "PREVIEWD_WEBHOOK_TIMEOUT", value: "   "},
		{name: "csm timeout zero", env: "PREVIEWD_CSM_TIMEOUT", value: "0s"},
		{name: "webhook timeout negative", env: "PREVIEWD_WEBHOOK_TIMEOUT", value: "-1s"},
		{name: "job deadline negative", env: "PREVIEWD_JOB_DEADLINE", value: "-3h"},
		{name: "reconcile grace zero", env: "PREVIEWD_RECONCILE_GRACE", value: "0"},
		{name: "shutdown timeout negative", env: "PREVIEWD_SHUTDOWN_TIMEOUT", value: "-10s"},
		{name: "poll interval 500ms", env: "PREVIEWD_POLL_INTERVAL", value: "500ms"},
		{name: "poll interval negative", env: "PREVIEWD_POLL_INTERVAL", value: "-5s"},
		{name: "poll max below poll interval", env: "PREVIEWD_POLL_MAX_INTERVAL", value: "4s"},
		{name: "poll max below a raised poll interval", env: "PREVIEWD_POLL_MAX_INTERVAL", value: "1m",
			also: map[string]string{"PREVIEWD_POLL_INTERVAL": "2m"}},
		{name: "retention 30s", env: "PREVIEWD_RETENTION", value: "30s"},
		{name: "concurrency 0", env: "PREVIEWD_CONCURRENCY", value: "0"},
		{name: "concurrency negative", env: "PREVIEWD_CONCURRENCY", value: "-1"},
		{name: "concurrency 10001", env: "PREVIEWD_CONCURRENCY", value: "10001"},
		{name: "webhook concurrency 0", env: "PREVIEWD_WEBHOOK_CONCURRENCY", value: "0"},
		{name: "rate limit negative", env: "PREVIEWD_CSM_RATE_LIMIT", value: "-1"},
		{name: "rate burst 0 with a limit", env: "PREVIEWD_CSM_RATE_BURST", value: "0"},
		{name: "int garbage", env: "PREVIEWD_CONCURRENCY", value: "ten"},
		{name: "int fractional", env: "PREVIEWD_CSM_RATE_LIMIT", value: "1.5"},
		{name: "int overflow", env: "PREVIEWD_CSM_RATE_BURST", value: "99999999999999999999"},
		{name: "bool yes", env: "PREVIEWD_WEBHOOK_ALLOW_PRIVATE", value: "yes"},
		{name: "bool garbage", env: "PREVIEWD_REDIS_CLUSTER", value: "enabled"},
		{name: "log level", env: "PREVIEWD_LOG_LEVEL", value: "verbose"},
		{name: "log format", env: "PREVIEWD_LOG_FORMAT", value: "text"},
		{name: "namespace with colon", env: "PREVIEWD_NAMESPACE", value: "a:b"},
		{name: "namespace with brace", env: "PREVIEWD_NAMESPACE", value: "a{b}"},
		{name: "namespace with space", env: "PREVIEWD_NAMESPACE", value: "my ns"},
		{name: "namespace leading dash", env: "PREVIEWD_NAMESPACE", value: "-ns"},
		{name: "namespace of 65 chars", env: "PREVIEWD_NAMESPACE", value: strings.Repeat("n", 65)},
		{name: "namespace wildcard", env: "PREVIEWD_NAMESPACE", value: "*"},
		{name: "base url ftp", env: "PREVIEWD_CSM_BASE_URL", value: "ftp://api.csm.ai"},
		{name: "base url without scheme", env: "PREVIEWD_CSM_BASE_URL", value: "api.csm.ai"},
		{name: "base url without host", env: "PREVIEWD_CSM_BASE_URL", value: "https://"},
		{name: "base url with userinfo", env: "PREVIEWD_CSM_BASE_URL", value: "https://user:pw@api.csm.ai"},
		{name: "base url unparsable", env: "PREVIEWD_CSM_BASE_URL", value: "https://bad host"},
		{name: "redis url http", env: "PREVIEWD_REDIS_URL", value: "http://127.0.0.1:6379"},
		{name: "redis url bad db", env: "PREVIEWD_REDIS_URL", value: "redis://127.0.0.1:6379/zero"},
		{name: "redis url bad port", env: "PREVIEWD_REDIS_URL", value: "redis://127.0.0.1:port"},
		{name: "redis url empty", env: "PREVIEWD_REDIS_URL", value: " "},
		{name: "redis cluster url unix", env: "PREVIEWD_REDIS_URL", value: "unix:///run/redis.sock",
			also: map[string]string{"PREVIEWD_REDIS_CLUSTER": "true"}},
		{name: "sentinels without master", env: "PREVIEWD_REDIS_SENTINELS", value: "127.0.0.1:26379",
			want: []string{"PREVIEWD_REDIS_MASTER"}},
		{name: "master without sentinels", env: "PREVIEWD_REDIS_MASTER", value: "mymaster",
			want: []string{"PREVIEWD_REDIS_SENTINELS"}},
		{name: "sentinel password without sentinels", env: "PREVIEWD_REDIS_SENTINEL_PASSWORD", value: "sentinel-pw"},
		{name: "master with a space", env: "PREVIEWD_REDIS_MASTER", value: "my master",
			also: map[string]string{"PREVIEWD_REDIS_SENTINELS": "127.0.0.1:26379"}},
		{name: "sentinels with cluster mode", env: "PREVIEWD_REDIS_SENTINELS", value: "127.0.0.1:26379",
			also: map[string]string{"PREVIEWD_REDIS_MASTER": "mymaster", "PREVIEWD_REDIS_CLUSTER": "true"}},
		{name: "sentinel without port", env: "PREVIEWD_REDIS_SENTINELS", value: "127.0.0.1:26379,sentinel-b",
			also: map[string]string{"PREVIEWD_REDIS_MASTER": "mymaster"}},
		{name: "sentinel without host", env: "PREVIEWD_REDIS_SENTINELS", value: ":26379",
			also: map[string]string{"PREVIEWD_REDIS_MASTER": "mymaster"}},
		{name: "sentinel port out of range", env: "PREVIEWD_REDIS_SENTINELS", value: "s1:65536",
			also: map[string]string{"PREVIEWD_REDIS_MASTER": "mymaster"}},
		{name: "sentinel port not a number", env: "PREVIEWD_REDIS_SENTINELS", value: "s1:redis",
			also: map[string]string{"PREVIEWD_REDIS_MASTER": "mymaster"}},
		{name: "sentinel given as a URL", env: "PREVIEWD_REDIS_SENTINELS", value: "redis://s1:26379",
			also: map[string]string{"PREVIEWD_REDIS_MASTER": "mymaster"}},
		{name: "sentinels with a unix socket URL", env: "PREVIEWD_REDIS_URL", value: "unix:///run/redis.sock",
			also: map[string]string{"PREVIEWD_REDIS_MASTER": "mymaster", "PREVIEWD_REDIS_SENTINELS": "s1:26379"}},
		{name: "min replicas negative", env: "PREVIEWD_REDIS_MIN_REPLICAS", value: "-1"},
		{name: "min replicas 101", env: "PREVIEWD_REDIS_MIN_REPLICAS", value: "101"},
		{name: "min replicas garbage", env: "PREVIEWD_REDIS_MIN_REPLICAS", value: "one"},
		{name: "replica timeout zero (WAIT would block forever)", env: "PREVIEWD_REDIS_REPLICA_TIMEOUT", value: "0s"},
		{name: "replica timeout below a millisecond", env: "PREVIEWD_REDIS_REPLICA_TIMEOUT", value: "500us"},
		{name: "replica timeout over a minute", env: "PREVIEWD_REDIS_REPLICA_TIMEOUT", value: "2m"},
		{name: "replica timeout without unit", env: "PREVIEWD_REDIS_REPLICA_TIMEOUT", value: "500"},
		{name: "several at once", env: "PREVIEWD_CONCURRENCY", value: "0",
			also: map[string]string{"PREVIEWD_LOG_LEVEL": "loud", "PREVIEWD_RETENTION": "1s", "PREVIEWD_NAMESPACE": "a:b"},
			want: []string{"PREVIEWD_CONCURRENCY", "PREVIEWD_LOG_LEVEL", "PREVIEWD_RETENTION", "PREVIEWD_NAMESPACE"}},
		{name: "several parse errors at once", env: "PREVIEWD_CONCURRENCY", value: "x",
			also: map[string]string{"PREVIEWD_CSM_TIMEOUT": "y", "PREVIEWD_REDIS_CLUSTER": "z"},
			want: []string{"PREVIEWD_CONCURRENCY", "PREVIEWD_CSM_TIMEOUT", "PREVIEWD_REDIS_CLUSTER"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				want = []string{tt.env}
			}
			env := map[string]string{tt.env: tt.value}
			for k, v := range tt.also {
				env[k] = v
			}
			t.Run("env", func(t *testing.T) {
				_, err := config.FromEnv(envOf(env))
				checkNames(t, err, want...)
			})
			t.Run("flags", func(t *testing.T) {
				// Every variable given as a flag instead, under a valid environment.
				var args []string
				for k, v := range env {
					args = append(args, "--"+flagName(k)+"="+v)
				}
				_, err := load(t, nil, args...)
				checkNames(t, err, want...)
			})
		})
	}
}

func TestSecretsRedacted(t *testing.T) {
	const (
		apiKey  = "csm-key-SENTINEL-4f1a"
		hookKey = "whsec_SENTINEL-9b2c"
	)
	c, err := config.FromEnv(envOf(map[string]string{
		"PREVIEWD_CSM_API_KEY":    apiKey,
		"PREVIEWD_WEBHOOK_SECRET": hookKey,
		"PREVIEWD_REDIS_URL":      "redis://app:redis-pw-SENTINEL@redis.internal:6379/0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.CSMAPIKey.Reveal() != apiKey || c.WebhookSecret.Reveal() != hookKey {
		t.Fatalf("Reveal = %q, %q", c.CSMAPIKey.Reveal(), c.WebhookSecret.Reveal())
	}

	t.Run("entries", func(t *testing.T) {
		entries := map[string]config.Entry{}
		for _, e := range c.Entries() {
			entries[e.Flag] = e
		}
		for _, name := range []string{"csm-api-key", "webhook-secret"} {
			if got := entries[name].Value; got != "[redacted]" {
				t.Errorf("entry %s = %q, want [redacted]", name, got)
			}
			if entries[name].Default != "" {
				t.Errorf("entry %s has default %q", name, entries[name].Default)
			}
		}
		redisURL := entries["redis-url"].Value
		if strings.Contains(redisURL, "redis-pw-SENTINEL") || !strings.Contains(redisURL, "app:") || !strings.Contains(redisURL, "redis.internal:6379") {
			t.Errorf("redis-url entry = %q, want the URL without its password", redisURL)
		}
		raw, err := json.Marshal(c.Entries())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{apiKey, hookKey, "redis-pw-SENTINEL"} {
			if strings.Contains(string(raw), s) {
				t.Errorf("JSON of Entries contains %q", s)
			}
		}
	})

	t.Run("unset secrets show empty", func(t *testing.T) {
		for _, e := range config.Default().Entries() {
			if (e.Flag == "csm-api-key" || e.Flag == "webhook-secret") && e.Value != "" {
				t.Errorf("unset %s shows %q, want empty", e.Flag, e.Value)
			}
		}
	})

	for _, format := range []string{"%v", "%+v", "%#v"} {
		t.Run("fmt "+format, func(t *testing.T) {
			out := fmt.Sprintf(format, c) + fmt.Sprintf(format, &c) + fmt.Sprintf(format, []config.Config{c})
			for _, s := range []string{apiKey, hookKey} {
				if strings.Contains(out, s) {
					t.Errorf("%s of a Config contains %q: %s", format, s, out)
				}
			}
			if !strings.Contains(out, "[redacted]") {
				t.Errorf("%s of a Config shows no [redacted] marker: %s", format, out)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		raw, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), apiKey) || strings.Contains(string(raw), hookKey) {
			t.Errorf("JSON of a Config contains a secret: %s", raw)
		}
	})

	t.Run("errors of a config with secrets", func(t *testing.T) {
		_, err := config.FromEnv(envOf(map[string]string{
			"PREVIEWD_CSM_API_KEY": apiKey, "PREVIEWD_WEBHOOK_SECRET": hookKey, "PREVIEWD_CONCURRENCY": "0",
		}))
		checkNames(t, err, "PREVIEWD_CONCURRENCY")
		if strings.Contains(err.Error(), apiKey) || strings.Contains(err.Error(), hookKey) {
			t.Errorf("error %q contains a secret", err)
		}
	})
}

// TestRedisPasswordNeverEchoed: the Redis URL's password is as secret as the
// API key (Entries redacts it), so neither an invalid URL's error nor a
// printed Config may show it.
func TestRedisPasswordNeverEchoed(t *testing.T) {
	const pw = "redis-pw-SENTINEL"
	t.Run("error of an invalid URL", func(t *testing.T) {
		for _, u := range []string{
			"redis://app:" + pw + "@redis.internal:bad/0",
			"redis://:" + pw + "@redis internal:6379/0",
		} {
			_, err := config.FromEnv(envOf(map[string]string{"PREVIEWD_REDIS_URL": u}))
			checkNames(t, err, "PREVIEWD_REDIS_URL")
			if strings.Contains(err.Error(), pw) {
				t.Errorf("error for %q echoes the password: %v", u, err)
			}
		}
	})
	t.Run("fmt of a Config", func(t *testing.T) {
		c, err := config.FromEnv(envOf(map[string]string{"PREVIEWD_REDIS_URL": "redis://app:" + pw + "@redis.internal:6379/0"}))
		if err != nil {
			t.Fatal(err)
		}
		for _, format := range []string{"%v", "%+v", "%#v"} {
			if out := fmt.Sprintf(format, c); strings.Contains(out, pw) {
				t.Errorf("%s of a Config contains the Redis password: %s", format, out)
			}
		}
	})
}

func TestSecret(t *testing.T) {
	tests := []struct {
		name string
		s    config.Secret
		want string // what every printer shows
	}{
		{name: "set", s: "hunter2", want: "[redacted]"},
		{name: "empty", s: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.s.Reveal() != string(tt.s) {
				t.Errorf("Reveal() = %q", tt.s.Reveal())
			}
			outs := map[string]string{
				"String":     tt.s.String(),
				"%v":         fmt.Sprintf("%v", tt.s),
				"%s":         fmt.Sprintf("<%s>", tt.s),
				"%q":         fmt.Sprintf("%q", tt.s),
				"%x":         fmt.Sprintf("%x", tt.s),
				"%#v":        fmt.Sprintf("%#v", tt.s),
				"Sprint":     fmt.Sprint(tt.s),
				"in a map":   fmt.Sprintf("%v", map[string]config.Secret{"k": tt.s}),
				"in a slice": fmt.Sprintf("%#v", []config.Secret{tt.s}),
			}
			if raw, err := json.Marshal(tt.s); err != nil {
				t.Errorf("json: %v", err)
			} else {
				outs["json"] = string(raw)
			}
			for how, out := range outs {
				if tt.s != "" && strings.Contains(out, tt.s.Reveal()) {
					t.Errorf("%s shows the secret: %q", how, out)
				}
			}
			if outs["String"] != tt.want {
				t.Errorf("String() = %q, want %q", outs["String"], tt.want)
			}
			if want := `config.Secret("` + tt.want + `")`; outs["%#v"] != want {
				t.Errorf("%%#v = %q, want %q", outs["%#v"], want)
			}
			if want := `"` + tt.want + `"`; outs["json"] != want {
				t.Errorf("json = %s, want %s", outs["json"], want)
			}
		})
	}
}

func TestRequireWorkerSecrets(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{name: "both missing", want: []string{"PREVIEWD_CSM_API_KEY", "PREVIEWD_WEBHOOK_SECRET"}},
		{name: "webhook secret missing", env: map[string]string{"PREVIEWD_CSM_API_KEY": "k"}, want: []string{"PREVIEWD_WEBHOOK_SECRET"}},
		{name: "api key missing", env: map[string]string{"PREVIEWD_WEBHOOK_SECRET": "whsec_x"}, want: []string{"PREVIEWD_CSM_API_KEY"}},
		{name: "blank values are missing", env: map[string]string{"PREVIEWD_CSM_API_KEY": "  ", "PREVIEWD_WEBHOOK_SECRET": "\t"},
			want: []string{"PREVIEWD_CSM_API_KEY", "PREVIEWD_WEBHOOK_SECRET"}},
		{name: "both set", env: map[string]string{"PREVIEWD_CSM_API_KEY": "k", "PREVIEWD_WEBHOOK_SECRET": "whsec_x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.FromEnv(envOf(tt.env))
			if err != nil {
				t.Fatalf("FromEnv: %v", err)
			}
			err = c.RequireWorkerSecrets()
			if tt.want == nil {
				if err != nil {
					t.Errorf("RequireWorkerSecrets() = %v, want nil", err)
				}
				return
			}
			checkNames(t, err, tt.want...)
		})
	}
}

func TestEnvNames(t *testing.T) {
	names := config.EnvNames()
	if !sort.StringsAreSorted(names) {
		t.Errorf("EnvNames not sorted: %q", names)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !strings.HasPrefix(n, config.EnvPrefix) {
			t.Errorf("%s lacks the %s prefix", n, config.EnvPrefix)
		}
		if seen[n] {
			t.Errorf("%s listed twice", n)
		}
		seen[n] = true
	}
	for _, want := range []string{
		"PREVIEWD_REDIS_URL", "PREVIEWD_CSM_BASE_URL", "PREVIEWD_CSM_API_KEY", "PREVIEWD_WEBHOOK_SECRET",
		"PREVIEWD_POLL_INTERVAL", "PREVIEWD_POLL_MAX_INTERVAL", "PREVIEWD_JOB_DEADLINE", "PREVIEWD_RETENTION",
		"PREVIEWD_WEBHOOK_ALLOW_PRIVATE", "PREVIEWD_CONCURRENCY",
	} {
		if !seen[want] {
			t.Errorf("EnvNames lacks %s", want)
		}
	}

	// Entries and the flag set describe the same settings.
	var entryEnvs []string
	for _, e := range config.Default().Entries() {
		entryEnvs = append(entryEnvs, e.Env)
		if e.Flag != flagName(e.Env) {
			t.Errorf("entry %s has flag %q, want %q", e.Env, e.Flag, flagName(e.Env))
		}
	}
	if !slices.Equal(entryEnvs, names) {
		t.Errorf("Entries list %q, EnvNames %q", entryEnvs, names)
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	config.RegisterFlags(fs)
	var flagEnvs []string
	fs.VisitAll(func(f *flag.Flag) {
		flagEnvs = append(flagEnvs, config.EnvPrefix+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")))
		if !strings.Contains(f.Usage, config.EnvPrefix+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))) {
			t.Errorf("usage of --%s does not name its variable: %q", f.Name, f.Usage)
		}
		if f.DefValue != "" {
			t.Errorf("--%s has flag default %q; defaults belong to the settings table", f.Name, f.DefValue)
		}
	})
	sort.Strings(flagEnvs)
	if !slices.Equal(flagEnvs, names) {
		t.Errorf("flags map to %q, EnvNames %q", flagEnvs, names)
	}

	// Each listed variable is really read.
	for _, n := range names {
		c, _ := config.FromEnv(envOf(map[string]string{n: "x"}))
		if !c.Explicit(flagName(n)) {
			t.Errorf("setting %s does not make --%s explicit: the variable is not read", n, flagName(n))
		}
	}
}

func TestBoolFlagsStandAlone(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	flags := config.RegisterFlags(fs)
	if err := fs.Parse([]string{"--webhook-allow-private", "--redis-cluster=false"}); err != nil {
		t.Fatal(err)
	}
	c, err := flags.Load(envOf(map[string]string{"PREVIEWD_REDIS_CLUSTER": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.WebhookAllowPrivate || c.RedisCluster {
		t.Fatalf("allow private %v (want true), cluster %v (want the flag's false over the env's true)", c.WebhookAllowPrivate, c.RedisCluster)
	}
}
