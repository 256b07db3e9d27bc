package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/receiver"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/worker"
)

// cmdDemo runs the whole product on one machine with nothing installed:
// Redis in-process (or PREVIEWD_REDIS_URL), the CSM simulator and a webhook
// receiver on loopback ports, and a real worker. Its sessions mix in the
// faults a real run meets.
func cmdDemo(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "demo", "[--jobs N] [flags]",
		"Run jobs end to end in one process: an embedded Redis (or --redis-url), the CSM simulator, a worker and a webhook receiver. No set-up, no CSM account.")
	jobs := fs.Int("jobs", 20, "run `N` jobs")
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
		return err
	}
	if *jobs < 1 || *jobs > 10000 {
		return usageError{msg: "--jobs must be between 1 and 10000"}
	}
	demoDefaults(&cfg)
	log, err := newLogger(cfg, e.stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	started := time.Now()

	rdb, cleanup, err := demoRedis(ctx, e, &cfg)
	if err != nil {
		return err
	}
	defer cleanup()

	// The simulated CSM, with a fresh API key, on a loopback port.
	apiKey := "demo-" + randomToken()
	sim := csmsim.New(csmsim.Options{APIKey: apiKey})
	simURL, stopSim, err := serveLoopback(sim)
	if err != nil {
		return err
	}
	defer stopSim()
	defer sim.Close()
	cfg.CSMBaseURL, cfg.CSMAPIKey = simURL, config.Secret(apiKey)

	// The receiver verifies every signature with the secret the worker signs with.
	rcv, secretText, err := receiver.New()
	if err != nil {
		return err
	}
	cfg.WebhookSecret = config.Secret(secretText)
	hookURL, stopReceiver, err := serveLoopback(rcv)
	if err != nil {
		return err
	}
	defer stopReceiver()

	w, err := newWorker(cfg, rdb, log, worker.NopObserver{})
	if err != nil {
		return err
	}
	workerCtx, cancelWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(workerCtx) }()
	stopWorker := sync.OnceValue(func() error {
		cancelWorker()
		return <-workerDone
	})
	defer stopWorker()

	producer := newProducer(cfg, rdb)
	run := "DEMO_" + randomToken()[:8]
	ids := make([]string, 0, *jobs)
	for i := range *jobs {
		code := fmt.Sprintf("%s_%03d", run, i)
		sim.AddSession(code, demoSession(i))
		job, err := producer.RequestPreview(ctx, tasks.PreviewRequest{
			SessionCode:       code,
			SelectedSpinIndex: i % 4,
			ScaledBBox:        []float64{1, 1.5, 0.8},
			PivotPoint:        []float64{0, -0.5, 0},
			WebhookURL:        hookURL + "/hooks",
			ExternalID:        fmt.Sprintf("demo-%d", i),
		})
		if err != nil {
			return fmt.Errorf("enqueue job %d: %w", i, err)
		}
		ids = append(ids, job.ID)
	}
	fmt.Fprintf(e.stdout, "demo: enqueued %d jobs; CSM simulator at %s, webhook receiver at %s\n", len(ids), simURL, hookURL)

	counts, err := waitForJobs(ctx, e.stdout, producer, rcv, ids, cfg.JobDeadline+time.Minute)
	if err != nil {
		return err
	}
	if err := stopWorker(); err != nil {
		log.Warn("worker stopped with an error", zap.Error(err))
	}

	delivered, rejected := rcv.Totals()
	fmt.Fprintf(e.stdout, "demo: wall time %s, %d preview POSTs accepted by CSM for %d jobs, %.1f polls per job\n",
		time.Since(started).Round(10*time.Millisecond), sim.TotalAcceptedPreviews(), len(ids), counts.pollsPerJob())
	fmt.Fprintf(e.stdout, "demo: %d jobs, %d done, %d failed, %d timed_out, %d webhooks delivered\n",
		len(ids), counts.byStatus[store.StatusDone], counts.byStatus[store.StatusFailed], counts.byStatus[store.StatusTimedOut], delivered)
	switch {
	case counts.byStatus[store.StatusDone] != len(ids):
		return fmt.Errorf("%d of %d jobs did not end done", len(ids)-counts.byStatus[store.StatusDone], len(ids))
	case rejected > 0:
		return fmt.Errorf("%d webhook deliveries failed signature verification", rejected)
	case sim.TotalAcceptedPreviews() != len(ids):
		return fmt.Errorf("CSM accepted %d preview POSTs for %d jobs", sim.TotalAcceptedPreviews(), len(ids))
	}
	return nil
}

// demoDefaults makes the demo fast unless the user set a value explicitly.
func demoDefaults(cfg *config.Config) {
	set := func(flagName string, apply func()) {
		if !cfg.Explicit(flagName) {
			apply()
		}
	}
	set("poll-interval", func() { cfg.PollInterval = time.Second })
	set("poll-max-interval", func() { cfg.PollMaxInterval = 2 * time.Second })
	set("job-deadline", func() { cfg.JobDeadline = 2 * time.Minute })
	set("reconcile-grace", func() { cfg.ReconcileGrace = 30 * time.Second })
	set("csm-timeout", func() { cfg.CSMTimeout = 5 * time.Second })
	set("csm-rate-limit", func() { cfg.CSMRateLimit = 100 })
	set("csm-rate-burst", func() { cfg.CSMRateBurst = 100 })
	set("log-format", func() { cfg.LogFormat = "console" })
	set("log-level", func() { cfg.LogLevel = "warn" })
	set("shutdown-timeout", func() { cfg.ShutdownTimeout = 3 * time.Second })
	// The receiver listens on loopback.
	cfg.WebhookAllowPrivate = true
}

// demoRedis returns the Redis the demo runs on: in-process unless
// PREVIEWD_REDIS_URL (or --redis-url) names one, in which case the demo
// works in a namespace of its own and deletes it afterwards.
func demoRedis(ctx context.Context, e env, cfg *config.Config) (redis.UniversalClient, func(), error) {
	if cfg.Explicit("redis-url") {
		if !cfg.Explicit("namespace") {
			cfg.Namespace = "previewd-demo-" + randomToken()[:8]
		}
		rdb, err := openRedis(ctx, *cfg)
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(e.stdout, "demo: using Redis at %s, namespace %s\n", cfg.RedisURL, cfg.Namespace)
		ns := cfg.Namespace
		return rdb, func() {
			deleteNamespace(context.WithoutCancel(ctx), rdb, ns)
			_ = rdb.Close()
		}, nil
	}
	mini := miniredis.NewMiniRedis()
	if err := mini.StartAddr("127.0.0.1:0"); err != nil {
		return nil, nil, fmt.Errorf("start in-process Redis: %w", err)
	}
	mini.ClockTTL(true) // without it TTLs never expire
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	fmt.Fprintf(e.stdout, "demo: using in-process Redis (miniredis) at %s; set PREVIEWD_REDIS_URL to use a real one\n", mini.Addr())
	return rdb, func() {
		_ = rdb.Close()
		mini.Close()
	}, nil
}

// deleteNamespace removes the demo's keys from a shared Redis. SCAN is fine
// here: it runs once, at the end of a demo, never on a hot path.
func deleteNamespace(ctx context.Context, rdb redis.UniversalClient, ns string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, pattern := range []string{ns + ":*", "asynq:{" + ns + ":*", "rate:" + ns + ":*"} {
		iter := rdb.Scan(ctx, 0, pattern, 500).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	}
	q := tasks.QueuesFor(ns)
	rdb.SRem(ctx, "asynq:queues", q.All())
}

// demoSession returns the i-th demo session: both schemas, a few seconds of
// generation, and the faults a real run meets.
func demoSession(i int) csmsim.SessionConfig {
	legacy := csmsim.SessionConfig{Schema: csmsim.SchemaLegacy, GenerationTime: 2 * time.Second}
	v2025 := csmsim.SessionConfig{Schema: csmsim.Schema2025, GenerationTime: 3 * time.Second, QueueTime: time.Second}
	switch i % 10 {
	case 0:
		return legacy
	case 1:
		return v2025
	case 2: // throttled: a 429 with Retry-After
		legacy.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault429, RetryAfter: time.Second}}
		return legacy
	case 3: // throttled the other way: a 400 worded as a rate limit
		v2025.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultRateLimit400}}
		return v2025
	case 4: // a 5xx on a session read
		legacy.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.Fault503}}
		return legacy
	case 5: // a status nobody documented yet
		legacy.UnknownStatus = "training_preview_queued"
		legacy.GenerationTime = 4 * time.Second
		return legacy
	case 6: // CSM accepted the POST but a proxy answered 502: must not be re-sent
		legacy.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThen502}}
		return legacy
	case 7: // auto refine: preview_done can pass between two polls
		legacy.AutoRefine = true
		return legacy
	case 8: // upstream lag after the POST, then a 500 and an error inside a 200 while polling
		v2025.QueueTime = 2 * time.Second
		v2025.Faults = []csmsim.Fault{
			{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.FaultEnvelopeError, Times: 1},
		}
		return v2025
	default:
		legacy.QueueTime = 2 * time.Second // upstream has not caught up yet
		legacy.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.Fault500, Times: 2}}
		return legacy
	}
}

type demoCounts struct {
	byStatus map[store.Status]int
	polls    int
	jobs     int
}

func (c demoCounts) pollsPerJob() float64 {
	if c.jobs == 0 {
		return 0
	}
	return float64(c.polls) / float64(c.jobs)
}

// waitForJobs shows live progress until every job is final and its final
// webhook has been received, or until limit.
func waitForJobs(ctx context.Context, out io.Writer, p *tasks.Client, rcv *receiver.Receiver, ids []string, limit time.Duration) (demoCounts, error) {
	start := time.Now()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		counts := demoCounts{byStatus: map[store.Status]int{}, jobs: len(ids)}
		final := 0
		for _, id := range ids {
			j, err := p.Job(ctx, id)
			if err != nil {
				return counts, fmt.Errorf("read job %s: %w", id, err)
			}
			counts.byStatus[j.Status]++
			counts.polls += j.Polls
			if _, announced := rcv.Final(id); j.Status.Final() && announced {
				final++
			}
		}
		delivered, _ := rcv.Totals()
		line := fmt.Sprintf("queued %d  requesting %d  generating %d  done %d  failed %d  timed_out %d  webhooks %d",
			counts.byStatus[store.StatusQueued], counts.byStatus[store.StatusRequesting], counts.byStatus[store.StatusGenerating],
			counts.byStatus[store.StatusDone], counts.byStatus[store.StatusFailed], counts.byStatus[store.StatusTimedOut], delivered)
		if line != last {
			fmt.Fprintf(out, "demo: %5.1fs  %s\n", time.Since(start).Seconds(), line)
			last = line
		}
		if final == len(ids) {
			return counts, nil
		}
		if time.Since(start) > limit {
			return counts, fmt.Errorf("gave up after %s with %d of %d jobs finished and announced", limit, final, len(ids))
		}
		select {
		case <-ctx.Done():
			return counts, ctx.Err()
		case <-tick.C:
		}
	}
}

// randomToken returns 16 random hex digits.
func randomToken() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// serveLoopback serves h on a free loopback port until stop is called.
func serveLoopback(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
