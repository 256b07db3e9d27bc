package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

func cmdWorker(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "worker")
	httpAddr := fs.String("http", "", "serve /healthz, /readyz and /metrics here (default: PREVIEWD_HTTP_ADDR; none when empty)")
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
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
	fs := newFlagSet(e, "enqueue")
	var req tasks.PreviewRequest
	var bbox, pivot string
	fs.StringVar(&req.SessionCode, "session", "", "CSM session code (required)")
	fs.IntVar(&req.SelectedSpinIndex, "spin-index", 0, "spin to use, 0..3")
	fs.StringVar(&req.SelectedSpin, "spin-url", "", "spin image URL (default: read from the session)")
	fs.StringVar(&bbox, "bbox", "", "scaled bounding box W,H,D")
	fs.StringVar(&pivot, "pivot", "", "pivot point X,Y,Z, each in [-0.5, 0.5]")
	fs.StringVar(&req.WebhookURL, "webhook-url", "", "URL that receives the job's signed webhooks")
	fs.StringVar(&req.ExternalID, "external-id", "", "your own reference for the job")
	fs.StringVar(&req.IdempotencyKey, "idempotency-key", "", "repeat-safe key (default: derived from the request)")
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
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
	return printJSON(e.stdout, job, false)
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
	return withJob(ctx, e, "status", args, func(ctx context.Context, p *tasks.Client, id string) error {
		job, err := p.Job(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("job %s not found (unknown, or expired after the retention period)", id)
		}
		if err != nil {
			return err
		}
		return printJSON(e.stdout, job, true)
	})
}

func cmdCancel(ctx context.Context, e env, args []string) error {
	return withJob(ctx, e, "cancel", args, func(ctx context.Context, p *tasks.Client, id string) error {
		job, err := p.Cancel(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("job %s not found", id)
		case errors.Is(err, tasks.ErrFinal):
			_ = printJSON(e.stdout, job, true)
			return fmt.Errorf("job %s is already %s; nothing to cancel", id, job.Status)
		case err != nil:
			return err
		}
		return printJSON(e.stdout, job, true)
	})
}

// withJob runs a `previewd <name> ID` command: configuration, the job id
// argument, a Redis connection and a producer.
func withJob(ctx context.Context, e env, name string, args []string, fn func(context.Context, *tasks.Client, string) error) error {
	fs := newFlagSet(e, name)
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
	return fn(ctx, newProducer(cfg, rdb), id)
}

func cmdConfig(_ context.Context, e env, args []string) error {
	fs := newFlagSet(e, "config")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
		return err
	}
	entries := cfg.Entries()
	if *asJSON {
		return printJSON(e.stdout, entries, true)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tVALUE\tDEFAULT")
	for _, en := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", en.Env, en.Value, en.Default)
	}
	return tw.Flush()
}

func cmdSecret(_ context.Context, e env, args []string) error {
	fs := newFlagSet(e, "secret")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s, err := webhook.GenerateSecret()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, s)
	return err
}

func printJSON(w io.Writer, v any, indent bool) error {
	enc := json.NewEncoder(w)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}
