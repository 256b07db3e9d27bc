package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

func cmdWorker(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "worker", "[--http ADDR] [flags]",
		"Process preview tasks (the billed request, then polls) and webhook deliveries until SIGTERM/SIGINT, then drain. Needs PREVIEWD_CSM_API_KEY and PREVIEWD_WEBHOOK_SECRET.")
	httpAddr := fs.String("http", "", "serve /healthz, /readyz and /metrics at `ADDR` (default: PREVIEWD_HTTP_ADDR; none when empty)")
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := cfg.RequireWorkerSecrets(); err != nil {
		return usageError{msg: "configuration: " + err.Error()}
	}
	p, done, err := startProcess(ctx, e, cfg)
	if err != nil {
		return err
	}
	defer done()
	m := newMetrics(cfg, p.rdb, p.log)
	w, err := newWorker(cfg, p.rdb, p.log, m)
	if err != nil {
		return err
	}
	if addr := firstOf(*httpAddr, cfg.HTTPAddr); addr != "" {
		ops := api.New(nil, api.Options{Redis: p.rdb, Metrics: metricsHandler(cfg, m), Logger: p.log})
		return runHTTP(p.ctx, cfg, p.log, addr, ops, w)
	}
	return w.Run(p.ctx)
}

// flagOf maps request fields to the enqueue flags that set them, so that
// errors name what the user typed.
var flagOf = map[string]string{
	"session_code":        "--session",
	"selected_spin_index": "--spin-index",
	"selected_spin":       "--spin-url",
	"scaled_bbox":         "--bbox",
	"pivot_point":         "--pivot",
	"webhook_url":         "--webhook-url",
	"external_id":         "--external-id",
	"idempotency_key":     "--idempotency-key",
}

func cmdEnqueue(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "enqueue", "--session CODE [flags]",
		"Request a preview of a CSM session. Prints the job (JSON by default); with --wait, blocks until the job is final, prints it then, and exits 1 unless it is done. Repeating a request (same --idempotency-key, or the same fields) returns the same job.")
	var req tasks.PreviewRequest
	var bbox, pivot string
	fs.StringVar(&req.SessionCode, "session", "", "CSM session `CODE` (required)")
	fs.IntVar(&req.SelectedSpinIndex, "spin-index", 0, "spin to use, `0..3`")
	fs.StringVar(&req.SelectedSpin, "spin-url", "", "spin image `URL` (default: read from the session)")
	fs.StringVar(&bbox, "bbox", "", "scaled bounding box `W,H,D`")
	fs.StringVar(&pivot, "pivot", "", "pivot point `X,Y,Z`, each in [-0.5, 0.5]")
	fs.StringVar(&req.WebhookURL, "webhook-url", "", "`URL` that receives the job's signed webhooks")
	fs.StringVar(&req.ExternalID, "external-id", "", "your own reference for the job (`ID`)")
	fs.StringVar(&req.IdempotencyKey, "idempotency-key", "", "repeat-safe `KEY` (default: derived from the request)")
	output := addOutput(fs, "json")
	wait := addWaitFlags(fs, "wait", "block until the job is final; exit 1 unless it is done")
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := wait.check(fs); err != nil {
		return err
	}
	if req.ScaledBBox, err = parseTriple(bbox); err != nil {
		return usageError{msg: "invalid --bbox (scaled_bbox): " + err.Error()}
	}
	if req.PivotPoint, err = parseTriple(pivot); err != nil {
		return usageError{msg: "invalid --pivot (pivot_point): " + err.Error()}
	}
	if err := req.Validate(); err != nil {
		v, _ := tasks.AsValidationError(err)
		return usageError{msg: describeFields(v, flagOf)}
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	producer := newProducer(cfg, rdb)
	job, err := producer.RequestPreview(ctx, req)
	if v, ok := tasks.AsValidationError(err); ok {
		return usageError{msg: describeFields(v, flagOf)}
	}
	if errors.Is(err, tasks.ErrIdempotencyConflict) {
		return fmt.Errorf("--idempotency-key %q was already used for a different request (job %s)", req.IdempotencyKey, job.ID)
	}
	if err != nil {
		return err
	}
	if !wait.on {
		return printJob(e.stdout, job, *output, false)
	}
	// Progress on stderr: stdout stays the one final job, for scripts.
	final, err := follow(ctx, producer, job.ID, wait, func(j store.Job) error {
		return writeChange(e.stderr, j)
	})
	if err != nil {
		return err
	}
	if err := printJob(e.stdout, final, *output, false); err != nil {
		return err
	}
	return endedBadly(final)
}

// describeFields names each invalid field by its flag and JSON name.
func describeFields(v *tasks.ValidationError, flags map[string]string) string {
	parts := make([]string, 0, len(v.Fields))
	for _, f := range v.Fields {
		parts = append(parts, fmt.Sprintf("invalid %s (%s): %s", flags[f.Field], f.Field, f.Message))
	}
	return strings.Join(parts, "; ")
}

// parseTriple parses "a,b,c" into three numbers; "" is no value.
func parseTriple(s string) ([]float64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return nil, fmt.Errorf("want 3 comma-separated numbers, got %d", len(parts))
	}
	out := make([]float64, 3)
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", strings.TrimSpace(p))
		}
		out[i] = v
	}
	return out, nil
}

func cmdStatus(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "status", "ID [flags]",
		"Print a job: JSON (its whole record, history included) by default, or a table row. With --watch, follow the job to its end instead: one line per change of status or percent, then exit 0 when it is done, 1 when it failed, timed out or was canceled.")
	output := addOutput(fs, "json")
	watch := addWaitFlags(fs, "watch", "follow the job until it is final, one line per change (with -o json: the job, one line each)")
	cfg, err := loadReadOnlyConfig(e, fs, args)
	if err != nil {
		return err
	}
	id, err := oneArg(fs, "job id")
	if err != nil {
		return err
	}
	if err := watch.check(fs); err != nil {
		return err
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	p := newProducer(cfg, rdb)
	if !watch.on {
		job, err := p.Job(ctx, id)
		if err != nil {
			return jobNotFound(err, id)
		}
		return printJob(e.stdout, job, *output, true)
	}
	explicitJSON := fs.explicitOutput() && *output == "json"
	final, err := follow(ctx, p, id, watch, func(j store.Job) error {
		if explicitJSON {
			return printJSON(e.stdout, j, false)
		}
		return writeChange(e.stdout, j)
	})
	if err != nil {
		return err
	}
	return endedBadly(final)
}

// jobNotFound says so when err is store.ErrNotFound.
func jobNotFound(err error, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("job %s not found (unknown, or expired after the retention period)", id)
	}
	return err
}

func cmdCancel(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "cancel", "ID [flags]",
		"Cancel a job that is not final: it ends canceled and fires preview.canceled; polling stops (a preview POST already sent is not undone upstream: CSM has no cancel). Prints the canceled job. Canceling a canceled job prints it again; canceling a job that is done, failed or timed out exits 1 and prints nothing.")
	output := addOutput(fs, "json")
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
		return err
	}
	id, err := oneArg(fs, "job id")
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	job, err := newProducer(cfg, rdb).Cancel(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("job %s not found", id)
	case errors.Is(err, tasks.ErrFinal):
		return fmt.Errorf("job %s is already %s; nothing to cancel", id, job.Status)
	case err != nil:
		return err
	}
	return printJob(e.stdout, job, *output, true)
}

func cmdConfig(_ context.Context, e env, args []string) error {
	fs := newFlagSet(e, "config", "[-o json|table] [flags]",
		"Print the effective configuration: every setting, its value (secrets redacted) and its default. Worker and server settings are shown but not enforced here: a value they would refuse is reported on stderr.")
	output := addOutput(fs, "table")
	fs.extra = writeSettingsHelp
	flags := sharedFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	cfg, err := flags.LoadReadOnly(e.getenv)
	if err != nil {
		return usageError{msg: "configuration: " + err.Error()}
	}
	// What a worker or the server would refuse, said without failing.
	if _, err := flags.Load(e.getenv); err != nil {
		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintf(e.stderr, "previewd config: warning: %s (a worker or server would refuse it)\n", line)
		}
	}
	entries := cfg.Entries()
	if *output == "json" {
		return printJSON(e.stdout, entries, true)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tVALUE\tDEFAULT")
	for _, en := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", en.Env, en.Value, en.Default)
	}
	return tw.Flush()
}

// writeSettingsHelp lists the shared settings, for `previewd config --help`.
func writeSettingsHelp(w io.Writer) {
	writeWrapped(w, "Settings: each is a PREVIEWD_* environment variable and a flag of every command (a flag wins over the variable, which wins over the default). Prefer the environment for secrets: flags show in process lists.", 0)
	fmt.Fprintln(w)
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	config.RegisterFlags(fs)
	var rows []flagRow
	fs.VisitAll(func(fl *flag.Flag) {
		names := dashed(fl.Name)
		if !isBoolFlag(fl) {
			names += " value"
		}
		rows = append(rows, flagRow{names, fl.Usage})
	})
	writeFlagRows(w, rows)
}

func cmdSecret(_ context.Context, e env, args []string) error {
	fs := newFlagSet(e, "secret", "",
		"Print a new Standard Webhooks signing secret (whsec_ followed by 32 random bytes in base64), for PREVIEWD_WEBHOOK_SECRET or `previewd endpoints add --secret`.")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	s, err := webhook.GenerateSecret()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, s)
	return err
}
