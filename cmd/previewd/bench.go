package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
	jobs := fs.Int("jobs", 0, "jobs per phase (default 500 with --short, else 2000); backlog: running jobs (50); budget: HD previews running at once (5000)")
	redisURL := fs.String("redis-url", "", "Redis to run on (default: an embedded redis-server on a free port; without one, PREVIEWD_REDIS_URL or redis://127.0.0.1:6379/0)")
	pollInterval := fs.Duration("poll-interval", time.Second, "every pipeline's poll interval (backlog scenario: default 5s)")
	concurrency := fs.Int("concurrency", 10, "previewd's preview and webhook concurrency each (the peer's server gets both)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of previewd's phase to this file (go tool pprof -top FILE)")
	scenario := fs.String("scenario", "", "instead of the three phases: backlog (detection of running jobs behind 100, then 10,000 queued requests) or budget (5,000 active jobs at a CSM rate limit of 10/s, time compressed)")
	rateLimit := fs.Int("rate-limit", 0, "scenarios: the CSM rate limit in calls/s (default: backlog 15, budget 10 before compression)")
	compress := fs.Float64("compress", 0, "budget scenario: time compression factor (default 60: 90 min previews take 90 s, the rate limit is 60 times higher)")
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
	switch {
	case *rateLimit < 0:
		return usageError{msg: "--rate-limit must be positive"}
	case *compress < 0:
		return usageError{msg: "--compress must be positive"}
	}
	fallback := e.getenv("PREVIEWD_REDIS_URL")
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	base := bench.Options{
		Jobs: *jobs, Short: *short, RedisURL: *redisURL, FallbackRedisURL: fallback,
		PollInterval: *pollInterval, Concurrency: *concurrency, CPUProfile: *cpuProfile, Out: e.stdout,
	}
	var res interface{ JSON(io.Writer) error }
	var err error
	switch *scenario {
	case "":
		res, err = bench.Run(ctx, base)
	case "backlog":
		res, err = bench.RunBacklog(ctx, bench.BacklogOptions{Base: base, Running: *jobs, RateLimit: *rateLimit, PollShare: pollShare, PollInterval: flagDuration(fs.FlagSet, "poll-interval", *pollInterval)})
	case "budget":
		res, err = bench.RunBudget(ctx, bench.BudgetOptions{Base: base, Jobs: *jobs, RateLimit: *rateLimit, Compress: *compress, PollShare: pollShare})
	default:
		return usageError{msg: fmt.Sprintf("--scenario must be backlog or budget, got %q", *scenario)}
	}
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

// flagDuration is the flag's value when it was given, else 0 (the
// scenario's default).
func flagDuration(fs *flag.FlagSet, name string, v time.Duration) time.Duration {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	if !given {
		return 0
	}
	return v
}
