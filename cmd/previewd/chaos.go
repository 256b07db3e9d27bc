package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/previewd/previewd/chaos"
)

// cmdChaos runs the chaos harness (package chaos) against worker processes
// of this very binary, and fails when any guarantee broke.
func cmdChaos(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "chaos", "[--short] [--jobs N] [--seed S] [flags]",
		"Run worker processes of this binary under a seeded schedule of faults (kills, Redis restarts, CSM errors) and check every guarantee: no job lost, at most one billed POST per job, one final webhook per job. Exits 1 when any broke.")
	short := fs.Bool("short", false, "CI pace: 150 jobs (unless --jobs) in under 3 minutes")
	jobs := fs.Int("jobs", 0, "number of jobs (default 150 with --short, else 1000)")
	seed := fs.Uint64("seed", 0, "seed of the fault schedule and the sessions (default: drawn, and printed)")
	workers := fs.Int("workers", 3, "worker processes")
	dir := fs.String("dir", "", "keep logs and Redis data here (default: a temporary directory, removed after a clean run)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *jobs < 0 || *workers < 1 {
		return usageError{msg: "--jobs must be positive and --workers at least 1"}
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the previewd binary for the workers: %w", err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	v, err := chaos.Run(ctx, chaos.Options{
		Jobs: *jobs, Seed: *seed, Short: *short, Workers: *workers,
		Executable: exe, Dir: *dir, Out: e.stdout,
	})
	if err != nil {
		return err
	}
	if v.Failed() {
		return fmt.Errorf("%d lost, %d duplicate preview posts, %d missing final webhooks, %d webhook ids with differing bodies",
			v.Lost, v.Duplicates, v.MissingFinal, v.DifferingBodies)
	}
	return nil
}
