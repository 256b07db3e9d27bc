package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/metrics"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/worker"
)

// defaultServeAddr is where serve listens when nothing says otherwise:
// loopback, so that a server without tokens is never open to the network.
const defaultServeAddr = "127.0.0.1:8080"

func cmdServe(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "serve", "[--http ADDR] [--worker] [flags]",
		"Serve the HTTP API, the asynq dashboard, /healthz, /readyz and /metrics until SIGTERM/SIGINT; with --worker, run a worker in the same process.")
	httpAddr := fs.String("http", "", "listen at `ADDR` (default: PREVIEWD_HTTP_ADDR, else "+defaultServeAddr+")")
	withWorker := fs.Bool("worker", false, "also run a worker in this process")
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
		return err
	}
	addr := firstOf(*httpAddr, cfg.HTTPAddr, defaultServeAddr)
	tokens := config.Tokens(cfg.APITokens)
	if len(tokens) == 0 && !isLoopback(addr) {
		return usageError{msg: fmt.Sprintf("configuration: PREVIEWD_API_TOKENS (--api-tokens) is required to listen on %s, which is not a loopback address", addr)}
	}
	if *withWorker {
		if err := cfg.RequireWorkerSecrets(); err != nil {
			return usageError{msg: "configuration: " + err.Error()}
		}
	}
	p, done, err := startProcess(ctx, e, cfg)
	if err != nil {
		return err
	}
	defer done()
	log, rdb := p.log, p.rdb
	if len(tokens) == 0 {
		log.Warn("no PREVIEWD_API_TOKENS: the API and the dashboard are open to anyone who can reach " + addr)
	}
	producer := newProducer(cfg, rdb)
	m := newMetrics(cfg, rdb, log)
	server := api.New(producer, api.Options{
		Tokens: tokens, ReadOnlyTokens: config.Tokens(cfg.DashboardReadOnlyTokens),
		Redis: rdb, Metrics: metricsHandler(cfg, m), Recorder: m, Dashboard: api.NewDashboard(rdb), Logger: log,
		CSMEvents: &api.CSMEvents{Target: tasks.NewPusher(rdb, cfg.Namespace), Token: cfg.CSMWebhookToken.Reveal()},
		UI:        newUI(cfg, producer, log),
	})
	var w *worker.Worker
	if *withWorker {
		if w, err = newWorker(cfg, rdb, log, m); err != nil {
			return err
		}
	}
	return runHTTP(p.ctx, cfg, log, addr, server, w)
}

// newMetrics builds the metrics of a process on rdb.
func newMetrics(cfg config.Config, rdb redis.UniversalClient, log *zap.Logger) *metrics.Metrics {
	q := tasks.QueuesFor(cfg.Namespace)
	return metrics.New(metrics.Sources{
		Inspector: asynq.NewInspectorFromRedisClient(rdb),
		Queues:    q.All(),
		Webhooks:  q.Deliveries(),
		Store:     store.New(rdb, store.Options{Namespace: cfg.Namespace, Retention: cfg.Retention}),
		Logger:    log,
	})
}

// metricsHandler serves m behind PREVIEWD_METRICS_TOKEN, when one is set.
func metricsHandler(cfg config.Config, m *metrics.Metrics) http.Handler {
	return metrics.RequireToken(cfg.MetricsToken.Reveal(), m.Handler())
}

// readHeaderTimeout bounds how long a connection may take to send a
// request's headers, the first request's included: a client that connects
// and sends nothing holds its slot of the listener this long at most.
const readHeaderTimeout = 5 * time.Second

// runHTTP serves server on addr (and runs w, when given) until ctx is
// done, then drains: /readyz answers 503 for the drain delay so that load
// balancers stop sending requests, then in-flight requests finish and the
// worker drains.
func runHTTP(ctx context.Context, cfg config.Config, log *zap.Logger, addr string, server *api.Server, w *worker.Worker) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	// The cap bounds the file descriptors that clients can make us hold:
	// past it, new connections wait in the kernel's backlog, not in our
	// process. The cap alone would let idle connections keep every slot
	// (and /readyz waiting behind them); the idle and header timeouts free
	// the slots, so a flood of idle connections delays new ones by an idle
	// timeout at most. Limits per client belong to the reverse proxy in
	// front (see README, Operations).
	ln = netutil.LimitListener(ln, cfg.HTTPMaxConnections)
	httpServer := &http.Server{
		Handler:           server.Handler(),
		ReadHeaderTimeout: min(readHeaderTimeout, cfg.HTTPIdleTimeout),
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       cfg.HTTPIdleTimeout,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(ln) }()
	log.Info("listening", zap.String("addr", ln.Addr().String()), zap.Bool("worker", w != nil))

	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	var workerDone chan error // nil (never ready) without a worker
	if w != nil {
		workerDone = make(chan error, 1)
		go func() { workerDone <- w.Run(workerCtx) }()
	}

	var runErr error
	workerRunning := w != nil
	select {
	case <-ctx.Done():
	case runErr = <-served:
	case err := <-workerDone:
		workerRunning = false
		runErr = fmt.Errorf("worker stopped: %w", err)
	}
	log.Info("draining", zap.Duration("drain_delay", cfg.DrainDelay))
	server.SetDraining()
	if runErr == nil {
		time.Sleep(cfg.DrainDelay)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		log.Warn("HTTP shutdown", zap.Error(err))
	}
	if workerRunning {
		stopWorker()
		if err := <-workerDone; err != nil && runErr == nil {
			runErr = err
		}
	}
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	log.Info("stopped")
	return runErr
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// isLoopback reports whether a listen address only accepts local
// connections.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
