// Command previewd tracks CSM.ai image-to-3D preview generations: it sends
// each job's preview request exactly once, polls until the mesh is ready,
// and delivers signed webhooks.
//
//	previewd demo [--jobs N]     everything in one process, no set-up
//	previewd chaos [--short] [--jobs N] [--seed S]   real processes under faults
//	previewd worker              run a worker until SIGTERM/SIGINT
//	previewd serve [--worker]    the HTTP API, dashboard and metrics
//	previewd serve [--worker]    the HTTP API, dashboard and metrics
//	previewd enqueue --session CODE [...]
//	previewd status ID
//	previewd cancel ID
//	previewd endpoints add|list|show|disable|enable|rotate-secret|delete
//	previewd webhooks attempts|replay
//	previewd config              the effective configuration, secrets redacted
//	previewd secret              generate a webhook signing secret
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// env is what a subcommand gets from the process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

type command struct {
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

var commands = map[string]command{
	"demo":      {"run jobs end to end with in-process Redis, CSM simulator and webhook receiver", cmdDemo},
	"chaos":     {"prove the guarantees: worker processes under a seeded schedule of faults", cmdChaos},
	"bench":     {"measure jobs/s, Redis cost, CPU and detection against bare asynq and a hand-written peer", cmdBench},
	"worker":    {"process preview and webhook tasks until SIGTERM/SIGINT", cmdWorker},
	"serve":     {"serve the HTTP API, the dashboard and metrics (--worker: and run a worker)", cmdServe},
	"enqueue":   {"request a preview; prints the job as JSON", cmdEnqueue},
	"status":    {"print a job as JSON", cmdStatus},
	"cancel":    {"cancel a job that is not final", cmdCancel},
	"endpoints": {"manage webhook endpoints: add, list, show, disable, enable, rotate-secret, delete", cmdEndpoints},
	"webhooks":  {"webhook delivery attempts and replays", cmdWebhooks},
	"config":    {"print the effective configuration (secrets redacted)", cmdConfig},
	"secret":    {"print a new webhook signing secret (whsec_...)", cmdSecret},
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError makes run exit with exitUsage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "previewd: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	err := cmd.run(ctx, env{stdout: stdout, stderr: stderr, getenv: getenv}, args[1:])
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	}
	fmt.Fprintf(stderr, "previewd %s: %v\n", args[0], err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: previewd <command> [flags]")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every setting is a PREVIEWD_* environment variable or a flag; run `previewd <command> -h`.")
}

// newFlagSet returns a FlagSet that reports errors through run.
func newFlagSet(e env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("previewd "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parseFlags parses args, allowing flags after positional arguments
// (`previewd cancel ID --namespace x`), and turns flag errors into usage
// errors. After it, fs.Args() holds the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{msg: err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

func oneArg(fs *flag.FlagSet, what string) (string, error) {
	if fs.NArg() != 1 {
		return "", usageError{msg: fmt.Sprintf("want exactly one %s, got %d arguments", what, fs.NArg())}
	}
	return strings.TrimSpace(fs.Arg(0)), nil
}
