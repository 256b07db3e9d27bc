package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/previewd/previewd/bench"
)

// cmdBench runs the benchmark (package bench): bare asynq, a hand-written
// peer pipeline and previewd's workers on one Redis and simulator.
func cmdBench(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "bench", "[--short] [--jobs N] [--json FILE] [flags]",
		"Measure jobs/s, Redis commands per job, CPU and detection delay of bare asynq, a hand-written peer pipeline and previewd's workers, on one Redis and CSM simulator.")
	short := fs.Bool("short", false, "CI pace: 500 jobs per phase (unless --jobs), under 2 minutes")
	jobs := fs.Int("jobs", 0, "jobs per phase (default 500 with --short, else 2000)")
	redisURL := fs.String("redis-url", "", "Redis to run on (default: an embedded redis-server on a free port; without one, PREVIEWD_REDIS_URL or redis://127.0.0.1:6379/0)")
	pollInterval := fs.Duration("poll-interval", time.Second, "every pipeline's poll interval")
	concurrency := fs.Int("concurrency", 10, "previewd's preview and webhook concurrency each (the peer's server gets both)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of previewd's phase to this file (go tool pprof -top FILE)")
	var jsonOut string
	fs.StringVar(&jsonOut, "json", "", "also write the figures as JSON to this file (- for stdout)")
	fs.StringVar(&jsonOut, "o", "", "short for --json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	switch {
	case *jobs < 0:
		return usageError{msg: "--jobs must be positive"}
	case *pollInterval <= 0:
		return usageError{msg: "--poll-interval must be positive"}
	case *concurrency < 1:
		return usageError{msg: "--concurrency must be at least 1"}
	}
	fallback := e.getenv("PREVIEWD_REDIS_URL")
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, bench.Options{
		Jobs: *jobs, Short: *short, RedisURL: *redisURL, FallbackRedisURL: fallback,
		PollInterval: *pollInterval, Concurrency: *concurrency, CPUProfile: *cpuProfile, Out: e.stdout,
	})
	if err != nil {
		return err
	}
	switch jsonOut {
	case "":
		return nil
	case "-":
		return res.JSON(e.stdout)
	}
	f, err := os.Create(jsonOut)
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := res.JSON(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("--json: %w", err)
	}
	return f.Close()
}
