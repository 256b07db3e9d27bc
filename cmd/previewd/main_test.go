package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

// TestMain lets a test start this very binary as `previewd <args>` in a
// child process (PREVIEWD_TEST_MAIN_ARGS), to kill it for real.
func TestMain(m *testing.M) {
	if args := os.Getenv("PREVIEWD_TEST_MAIN_ARGS"); args != "" {
		os.Exit(run(context.Background(), strings.Fields(args), os.Stdout, os.Stderr, os.Getenv))
	}
	os.Exit(m.Run())
}

// cli runs previewd in-process with the given environment.
type cli struct {
	t   *testing.T
	env map[string]string
}

func (c cli) run(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut, func(k string) string { return c.env[k] })
	return out.String(), errOut.String(), code
}

func newCLI(t *testing.T, r *testutil.Redis, simURL string) cli {
	secret, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	return cli{t: t, env: map[string]string{
		"PREVIEWD_REDIS_URL":             r.URL,
		"PREVIEWD_NAMESPACE":             r.Namespace,
		"PREVIEWD_CSM_BASE_URL":          simURL,
		"PREVIEWD_CSM_API_KEY":           testutil.SimAPIKey,
		"PREVIEWD_WEBHOOK_SECRET":        secret,
		"PREVIEWD_WEBHOOK_ALLOW_PRIVATE": "true",
		"PREVIEWD_POLL_INTERVAL":         "1s",
		"PREVIEWD_POLL_MAX_INTERVAL":     "1s",
		"PREVIEWD_LOG_LEVEL":             "warn",
	}}
}

// TestDemo runs the README's first command the way a user would, on the
// test Redis, and checks its promised last line.
func TestDemo(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	c := cli{t: t, env: map[string]string{}}
	out, errOut, code := c.run("demo", "--jobs", "10", "--redis-url", r.URL)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	m := regexp.MustCompile(`^demo: 10 jobs, 10 done, 0 failed, 0 timed_out, (\d+) webhooks delivered$`).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last line %q is not the promised summary\n%s", last, out)
	}
	if n, _ := strconv.Atoi(m[1]); n < 20 { // at least accepted and done for each job
		t.Errorf("only %d webhooks delivered for 10 jobs", n)
	}
	// The demo cleans up after itself on a shared Redis.
	if keys := r.Client.Keys(context.Background(), "previewd-demo-*").Val(); len(keys) != 0 {
		t.Errorf("demo left %d keys behind, e.g. %s", len(keys), keys[0])
	}
}

func TestEnqueueStatusCancel(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	sim.AddSession("SESSION_CLI_1", csmsim.SessionConfig{Stuck: true})
	c := newCLI(t, r, simURL)

	out, errOut, code := c.run("enqueue", "--session", "SESSION_CLI_1", "--spin-index", "2", "--bbox", "1,2,3", "--pivot", "0,0,-0.5",
		"--webhook-url", "http://127.0.0.1:9/hook", "--external-id", "ext-1", "--idempotency-key", "cli-key-1")
	if code != 0 {
		t.Fatalf("enqueue exited %d: %s", code, errOut)
	}
	if strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("enqueue printed more than one line: %q", out)
	}
	var job store.Job
	if err := json.Unmarshal([]byte(out), &job); err != nil {
		t.Fatalf("enqueue output is not a job: %v: %q", err, out)
	}
	if job.ID == "" || job.Status != store.StatusQueued || job.SelectedSpinIndex != 2 || job.ExternalID != "ext-1" ||
		len(job.ScaledBBox) != 3 || job.PivotPoint[2] != -0.5 {
		t.Fatalf("enqueued job %+v", job)
	}
	// The same key again: the same job.
	out2, _, _ := c.run("enqueue", "--session", "SESSION_CLI_1", "--spin-index", "2", "--bbox", "1,2,3", "--pivot", "0,0,-0.5",
		"--webhook-url", "http://127.0.0.1:9/hook", "--external-id", "ext-1", "--idempotency-key", "cli-key-1")
	var again store.Job
	_ = json.Unmarshal([]byte(out2), &again)
	if again.ID != job.ID {
		t.Fatalf("repeat enqueue made job %s, want %s", again.ID, job.ID)
	}
	// The key reused for another request: refused.
	_, errOut, code = c.run("enqueue", "--session", "SESSION_CLI_2", "--idempotency-key", "cli-key-1")
	if code == 0 || !strings.Contains(errOut, "idempotency-key") {
		t.Fatalf("reused key: exit %d, %q", code, errOut)
	}

	out, errOut, code = c.run("status", job.ID)
	if code != 0 {
		t.Fatalf("status exited %d: %s", code, errOut)
	}
	var status map[string]any
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "status", "session_code", "unique_trial_key", "history", "deadline", "polls"} {
		if _, ok := status[k]; !ok {
			t.Errorf("status output lacks %q", k)
		}
	}

	out, errOut, code = c.run("cancel", job.ID)
	if code != 0 || !strings.Contains(out, `"status": "canceled"`) {
		t.Fatalf("cancel exited %d: %s %s", code, out, errOut)
	}
	if _, _, code = c.run("cancel", job.ID); code != 0 {
		t.Fatalf("canceling a canceled job exited %d", code)
	}
	if _, errOut, code = c.run("status", "0b1c2d3e-0000-4000-8000-000000000000"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Fatalf("status of an unknown job: exit %d, %q", code, errOut)
	}
}

func TestEnqueueRefusesBadInputNamingTheField(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	c := newCLI(t, r, "http://127.0.0.1:9")
	delete(c.env, "PREVIEWD_WEBHOOK_ALLOW_PRIVATE")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no session", nil, "--session (session_code)"},
		{"session with a slash", []string{"--session", "a/b"}, "--session (session_code)"},
		{"spin index", []string{"--session", "S1", "--spin-index", "4"}, "--spin-index (selected_spin_index)"},
		{"spin url", []string{"--session", "S1", "--spin-url", "ftp://x/y.png"}, "--spin-url (selected_spin)"},
		{"bbox count", []string{"--session", "S1", "--bbox", "1,2"}, "--bbox (scaled_bbox)"},
		{"bbox value", []string{"--session", "S1", "--bbox", "1,0,2"}, "--bbox (scaled_bbox)"},
		{"bbox text", []string{"--session", "S1", "--bbox", "1,x,2"}, "--bbox (scaled_bbox)"},
		{"pivot range", []string{"--session", "S1", "--pivot", "0,0.7,0"}, "--pivot (pivot_point)"},
		{"private webhook", []string{"--session", "S1", "--webhook-url", "http://10.0.0.1/hook"}, "--webhook-url (webhook_url)"},
		{"webhook scheme", []string{"--session", "S1", "--webhook-url", "file:///etc/passwd"}, "--webhook-url (webhook_url)"},
		{"bad setting", []string{"--session", "S1", "--poll-interval", "soon"}, "PREVIEWD_POLL_INTERVAL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := c.run(append([]string{"enqueue"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d naming %s", code, out, errOut, exitUsage, tc.want)
			}
		})
	}
	if keys := r.Keys(t); len(keys) != 0 {
		t.Fatalf("refused requests left keys: %v", keys)
	}
}

// TestWorkerKilledAfterAcceptNeverBillsTwice kills a real worker process
// (SIGKILL) the instant the simulator accepts its preview POST, before the
// answer leaves. The next worker recovers the task and must reconcile, not
// POST again.
func TestWorkerKilledAfterAcceptNeverBillsTwice(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	code := "SESSION_KILL9_" + testutil.RandomHex(4)
	sim.AddSession(code, csmsim.SessionConfig{GenerationTime: 2 * time.Second,
		Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenHang}}})
	c := newCLI(t, r, simURL)

	var mu sync.Mutex
	var victim *exec.Cmd
	killed := make(chan struct{})
	sim.OnPreviewAccepted(func(string) {
		mu.Lock()
		defer mu.Unlock()
		if victim != nil {
			_ = victim.Process.Signal(syscall.SIGKILL)
			_, _ = victim.Process.Wait()
			victim = nil
			close(killed)
		}
	})
	first, firstLog := startWorkerProcess(t, c)
	mu.Lock()
	victim = first
	mu.Unlock()

	out, errOut, exit := c.run("enqueue", "--session", code)
	if exit != 0 {
		t.Fatalf("enqueue: %s", errOut)
	}
	var job store.Job
	_ = json.Unmarshal([]byte(out), &job)
	select {
	case <-killed:
	case <-time.After(20 * time.Second):
		t.Fatalf("the worker never sent the POST; its log:\n%s", firstLog.String())
	}

	// What a crash leaves: the intent, and no outcome.
	p := newProducerFor(r)
	crashed, err := p.Job(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if crashed.Status != store.StatusRequesting || crashed.Request.IntentAt == nil || crashed.Request.Outcome != "" {
		t.Fatalf("after the kill: %s, intent %v, outcome %q", crashed.Status, crashed.Request.IntentAt, crashed.Request.Outcome)
	}
	// asynq recovers a dead worker's task once its lease has been expired
	// for 30 s (checked at start and every minute). Age the lease instead of
	// sleeping through it: the task is then exactly where a minute would
	// have left it.
	ageLease(t, r.Client, tasks.QueuesFor(r.Namespace).Previews, "request:"+job.ID)

	second, secondLog := startWorkerProcess(t, c)
	defer stopProcess(t, second)
	var final store.Job
	testutil.Eventually(t, 30*time.Second, "the job to finish", func() bool {
		final, err = p.Job(context.Background(), job.ID)
		return err == nil && final.Status.Final()
	})
	if final.Status != store.StatusDone {
		t.Fatalf("job ended %s %+v; second worker log:\n%s", final.Status, final.Error, secondLog.String())
	}
	if n := sim.AcceptedPreviews(code); n != 1 {
		t.Fatalf("CSM accepted %d preview POSTs for one job", n)
	}
	if final.Request.Attempts != 1 || final.Request.Outcome != store.OutcomeUnknown {
		t.Fatalf("request bookkeeping: %+v", final.Request)
	}
}

func newProducerFor(r *testutil.Redis) *tasks.Client {
	return tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace})
}

// ageLease makes a task's lease look expired for a minute.
func ageLease(t *testing.T, rdb redis.UniversalClient, queue, taskID string) {
	t.Helper()
	key := "asynq:{" + queue + "}:lease"
	ctx := context.Background()
	if _, err := rdb.ZScore(ctx, key, taskID).Result(); err != nil {
		t.Fatalf("task %s holds no lease in %s: %v", taskID, key, err)
	}
	if err := rdb.ZAdd(ctx, key, redis.Z{Score: float64(time.Now().Add(-time.Minute).Unix()), Member: taskID}).Err(); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for a child's output and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWorkerProcess starts `previewd worker` as a child process.
func startWorkerProcess(t *testing.T, c cli) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PREVIEWD_TEST_MAIN_ARGS=worker")
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	})
	return cmd, log
}

// stopProcess sends SIGTERM and expects a clean exit.
func stopProcess(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("worker exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("worker did not exit within 20s of SIGTERM")
	}
}

// TestSecretsNeverLeak runs jobs through faults with a known API key and
// webhook secret and looks for either in every log line, every CLI output,
// every task payload and every webhook body.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	const apiKey = "csm-live-KEY-5d1e9a7c3b"
	sim, simURL := testutil.NewSim(t, csmsim.Options{APIKey: apiKey})
	rcv := testutil.NewReceiver(t)
	c := newCLI(t, r, simURL)
	c.env["PREVIEWD_CSM_API_KEY"] = apiKey
	c.env["PREVIEWD_LOG_LEVEL"] = "debug"
	secret := c.env["PREVIEWD_WEBHOOK_SECRET"]
	secretBody := strings.TrimPrefix(secret, "whsec_")

	ctx, cancel := context.WithCancel(context.Background())
	var workerLog syncBuffer
	workerDone := make(chan int, 1)
	go func() {
		workerDone <- run(ctx, []string{"worker"}, &workerLog, &workerLog, func(k string) string { return c.env[k] })
	}()
	faults := [][]csmsim.Fault{
		nil,
		{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault429, RetryAfter: time.Second}},
		{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThen502}},
		{{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.Fault401}},
	}
	var outputs []string
	var ids []string
	for i, f := range faults {
		code := "SESSION_SECRET_" + testutil.RandomHex(3)
		sim.AddSession(code, csmsim.SessionConfig{GenerationTime: time.Second, Faults: f})
		out, errOut, exit := c.run("enqueue", "--session", code, "--webhook-url", rcv.URL, "--external-id", strings.Repeat("x", i))
		if exit != 0 {
			t.Fatalf("enqueue: %s", errOut)
		}
		outputs = append(outputs, out, errOut)
		var job store.Job
		_ = json.Unmarshal([]byte(out), &job)
		ids = append(ids, job.ID)
	}
	p := newProducerFor(r)
	testutil.Eventually(t, 60*time.Second, "every job to finish", func() bool {
		for _, id := range ids {
			if j, err := p.Job(context.Background(), id); err != nil || !j.Status.Final() {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		out, errOut, _ := c.run("status", id)
		outputs = append(outputs, out, errOut)
	}
	out, errOut, _ := c.run("config")
	outputs = append(outputs, out, errOut)
	if !strings.Contains(out, "[redacted]") {
		t.Errorf("config output does not show redacted secrets:\n%s", out)
	}
	cancel()
	if code := <-workerDone; code != 0 {
		t.Errorf("worker exited %d", code)
	}
	outputs = append(outputs, workerLog.String())
	for _, d := range rcv.Deliveries() {
		outputs = append(outputs, string(d.Body))
		for k, v := range d.Header {
			if !strings.EqualFold(k, "webhook-signature") {
				outputs = append(outputs, k+": "+strings.Join(v, ","))
			}
		}
	}
	insp := asynq.NewInspectorFromRedisClient(r.Client)
	q := tasks.QueuesFor(r.Namespace)
	for _, queue := range []string{q.Previews, q.Webhooks} {
		for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			insp.ListPendingTasks, insp.ListScheduledTasks, insp.ListRetryTasks, insp.ListArchivedTasks, insp.ListCompletedTasks,
		} {
			infos, _ := list(queue, asynq.PageSize(1000))
			for _, info := range infos {
				outputs = append(outputs, string(info.Payload), info.LastErr)
			}
		}
	}
	if len(rcv.Deliveries()) == 0 || !strings.Contains(workerLog.String(), "CSM refused our API key") {
		t.Fatalf("the run did not exercise webhooks and the auth fault path; worker log:\n%s", workerLog.String())
	}
	for i, o := range outputs {
		for _, s := range []string{apiKey, secret, secretBody} {
			if strings.Contains(o, s) {
				t.Fatalf("a secret appears in output %d:\n%s", i, o)
			}
		}
	}
}

func TestConfigAndSecretCommands(t *testing.T) {
	t.Parallel()
	c := cli{t: t, env: map[string]string{"PREVIEWD_CSM_API_KEY": "k-123456789", "PREVIEWD_REDIS_URL": "redis://:hunter2@127.0.0.1:1/1"}}
	out, _, code := c.run("config", "--json")
	if code != 0 || strings.Contains(out, "k-123456789") || strings.Contains(out, "hunter2") {
		t.Fatalf("config: exit %d\n%s", code, out)
	}
	var entries []map[string]string
	if err := json.Unmarshal([]byte(out), &entries); err != nil || len(entries) < 10 {
		t.Fatalf("config --json: %v, %d entries", err, len(entries))
	}
	out, _, code = c.run("secret")
	if code != 0 {
		t.Fatal("secret failed")
	}
	if _, err := webhook.ParseSecret(strings.TrimSpace(out)); err != nil {
		t.Fatalf("secret printed an unusable secret: %v", err)
	}
	if _, errOut, code := c.run("worker"); code != exitUsage || !strings.Contains(errOut, "PREVIEWD_WEBHOOK_SECRET") {
		t.Fatalf("worker without a webhook secret: exit %d, %q", code, errOut)
	}
	if _, _, code := c.run("frobnicate"); code != exitUsage {
		t.Fatalf("unknown command exit %d", code)
	}
}
