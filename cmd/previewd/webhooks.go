package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

func cmdEndpoints(ctx context.Context, e env, args []string) error {
	return subcommand(ctx, e, "endpoints", args, map[string]command{
		"add":           {"add an endpoint that receives every job's events (or those of --events)", endpointsAdd},
		"list":          {"list the endpoints", endpointsList},
		"show":          {"print one endpoint", endpointsShow},
		"disable":       {"stop deliveries to an endpoint", endpointsDisable},
		"enable":        {"resume deliveries to an endpoint", endpointsEnable},
		"rotate-secret": {"give an endpoint a new signing secret (the old one signs beside it for a while)", endpointsRotate},
		"delete":        {"delete an endpoint", endpointsDelete},
	})
}

// withClient parses flags (configuration included), checks the number of
// positional arguments, connects and runs fn with a producer.
func withClient(ctx context.Context, e env, fs *flagSet, args []string, positional int, fn func(context.Context, *tasks.Client, []string) error) error {
	return connectClient(ctx, fs, positional, fn, func() (config.Config, error) { return loadConfig(e, fs, args) })
}

// withReadOnlyClient is withClient for commands that only read.
func withReadOnlyClient(ctx context.Context, e env, fs *flagSet, args []string, positional int, fn func(context.Context, *tasks.Client, []string) error) error {
	return connectClient(ctx, fs, positional, fn, func() (config.Config, error) { return loadReadOnlyConfig(e, fs, args) })
}

func connectClient(ctx context.Context, fs *flagSet, positional int, fn func(context.Context, *tasks.Client, []string) error, load func() (config.Config, error)) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	if fs.NArg() != positional {
		return fs.usageError("want %d argument(s), got %d", positional, fs.NArg())
	}
	if fs.check != nil {
		if err := fs.check(); err != nil {
			return err
		}
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	return fn(ctx, newProducer(cfg, rdb), fs.Args())
}

// endpointView is an endpoint as the CLI prints it: the secret of a v1
// endpoint only when asked for with --show-secret; the public key of a v1a
// endpoint always (it is not secret, and it is shown only on creation and
// rotation).
type endpointView struct {
	store.Endpoint
	Secret    string `json:"secret,omitempty"`
	PublicKey string `json:"public_key,omitempty"`
}

func newEndpointView(ep store.Endpoint, shown string, showSecret bool) endpointView {
	view := endpointView{Endpoint: ep}
	switch {
	case ep.SignatureVersion == store.SignatureV1a:
		view.PublicKey = shown
	case showSecret:
		view.Secret = shown
	}
	return view
}

func endpointsAdd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints add", "--url URL [flags]",
		"Add a webhook endpoint: it receives the events of every job (or those of --events), signed with its own secret. Prints the endpoint; its v1 secret only with --show-secret (it is never shown again), a v1a endpoint's public key always.")
	var req tasks.EndpointRequest
	var events string
	fs.StringVar(&req.URL, "url", "", "`URL` that receives the webhooks (required)")
	fs.StringVar(&events, "events", "", "comma-separated event `TYPES` (default: all)")
	fs.StringVar(&req.Description, "description", "", "what the endpoint is for, as free `TEXT`")
	fs.StringVar(&req.Secret, "secret", "", "signing `SECRET` in whsec_ form (default: generated; v1 only)")
	fs.StringVar(&req.SignatureVersion, "signature-version", "v1", "signature `VERSION`: v1 (HMAC-SHA256, whsec_ secret) or v1a (ed25519: prints the whpk_ public key; the private key stays in previewd)")
	show := fs.Bool("show-secret", false, "print the v1 signing secret (it is never shown again)")
	output := addOutput(fs, "json")
	return withClient(ctx, e, fs, args, 0, func(ctx context.Context, c *tasks.Client, _ []string) error {
		if events != "" {
			for _, t := range strings.Split(events, ",") {
				req.EventTypes = append(req.EventTypes, strings.TrimSpace(t))
			}
		}
		ep, shown, err := c.AddEndpoint(ctx, req)
		if v, ok := tasks.AsValidationError(err); ok {
			return usageError{msg: describeFields(v, map[string]string{"url": "--url", "event_types": "--events", "description": "--description", "secret": "--secret", "signature_version": "--signature-version"})}
		}
		if err != nil {
			return err
		}
		return printEndpoints(e.stdout, *output, newEndpointView(ep, shown, *show))
	})
}

func endpointsList(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints list", "[--limit N [--cursor C]] [flags]",
		"List the webhook endpoints (a table by default). With --limit, one page: the command for the next one is printed on stderr.")
	output := addOutput(fs, "table")
	limit := fs.Int("limit", 0, "print one page of at most `N` endpoints (1..200); default: every endpoint")
	cursor := fs.String("cursor", "", "the page after the one that printed this `CURSOR`")
	return withReadOnlyClient(ctx, e, fs, args, 0, func(ctx context.Context, c *tasks.Client, _ []string) error {
		if *limit < 0 || *limit > 200 {
			return fs.usageError("invalid --limit: must be from 1 to 200")
		}
		eps, next, err := listEndpoints(ctx, c, *limit, *cursor)
		if errors.Is(err, store.ErrBadCursor) {
			return fs.usageError("invalid --cursor: not one this command printed")
		}
		if err != nil {
			return err
		}
		if next != "" {
			// On stderr, so that stdout stays the listing.
			fmt.Fprintf(e.stderr, "more: previewd endpoints list --limit %d --cursor %s\n", *limit, next)
		}
		if *output == "json" {
			if eps == nil {
				eps = []store.Endpoint{}
			}
			return printJSON(e.stdout, eps, true)
		}
		views := make([]endpointView, len(eps))
		for i, ep := range eps {
			views[i] = endpointView{Endpoint: ep}
		}
		return printEndpointTable(e.stdout, views)
	})
}

// printEndpoints prints endpoints as JSON (one object when there is one) or
// as a table.
func printEndpoints(w io.Writer, format string, views ...endpointView) error {
	if format == "table" {
		return printEndpointTable(w, views)
	}
	if len(views) == 1 {
		return printJSON(w, views[0], true)
	}
	return printJSON(w, views, true)
}

// printEndpointTable prints one row per endpoint, and the secret or public
// key column when one is shown.
func printEndpointTable(w io.Writer, views []endpointView) error {
	shows := ""
	for _, v := range views {
		switch {
		case v.Secret != "":
			shows = "SECRET"
		case v.PublicKey != "" && shows == "":
			shows = "PUBLIC KEY"
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "ID\tURL\tEVENTS\tENABLED\tNOTE"
	if shows != "" {
		header += "\t" + shows
	}
	fmt.Fprintln(tw, header)
	for _, v := range views {
		ep := v.Endpoint
		types := "all"
		if len(ep.EventTypes) > 0 {
			parts := make([]string, len(ep.EventTypes))
			for i, t := range ep.EventTypes {
				parts[i] = string(t)
			}
			types = strings.Join(parts, ",")
		}
		note := ep.Description
		if !ep.Enabled {
			note = "disabled: " + ep.DisabledReason
		}
		row := fmt.Sprintf("%s\t%s\t%s\t%t\t%s", ep.ID, ep.URL, types, ep.Enabled, orDash(note))
		if shows != "" {
			row += "\t" + orDash(v.Secret+v.PublicKey)
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// listEndpoints reads one page (limit > 0) or, page by page, every
// endpoint; the cursor of the page after, if any.
func listEndpoints(ctx context.Context, c *tasks.Client, limit int, cursor string) ([]store.Endpoint, string, error) {
	if limit > 0 {
		return c.EndpointPage(ctx, store.EndpointListOptions{Limit: limit, Cursor: cursor})
	}
	var all []store.Endpoint
	for {
		page, next, err := c.EndpointPage(ctx, store.EndpointListOptions{Limit: 200, Cursor: cursor})
		if err != nil {
			return nil, "", err
		}
		all = append(all, page...)
		if next == "" {
			return all, "", nil
		}
		cursor = next
	}
}

func endpointsShow(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints show", "ID [flags]", "Print one webhook endpoint (JSON by default); never its secret.")
	output := addOutput(fs, "json")
	return withReadOnlyClient(ctx, e, fs, args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		ep, err := c.Endpoint(ctx, pos[0])
		if err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		return printEndpoints(e.stdout, *output, endpointView{Endpoint: ep})
	})
}

func endpointsDisable(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints disable", "ID [--reason TEXT] [flags]",
		"Disable a webhook endpoint: no event is sent to it and its pending messages are given up until it is enabled again (`previewd webhooks replay --endpoint` sends them later). Prints the endpoint.")
	reason := fs.String("reason", "", "why, as free `TEXT` (recorded on the endpoint)")
	output := addOutput(fs, "json")
	return withClient(ctx, e, fs, args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		ep, err := c.SetEndpointEnabled(ctx, pos[0], false, *reason)
		if err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		return printEndpoints(e.stdout, *output, endpointView{Endpoint: ep})
	})
}

func endpointsEnable(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints enable", "ID [flags]", "Enable a webhook endpoint again. Prints the endpoint.")
	output := addOutput(fs, "json")
	return withClient(ctx, e, fs, args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		ep, err := c.SetEndpointEnabled(ctx, pos[0], true, "")
		if err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		return printEndpoints(e.stdout, *output, endpointView{Endpoint: ep})
	})
}

func endpointsRotate(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints rotate-secret", "ID [--show-secret] [flags]",
		"Give a webhook endpoint a new signing secret (or key pair); the old one keeps signing beside it for PREVIEWD_WEBHOOK_ROTATION_WINDOW. Prints the endpoint.")
	show := fs.Bool("show-secret", false, "print the new v1 signing secret (it is never shown again); a v1a endpoint's new public key is always printed")
	output := addOutput(fs, "json")
	return withClient(ctx, e, fs, args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		ep, shown, err := c.RotateEndpointSecret(ctx, pos[0])
		if err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		return printEndpoints(e.stdout, *output, newEndpointView(ep, shown, *show))
	})
}

func endpointsDelete(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints delete", "ID [flags]", "Delete a webhook endpoint; its pending messages are given up.")
	return withClient(ctx, e, fs, args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		if err := c.DeleteEndpoint(ctx, pos[0]); err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		_, err := fmt.Fprintf(e.stdout, "deleted %s\n", pos[0])
		return err
	})
}

func notFound(err error, what, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s %s not found", what, id)
	}
	return err
}

func cmdWebhooks(ctx context.Context, e env, args []string) error {
	return subcommand(ctx, e, "webhooks", args, map[string]command{
		"attempts": {"print webhook messages with every delivery attempt", webhooksAttempts},
		"replay":   {"deliver webhook messages again", webhooksReplay},
	})
}

func webhooksAttempts(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "webhooks attempts", "--job ID | --message ID [flags]",
		"Print webhook messages with every delivery attempt: when, the answer's status or the error, latency and the start of the response (a table by default).")
	jobID := fs.String("job", "", "every message of the job `ID`")
	msgID := fs.String("message", "", "the one message `ID`")
	output := addOutput(fs, "table")
	fs.check = func() error {
		if (*jobID == "") == (*msgID == "") {
			return fs.usageError("give exactly one of --job or --message")
		}
		return nil
	}
	return withReadOnlyClient(ctx, e, fs, args, 0, func(ctx context.Context, c *tasks.Client, _ []string) error {
		var msgs []store.Message
		switch {
		case *jobID != "":
			var err error
			if msgs, err = c.Messages(ctx, *jobID); err != nil {
				return notFound(err, "job", *jobID)
			}
		default:
			m, _, err := c.Message(ctx, *msgID)
			if err != nil {
				return notFound(err, "message", *msgID)
			}
			msgs = []store.Message{m}
		}
		return printMessages(e.stdout, *output, msgs)
	})
}

// printMessages prints messages as JSON (a list) or as the attempts table.
func printMessages(w io.Writer, format string, msgs []store.Message) error {
	if format == "table" {
		return printAttempts(w, msgs)
	}
	if msgs == nil {
		msgs = []store.Message{}
	}
	return printJSON(w, msgs, true)
}

func printAttempts(w io.Writer, msgs []store.Message) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE\tEVENT\tDESTINATION\tSTATUS\tAT\tRESULT\tLATENCY\tRESPONSE")
	for _, m := range msgs {
		status := string(m.Status)
		if m.Reason != "" {
			status += " (" + m.Reason + ")"
		}
		if len(m.Attempts) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\n", m.ID, m.EventType, m.Destination, status)
		}
		for i, a := range m.Attempts {
			result := fmt.Sprint(a.StatusCode)
			if a.Error != "" {
				result = a.Error
			}
			if i > 0 {
				status = ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%q\n", m.ID, m.EventType, m.Destination, status,
				a.At.UTC().Format(time.RFC3339), result, a.Latency.Round(time.Millisecond), a.Response)
		}
	}
	return tw.Flush()
}

func webhooksReplay(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "webhooks replay", "--message ID | --job ID | --endpoint ID --since T [--all] [flags]",
		"Deliver webhook messages again, with their original id and body (receivers deduplicate on webhook-id): one message, a job's, or an endpoint's since a time. Failed ones only unless --all. Prints the replayed messages (JSON by default).")
	msgID := fs.String("message", "", "replay the message `ID`")
	jobID := fs.String("job", "", "replay the messages of the job `ID`")
	endpointID := fs.String("endpoint", "", "replay the messages to the endpoint `ID` (with --since)")
	since := fs.String("since", "", "with --endpoint: an RFC 3339 `TIME`, or a duration ago like 2h")
	all := fs.Bool("all", false, "also replay messages that were delivered (default: failed ones only)")
	output := addOutput(fs, "json")
	var sinceTime time.Time
	fs.check = func() error {
		chosen := 0
		for _, v := range []string{*msgID, *jobID, *endpointID} {
			if v != "" {
				chosen++
			}
		}
		if chosen != 1 {
			return fs.usageError("give exactly one of --message, --job or --endpoint")
		}
		if *endpointID != "" {
			t, err := parseSince(*since, time.Now())
			if err != nil {
				return fs.usageError("invalid --since: %s", err)
			}
			sinceTime = t
		}
		return nil
	}
	return withClient(ctx, e, fs, args, 0, func(ctx context.Context, c *tasks.Client, _ []string) error {
		if *msgID != "" {
			m, err := c.Replay(ctx, *msgID)
			if err != nil && !errors.Is(err, tasks.ErrEnqueuePending) {
				return notFound(err, "message", *msgID)
			}
			// A replay whose enqueue is pending is committed: show it, and
			// the error that says a sweeper will enqueue it.
			if perr := printMessages(e.stdout, *output, []store.Message{m}); perr != nil {
				return perr
			}
			return err
		}
		sel := tasks.ReplaySelection{JobID: *jobID, EndpointID: *endpointID, All: *all, Since: sinceTime}
		msgs, err := c.ReplayMany(ctx, sel)
		if perr := printMessages(e.stdout, *output, msgs); perr != nil {
			return perr
		}
		return notFound(err, "job or endpoint", *jobID+*endpointID)
	})
}

// parseSince reads an RFC 3339 time or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("required with --endpoint")
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 2h", s)
	}
	return now.Add(-d), nil
}
