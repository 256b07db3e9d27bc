package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// subcommand dispatches `previewd <group> <name> ...`.
func subcommand(ctx context.Context, e env, group string, args []string, subs map[string]func(context.Context, env, []string) error) error {
	if len(args) == 0 || subs[args[0]] == nil {
		names := make([]string, 0, len(subs))
		for n := range subs {
			names = append(names, n)
		}
		sort.Strings(names)
		return usageError{msg: fmt.Sprintf("usage: previewd %s <%s> [flags]", group, strings.Join(names, "|"))}
	}
	return subs[args[0]](ctx, e, args[1:])
}

func cmdEndpoints(ctx context.Context, e env, args []string) error {
	return subcommand(ctx, e, "endpoints", args, map[string]func(context.Context, env, []string) error{
		"add":           endpointsAdd,
		"list":          endpointsList,
		"show":          endpointsShow,
		"disable":       endpointsDisable,
		"enable":        endpointsEnable,
		"rotate-secret": endpointsRotate,
		"delete":        endpointsDelete,
	})
}

// withClient parses flags (configuration included), checks the number of
// positional arguments, connects and runs fn with a producer.
func withClient(ctx context.Context, e env, fs *flag.FlagSet, args []string, positional int, fn func(context.Context, *tasks.Client, []string) error) error {
	cfg, err := loadConfig(e, fs, args)
	if err != nil {
		return err
	}
	if fs.NArg() != positional {
		return usageError{msg: fmt.Sprintf("want %d argument(s), got %d", positional, fs.NArg())}
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
	fs := newFlagSet(e, "endpoints add")
	var req tasks.EndpointRequest
	var events string
	fs.StringVar(&req.URL, "url", "", "URL that receives the webhooks (required)")
	fs.StringVar(&events, "events", "", "comma-separated event types (default: all)")
	fs.StringVar(&req.Description, "description", "", "what the endpoint is for")
	fs.StringVar(&req.Secret, "secret", "", "signing secret in whsec_ form (default: generated; v1 only)")
	fs.StringVar(&req.SignatureVersion, "signature-version", "v1", "v1 (HMAC-SHA256, whsec_ secret) or v1a (ed25519: prints the whpk_ public key; the private key stays in previewd)")
	show := fs.Bool("show-secret", false, "print the v1 signing secret (it is never shown again)")
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
		return printJSON(e.stdout, newEndpointView(ep, shown, *show), true)
	})
}

func endpointsList(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints list")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	limit := fs.Int("limit", 0, "print one page of at most this many endpoints (1..200); default: every endpoint")
	cursor := fs.String("cursor", "", "the page after the one that printed this cursor")
	return withClient(ctx, e, fs, args, 0, func(ctx context.Context, c *tasks.Client, _ []string) error {
		if *limit < 0 || *limit > 200 {
			return usageError{msg: "invalid --limit: must be from 1 to 200"}
		}
		eps, next, err := listEndpoints(ctx, c, *limit, *cursor)
		if errors.Is(err, store.ErrBadCursor) {
			return usageError{msg: "invalid --cursor: not one this command printed"}
		}
		if err != nil {
			return err
		}
		if next != "" {
			// On stderr, so that stdout stays the listing.
			fmt.Fprintf(e.stderr, "more: previewd endpoints list --limit %d --cursor %s\n", *limit, next)
		}
		if *asJSON {
			if eps == nil {
				eps = []store.Endpoint{}
			}
			return printJSON(e.stdout, eps, true)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tURL\tEVENTS\tENABLED\tNOTE")
		for _, ep := range eps {
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\n", ep.ID, ep.URL, types, ep.Enabled, note)
		}
		return tw.Flush()
	})
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
	return withClient(ctx, e, newFlagSet(e, "endpoints show"), args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		ep, err := c.Endpoint(ctx, pos[0])
		if err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		return printJSON(e.stdout, ep, true)
	})
}

func endpointsDisable(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints disable")
	reason := fs.String("reason", "", "why (recorded on the endpoint)")
	return withClient(ctx, e, fs, args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		ep, err := c.SetEndpointEnabled(ctx, pos[0], false, *reason)
		if err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		return printJSON(e.stdout, ep, true)
	})
}

func endpointsEnable(ctx context.Context, e env, args []string) error {
	return withClient(ctx, e, newFlagSet(e, "endpoints enable"), args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		ep, err := c.SetEndpointEnabled(ctx, pos[0], true, "")
		if err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		return printJSON(e.stdout, ep, true)
	})
}

func endpointsRotate(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "endpoints rotate-secret")
	show := fs.Bool("show-secret", false, "print the new v1 signing secret (it is never shown again); a v1a endpoint's new public key is always printed")
	return withClient(ctx, e, fs, args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
		ep, shown, err := c.RotateEndpointSecret(ctx, pos[0])
		if err != nil {
			return notFound(err, "endpoint", pos[0])
		}
		return printJSON(e.stdout, newEndpointView(ep, shown, *show), true)
	})
}

func endpointsDelete(ctx context.Context, e env, args []string) error {
	return withClient(ctx, e, newFlagSet(e, "endpoints delete"), args, 1, func(ctx context.Context, c *tasks.Client, pos []string) error {
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
	return subcommand(ctx, e, "webhooks", args, map[string]func(context.Context, env, []string) error{
		"attempts": webhooksAttempts,
		"replay":   webhooksReplay,
	})
}

func webhooksAttempts(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "webhooks attempts")
	jobID := fs.String("job", "", "every message of this job")
	msgID := fs.String("message", "", "one message")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	return withClient(ctx, e, fs, args, 0, func(ctx context.Context, c *tasks.Client, _ []string) error {
		var msgs []store.Message
		switch {
		case (*jobID == "") == (*msgID == ""):
			return usageError{msg: "give exactly one of --job or --message"}
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
		if *asJSON {
			if msgs == nil {
				msgs = []store.Message{}
			}
			return printJSON(e.stdout, msgs, true)
		}
		return printAttempts(e.stdout, msgs)
	})
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
	fs := newFlagSet(e, "webhooks replay")
	msgID := fs.String("message", "", "replay this message")
	jobID := fs.String("job", "", "replay the messages of this job")
	endpointID := fs.String("endpoint", "", "replay the messages to this endpoint (with --since)")
	since := fs.String("since", "", "with --endpoint: RFC 3339 time, or a duration ago like 2h")
	all := fs.Bool("all", false, "also replay messages that were delivered (default: failed ones only)")
	return withClient(ctx, e, fs, args, 0, func(ctx context.Context, c *tasks.Client, _ []string) error {
		chosen := 0
		for _, v := range []string{*msgID, *jobID, *endpointID} {
			if v != "" {
				chosen++
			}
		}
		if chosen != 1 {
			return usageError{msg: "give exactly one of --message, --job or --endpoint"}
		}
		if *msgID != "" {
			m, err := c.Replay(ctx, *msgID)
			if err != nil && !errors.Is(err, tasks.ErrEnqueuePending) {
				return notFound(err, "message", *msgID)
			}
			// A replay whose enqueue is pending is committed: show it, and
			// the error that says a sweeper will enqueue it.
			if perr := printJSON(e.stdout, []store.Message{m}, true); perr != nil {
				return perr
			}
			return err
		}
		sel := tasks.ReplaySelection{JobID: *jobID, EndpointID: *endpointID, All: *all}
		if *endpointID != "" {
			t, err := parseSince(*since, time.Now())
			if err != nil {
				return usageError{msg: "invalid --since: " + err.Error()}
			}
			sel.Since = t
		}
		msgs, err := c.ReplayMany(ctx, sel)
		if msgs == nil {
			msgs = []store.Message{}
		}
		if perr := printJSON(e.stdout, msgs, true); perr != nil {
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
