// Command previewd tracks CSM.ai image-to-3D preview generations: it sends
// each job's preview request exactly once, polls until the mesh is ready,
// and delivers signed webhooks.
//
//	previewd demo [--jobs N]     everything in one process, no set-up
//	previewd chaos [--short] [--jobs N] [--seed S]   real processes under faults
//	previewd worker              run a worker until SIGTERM/SIGINT
//	previewd serve [--worker]    the HTTP API, dashboard and metrics
//	previewd enqueue --session CODE [--wait] [...]
//	previewd status ID [--watch]
//	previewd list [--status S] [--older-than D] [--session C] [--limit N] [--json]
//	previewd cancel ID
//	previewd endpoints add|list|show|disable|enable|rotate-secret|delete
//	previewd webhooks attempts|replay
//	previewd config              the effective configuration, secrets redacted
//	previewd secret              generate a webhook signing secret
//	previewd version             version, commit, Go and asynq versions
//	previewd healthcheck --url URL   for container healthchecks
//
// Every command answers --help on stdout; `previewd config --help` lists
// the shared settings.
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

	"github.com/redis/go-redis/v9"
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
	"demo":        {"run jobs end to end in one process, with no set-up", cmdDemo},
	"chaos":       {"prove the guarantees: workers under a seeded schedule of faults", cmdChaos},
	"bench":       {"measure jobs/s, Redis cost and CPU against bare asynq and a peer", cmdBench},
	"worker":      {"process preview and webhook tasks until SIGTERM/SIGINT", cmdWorker},
	"serve":       {"serve the API, dashboard and metrics (--worker: and a worker)", cmdServe},
	"enqueue":     {"request a preview; prints the job (--wait: once it is final)", cmdEnqueue},
	"status":      {"print a job (--watch: follow it to its end)", cmdStatus},
	"list":        {"list jobs, newest first, by status, age and session", cmdList},
	"cancel":      {"cancel a job that is not final", cmdCancel},
	"endpoints":   {"manage webhook endpoints: add, list, show, rotate-secret, ...", cmdEndpoints},
	"webhooks":    {"webhook delivery attempts and replays", cmdWebhooks},
	"config":      {"print the effective configuration; --help lists every setting", cmdConfig},
	"secret":      {"print a new webhook signing secret (whsec_...)", cmdSecret},
	"version":     {"print the version, commit, Go and asynq versions", cmdVersion},
	"healthcheck": {"GET a URL and exit 0 on a 2xx answer (container healthchecks)", cmdHealthcheck},
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError makes run exit with exitUsage. cmd names the command for the
// message ("endpoints add"; default: the first argument); hint, when set,
// is printed on the line after it (where to read the usage).
type usageError struct{ cmd, msg, hint string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	redis.SetLogger(redisLog) // atomic; the same logger every time
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return exitOK
		}
		// previewd help endpoints add: previewd endpoints add --help.
		args = append(append([]string{}, args[1:]...), "--help")
	case "-version", "--version":
		args = append([]string{"version"}, args[1:]...)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		what := "command"
		if strings.HasPrefix(args[0], "-") {
			what = "flag"
		}
		fmt.Fprintf(stderr, "previewd: unknown %s %q\nrun 'previewd --help'\n", what, args[0])
		return exitUsage
	}
	err := cmd.run(ctx, env{stdout: stdout, stderr: stderr, getenv: getenv}, args[1:])
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	}
	var ue usageError
	if !errors.As(err, &ue) {
		fmt.Fprintf(stderr, "previewd %s: %v\n", args[0], err)
		return exitFailure
	}
	name := args[0]
	if ue.cmd != "" {
		name = ue.cmd
	}
	if ue.msg != "" {
		fmt.Fprintf(stderr, "previewd %s: %s\n", name, ue.msg)
	}
	if ue.hint != "" {
		fmt.Fprintln(stderr, ue.hint)
	}
	return exitUsage
}

func usage(w io.Writer) {
	writeWrapped(w, "previewd tracks CSM.ai image-to-3D preview jobs: it sends each job's billed preview request once, polls until the mesh is ready, and delivers signed webhooks.", 0)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "usage: previewd <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	writeFlagRows(w, commandRows(commands))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags:")
	writeFlagRows(w, []flagRow{{"-h, --help", "show this help"}, {"--version", "print the version (as `previewd version`)"}})
	fmt.Fprintln(w)
	writeWrapped(w, "Run 'previewd <command> --help' for a command's flags, and 'previewd config --help' for the shared settings (PREVIEWD_* environment variables, or flags of every command).", 0)
}

// subcommand dispatches `previewd <group> <name> ...`.
func subcommand(ctx context.Context, e env, group string, args []string, subs map[string]command) error {
	hint := fmt.Sprintf("run 'previewd %s --help'", group)
	if len(args) == 0 {
		groupUsage(e.stderr, group, subs)
		return usageError{}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		groupUsage(e.stdout, group, subs)
		return flag.ErrHelp
	}
	sub, ok := subs[args[0]]
	if !ok {
		return usageError{cmd: group, msg: fmt.Sprintf("unknown subcommand %q", args[0]), hint: hint}
	}
	return sub.run(ctx, e, args[1:])
}

func groupUsage(w io.Writer, group string, subs map[string]command) {
	fmt.Fprintf(w, "usage: previewd %s <subcommand> [flags]\n\n", group)
	fmt.Fprintln(w, "Subcommands:")
	writeFlagRows(w, commandRows(subs))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Run 'previewd %s <subcommand> --help' for its flags.\n", group)
}

// commandRows lists commands by name with their summaries, for a help table.
func commandRows(cmds map[string]command) []flagRow {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	rows := make([]flagRow, len(names))
	for i, n := range names {
		rows[i] = flagRow{n, cmds[n].summary}
	}
	return rows
}

// flagSet is a command's flags and what its --help says about them.
type flagSet struct {
	*flag.FlagSet
	name     string // "status", "endpoints add"
	synopsis string // what follows the name in the usage line: "ID [flags]"
	about    string // what the command does
	stdout   io.Writer
	// own holds the command's own flags once loadConfig has added the
	// shared settings beside them (nil: every flag is the command's own).
	own map[string]bool
	// aliases maps a short flag to its long name ("o": "output").
	aliases map[string]string
	// extra, when set, adds to the help after the flags.
	extra func(io.Writer)
	// check, when set, validates the flags after parsing and before the
	// command connects to Redis (withClient).
	check func() error
}

// newFlagSet returns the flags of `previewd <name>`: errors and help are
// reported by parseFlags, never by the flag package itself (it would print
// Go's -flag spelling and every shared setting).
func newFlagSet(e env, name, synopsis, about string) *flagSet {
	fs := flag.NewFlagSet("previewd "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, name: name, synopsis: synopsis, about: about, stdout: e.stdout, aliases: map[string]string{}}
}

// usageError is a usage error of this command, with the hint to its help.
func (fs *flagSet) usageError(format string, args ...any) usageError {
	return usageError{cmd: fs.name, msg: fmt.Sprintf(format, args...), hint: fmt.Sprintf("run 'previewd %s --help'", fs.name)}
}

// parseFlags parses args, allowing flags after positional arguments
// (`previewd cancel ID --namespace x`): --help prints the command's help on
// stdout (and returns flag.ErrHelp), a flag error becomes one usage line.
// After it, fs.Args() holds the positional arguments.
func parseFlags(fs *flagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.writeHelp(fs.stdout)
				return err
			}
			return fs.usageError("%s", flagErrorText(err))
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

func oneArg(fs *flagSet, what string) (string, error) {
	if fs.NArg() != 1 {
		return "", fs.usageError("want exactly one %s, got %d arguments", what, fs.NArg())
	}
	return strings.TrimSpace(fs.Arg(0)), nil
}

// noArgs refuses positional arguments.
func noArgs(fs *flagSet) error {
	if fs.NArg() > 0 {
		return fs.usageError("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
