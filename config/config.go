// Package config owns previewd's settings: every one of them is read from a
// PREVIEWD_* environment variable, can be overridden by a command-line flag,
// has its default in the settings table below, and is validated at start-up
// with an error that names the variable.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvPrefix starts the name of every environment variable previewd reads.
const EnvPrefix = "PREVIEWD_"

// Config holds every setting. Build it with Load, FromEnv or Default.
type Config struct {
	// RedisURL is redis://, rediss:// or unix:// (one Redis), or, with
	// RedisCluster, a seed node URL whose ?addr= parameters list more nodes.
	RedisURL     RedisURL
	RedisCluster bool
	// RedisSentinels, when set, are the Sentinel addresses (host:port) that
	// tell where the primary named RedisMaster is; RedisURL then gives only
	// the credentials, TLS and DB (its host is not dialled).
	RedisSentinels []string
	RedisMaster    string
	// RedisSentinelPassword is the sentinels' own password (their
	// requirepass), when they have one; the primary's is in RedisURL.
	RedisSentinelPassword Secret
	// RedisMinReplicas is how many replicas must acknowledge a preview's
	// intent (WAIT, bounded by RedisReplicaTimeout) before the billed POST,
	// so that a failover cannot lose it and bill the job twice; 0 does not
	// wait.
	RedisMinReplicas    int
	RedisReplicaTimeout time.Duration
	// Namespace prefixes every Redis key previewd writes and the names of its
	// asynq queues, so that several deployments (or tests) can share a Redis.
	Namespace string

	CSMBaseURL   string
	CSMAPIKey    Secret
	CSMTimeout   time.Duration
	CSMRateLimit int // requests per second to CSM, shared by every worker; 0 disables it
	CSMRateBurst int
	// MaxPreviewsPerHour and MaxPreviewsPerDay are the spending guard:
	// previews requested per clock hour and per day (UTC), counted across
	// every worker; beyond them requests wait. 0 means no limit.
	MaxPreviewsPerHour int
	MaxPreviewsPerDay  int

	// WebhookSecret signs webhooks to jobs' own webhook_url. During a
	// rotation it holds several secrets (space or comma separated), the
	// newest first: each request then carries one signature per secret.
	WebhookSecret         Secret
	WebhookTimeout        time.Duration
	WebhookAllowPrivate   bool
	WebhookRetrySchedule  []time.Duration
	WebhookPerDestination int
	WebhookDisableAfter   time.Duration
	WebhookRotationWindow time.Duration
	// WebhookPerJob caps one job's deliveries in flight, so that one
	// caller's events cannot take every webhook worker.
	WebhookPerJob int
	// MaxEndpoints caps the number of webhook endpoints (each receives every
	// subscribed event, so each one costs a message per event).
	MaxEndpoints int

	// CSMWebhookToken, when set, opens POST /v1/csm/events?token=… to CSM's
	// account webhooks: a push triggers an immediate poll of the named
	// session, and polling slows to PushPollInterval, a safety net.
	CSMWebhookToken  Secret
	PushPollInterval time.Duration

	PollInterval    time.Duration
	PollMaxInterval time.Duration
	JobDeadline     time.Duration
	ReconcileGrace  time.Duration
	Retention       time.Duration

	Concurrency        int
	WebhookConcurrency int
	ShutdownTimeout    time.Duration

	// HTTPAddr is where `serve` listens (default 127.0.0.1:8080) and where
	// `worker` serves its probes and metrics (none when empty).
	HTTPAddr string
	// APITokens are the API's bearer tokens (comma separated); they also
	// open the dashboard read-write.
	APITokens Secret
	// DashboardReadOnlyTokens open the dashboard read-only.
	DashboardReadOnlyTokens Secret
	// DrainDelay is how long a stopping server answers /readyz with 503
	// before it stops accepting requests.
	DrainDelay time.Duration
	// HTTPMaxConnections caps the connections the HTTP listener holds open at
	// once; HTTPIdleTimeout closes idle keep-alive connections.
	HTTPMaxConnections int
	HTTPIdleTimeout    time.Duration
	// MetricsToken, when set, is required (bearer) to scrape /metrics.
	MetricsToken Secret

	LogLevel  string
	LogFormat string

	explicit map[string]bool
}

// Explicit reports whether the setting with the given flag name was given by
// a flag or an environment variable rather than left at its default.
func (c Config) Explicit(flagName string) bool { return c.explicit[flagName] }

// setting describes one configuration value: its flag name (the environment
// variable is derived from it), default, help text and how to apply it.
type setting struct {
	flag   string
	def    string
	usage  string
	secret bool
	isBool bool // registered as a boolean flag: --name alone means true
	apply  func(c *Config, v string) error
	get    func(c Config) string
}

// Env returns the environment variable of the setting.
func (s setting) env() string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(s.flag, "-", "_"))
}

var settings = []setting{
	{flag: "redis-url", def: "redis://127.0.0.1:6379/0", usage: "Redis URL (redis://, rediss://, unix://)",
		apply: func(c *Config, v string) error { c.RedisURL = RedisURL(v); return nil },
		get:   func(c Config) string { return c.RedisURL.String() }},
	boolSetting("redis-cluster", "false", "treat the Redis URL as a Redis Cluster seed (more nodes with ?addr=host:port)",
		func(c *Config) *bool { return &c.RedisCluster }),
	listSetting("redis-sentinels", "", "comma-separated Redis Sentinel addresses (host:port); the URL then gives only credentials, TLS and DB",
		func(c *Config) *[]string { return &c.RedisSentinels }),
	stringSetting("redis-master", "", "name of the primary the sentinels monitor; required with the sentinels",
		func(c *Config) *string { return &c.RedisMaster }),
	secretSetting("redis-sentinel-password", "the sentinels' own password (their requirepass), if they have one; the primary's stays in the Redis URL",
		func(c *Config) *Secret { return &c.RedisSentinelPassword }),
	intSetting("redis-min-replicas", "0", "replicas that must acknowledge a preview's intent (WAIT) before the billed POST (0 = do not wait)",
		func(c *Config) *int { return &c.RedisMinReplicas }),
	durationSetting("redis-replica-timeout", "500ms", "how long to wait for those acknowledgements; without them the POST is not sent and the request retried",
		func(c *Config) *time.Duration { return &c.RedisReplicaTimeout }),
	stringSetting("namespace", "previewd", "prefix of previewd's Redis keys and asynq queue names",
		func(c *Config) *string { return &c.Namespace }),
	stringSetting("csm-base-url", "https://api.csm.ai", "CSM API base URL",
		func(c *Config) *string { return &c.CSMBaseURL }),
	secretSetting("csm-api-key", "CSM API key (x-api-key); required by the worker",
		func(c *Config) *Secret { return &c.CSMAPIKey }),
	durationSetting("csm-timeout", "30s", "timeout of one CSM API request",
		func(c *Config) *time.Duration { return &c.CSMTimeout }),
	intSetting("csm-rate-limit", "10", "CSM requests per second shared by all workers (0 = no limit)",
		func(c *Config) *int { return &c.CSMRateLimit }),
	intSetting("csm-rate-burst", "20", "burst allowed above the CSM rate limit",
		func(c *Config) *int { return &c.CSMRateBurst }),
	intSetting("max-previews-per-hour", "0", "spending guard: billed previews requested per clock hour, across all workers; beyond it requests wait (0 = no limit)",
		func(c *Config) *int { return &c.MaxPreviewsPerHour }),
	intSetting("max-previews-per-day", "0", "spending guard: billed previews requested per day (UTC), across all workers (0 = no limit)",
		func(c *Config) *int { return &c.MaxPreviewsPerDay }),
	secretSetting("webhook-secret", "Standard Webhooks signing secret (whsec_...); required by the worker",
		func(c *Config) *Secret { return &c.WebhookSecret }),
	durationSetting("webhook-timeout", "15s", "timeout of one webhook delivery attempt",
		func(c *Config) *time.Duration { return &c.WebhookTimeout }),
	boolSetting("webhook-allow-private", "false", "allow webhook and selected_spin URLs on loopback/private addresses (local development only)",
		func(c *Config) *bool { return &c.WebhookAllowPrivate }),
	durationListSetting("webhook-retry-schedule", "5s,5m,30m,2h,5h,10h,10h", "waits before each webhook retry; the message is given up after the last",
		func(c *Config) *[]time.Duration { return &c.WebhookRetrySchedule }),
	intSetting("webhook-per-destination", "4", "webhook deliveries in flight to one receiver host, across all workers",
		func(c *Config) *int { return &c.WebhookPerDestination }),
	intSetting("webhook-per-job", "2", "webhook deliveries in flight for one job, across all workers",
		func(c *Config) *int { return &c.WebhookPerJob }),
	intSetting("max-endpoints", "100", "webhook endpoints that may exist at once",
		func(c *Config) *int { return &c.MaxEndpoints }),
	durationSetting("webhook-disable-after", "120h", "an endpoint failing continuously this long is disabled",
		func(c *Config) *time.Duration { return &c.WebhookDisableAfter }),
	durationSetting("webhook-rotation-window", "24h", "how long a rotated-out endpoint secret keeps signing beside the new one",
		func(c *Config) *time.Duration { return &c.WebhookRotationWindow }),
	secretSetting("csm-webhook-token", "token of CSM's account webhook URL (POST /v1/csm/events?token=...); unset, the route answers 404",
		func(c *Config) *Secret { return &c.CSMWebhookToken }),
	durationSetting("push-poll-interval", "5m", "with a CSM webhook token set, the safety-net interval between polls of a job",
		func(c *Config) *time.Duration { return &c.PushPollInterval }),
	durationSetting("poll-interval", "5s", "first interval between status polls of a job",
		func(c *Config) *time.Duration { return &c.PollInterval }),
	durationSetting("poll-max-interval", "1m", "the poll interval grows up to this",
		func(c *Config) *time.Duration { return &c.PollMaxInterval }),
	durationSetting("job-deadline", "3h", "a job not finished this long after it was created ends timed_out",
		func(c *Config) *time.Duration { return &c.JobDeadline }),
	durationSetting("reconcile-grace", "10m", "after a preview POST whose outcome is unknown, how long to wait for upstream evidence before failing the job",
		func(c *Config) *time.Duration { return &c.ReconcileGrace }),
	durationSetting("retention", "168h", "how long finished jobs (and their webhook messages) are kept",
		func(c *Config) *time.Duration { return &c.Retention }),
	intSetting("concurrency", "10", "preview tasks (requests and polls) one worker runs at once",
		func(c *Config) *int { return &c.Concurrency }),
	intSetting("webhook-concurrency", "10", "webhook deliveries one worker runs at once",
		func(c *Config) *int { return &c.WebhookConcurrency }),
	durationSetting("shutdown-timeout", "10s", "how long a stopping worker waits for in-flight tasks",
		func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
	stringSetting("http-addr", "", "serve: listen address (default 127.0.0.1:8080); worker: probes and metrics address (off when empty)",
		func(c *Config) *string { return &c.HTTPAddr }),
	secretSetting("api-tokens", "comma-separated bearer tokens of the HTTP API (also open the dashboard); required to listen beyond loopback",
		func(c *Config) *Secret { return &c.APITokens }),
	secretSetting("dashboard-readonly-tokens", "comma-separated tokens that open the dashboard read-only",
		func(c *Config) *Secret { return &c.DashboardReadOnlyTokens }),
	intSetting("http-max-connections", "4096", "connections the HTTP listener holds open at once; beyond it new ones wait",
		func(c *Config) *int { return &c.HTTPMaxConnections }),
	durationSetting("http-idle-timeout", "30s", "an idle keep-alive connection is closed after this",
		func(c *Config) *time.Duration { return &c.HTTPIdleTimeout }),
	secretSetting("metrics-token", "bearer token required to scrape /metrics (open when unset)",
		func(c *Config) *Secret { return &c.MetricsToken }),
	durationSetting("drain-delay", "5s", "on SIGTERM, how long the server reports not ready before it stops taking requests",
		func(c *Config) *time.Duration { return &c.DrainDelay }),
	stringSetting("log-level", "info", "debug, info, warn or error",
		func(c *Config) *string { return &c.LogLevel }),
	stringSetting("log-format", "json", "json or console",
		func(c *Config) *string { return &c.LogFormat }),
}

// Error is a configuration error; it names the environment variable and flag.
type Error struct {
	Env, Flag string
	Reason    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (--%s): %s", e.Env, e.Flag, e.Reason)
}

// Default returns the configuration with every setting at its default.
func Default() Config {
	c, err := load(func(string) string { return "" }, nil, nil)
	if err != nil {
		panic("config: defaults do not validate: " + err.Error())
	}
	return c
}

// FromEnv reads the configuration from the environment only.
func FromEnv(getenv func(string) string) (Config, error) {
	return load(getenv, nil, nil)
}

// Flags holds the flags RegisterFlags added to a FlagSet.
type Flags struct {
	fs   *flag.FlagSet
	vals map[string]*string
}

// flagValue holds a setting's flag text; parsing happens in Load, so that
// errors name the environment variable too.
type flagValue struct {
	value  string
	isBool bool
}

func (v *flagValue) String() string     { return v.value }
func (v *flagValue) Set(s string) error { v.value = s; return nil }
func (v *flagValue) IsBoolFlag() bool   { return v.isBool }

// RegisterFlags adds one flag per setting to fs. After fs.Parse, call Load.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs, vals: make(map[string]*string, len(settings))}
	for _, s := range settings {
		usage := fmt.Sprintf("%s (env %s, default %q)", s.usage, s.env(), s.def)
		if s.secret {
			usage = fmt.Sprintf("%s (env %s; prefer the environment: flags show in process lists)", s.usage, s.env())
		}
		v := &flagValue{isBool: s.isBool}
		fs.Var(v, s.flag, usage)
		f.vals[s.flag] = &v.value
	}
	return f
}

// Load builds the configuration: flags given on the command line win over
// environment variables, which win over defaults.
func (f *Flags) Load(getenv func(string) string) (Config, error) {
	return load(getenv, f.given(), nil)
}

// given returns the values of the setting flags given on the command line.
func (f *Flags) given() map[string]string {
	given := map[string]string{}
	f.fs.Visit(func(fl *flag.Flag) {
		if v, ok := f.vals[fl.Name]; ok {
			given[fl.Name] = *v
		}
	})
	return given
}

// readOnlySettings are the settings a command that only reads (status,
// list, config) uses: where Redis is, the namespace, and how to log.
var readOnlySettings = []string{"redis-url", "redis-cluster", "redis-sentinels", "redis-master",
	"redis-sentinel-password", "namespace", "log-level", "log-format"}

// LoadReadOnly is Load for commands that only read: it validates only the
// settings they use, so that a worker-only setting missing or wrong (the
// CSM API key, a concurrency) does not stop an operator's `previewd
// status`. A setting outside them whose value does not parse keeps its
// default; Load still reports it.
func (f *Flags) LoadReadOnly(getenv func(string) string) (Config, error) {
	return load(getenv, f.given(), func(name string) bool { return slices.Contains(readOnlySettings, name) })
}

// load reads and validates every setting; with keep, only the errors of
// the settings keep accepts are returned.
func load(getenv func(string) string, flags map[string]string, keep func(flagName string) bool) (Config, error) {
	c := Config{explicit: map[string]bool{}}
	var errs []error
	for _, s := range settings {
		v, ok := flags[s.flag]
		if !ok {
			v = getenv(s.env())
			ok = v != ""
		}
		if ok {
			c.explicit[s.flag] = true
		} else {
			v = s.def
		}
		if err := s.apply(&c, strings.TrimSpace(v)); err != nil {
			if keep != nil && !keep(s.flag) {
				_ = s.apply(&c, s.def)
				continue
			}
			reason := err.Error()
			if s.secret {
				reason = "invalid value"
			}
			errs = append(errs, &Error{Env: s.env(), Flag: s.flag, Reason: reason})
		}
	}
	c.CSMBaseURL = strings.TrimRight(c.CSMBaseURL, "/")
	c.LogLevel = strings.ToLower(c.LogLevel)
	c.LogFormat = strings.ToLower(c.LogFormat)
	if len(errs) == 0 {
		for _, err := range c.validate() {
			var cerr *Error
			if keep == nil || !errors.As(err, &cerr) || keep(cerr.Flag) {
				errs = append(errs, err)
			}
		}
	}
	return c, errors.Join(errs...)
}

var namespacePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

func (c Config) validate() []error {
	var errs []error
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, invalid(flagName, format, args...))
	}
	if c.RedisCluster {
		if _, err := redis.ParseClusterURL(c.RedisURL.Reveal()); err != nil {
			bad("redis-url", "not a Redis Cluster URL: %s", c.RedisURL.scrub(err))
		}
	} else if _, err := redis.ParseURL(c.RedisURL.Reveal()); err != nil {
		bad("redis-url", "not a Redis URL: %s", c.RedisURL.scrub(err))
	}
	errs = append(errs, c.validateSentinel()...)
	if !namespacePattern.MatchString(c.Namespace) {
		bad("namespace", "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
	}
	if u, err := url.Parse(c.CSMBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("csm-base-url", "must be an absolute http or https URL")
	} else if u.User != nil {
		bad("csm-base-url", "must not contain user info (use PREVIEWD_CSM_API_KEY)")
	}
	positive := []struct {
		flag string
		d    time.Duration
	}{
		{"csm-timeout", c.CSMTimeout}, {"webhook-timeout", c.WebhookTimeout}, {"job-deadline", c.JobDeadline},
		{"webhook-disable-after", c.WebhookDisableAfter}, {"webhook-rotation-window", c.WebhookRotationWindow},
		{"reconcile-grace", c.ReconcileGrace}, {"shutdown-timeout", c.ShutdownTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			bad(p.flag, "must be positive")
		}
	}
	// asynq schedules with one-second granularity: a shorter interval would
	// silently become a busy loop of zero-delay polls.
	if c.DrainDelay < 0 {
		bad("drain-delay", "must not be negative")
	}
	if c.PollInterval < time.Second {
		bad("poll-interval", "must be at least 1s")
	}
	if c.PollMaxInterval < c.PollInterval {
		bad("poll-max-interval", "must be at least the poll interval (%s)", c.PollInterval)
	}
	if c.Retention < time.Minute {
		bad("retention", "must be at least 1m")
	}
	if c.CSMRateLimit < 0 {
		bad("csm-rate-limit", "must not be negative")
	}
	if c.CSMRateLimit > 0 && c.CSMRateBurst < 1 {
		bad("csm-rate-burst", "must be at least 1 when a rate limit is set")
	}
	if c.MaxPreviewsPerHour < 0 {
		bad("max-previews-per-hour", "must not be negative")
	}
	if c.MaxPreviewsPerDay < 0 {
		bad("max-previews-per-day", "must not be negative")
	}
	if len(c.WebhookRetrySchedule) == 0 || len(c.WebhookRetrySchedule) > 40 {
		bad("webhook-retry-schedule", "must list 1 to 40 durations")
	}
	for _, d := range c.WebhookRetrySchedule {
		if d < time.Second {
			bad("webhook-retry-schedule", "every wait must be at least 1s")
			break
		}
	}
	if c.WebhookPerDestination < 1 || c.WebhookPerDestination > 1000 {
		bad("webhook-per-destination", "must be between 1 and 1000")
	}
	if c.WebhookPerJob < 1 || c.WebhookPerJob > 1000 {
		bad("webhook-per-job", "must be between 1 and 1000")
	}
	if c.MaxEndpoints < 1 || c.MaxEndpoints > 100000 {
		bad("max-endpoints", "must be between 1 and 100000")
	}
	if c.HTTPMaxConnections < 1 {
		bad("http-max-connections", "must be at least 1")
	}
	if c.HTTPIdleTimeout <= 0 {
		bad("http-idle-timeout", "must be positive")
	}
	if c.PushPollInterval < time.Second {
		bad("push-poll-interval", "must be at least 1s")
	}
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		bad("concurrency", "must be between 1 and 10000")
	}
	if c.WebhookConcurrency < 1 || c.WebhookConcurrency > 10000 {
		bad("webhook-concurrency", "must be between 1 and 10000")
	}
	for _, ts := range []struct {
		flag string
		list bool
		v    Secret
	}{
		{"api-tokens", true, c.APITokens}, {"dashboard-readonly-tokens", true, c.DashboardReadOnlyTokens},
		{"metrics-token", false, c.MetricsToken}, {"csm-webhook-token", false, c.CSMWebhookToken},
	} {
		if reason := checkTokens(ts.v, ts.list); reason != "" {
			bad(ts.flag, "%s", reason)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "must be debug, info, warn or error")
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		bad("log-format", "must be json or console")
	}
	return errs
}

// minTokenLength is the shortest token accepted: a shorter one can be
// guessed, and is most often a value someone typed by hand to try things.
const minTokenLength = 16

// placeholderTokens are the values templates and examples put where a token
// goes (deployments/k8s/secret.yaml shipped CHANGE-ME), compared lowercased
// with '-', '_', '.' and spaces removed; placeholderPrefixes refuse the
// longer variants (CHANGE-ME-PLEASE, your-token-here, REPLACE-WITH-…). A
// token made of one repeated character (xxxx…, 0000…) is refused as well.
var (
	placeholderTokens   = []string{"secret", "password", "token", "example", "apitoken", "mytoken", "placeholder", "todo", "test", "dummy"}
	placeholderPrefixes = []string{"changeme", "yourtoken", "replaceme", "replacewith", "insert", "putyour"}
)

// checkTokens returns why a token setting is unusable, or "" when it is
// fine. It never quotes a token: the reason says which one (by position,
// for a list) and what is wrong.
func checkTokens(s Secret, list bool) string {
	tokens := []string{strings.TrimSpace(s.Reveal())}
	if list {
		tokens = Tokens(s)
	} else if tokens[0] == "" {
		return ""
	}
	for i, t := range tokens {
		which := "the token"
		if list {
			which = fmt.Sprintf("token %d of %d", i+1, len(tokens))
		}
		if reason := weakToken(t); reason != "" {
			return which + " " + reason
		}
	}
	return ""
}

// weakToken says what is wrong with one token, "" when nothing is.
func weakToken(t string) string {
	const random = "set a random value of at least 16 characters (e.g. `openssl rand -hex 32`)"
	norm := strings.NewReplacer("-", "", "_", "", " ", "", ".", "").Replace(strings.ToLower(t))
	placeholder := slices.Contains(placeholderTokens, norm) ||
		slices.ContainsFunc(placeholderPrefixes, func(p string) bool { return strings.HasPrefix(norm, p) }) ||
		(norm != "" && strings.Count(norm, norm[:1]) == len(norm))
	if placeholder {
		return "is a placeholder: " + random
	}
	if len(t) < minTokenLength {
		return fmt.Sprintf("is shorter than %d characters: %s", minTokenLength, random)
	}
	if len(t) < minTokenLength {
		return fmt.Sprintf("is shorter than %d characters", minTokenLength)
	}
	return ""
}

// Tokens splits a comma-separated token setting.
func Tokens(s Secret) []string {
	var out []string
	for _, t := range strings.Split(s.Reveal(), ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// RequireWorkerSecrets checks the settings a worker cannot run without.
func (c Config) RequireWorkerSecrets() error {
	var errs []error
	if c.CSMAPIKey == "" {
		errs = append(errs, &Error{Env: lookup("csm-api-key").env(), Flag: "csm-api-key", Reason: "is required to call CSM"})
	}
	if c.WebhookSecret == "" {
		errs = append(errs, &Error{Env: lookup("webhook-secret").env(), Flag: "webhook-secret", Reason: "is required to sign webhooks (generate one with `previewd secret`)"})
	}
	return errors.Join(errs...)
}

// Entry is one setting as printed by `previewd config`.
type Entry struct {
	Env     string `json:"env"`
	Flag    string `json:"flag"`
	Value   string `json:"value"`
	Default string `json:"default"`
	Usage   string `json:"usage"`
}

// Entries lists every setting with its effective value, secrets redacted.
func (c Config) Entries() []Entry {
	out := make([]Entry, 0, len(settings))
	for _, s := range settings {
		out = append(out, Entry{Env: s.env(), Flag: s.flag, Value: s.get(c), Default: s.def, Usage: s.usage})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Env < out[j].Env })
	return out
}

// EnvNames lists every environment variable previewd reads.
func EnvNames() []string {
	out := make([]string, 0, len(settings))
	for _, s := range settings {
		out = append(out, s.env())
	}
	sort.Strings(out)
	return out
}

// invalid returns the error of the setting flagName.
func invalid(flagName, format string, args ...any) *Error {
	return &Error{Env: lookup(flagName).env(), Flag: flagName, Reason: fmt.Sprintf(format, args...)}
}

func lookup(flagName string) setting {
	for _, s := range settings {
		if s.flag == flagName {
			return s
		}
	}
	panic("config: unknown setting " + flagName)
}
