package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/store"
)

// Bounds of `previewd list`: the most jobs it prints, and the most it reads
// while filtering on the client side before it stops and prints where to
// go on from.
const (
	maxListLimit   = 1000
	maxListScanned = 10000
	listPageSize   = 200 // the store's largest page
)

func cmdList(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "list", "[--status S] [--older-than D] [--session C] [--limit N] [flags]",
		"List jobs, newest first: a table for people, or with --json the API's listing (GET /v1/previews: items and next_cursor; webhook URLs reduced to their origin). "+
			"When more jobs match, the command for the next page is printed on stderr. --older-than and --session are filtered here, over pages of the listing: "+
			"at most 10000 jobs are read per run, and a run that stops there says where to go on from.")
	output := addOutput(fs, "table")
	status := fs.String("status", "", "only jobs in `STATUS`: "+statusNames())
	olderThan := fs.Duration("older-than", 0, "only jobs created more than `D` ago (e.g. 30m)")
	session := fs.String("session", "", "only jobs of the CSM session `CODE`")
	limit := fs.Int("limit", 50, fmt.Sprintf("print at most `N` jobs (1..%d)", maxListLimit))
	cursor := fs.String("cursor", "", "go on after the listing that printed this `CURSOR`")
	cfg, err := loadReadOnlyConfig(e, fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	f := jobFilter{status: store.Status(*status), session: strings.TrimSpace(*session)}
	switch {
	case f.status != "" && !f.status.Valid():
		return fs.usageError("invalid --status %q: must be one of %s", *status, statusNames())
	case *olderThan < 0:
		return fs.usageError("invalid --older-than: must not be negative")
	case *limit < 1 || *limit > maxListLimit:
		return fs.usageError("invalid --limit: must be from 1 to %d", maxListLimit)
	}
	now := time.Now()
	if *olderThan > 0 {
		f.createdBefore = now.Add(-*olderThan)
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	res, err := listJobs(ctx, newProducer(cfg, rdb), f, *limit, *cursor, maxListScanned)
	if errors.Is(err, store.ErrBadCursor) {
		return fs.usageError("invalid --cursor: not one this command printed")
	}
	if err != nil {
		return err
	}
	for i := range res.jobs {
		res.jobs[i].WebhookURL = store.PublicURL(res.jobs[i].WebhookURL)
	}
	if res.next != "" {
		// On stderr, so that stdout stays the listing.
		if res.stopped {
			fmt.Fprintf(e.stderr, "read %d jobs and found %d; the rest were not read\n", res.scanned, len(res.jobs))
		}
		fmt.Fprintf(e.stderr, "more: previewd %s --cursor %s\n", strings.Join(listArgs(fs), " "), res.next)
	}
	if *output == "json" {
		if res.jobs == nil {
			res.jobs = []store.Job{}
		}
		return printJSON(e.stdout, api.JobList{Items: res.jobs, NextCursor: res.next}, true)
	}
	return printJobTable(e.stdout, res.jobs, now)
}

func statusNames() string {
	names := make([]string, len(store.Statuses))
	for i, s := range store.Statuses {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// listArgs repeats the command's flags but --cursor, for the "more:" line.
func listArgs(fs *flagSet) []string {
	out := []string{"list"}
	fs.Visit(func(fl *flag.Flag) {
		switch {
		case !fs.own[fl.Name] || fl.Name == "cursor": // shared settings may hold secrets
		case isBoolFlag(fl):
			out = append(out, dashed(fl.Name))
		default:
			out = append(out, dashed(fl.Name)+"="+shellQuote(fl.Value.String()))
		}
	})
	return out
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.,:/@%+=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// jobFilter is what `previewd list` selects; status is the store's own
// index, the rest is checked here.
type jobFilter struct {
	status        store.Status
	session       string
	createdBefore time.Time
}

func (f jobFilter) clientSide() bool { return f.session != "" || !f.createdBefore.IsZero() }

func (f jobFilter) match(j store.Job) bool {
	return (f.session == "" || j.SessionCode == f.session) &&
		(f.createdBefore.IsZero() || j.CreatedAt.Before(f.createdBefore))
}

// jobLister is the listing listJobs pages through.
type jobLister interface {
	List(ctx context.Context, opts store.ListOptions) ([]store.Job, string, error)
}

type listResult struct {
	jobs    []store.Job
	next    string // where the next listing starts; "" when no job is left
	scanned int    // jobs read
	stopped bool   // maxScan jobs were read before limit matched
}

// listJobs returns up to limit jobs matching f, newest first, from cursor
// on. Without a client-side filter it is the store's listing, page by page.
// With one it reads pages of the store's listing and keeps what matches,
// until it has read maxScan jobs. Its cursor always points right after the
// last job returned (or read), so that following it skips nothing.
func listJobs(ctx context.Context, l jobLister, f jobFilter, limit int, cursor string, maxScan int) (listResult, error) {
	var res listResult
	for {
		size := min(limit-len(res.jobs), listPageSize)
		if f.clientSide() {
			size = min(listPageSize, maxScan)
		}
		page, next, err := l.List(ctx, store.ListOptions{Status: f.status, Limit: size, Cursor: cursor})
		if err != nil {
			return listResult{}, err
		}
		res.scanned += len(page)
		for i, j := range page {
			if !f.match(j) {
				continue
			}
			if len(res.jobs) == limit {
				// One more match than asked for: the listing goes on right
				// after the previous match, at position i-1 of this page. A
				// page of exactly i jobs from the same cursor ends there.
				_, res.next, err = l.List(ctx, store.ListOptions{Status: f.status, Limit: i, Cursor: cursor})
				if err != nil {
					return listResult{}, err
				}
				return res, nil
			}
			res.jobs = append(res.jobs, j)
		}
		cursor = next
		switch {
		case next == "":
			return res, nil
		case len(res.jobs) == limit:
			res.next = next
			return res, nil
		case res.scanned >= maxScan:
			res.next, res.stopped = next, true
			return res, nil
		}
	}
}
