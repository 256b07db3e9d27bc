package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
	"github.com/previewd/previewd/worker"
)

// loadConfig parses args with the shared settings added to fs's own flags.
func loadConfig(e env, fs *flagSet, args []string) (config.Config, error) {
	return parseConfig(fs, args, func(f *config.Flags) (config.Config, error) { return f.Load(e.getenv) })
}

// loadReadOnlyConfig is loadConfig for the commands that only read: the
// settings only workers and the server use are not validated.
func loadReadOnlyConfig(e env, fs *flagSet, args []string) (config.Config, error) {
	return parseConfig(fs, args, func(f *config.Flags) (config.Config, error) { return f.LoadReadOnly(e.getenv) })
}

func parseConfig(fs *flagSet, args []string, load func(*config.Flags) (config.Config, error)) (config.Config, error) {
	flags := sharedFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return config.Config{}, err
	}
	cfg, err := load(flags)
	if err != nil {
		return config.Config{}, usageError{msg: "configuration: " + err.Error()}
	}
	return cfg, nil
}

// sharedFlags adds the shared settings to fs, after its own flags.
func sharedFlags(fs *flagSet) *config.Flags {
	fs.own = map[string]bool{}
	fs.VisitAll(func(fl *flag.Flag) { fs.own[fl.Name] = true })
	return config.RegisterFlags(fs.FlagSet)
}

// newLogger builds the process logger: JSON for production, console for people.
func newLogger(cfg config.Config, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.LogFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		encCfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level) // Lock: handlers log concurrently
	return zap.New(core, zap.AddCaller()), nil
}

// process is what a long-running subcommand sets up: its logger, a context
// ended by SIGINT or SIGTERM, and its Redis connection.
type process struct {
	ctx context.Context
	log *zap.Logger
	rdb redis.UniversalClient
}

// startProcess sets up a long-running subcommand; call the returned
// function when it ends.
func startProcess(ctx context.Context, e env, cfg config.Config) (process, func(), error) {
	log, err := newLogger(cfg, e.stderr)
	if err != nil {
		return process{}, nil, err
	}
	redisLog.routeTo(log)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	rdb, err := awaitRedis(ctx, cfg, log)
	if err != nil {
		stop()
		return process{}, nil, err
	}
	warnFewReplicas(ctx, cfg, rdb, log)
	return process{ctx: ctx, log: log, rdb: rdb}, func() {
		_ = rdb.Close()
		stop()
		_ = log.Sync()
	}, nil
}

// awaitRedis is openRedis for long-running processes: a Redis that does
// not answer yet (restarting, failing over, starting beside us) is waited
// for, with one log line, until it answers or the process is told to stop,
// so a supervisor does not see a worker crash-looping through an outage.
// A configuration error still ends the process at once.
func awaitRedis(ctx context.Context, cfg config.Config, log *zap.Logger) (redis.UniversalClient, error) {
	wait := time.Second
	for logged := false; ; {
		rdb, err := openRedis(ctx, cfg)
		var unreachable errRedisUnreachable
		switch {
		case err == nil:
			if logged {
				log.Info("redis answers; starting")
			}
			return rdb, nil
		case !errors.As(err, &unreachable):
			return nil, err
		case !logged:
			log.Warn("redis unreachable; waiting for it", zap.String("redis", unreachable.where), zap.Error(unreachable.err))
			logged = true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// errRedisUnreachable: the configured Redis did not answer a PING. where
// says what was dialled, without the password.
type errRedisUnreachable struct {
	where string
	err   error
}

func (e errRedisUnreachable) Error() string {
	return "Redis is unreachable at " + e.where + ": " + e.err.Error()
}
func (e errRedisUnreachable) Unwrap() error { return e.err }

// openRedis connects to the configured Redis (one server, a Redis Cluster,
// or the primary that Redis Sentinel names) and checks that it answers.
func openRedis(ctx context.Context, cfg config.Config) (redis.UniversalClient, error) {
	rdb, where, err := newRedisClient(cfg)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		_ = rdb.Close()
		return nil, errRedisUnreachable{where: where, err: err}
	}
	return rdb, nil
}

// newRedisClient builds the client of the configured deployment and says
// where it connects (without the password), for errors.
func newRedisClient(cfg config.Config) (redis.UniversalClient, string, error) {
	if cfg.RedisCluster {
		opts, err := redis.ParseClusterURL(cfg.RedisURL.Reveal())
		if err != nil {
			return nil, "", fmt.Errorf("PREVIEWD_REDIS_URL: %w", err)
		}
		return redis.NewClusterClient(opts), cfg.RedisURL.String() + " (Redis Cluster)", nil
	}
	opts, err := redis.ParseURL(cfg.RedisURL.Reveal())
	if err != nil {
		return nil, "", fmt.Errorf("PREVIEWD_REDIS_URL: %w", err)
	}
	if len(cfg.RedisSentinels) > 0 {
		where := fmt.Sprintf("the primary %q of sentinels %s", cfg.RedisMaster, strings.Join(cfg.RedisSentinels, ","))
		fo := failoverOptions(opts, cfg.RedisMaster, cfg.RedisSentinels)
		fo.SentinelPassword = cfg.RedisSentinelPassword.Reveal()
		return redis.NewFailoverClient(fo), where, nil
	}
	return redis.NewClient(opts), cfg.RedisURL.String(), nil
}

// failoverOptions keeps everything the Redis URL says (credentials, DB,
// TLS, timeouts, pool and retry settings) and takes the address from the
// sentinels. ParseFailoverURL is not used: it reads the URL's user info as
// the sentinels' credentials and its host as a sentinel, where previewd's
// URL means the primary's.
func failoverOptions(o *redis.Options, master string, sentinels []string) *redis.FailoverOptions {
	return &redis.FailoverOptions{
		MasterName:    master,
		SentinelAddrs: sentinels,

		ClientName:              o.ClientName,
		Protocol:                o.Protocol,
		Username:                o.Username,
		Password:                o.Password,
		DB:                      o.DB,
		TLSConfig:               o.TLSConfig,
		MaxRetries:              o.MaxRetries,
		MinRetryBackoff:         o.MinRetryBackoff,
		MaxRetryBackoff:         o.MaxRetryBackoff,
		DialTimeout:             o.DialTimeout,
		ReadTimeout:             o.ReadTimeout,
		WriteTimeout:            o.WriteTimeout,
		PoolFIFO:                o.PoolFIFO,
		PoolSize:                o.PoolSize,
		PoolTimeout:             o.PoolTimeout,
		MinIdleConns:            o.MinIdleConns,
		MaxIdleConns:            o.MaxIdleConns,
		MaxActiveConns:          o.MaxActiveConns,
		MaxConcurrentDials:      o.MaxConcurrentDials,
		PipelinePoolSize:        o.PipelinePoolSize,
		PipelineReadBufferSize:  o.PipelineReadBufferSize,
		PipelineWriteBufferSize: o.PipelineWriteBufferSize,
		ConnMaxIdleTime:         o.ConnMaxIdleTime,
		ConnMaxLifetime:         o.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   o.ConnMaxLifetimeJitter,
	}
}

// warnFewReplicas says at start-up when fewer replicas are connected than
// PREVIEWD_REDIS_MIN_REPLICAS asks to acknowledge: no preview is requested
// until there are enough, which otherwise looks like a stalled queue.
func warnFewReplicas(ctx context.Context, cfg config.Config, rdb redis.UniversalClient, log *zap.Logger) {
	if cfg.RedisMinReplicas == 0 || cfg.RedisCluster {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		log.Warn("could not count the primary's replicas", zap.Error(err))
		return
	}
	n := -1
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			n, _ = strconv.Atoi(v)
		}
	}
	if n < cfg.RedisMinReplicas {
		log.Warn("fewer replicas are connected than PREVIEWD_REDIS_MIN_REPLICAS: no preview is requested until enough acknowledge its intent",
			zap.Int("connected_replicas", n), zap.Int("min_replicas", cfg.RedisMinReplicas))
	}
}

// newProducer returns the producer API configured like the workers.
func newProducer(cfg config.Config, rdb redis.UniversalClient) *tasks.Client {
	return tasks.NewClient(rdb, tasks.ClientOptions{
		Namespace:            cfg.Namespace,
		JobDeadline:          cfg.JobDeadline,
		Retention:            cfg.Retention,
		AllowPrivateWebhooks: cfg.WebhookAllowPrivate,
		SecretRotationWindow: cfg.WebhookRotationWindow,
		MaxEndpoints:         cfg.MaxEndpoints,
	})
}

// parseSecrets reads the webhook secrets: one, or during a rotation
// several (space or comma separated), each signing every request.
func parseSecrets(raw config.Secret) ([]webhook.Secret, error) {
	var out []webhook.Secret
	for _, part := range strings.FieldsFunc(raw.Reveal(), func(r rune) bool { return r == ',' || r == ' ' }) {
		s, err := webhook.ParseSecret(part)
		if err != nil {
			return nil, fmt.Errorf("secret %d of %d: %w", len(out)+1, len(strings.Fields(strings.ReplaceAll(raw.Reveal(), ",", " "))), err)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no secret given")
	}
	return out, nil
}

// newWorker wires a worker from the configuration.
func newWorker(cfg config.Config, rdb redis.UniversalClient, log *zap.Logger, obs worker.Observer) (*worker.Worker, error) {
	if err := cfg.RequireWorkerSecrets(); err != nil {
		return nil, usageError{msg: "configuration: " + err.Error()}
	}
	secrets, err := parseSecrets(cfg.WebhookSecret)
	if err != nil {
		return nil, usageError{msg: "configuration: PREVIEWD_WEBHOOK_SECRET (--webhook-secret): " + err.Error()}
	}
	var limiter csm.Limiter
	if cfg.CSMRateLimit > 0 {
		rl := csm.NewRedisLimiter(rdb, cfg.Namespace+":ratelimit:csm", cfg.CSMRateLimit, cfg.CSMRateBurst).ReservePolls(pollShare)
		if m, ok := obs.(interface{ CSMRateTurn(string, time.Duration) }); ok {
			rl.OnTurn = m.CSMRateTurn
		}
		limiter = rl
	}
	client, err := csm.New(csm.Options{
		BaseURL: cfg.CSMBaseURL,
		APIKey:  cfg.CSMAPIKey.Reveal(),
		Timeout: cfg.CSMTimeout,
		Limiter: limiter,
	})
	if err != nil {
		return nil, usageError{msg: "configuration: PREVIEWD_CSM_BASE_URL: " + err.Error()}
	}
	if cfg.WebhookAllowPrivate {
		log.Warn("PREVIEWD_WEBHOOK_ALLOW_PRIVATE is on: webhooks may reach loopback and private addresses; use it only for local development")
	}
	st := store.New(rdb, store.Options{
		Namespace:      cfg.Namespace,
		Retention:      cfg.Retention,
		MinReplicas:    cfg.RedisMinReplicas,
		ReplicaTimeout: cfg.RedisReplicaTimeout,
		SlotReuse:      store.DefaultSlotReuse,
	})
	return worker.New(rdb, worker.Deps{
		Store:  st,
		CSM:    client,
		Sender: webhook.NewSender(webhook.SenderOptions{Timeout: cfg.WebhookTimeout, AllowPrivate: cfg.WebhookAllowPrivate}),
		Signer: webhook.NewSigner(secrets...),
	}, worker.Options{
		Queues: tasks.QueuesFor(cfg.Namespace),
		Polling: worker.PollPolicy{
			Interval:       cfg.PollInterval,
			MaxInterval:    cfg.PollMaxInterval,
			ReconcileGrace: cfg.ReconcileGrace,
			PushInterval:   pushInterval(cfg),
		},
		Webhooks: worker.WebhookPolicy{
			Schedule:       cfg.WebhookRetrySchedule,
			PerDestination: cfg.WebhookPerDestination,
			PerJob:         cfg.WebhookPerJob,
			DisableAfter:   cfg.WebhookDisableAfter,
			AttemptTimeout: cfg.WebhookTimeout,
		},
		Concurrency:        cfg.Concurrency,
		WebhookConcurrency: cfg.WebhookConcurrency,
		ShutdownTimeout:    cfg.ShutdownTimeout,
		JobDeadline:        cfg.JobDeadline,
		Budget:             spendingGuard(cfg, rdb),
		Logger:             log,
		Observer:           obs,
	}), nil
}

// spendingGuard returns the configured preview budget, or nil (a nil
// interface, not a nil pointer) when there is no limit.
func spendingGuard(cfg config.Config, rdb redis.UniversalClient) worker.Budget {
	if cfg.MaxPreviewsPerHour <= 0 && cfg.MaxPreviewsPerDay <= 0 {
		return nil
	}
	return store.NewBudget(rdb, cfg.Namespace, cfg.MaxPreviewsPerHour, cfg.MaxPreviewsPerDay, nil)
}

// pushInterval is the safety-net poll interval when CSM's pushes are on
// (a webhook token is set), else 0: polling as configured.
func pushInterval(cfg config.Config) time.Duration {
	if cfg.CSMWebhookToken == "" {
		return 0
	}
	return cfg.PushPollInterval
}

// pollShare of the CSM rate limit is kept for the polls of running jobs:
// new requests use at most the rest, so a backlog of them never starves
// the polls that end the jobs already billed. At 10/s, 5,000 running HD
// previews poll about 6.2/s on the expected-duration schedule with pushes
// on (worker/schedule_test.go), and the 3/s left to requests is three
// times what keeps that many running.
const pollShare = 0.7
