package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/buildinfo"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// everyCommand lists every command as typed: the top-level ones and the
// subcommands of the groups.
func everyCommand() [][]string {
	var out [][]string
	for name := range commands {
		switch name {
		case "endpoints":
			for _, sub := range []string{"add", "list", "show", "disable", "enable", "rotate-secret", "delete"} {
				out = append(out, []string{name, sub})
			}
		case "webhooks":
			out = append(out, []string{name, "attempts"}, []string{name, "replay"})
		}
		out = append(out, []string{name})
	}
	slices.SortFunc(out, func(a, b []string) int { return strings.Compare(strings.Join(a, " "), strings.Join(b, " ")) })
	return out
}

// goSpelling finds a multi-letter flag spelled with one dash (Go's flag
// package prints -flag; the README writes --flag).
var goSpelling = regexp.MustCompile(`(^|[\s(\[,'"])-[a-z][a-z-]+`)

// TestHelp: every command's help is on stdout, exits 0 however it is
// asked for, spells flags --flag, shows the command's own flags and points
// to `previewd config --help` for the shared settings, which only that
// help lists.
func TestHelp(t *testing.T) {
	t.Parallel()
	c := cli{t: t, env: map[string]string{}}
	for _, cmd := range everyCommand() {
		name := strings.Join(cmd, " ")
		group := cmd[0] == "endpoints" || cmd[0] == "webhooks"
		asks := [][]string{append(slices.Clone(cmd), "--help"), append(slices.Clone(cmd), "-h"), append([]string{"help"}, cmd...)}
		for _, args := range asks {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				out, errOut, code := c.run(args...)
				if code != exitOK || errOut != "" {
					t.Fatalf("exit %d, stderr %q", code, errOut)
				}
				if !strings.HasPrefix(out, "usage: previewd "+name+" ") {
					t.Fatalf("help does not start with its usage line:\n%s", out)
				}
				// bench's help quotes `go tool pprof -top FILE`, which is pprof's spelling.
				if m := goSpelling.FindString(strings.ReplaceAll(out, "pprof -top", "")); m != "" {
					t.Errorf("help spells a flag %q the Go way:\n%s", m, out)
				}
				if group {
					return
				}
				flags, rest, ok := strings.Cut(out, "\nFlags:\n")
				if !ok || !strings.Contains(rest, "-h, --help") {
					t.Fatalf("help has no Flags section with --help:\n%s", out)
				}
				_ = flags
				switch cmd[0] {
				case "config":
					for _, env := range config.EnvNames() {
						if !strings.Contains(rest, env) {
							t.Errorf("config --help does not list %s", env)
						}
					}
				case "secret", "version", "healthcheck", "bench", "chaos":
				default:
					if !strings.Contains(rest, "run 'previewd\nconfig --help'") && !strings.Contains(rest, "'previewd config --help'") {
						t.Errorf("help does not point to previewd config --help:\n%s", out)
					}
					if strings.Contains(rest, "--concurrency") || strings.Contains(rest, "--csm-api-key") {
						t.Errorf("help lists the shared settings:\n%s", out)
					}
				}
			})
		}
	}
	t.Run("previewd", func(t *testing.T) {
		for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
			out, errOut, code := c.run(args...)
			if code != exitOK || errOut != "" || !strings.Contains(out, "usage: previewd <command>") {
				t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
			}
			for name := range commands {
				if !strings.Contains(out, "\n  "+name+" ") {
					t.Errorf("%v does not list %s", args, name)
				}
			}
		}
		out, errOut, code := c.run()
		if code != exitUsage || out != "" || !strings.Contains(errOut, "usage: previewd <command>") {
			t.Fatalf("no command: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		out, errOut, code = c.run("endpoints")
		if code != exitUsage || out != "" || !strings.Contains(errOut, "usage: previewd endpoints <subcommand>") {
			t.Fatalf("a group without its subcommand: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
}

// TestUsageErrors: a mistyped flag or argument prints one line naming it
// and the hint to the command's help, on stderr, and exits 2, before any
// connection to Redis (there is none here).
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	c := cli{t: t, env: map[string]string{"PREVIEWD_REDIS_URL": "redis://127.0.0.1:1/0"}}
	cases := []struct {
		args []string
		want string // the whole of stderr
	}{
		{[]string{"status", "--foo"}, "previewd status: unknown flag --foo\nrun 'previewd status --help'\n"},
		{[]string{"status", "0b1c2d3e-0000-4000-8000-000000000000", "-x"}, "previewd status: unknown flag -x\nrun 'previewd status --help'\n"},
		{[]string{"status"}, "previewd status: want exactly one job id, got 0 arguments\nrun 'previewd status --help'\n"},
		{[]string{"list", "--limit"}, "previewd list: --limit needs a value\nrun 'previewd list --help'\n"},
		{[]string{"list", "--limit", "many"}, "previewd list: invalid value \"many\" for --limit: parse error\nrun 'previewd list --help'\n"},
		{[]string{"list", "--limit", "0"}, "previewd list: invalid --limit: must be from 1 to 1000\nrun 'previewd list --help'\n"},
		{[]string{"list", "--status", "stuck"}, "previewd list: invalid --status \"stuck\": must be one of queued, requesting, generating, done, failed, timed_out, canceled\nrun 'previewd list --help'\n"},
		{[]string{"list", "-o", "yaml"}, "previewd list: invalid value \"yaml\" for -o: want json or table\nrun 'previewd list --help'\n"},
		{[]string{"list", "extra"}, "previewd list: unexpected argument \"extra\"\nrun 'previewd list --help'\n"},
		{[]string{"status", "x", "--watch", "--interval", "1ms"}, "previewd status: invalid --interval: must be at least 100ms\nrun 'previewd status --help'\n"},
		{[]string{"endpoints", "add", "--nope"}, "previewd endpoints add: unknown flag --nope\nrun 'previewd endpoints add --help'\n"},
		{[]string{"endpoints", "frob"}, "previewd endpoints: unknown subcommand \"frob\"\nrun 'previewd endpoints --help'\n"},
		{[]string{"webhooks", "attempts"}, "previewd webhooks attempts: give exactly one of --job or --message\nrun 'previewd webhooks attempts --help'\n"},
		{[]string{"healthcheck", "--url", "ftp://x"}, "previewd healthcheck: invalid --url: must be an absolute http or https URL\nrun 'previewd healthcheck --help'\n"},
		{[]string{"frobnicate"}, "previewd: unknown command \"frobnicate\"\nrun 'previewd --help'\n"},
		{[]string{"--frobnicate"}, "previewd: unknown flag \"--frobnicate\"\nrun 'previewd --help'\n"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := c.run(tc.args...)
			if code != exitUsage || out != "" || errOut != tc.want {
				t.Fatalf("exit %d, stdout %q\nstderr %q\nwant   %q", code, out, errOut, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	c := cli{t: t, env: map[string]string{}}
	want := buildinfo.Read()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, errOut, code := c.run(args...)
		if code != exitOK || errOut != "" {
			t.Fatalf("%v: exit %d, %q", args, code, errOut)
		}
		for _, s := range []string{"previewd " + want.Version + "\n", "commit:  " + want.Commit, "go:      " + runtime.Version(), "asynq:   " + want.Asynq} {
			if !strings.Contains(out, s) {
				t.Errorf("%v does not say %q:\n%s", args, s, out)
			}
		}
	}
	if want.Asynq == buildinfo.Unknown {
		t.Error("the test binary does not know its asynq version")
	}
	out, _, code := c.run("version", "-o", "json")
	var got buildinfo.Info
	if code != exitOK || json.Unmarshal([]byte(out), &got) != nil || got != want {
		t.Fatalf("version -o json: exit %d, %q; want %+v", code, out, want)
	}
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	answer := func(status int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hang.Close)
	c := cli{t: t, env: map[string]string{}}
	cases := []struct {
		name string
		args []string
		code int
		want string // in stderr; "" for none
	}{
		{"200", []string{"--url", answer(200) + "/readyz"}, exitOK, ""},
		{"204", []string{"--url", answer(204)}, exitOK, ""},
		{"503", []string{"--url", answer(503) + "/readyz"}, exitFailure, "/readyz: 503 Service Unavailable"},
		{"302 to nowhere is not healthy", []string{"--url", answer(302)}, exitFailure, "302 Found"},
		{"refused", []string{"--url", "http://127.0.0.1:1/healthz"}, exitFailure, "connection refused"},
		{"silent", []string{"--url", hang.URL, "--timeout", "200ms"}, exitFailure, "no answer within 200ms"},
		{"password hidden", []string{"--url", "http://user:hunter2@127.0.0.1:1/"}, exitFailure, "user:xxxxx@"},
		{"no url", nil, exitUsage, "--url is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := c.run(append([]string{"healthcheck"}, tc.args...)...)
			if code != tc.code || out != "" || !strings.Contains(errOut, tc.want) || (tc.want == "") != (errOut == "") || strings.Contains(errOut, "hunter2") {
				t.Fatalf("exit %d (want %d), stdout %q, stderr %q (want %q)", code, tc.code, out, errOut, tc.want)
			}
			if code == exitFailure && strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", errOut)
			}
		})
	}
}

// TestRedisUnreachable runs `previewd status` as a process of its own on a
// Redis nobody listens on: its whole stderr is one line naming the URL
// without its password; go-redis's own pool lines do not show.
func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	for _, args := range []string{"status 0b1c2d3e-0000-4000-8000-000000000000", "list", "enqueue --session S1"} {
		t.Run(args, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "PREVIEWD_TEST_MAIN_ARGS="+args, "PREVIEWD_REDIS_URL=redis://:hunter2@127.0.0.1:1/0")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			exit, _ := err.(*exec.ExitError)
			if exit == nil || exit.ExitCode() != exitFailure {
				t.Fatalf("exit %v, want %d", err, exitFailure)
			}
			name := strings.Fields(args)[0]
			want := regexp.MustCompile(`^previewd ` + name + `: Redis is unreachable at redis://:xxxxx@127\.0\.0\.1:1/0: [^\n]*connection refused\n$`)
			if !want.MatchString(stderr.String()) || stdout.Len() != 0 {
				t.Fatalf("stdout %q\nstderr %q\nwant one line matching %s", stdout.String(), stderr.String(), want)
			}
		})
	}
}

// newJobs creates jobs created at the given times ago, one per session
// code, through the producer with its clock set back.
func newJobs(t *testing.T, r *testutil.Redis, specs ...jobSpec) []store.Job {
	t.Helper()
	var out []store.Job
	for _, s := range specs {
		at := time.Now().Add(-s.age)
		p := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace, Now: func() time.Time { return at }})
		j, err := p.RequestPreview(context.Background(), tasks.PreviewRequest{
			SessionCode: s.session, IdempotencyKey: testutil.RandomHex(8), ExternalID: s.externalID,
			WebhookURL: s.webhookURL,
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	return out
}

type jobSpec struct {
	session    string
	age        time.Duration
	externalID string
	webhookURL string
}

// setJob moves a job as a worker would.
func setJob(t *testing.T, r *testutil.Redis, id string, fn func(j *store.Job, now time.Time)) {
	t.Helper()
	st := store.New(r.Client, store.Options{Namespace: r.Namespace})
	if _, err := st.Update(context.Background(), id, func(j *store.Job, now time.Time) (store.Change, error) {
		fn(j, now)
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func percent(n int) *int { return &n }

// readOnlyEnv is the environment of an operator's shell: Redis and the
// namespace, no worker secrets, and worker settings a worker refuses.
func readOnlyEnv(r *testutil.Redis) map[string]string {
	return map[string]string{
		"PREVIEWD_REDIS_URL":    r.URL,
		"PREVIEWD_NAMESPACE":    r.Namespace,
		"PREVIEWD_CONCURRENCY":  "lots",
		"PREVIEWD_CSM_BASE_URL": "ftp://csm.example",
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	jobs := newJobs(t, r,
		jobSpec{session: "SESSION_A", age: 3 * time.Hour, externalID: "order-1", webhookURL: "https://hooks.example.com/in?token=s3cr3t"},
		jobSpec{session: "SESSION_B", age: 2 * time.Hour},
		jobSpec{session: "SESSION_A", age: 90 * time.Minute},
		jobSpec{session: "SESSION_A", age: 40 * time.Minute},
		jobSpec{session: "SESSION_B", age: 20 * time.Minute},
		jobSpec{session: "SESSION_A", age: time.Minute},
	)
	setJob(t, r, jobs[2].ID, func(j *store.Job, now time.Time) {
		j.SetStatus(store.StatusGenerating, now, "")
		j.SetUpstreamStatus("training_preview", now)
		j.PercentDone = percent(40)
	})
	setJob(t, r, jobs[3].ID, func(j *store.Job, now time.Time) { j.SetStatus(store.StatusGenerating, now, "") })
	setJob(t, r, jobs[5].ID, func(j *store.Job, now time.Time) { j.SetStatus(store.StatusGenerating, now, "") })
	c := cli{t: t, env: readOnlyEnv(r)}
	ids := func(js ...int) []string {
		var out []string
		for _, i := range js {
			out = append(out, jobs[i].ID)
		}
		return out
	}
	cases := []struct {
		name string
		args []string
		want []string // ids, newest first
		more bool     // a "more:" line on stderr
	}{
		{"every job", nil, ids(5, 4, 3, 2, 1, 0), false},
		{"limit", []string{"--limit", "2"}, ids(5, 4), true},
		{"status", []string{"--status", "generating"}, ids(5, 3, 2), false},
		{"session", []string{"--session", "SESSION_A"}, ids(5, 3, 2, 0), false},
		{"older than", []string{"--older-than", "30m"}, ids(3, 2, 1, 0), false},
		{"stuck: generating for over 30 minutes", []string{"--status", "generating", "--older-than", "30m"}, ids(3, 2), false},
		{"all filters and a limit", []string{"--status", "generating", "--session", "SESSION_A", "--older-than", "30m", "--limit", "1"}, ids(3), true},
		{"nothing matches", []string{"--session", "SESSION_Z"}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := c.run(append([]string{"list", "--json"}, tc.args...)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var page api.JobList
			if err := json.Unmarshal([]byte(out), &page); err != nil {
				t.Fatalf("not the API's listing: %v\n%s", err, out)
			}
			var got []string
			for _, j := range page.Items {
				got = append(got, j.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("listed %v, want %v", got, tc.want)
			}
			if more := strings.Contains(errOut, "more: previewd list "); more != tc.more || more != (page.NextCursor != "") {
				t.Errorf("more line %v, next_cursor %q, want %v; stderr %q", more, page.NextCursor, tc.more, errOut)
			}
			if page.Items == nil {
				t.Error("items is null, not []")
			}
			if strings.Contains(out, "s3cr3t") {
				t.Error("the listing shows a webhook URL's query")
			}
			// The table lists the same jobs, one row each.
			table, _, code := c.run(append([]string{"list"}, tc.args...)...)
			rows := strings.Split(strings.TrimSpace(table), "\n")
			if code != exitOK || !strings.HasPrefix(rows[0], "ID ") || len(rows) != len(tc.want)+1 {
				t.Fatalf("table: exit %d\n%s", code, table)
			}
			for i, id := range tc.want {
				if !strings.HasPrefix(rows[i+1], id+" ") {
					t.Errorf("row %d is not job %s: %q", i+1, id, rows[i+1])
				}
			}
		})
	}
	table, _, _ := c.run("list", "--session", "SESSION_A", "--status", "generating", "--older-than", "1h")
	if !regexp.MustCompile(jobs[2].ID + `\s+generating\s+training_preview\s+40%\s+1h30m\s+SESSION_A\s+-\s+-\n`).MatchString(table) {
		t.Errorf("the row of a generating job does not say what it is:\n%s", table)
	}
}

// TestListPagesWithClientFilters walks the listing by its cursors with
// filters the store does not index: every matching job shows exactly once,
// in order, however the matches fall across the store's pages; and a walk
// bounded by the jobs it may read stops and says where to go on.
func TestListPagesWithClientFilters(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	var specs []jobSpec
	for i := range 40 {
		s := jobSpec{session: "SESSION_OTHER", age: time.Duration(40-i) * time.Minute}
		if i%3 == 0 {
			s.session = "SESSION_MINE"
		}
		specs = append(specs, s)
	}
	jobs := newJobs(t, r, specs...)
	var want []string
	for i := len(jobs) - 1; i >= 0; i-- {
		if specs[i].session == "SESSION_MINE" {
			want = append(want, jobs[i].ID)
		}
	}
	p := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace})
	f := jobFilter{session: "SESSION_MINE"}
	for _, tc := range []struct {
		limit, maxScan int
	}{{1, 1000}, {2, 1000}, {5, 1000}, {14, 1000}, {100, 1000}, {3, 7}, {2, 1}} {
		t.Run(fmt.Sprintf("limit %d, read at most %d", tc.limit, tc.maxScan), func(t *testing.T) {
			var got []string
			cursor := ""
			for walks := 0; ; walks++ {
				if walks > 60 {
					t.Fatal("the walk does not end")
				}
				res, err := listJobs(context.Background(), p, f, tc.limit, cursor, tc.maxScan)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.jobs) > tc.limit || res.scanned > tc.maxScan+listPageSize {
					t.Fatalf("%d jobs after reading %d", len(res.jobs), res.scanned)
				}
				if res.stopped && res.scanned < tc.maxScan {
					t.Fatalf("stopped after reading %d jobs, fewer than %d", res.scanned, tc.maxScan)
				}
				for _, j := range res.jobs {
					got = append(got, j.ID)
				}
				if res.next == "" {
					break
				}
				cursor = res.next
			}
			if !slices.Equal(got, want) {
				t.Fatalf("the walk listed %d jobs %v\nwant %d %v", len(got), got, len(want), want)
			}
		})
	}
}

// TestReadOnlyCommandsIgnoreWorkerSettings: an operator's shell without
// the CSM key or the webhook secret, and with worker settings a worker
// refuses, still runs status, list and config.
func TestReadOnlyCommandsIgnoreWorkerSettings(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	job := newJobs(t, r, jobSpec{session: "SESSION_RO", age: time.Minute})[0]
	c := cli{t: t, env: readOnlyEnv(r)}
	cases := []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"status", job.ID}, `"id": "` + job.ID + `"`},
		{[]string{"status", job.ID, "-o", "table"}, job.ID + "  queued"},
		{[]string{"list"}, job.ID},
		{[]string{"config"}, "PREVIEWD_NAMESPACE"},
		{[]string{"endpoints", "list"}, "ID"},
		{[]string{"webhooks", "attempts", "--job", job.ID}, "MESSAGE"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := c.run(tc.args...)
			if code != exitOK || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			if tc.args[0] == "config" {
				if !strings.Contains(errOut, "warning: PREVIEWD_CONCURRENCY (--concurrency)") {
					t.Errorf("config does not warn about what a worker refuses: %q", errOut)
				}
			} else if errOut != "" {
				t.Errorf("stderr %q", errOut)
			}
		})
	}
	// The same environment stops a worker, and a read-only command still
	// refuses a setting it uses.
	if _, errOut, code := c.run("worker"); code != exitUsage || !strings.Contains(errOut, "PREVIEWD_CONCURRENCY") {
		t.Fatalf("worker: exit %d, %q", code, errOut)
	}
	c.env["PREVIEWD_NAMESPACE"] = "no spaces allowed"
	if _, errOut, code := c.run("status", job.ID); code != exitUsage || !strings.Contains(errOut, "PREVIEWD_NAMESPACE") {
		t.Fatalf("status with a bad namespace: exit %d, %q", code, errOut)
	}
}

// TestCancelFinalJob: canceling a job that ended otherwise prints nothing
// on stdout and one line on stderr, and exits 1; canceling a canceled job
// again is repeat-safe.
func TestCancelFinalJob(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	jobs := newJobs(t, r, jobSpec{session: "SESSION_C1"}, jobSpec{session: "SESSION_C2"}, jobSpec{session: "SESSION_C3"}, jobSpec{session: "SESSION_C4"})
	setJob(t, r, jobs[0].ID, func(j *store.Job, now time.Time) { j.Finish(store.StatusDone, now, nil, "") })
	setJob(t, r, jobs[1].ID, func(j *store.Job, now time.Time) {
		j.Finish(store.StatusFailed, now, &store.JobError{Code: store.CodePreviewFailed, Message: "upstream failed"}, "")
	})
	setJob(t, r, jobs[2].ID, func(j *store.Job, now time.Time) {
		j.Finish(store.StatusTimedOut, now, &store.JobError{Code: store.CodeDeadlineExceeded, Message: "too long"}, "")
	})
	c := cli{t: t, env: map[string]string{"PREVIEWD_REDIS_URL": r.URL, "PREVIEWD_NAMESPACE": r.Namespace}}
	for i, status := range []string{"done", "failed", "timed_out"} {
		t.Run(status, func(t *testing.T) {
			out, errOut, code := c.run("cancel", jobs[i].ID)
			want := fmt.Sprintf("previewd cancel: job %s is already %s; nothing to cancel\n", jobs[i].ID, status)
			if code != exitFailure || out != "" || errOut != want {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1, nothing, %q", code, out, errOut, want)
			}
		})
	}
	t.Run("canceled twice", func(t *testing.T) {
		for range 2 {
			out, errOut, code := c.run("cancel", jobs[3].ID, "-o", "table")
			if code != exitOK || !strings.Contains(out, jobs[3].ID+"  canceled") || errOut != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
		}
	})
}

// lockedBuffer is a bytes.Buffer a command writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStatusWatch follows jobs that a test moves as a worker would: one
// line per change, then the exit code of the final status.
func TestStatusWatch(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	cases := []struct {
		name  string
		args  []string
		final func(j *store.Job, now time.Time)
		code  int
		last  *regexp.Regexp // the last line of stdout
		err   string         // stderr
	}{
		{"done", nil, func(j *store.Job, now time.Time) {
			j.SetUpstreamStatus("preview_done", now)
			j.PercentDone = percent(100)
			j.MeshURLs = map[string]string{"glb": "https://cdn.example/m.glb", "obj": "https://cdn.example/m.obj"}
			j.Finish(store.StatusDone, now, nil, "")
		}, exitOK, regexp.MustCompile(`^\S+Z done 100% \(upstream preview_done\) meshes: glb, obj$`), ""},
		{"failed", nil, func(j *store.Job, now time.Time) {
			j.Finish(store.StatusFailed, now, &store.JobError{Code: store.CodePreviewFailed, Message: "upstream said failed"}, "")
		}, exitFailure, regexp.MustCompile(`^\S+Z failed 40% \(upstream training_preview\) preview_failed: upstream said failed$`), "ended failed: preview_failed: upstream said failed"},
		{"json lines", []string{"-o", "json"}, func(j *store.Job, now time.Time) {
			j.Finish(store.StatusCanceled, now, &store.JobError{Code: store.CodeCanceled, Message: "canceled by request"}, "")
		}, exitFailure, regexp.MustCompile(`^\{"id":.*"status":"canceled"`), "ended canceled"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			job := newJobs(t, r, jobSpec{session: fmt.Sprintf("SESSION_W%d", i)})[0]
			var stdout, stderr lockedBuffer
			code := make(chan int, 1)
			go func() {
				args := append([]string{"status", job.ID, "--watch", "--interval", "100ms"}, tc.args...)
				code <- run(context.Background(), args, &stdout, &stderr, func(k string) string { return readOnlyEnv(r)[k] })
			}()
			lines := func() int { return strings.Count(stdout.String(), "\n") }
			testutil.Eventually(t, 10*time.Second, "the first line", func() bool { return lines() == 1 })
			setJob(t, r, job.ID, func(j *store.Job, now time.Time) {
				j.SetStatus(store.StatusGenerating, now, "")
				j.SetUpstreamStatus("training_preview", now)
			})
			testutil.Eventually(t, 10*time.Second, "the generating line", func() bool { return lines() == 2 })
			setJob(t, r, job.ID, func(j *store.Job, _ time.Time) { j.PercentDone = percent(40) })
			testutil.Eventually(t, 10*time.Second, "the percent line", func() bool { return lines() == 3 })
			setJob(t, r, job.ID, tc.final)
			var got int
			select {
			case got = <-code:
			case <-time.After(10 * time.Second):
				t.Fatalf("watch did not end; stdout:\n%s", stdout.String())
			}
			out := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if got != tc.code || len(out) != 4 || !tc.last.MatchString(out[3]) || !strings.Contains(stderr.String(), tc.err) || (tc.err == "") != (stderr.String() == "") {
				t.Fatalf("exit %d (want %d), stdout:\n%s\nstderr %q", got, tc.code, stdout.String(), stderr.String())
			}
			if tc.args == nil {
				for i, want := range []string{" queued", " generating (upstream training_preview)", " generating 40% (upstream training_preview)"} {
					if !strings.HasSuffix(out[i], want) {
						t.Errorf("line %d %q, want it to end %q", i+1, out[i], want)
					}
				}
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		job := newJobs(t, r, jobSpec{session: "SESSION_WT"})[0]
		c := cli{t: t, env: readOnlyEnv(r)}
		out, errOut, code := c.run("status", job.ID, "--watch", "--interval", "100ms", "--timeout", "300ms")
		if code != exitFailure || strings.Count(out, "\n") != 1 || !strings.Contains(errOut, "is still queued after --timeout 300ms") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
}

// TestEnqueueWait runs a real worker: --wait prints the final job and
// exits 0 when it is done, 1 when it failed.
func TestEnqueueWait(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	sim.AddSession("SESSION_WAIT_OK", csmsim.SessionConfig{GenerationTime: time.Second})
	sim.AddSession("SESSION_WAIT_FAIL", csmsim.SessionConfig{GenerationTime: time.Second, Fail: true})
	c := newCLI(t, r, simURL)
	worker, log := startWorkerProcess(t, c)
	defer stopProcess(t, worker)
	cases := []struct {
		session string
		code    int
		status  store.Status
		err     string
	}{
		{"SESSION_WAIT_OK", exitOK, store.StatusDone, ""},
		{"SESSION_WAIT_FAIL", exitFailure, store.StatusFailed, "ended failed"},
	}
	for _, tc := range cases {
		t.Run(tc.session, func(t *testing.T) {
			out, errOut, code := c.run("enqueue", "--session", tc.session, "--wait", "--interval", "200ms", "--timeout", "60s")
			var job store.Job
			if err := json.Unmarshal([]byte(out), &job); err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Fatalf("stdout is not one job: %v %q\nworker log:\n%s", err, out, log.String())
			}
			if code != tc.code || job.Status != tc.status {
				t.Fatalf("exit %d, job %s; stderr %q\nworker log:\n%s", code, job.Status, errOut, log.String())
			}
			// Progress went to stderr, the reason of a failure last.
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if len(lines) < 2 || !strings.Contains(lines[0], " queued") || !strings.Contains(lines[len(lines)-1], tc.err) {
				t.Fatalf("stderr:\n%s", errOut)
			}
		})
	}
}
