package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// clock is a settable time source for ClientOptions.Now.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
}

// env is a producer Client on an isolated Redis namespace.
type env struct {
	c         *tasks.Client
	r         *testutil.Redis
	q         tasks.Queues
	clock     *testutil.Clock
	inspector *asynq.Inspector
}

func newEnv(t *testing.T, opts tasks.ClientOptions) *env {
	t.Helper()
	r := testutil.NewRedis(t)
	clk := newClock()
	opts.Namespace = r.Namespace
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	return &env{
		c:         tasks.NewClient(r.Client, opts),
		r:         r,
		q:         tasks.QueuesFor(r.Namespace),
		clock:     clk,
		inspector: asynq.NewInspectorFromRedisClient(r.Client),
	}
}

// pending lists the pending tasks of a queue (none when asynq never saw it).
func (e *env) pending(t *testing.T, queue string) []*asynq.TaskInfo {
	t.Helper()
	infos, err := e.inspector.ListPendingTasks(queue, asynq.PageSize(1000))
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("list pending tasks of %s: %v", queue, err)
	}
	return infos
}

// pendingHooks lists the pending tasks of both webhook queues.
func (e *env) pendingHooks(t *testing.T) []*asynq.TaskInfo {
	t.Helper()
	var infos []*asynq.TaskInfo
	for _, q := range e.q.Deliveries() {
		infos = append(infos, e.pending(t, q)...)
	}
	return infos
}

func (e *env) scheduled(t *testing.T, queue string) []*asynq.TaskInfo {
	t.Helper()
	infos, err := e.inspector.ListScheduledTasks(queue, asynq.PageSize(1000))
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("list scheduled tasks of %s: %v", queue, err)
	}
	return infos
}

func taskIDs(infos []*asynq.TaskInfo) []string {
	ids := make([]string, 0, len(infos))
	for _, i := range infos {
		ids = append(ids, i.ID)
	}
	return ids
}

// allKeys lists every key of the namespace: previewd's and asynq's.
func (e *env) allKeys(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	for _, pattern := range []string{e.r.Namespace + ":*", "asynq:{" + e.r.Namespace + ":*"} {
		ks, err := e.r.Client.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, ks...)
	}
	return keys
}

func (e *env) outbox(t *testing.T, jobID string) []store.OutboxEntry {
	t.Helper()
	entries, err := e.c.Store().Outbox(context.Background(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// events decodes the stored events of a job, keyed by id.
func (e *env) events(t *testing.T, jobID string) map[string]store.EventBody {
	t.Helper()
	raw, err := e.c.Store().Events(context.Background(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]store.EventBody, len(raw))
	for id, body := range raw {
		var b store.EventBody
		if err := json.Unmarshal(body, &b); err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		out[id] = b
	}
	return out
}

func (e *env) request(t *testing.T, req tasks.PreviewRequest) store.Job {
	t.Helper()
	j, err := e.c.RequestPreview(context.Background(), req)
	if err != nil {
		t.Fatalf("RequestPreview(%+v): %v", req, err)
	}
	return j
}

func TestRequestPreviewCreatesQueuedJob(t *testing.T) {
	tests := []struct {
		name         string
		deadline     time.Duration
		wantDeadline time.Duration
		req          tasks.PreviewRequest
	}{
		{name: "minimal, default deadline", req: tasks.PreviewRequest{SessionCode: "SESSION_1"}, wantDeadline: 3 * time.Hour},
		{name: "every field, custom deadline", deadline: 90 * time.Minute, wantDeadline: 90 * time.Minute, req: validRequest()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tasks.ClientOptions{JobDeadline: tt.deadline})
			now := e.clock.Now()
			j := e.request(t, tt.req)

			if u, err := uuid.Parse(j.ID); err != nil || u.String() != j.ID {
				t.Errorf("job id %q is not a canonical UUID", j.ID)
			}
			if tt.req.IdempotencyKey != "" && j.ID != tasks.JobID(tt.req, "") {
				t.Errorf("job id %s, want JobID of the key %s", j.ID, tasks.JobID(tt.req, ""))
			}
			if j.Status != store.StatusQueued {
				t.Errorf("status = %s, want queued", j.Status)
			}
			if !j.CreatedAt.Equal(now) || !j.Deadline.Equal(now.Add(tt.wantDeadline)) {
				t.Errorf("created %v deadline %v; want %v and %v", j.CreatedAt, j.Deadline, now, now.Add(tt.wantDeadline))
			}
			if len(j.History) != 1 || j.History[0].Status != store.StatusQueued || !j.History[0].At.Equal(now) {
				t.Errorf("history = %+v, want [queued at %v]", j.History, now)
			}
			if j.SessionCode != tt.req.SessionCode || j.SelectedSpinIndex != tt.req.SelectedSpinIndex ||
				j.SelectedSpin != tt.req.SelectedSpin || j.WebhookURL != tt.req.WebhookURL ||
				j.ExternalID != tt.req.ExternalID || j.IdempotencyKey != tt.req.IdempotencyKey {
				t.Errorf("job %+v does not carry the request %+v", j, tt.req)
			}

			got, err := e.c.Job(context.Background(), j.ID)
			if err != nil {
				t.Fatalf("Job(%s): %v", j.ID, err)
			}
			if got.Status != store.StatusQueued || !got.Deadline.Equal(j.Deadline) || got.SessionCode != j.SessionCode {
				t.Errorf("stored job %+v differs from the returned %+v", got, j)
			}

			pending := e.pending(t, e.q.Previews)
			if len(pending) != 1 {
				t.Fatalf("pending in %s: %q, want one request task", e.q.Previews, taskIDs(pending))
			}
			task := pending[0]
			if task.ID != "request:"+j.ID || task.Type != tasks.TypeRequestPreview {
				t.Errorf("task %s of type %s, want request:%s of type %s", task.ID, task.Type, j.ID, tasks.TypeRequestPreview)
			}
			p, err := tasks.Decode[tasks.RequestPreview](asynq.NewTask(task.Type, task.Payload))
			if err != nil || p != (tasks.RequestPreview{JobID: j.ID, SessionCode: tt.req.SessionCode}) {
				t.Errorf("task payload = %+v, %v", p, err)
			}
			if hooks := e.pendingHooks(t); len(hooks) != 0 {
				t.Errorf("webhook tasks %q for a new job", taskIDs(hooks))
			}
			if ob := e.outbox(t, j.ID); len(ob) != 0 {
				t.Errorf("outbox still holds %d entries after a successful enqueue", len(ob))
			}
		})
	}
}

func TestRequestPreviewIdempotency(t *testing.T) {
	base := tasks.PreviewRequest{SessionCode: "SESSION_1", SelectedSpinIndex: 1, ExternalID: "ext-1"}
	with := func(mod func(r *tasks.PreviewRequest)) tasks.PreviewRequest {
		r := base
		r.ScaledBBox = []float64{1, 2, 3}
		mod(&r)
		return r
	}
	tests := []struct {
		name         string
		first        tasks.PreviewRequest
		second       tasks.PreviewRequest
		wantSame     bool
		wantConflict bool
	}{
		{name: "same key twice", first: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1" }),
			second: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1" }), wantSame: true},
		{name: "same key, other session", first: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1" }),
			second: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1"; r.SessionCode = "SESSION_2" }), wantSame: true, wantConflict: true},
		{name: "same key, other external id", first: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1" }),
			second: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1"; r.ExternalID = "ext-2" }), wantSame: true, wantConflict: true},
		{name: "same key, other bbox", first: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1" }),
			second: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1"; r.ScaledBBox = []float64{1, 2, 4} }), wantSame: true, wantConflict: true},
		{name: "different keys, same content", first: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1" }),
			second: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k2" })},
		{name: "no key, identical content", first: with(func(*tasks.PreviewRequest) {}), second: with(func(*tasks.PreviewRequest) {}), wantSame: true},
		{name: "no key, other spin index", first: with(func(*tasks.PreviewRequest) {}),
			second: with(func(r *tasks.PreviewRequest) { r.SelectedSpinIndex = 2 })},
		{name: "no key, other external id", first: with(func(*tasks.PreviewRequest) {}),
			second: with(func(r *tasks.PreviewRequest) { r.ExternalID = "ext-2" })},
		{name: "no key, bbox given vs absent", first: with(func(*tasks.PreviewRequest) {}),
			second: with(func(r *tasks.PreviewRequest) { r.ScaledBBox = nil })},
		{name: "key vs no key, same content", first: with(func(*tasks.PreviewRequest) {}),
			second: with(func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k1" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tasks.ClientOptions{})
			ctx := context.Background()
			first := e.request(t, tt.first)
			e.clock.Advance(time.Minute)
			second, err := e.c.RequestPreview(ctx, tt.second)
			if tt.wantConflict {
				if !errors.Is(err, tasks.ErrIdempotencyConflict) {
					t.Fatalf("second request: err = %v, want ErrIdempotencyConflict", err)
				}
			} else if err != nil {
				t.Fatalf("second request: %v", err)
			}
			if (second.ID == first.ID) != tt.wantSame {
				t.Errorf("ids %s and %s: same = %v, want %v", first.ID, second.ID, second.ID == first.ID, tt.wantSame)
			}
			if tt.wantSame {
				// The existing job, untouched: created by the first call.
				if !second.CreatedAt.Equal(first.CreatedAt) || second.SessionCode != first.SessionCode || second.ExternalID != first.ExternalID {
					t.Errorf("second call returned %+v, want the first job %+v", second, first)
				}
			}
			wantTasks := map[string]bool{"request:" + first.ID: true}
			if !tt.wantSame {
				wantTasks["request:"+second.ID] = true
			}
			got := taskIDs(e.pending(t, e.q.Previews))
			if len(got) != len(wantTasks) {
				t.Fatalf("pending tasks %q, want %d", got, len(wantTasks))
			}
			for _, id := range got {
				if !wantTasks[id] {
					t.Errorf("unexpected pending task %s", id)
				}
			}
		})
	}
}

func TestRequestPreviewConcurrentSameRequest(t *testing.T) {
	for _, tt := range []struct {
		name string
		key  string
	}{
		{name: "with key", key: "concurrent-1"},
		{name: "derived key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tasks.ClientOptions{})
			req := tasks.PreviewRequest{SessionCode: "SESSION_C", IdempotencyKey: tt.key, WebhookURL: "https://8.8.8.8/h"}
			const n = 20
			ids := make([]string, n)
			errs := make([]error, n)
			var start, wg sync.WaitGroup
			start.Add(1)
			for i := range n {
				wg.Go(func() {
					start.Wait()
					j, err := e.c.RequestPreview(context.Background(), req)
					ids[i], errs[i] = j.ID, err
				})
			}
			start.Done()
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Errorf("call %d: %v", i, errs[i])
				}
				if ids[i] != ids[0] {
					t.Errorf("call %d got job %s, call 0 got %s", i, ids[i], ids[0])
				}
			}
			if got := taskIDs(e.pending(t, e.q.Previews)); len(got) != 1 || got[0] != "request:"+ids[0] {
				t.Errorf("pending tasks %q, want exactly request:%s", got, ids[0])
			}
			if ob := e.outbox(t, ids[0]); len(ob) != 0 {
				t.Errorf("outbox holds %d entries", len(ob))
			}
		})
	}
}

func TestRequestPreviewInvalidCreatesNothing(t *testing.T) {
	tests := []struct {
		name         string
		req          tasks.PreviewRequest
		allowPrivate bool
		want         []string
	}{
		{name: "empty request", req: tasks.PreviewRequest{}, want: []string{"session_code"}},
		{name: "bad spin index", req: tasks.PreviewRequest{SessionCode: "S", SelectedSpinIndex: 9}, want: []string{"selected_spin_index"}},
		{name: "bad pivot and key", req: tasks.PreviewRequest{SessionCode: "S", PivotPoint: []float64{1, 0, 0}, IdempotencyKey: "a\x00"}, want: []string{"pivot_point", "idempotency_key"}},
		{name: "loopback webhook", req: tasks.PreviewRequest{SessionCode: "S", WebhookURL: "http://127.0.0.1:9/h"}, want: []string{"webhook_url"}},
		{name: "syntactically bad webhook even when private allowed", req: tasks.PreviewRequest{SessionCode: "S", WebhookURL: "gopher://127.0.0.1/"}, allowPrivate: true, want: []string{"webhook_url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tasks.ClientOptions{AllowPrivateWebhooks: tt.allowPrivate})
			j, err := e.c.RequestPreview(context.Background(), tt.req)
			if got := invalidFields(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("invalid fields %q, want %q", got, tt.want)
			}
			if j.ID != "" {
				t.Errorf("returned a job %s with a validation error", j.ID)
			}
			if keys := e.allKeys(t); len(keys) != 0 {
				t.Errorf("a refused request wrote keys %q", keys)
			}
		})
	}
}

func TestRequestPreviewPrivateWebhooks(t *testing.T) {
	tests := []struct {
		name         string
		url          string
		allowPrivate bool
		wantRefused  bool
	}{
		{name: "loopback refused", url: "http://127.0.0.1:8080/hooks", wantRefused: true},
		{name: "private refused", url: "https://10.0.0.1/hooks", wantRefused: true},
		{name: "localhost refused", url: "http://localhost:8080/hooks", wantRefused: true},
		{name: "ipv6 loopback refused", url: "http://[::1]:8080/hooks", wantRefused: true},
		{name: "metadata address refused", url: "http://169.254.169.254/latest", wantRefused: true},
		{name: "public accepted", url: "https://8.8.8.8/hooks"},
		{name: "loopback allowed", url: "http://127.0.0.1:8080/hooks", allowPrivate: true},
		{name: "private allowed", url: "https://10.0.0.1/hooks", allowPrivate: true},
		{name: "localhost allowed", url: "http://localhost:8080/hooks", allowPrivate: true},
		{name: "public accepted when private allowed", url: "https://8.8.8.8/hooks", allowPrivate: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tasks.ClientOptions{AllowPrivateWebhooks: tt.allowPrivate})
			j, err := e.c.RequestPreview(context.Background(), tasks.PreviewRequest{SessionCode: "S", WebhookURL: tt.url})
			if tt.wantRefused {
				if got := invalidFields(t, err); !slices.Equal(got, []string{"webhook_url"}) {
					t.Errorf("invalid fields %q, want [webhook_url]", got)
				}
				if keys := e.allKeys(t); len(keys) != 0 {
					t.Errorf("a refused request wrote keys %q", keys)
				}
				return
			}
			if err != nil {
				t.Fatalf("RequestPreview: %v", err)
			}
			if j.WebhookURL != tt.url {
				t.Errorf("webhook url = %q, want %q", j.WebhookURL, tt.url)
			}
		})
	}
}

// eventIDPattern is the shape of a new event's id: evt_, then its job's 32
// hex digits and 16 of its fact's hash (older events had 32 in all).
var eventIDPattern = regexp.MustCompile(`^evt_[0-9a-f]{48}$`)

func TestCancelQueuedJob(t *testing.T) {
	tests := []struct {
		name    string
		webhook string
	}{
		{name: "without webhook"},
		{name: "with webhook", webhook: "http://127.0.0.1:9/hooks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tasks.ClientOptions{AllowPrivateWebhooks: true})
			ctx := context.Background()
			created := e.request(t, tasks.PreviewRequest{SessionCode: "S", WebhookURL: tt.webhook})
			e.clock.Advance(time.Minute)
			cancelAt := e.clock.Now()

			j, err := e.c.Cancel(ctx, created.ID)
			if err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			if j.ID != created.ID || j.Status != store.StatusCanceled {
				t.Fatalf("Cancel returned %s in status %s, want %s canceled", j.ID, j.Status, created.ID)
			}
			if j.Error == nil || j.Error.Code != store.CodeCanceled {
				t.Errorf("error = %+v, want code %q", j.Error, store.CodeCanceled)
			}
			if j.FinishedAt == nil || !j.FinishedAt.Equal(cancelAt) {
				t.Errorf("finished at %v, want %v", j.FinishedAt, cancelAt)
			}
			if n := len(j.History); n != 2 || j.History[0].Status != store.StatusQueued || j.History[1].Status != store.StatusCanceled {
				t.Errorf("history = %+v, want [queued canceled]", j.History)
			}
			stored, err := e.c.Job(ctx, created.ID)
			if err != nil || stored.Status != store.StatusCanceled {
				t.Errorf("stored job: %s, %v; want canceled", stored.Status, err)
			}

			events := e.events(t, created.ID)
			if len(events) != 1 {
				t.Fatalf("stored events %v, want one preview.canceled", events)
			}
			var eventID string
			for id, body := range events {
				eventID = id
				if !eventIDPattern.MatchString(id) {
					t.Errorf("event id %q is not evt_<48 hex>", id)
				}
				if body.Type != store.EventCanceled || body.Data.ID != created.ID || body.Data.Status != store.StatusCanceled {
					t.Errorf("event %s: type %s for job %s in %s", id, body.Type, body.Data.ID, body.Data.Status)
				}
			}

			// One fan-out task per event, with or without a webhook_url:
			// endpoints may want the event too.
			hooks := e.pending(t, e.q.FinalWebhooks)
			if len(hooks) != 1 {
				t.Fatalf("webhook tasks %q, want one fan-out", taskIDs(hooks))
			}
			want := tasks.FanoutWebhook{JobID: created.ID, EventID: eventID, EventType: string(store.EventCanceled)}
			if hooks[0].ID != want.TaskID() {
				t.Errorf("webhook task id %s, want %s", hooks[0].ID, want.TaskID())
			}
			p, err := tasks.Decode[tasks.FanoutWebhook](asynq.NewTask(hooks[0].Type, hooks[0].Payload))
			if err != nil || p != want {
				t.Errorf("fan-out payload %+v, %v; want %+v", p, err, want)
			}
			if ob := e.outbox(t, created.ID); len(ob) != 0 {
				t.Errorf("outbox holds %d entries after Cancel", len(ob))
			}

			// Canceling again changes nothing and is not an error.
			e.clock.Advance(time.Minute)
			again, err := e.c.Cancel(ctx, created.ID)
			if err != nil {
				t.Fatalf("second Cancel: %v", err)
			}
			if again.Status != store.StatusCanceled || len(again.History) != 2 || !again.UpdatedAt.Equal(j.UpdatedAt) {
				t.Errorf("second Cancel returned status %s, history %d, updated %v; want the canceled job unchanged", again.Status, len(again.History), again.UpdatedAt)
			}
			if n := len(e.events(t, created.ID)); n != 1 {
				t.Errorf("%d events after a second Cancel, want 1", n)
			}
			if n := len(e.pending(t, e.q.FinalWebhooks)); tt.webhook != "" && n != 1 {
				t.Errorf("%d webhook tasks after a second Cancel, want 1", n)
			}
		})
	}
}

func TestCancelFinalJob(t *testing.T) {
	for _, final := range []store.Status{store.StatusDone, store.StatusFailed, store.StatusTimedOut} {
		t.Run(string(final), func(t *testing.T) {
			e := newEnv(t, tasks.ClientOptions{AllowPrivateWebhooks: true})
			ctx := context.Background()
			created := e.request(t, tasks.PreviewRequest{SessionCode: "S", WebhookURL: "http://127.0.0.1:9/h"})
			for _, s := range []store.Status{store.StatusGenerating, final} {
				if _, err := e.c.Store().Update(ctx, created.ID, func(j *store.Job, now time.Time) (store.Change, error) {
					j.SetStatus(s, now, "test")
					return store.Change{}, nil
				}); err != nil {
					t.Fatalf("move job to %s: %v", s, err)
				}
			}

			j, err := e.c.Cancel(ctx, created.ID)
			if !errors.Is(err, tasks.ErrFinal) {
				t.Fatalf("Cancel of a %s job: err = %v, want ErrFinal", final, err)
			}
			if j.Status != final {
				t.Errorf("Cancel returned status %s, want %s", j.Status, final)
			}
			stored, err := e.c.Job(ctx, created.ID)
			if err != nil || stored.Status != final || stored.Error != nil {
				t.Errorf("stored job %s (error %+v), %v; want %s unchanged", stored.Status, stored.Error, err, final)
			}
			if ev := e.events(t, created.ID); len(ev) != 0 {
				t.Errorf("Cancel of a final job stored events %v", ev)
			}
			if hooks := e.pendingHooks(t); len(hooks) != 0 {
				t.Errorf("Cancel of a final job enqueued %q", taskIDs(hooks))
			}
		})
	}
}

func TestCancelAndJobNotFound(t *testing.T) {
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	for _, tt := range []struct{ name, id string }{
		{name: "unknown uuid", id: uuid.NewString()},
		{name: "not a uuid", id: "job-1"},
		{name: "empty", id: ""},
		{name: "key pattern", id: "*"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.c.Cancel(ctx, tt.id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Cancel(%q) = %v, want ErrNotFound", tt.id, err)
			}
			if _, err := e.c.Job(ctx, tt.id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Job(%q) = %v, want ErrNotFound", tt.id, err)
			}
		})
	}
	if keys := e.allKeys(t); len(keys) != 0 {
		t.Errorf("lookups of unknown jobs wrote keys %q", keys)
	}
}

// addOutbox commits entries to a job's outbox without changing its status,
// as a worker's state change would.
func addOutbox(t *testing.T, e *env, jobID string, entries ...store.OutboxEntry) {
	t.Helper()
	if _, err := e.c.Store().Update(context.Background(), jobID, func(j *store.Job, now time.Time) (store.Change, error) {
		return store.Change{Outbox: entries}, nil
	}); err != nil {
		t.Fatalf("add outbox entries: %v", err)
	}
}

func TestEnqueuerFlush(t *testing.T) {
	future := time.Now().Add(time.Hour).Truncate(time.Second)
	tests := []struct {
		name          string
		entries       func(j store.Job) []store.OutboxEntry
		wantMalformed bool
		wantPending   []string // task ids, besides request:<id>, per queue "previews" or "webhooks"
		wantScheduled []string
	}{
		{
			name: "nothing to flush",
		},
		{
			name: "a poll",
			entries: func(j store.Job) []store.OutboxEntry {
				return []store.OutboxEntry{tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 1}, time.Time{})}
			},
			wantPending: []string{"poll:%s:1"},
		},
		{
			name: "a scheduled poll",
			entries: func(j store.Job) []store.OutboxEntry {
				return []store.OutboxEntry{tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 2}, future)}
			},
			wantScheduled: []string{"poll:%s:2"},
		},
		{
			name: "a task asynq already holds is acknowledged",
			entries: func(j store.Job) []store.OutboxEntry {
				return []store.OutboxEntry{tasks.OutboxEntry(tasks.RequestPreview{JobID: j.ID, SessionCode: j.SessionCode}, time.Time{})}
			},
		},
		{
			name: "a corrupt entry is dropped, the good one enqueued",
			entries: func(j store.Job) []store.OutboxEntry {
				return []store.OutboxEntry{
					{ID: "corrupt", Data: []byte("not json")},
					tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 3}, time.Time{}),
				}
			},
			wantMalformed: true,
			wantPending:   []string{"poll:%s:3"},
		},
		{
			name: "an entry of an unknown task type is dropped",
			entries: func(j store.Job) []store.OutboxEntry {
				return []store.OutboxEntry{{ID: "x", Data: []byte(`{"type":"preview:other","payload":{}}`)}}
			},
			wantMalformed: true,
		},
		{
			name: "an entry with an invalid payload is dropped",
			entries: func(j store.Job) []store.OutboxEntry {
				return []store.OutboxEntry{{ID: "y", Data: []byte(`{"type":"preview:poll","payload":{"job_id":"` + j.ID + `","session_code":"S","seq":0}}`)}}
			},
			wantMalformed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tasks.ClientOptions{})
			ctx := context.Background()
			j := e.request(t, tasks.PreviewRequest{SessionCode: "S"})
			if tt.entries != nil {
				addOutbox(t, e, j.ID, tt.entries(j)...)
			}
			enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(e.r.Client), e.c.Store(), e.q)

			err := enq.Flush(ctx, j.ID)
			if tt.wantMalformed {
				if !errors.Is(err, tasks.ErrMalformed) {
					t.Errorf("first Flush = %v, want ErrMalformed", err)
				}
			} else if err != nil {
				t.Errorf("first Flush: %v", err)
			}
			if err := enq.Flush(ctx, j.ID); err != nil {
				t.Errorf("second Flush: %v", err)
			}
			if ob := e.outbox(t, j.ID); len(ob) != 0 {
				t.Errorf("outbox still holds %d entries", len(ob))
			}

			wantPending := map[string]bool{"request:" + j.ID: true}
			for _, f := range tt.wantPending {
				wantPending[sprintfID(f, j.ID)] = true
			}
			checkIDs(t, "pending", taskIDs(append(e.pending(t, e.q.Previews), e.pending(t, e.q.Polls)...)), wantPending)
			wantScheduled := map[string]bool{}
			for _, f := range tt.wantScheduled {
				wantScheduled[sprintfID(f, j.ID)] = true
			}
			scheduled := append(e.scheduled(t, e.q.Previews), e.scheduled(t, e.q.Polls)...)
			checkIDs(t, "scheduled", taskIDs(scheduled), wantScheduled)
			for _, s := range scheduled {
				if !s.NextProcessAt.Equal(future) {
					t.Errorf("scheduled %s at %v, want %v", s.ID, s.NextProcessAt, future)
				}
			}
		})
	}
}

func sprintfID(format, id string) string { return strings.ReplaceAll(format, "%s", id) }

func checkIDs(t *testing.T, what string, got []string, want map[string]bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s tasks %q, want %d: %v", what, got, len(want), want)
		return
	}
	for _, id := range got {
		if !want[id] {
			t.Errorf("unexpected %s task %s (want %v)", what, id, want)
		}
	}
}

func TestEmit(t *testing.T) {
	tests := []struct {
		name        string
		webhook     string
		types       []store.EventType
		wantEntries int
	}{
		{name: "no types", webhook: "https://8.8.8.8/h"},
		{name: "one event, no webhook", types: []store.EventType{store.EventAccepted}, wantEntries: 1},
		{name: "one event, webhook", webhook: "https://8.8.8.8/h", types: []store.EventType{store.EventDone}, wantEntries: 1},
		{name: "two events, webhook", webhook: "https://8.8.8.8/h", types: []store.EventType{store.EventProgress, store.EventDone}, wantEntries: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &store.Job{ID: testJobID, SessionCode: "S", WebhookURL: tt.webhook}
			change := store.Change{Outbox: []store.OutboxEntry{{ID: "existing"}}}
			tasks.Emit(&change, j, tt.types...)
			if len(change.Events) != len(tt.types) {
				t.Fatalf("events %+v, want %d", change.Events, len(tt.types))
			}
			seen := map[string]bool{}
			for i, ev := range change.Events {
				if ev.Type != tt.types[i] || !eventIDPattern.MatchString(ev.ID) || seen[ev.ID] {
					t.Errorf("event %d = %+v", i, ev)
				}
				seen[ev.ID] = true
			}
			if len(change.Outbox) != 1+tt.wantEntries || change.Outbox[0].ID != "existing" {
				t.Fatalf("outbox %d entries, want the existing one plus %d", len(change.Outbox), tt.wantEntries)
			}
			for i, entry := range change.Outbox[1:] {
				want := tasks.FanoutWebhook{JobID: j.ID, EventID: change.Events[i].ID, EventType: string(tt.types[i])}
				if entry.ID != want.TaskID() {
					t.Errorf("outbox entry %d id %s, want %s", i, entry.ID, want.TaskID())
				}
			}
		})
	}
}

func TestEventID(t *testing.T) {
	seen := map[string]bool{}
	for i := range 1000 {
		id := tasks.EventID(testJobID, "fact/"+strconv.Itoa(i))
		if !eventIDPattern.MatchString(id) {
			t.Fatalf("EventID() = %q, not evt_<48 hex>", id)
		}
		if jobID, ok := store.JobOfEvent(id); !ok || jobID != testJobID {
			t.Fatalf("JobOfEvent(%q) = %q, %v; want %s, true", id, jobID, ok, testJobID)
		}
		if seen[id] {
			t.Fatalf("EventID repeated %q for another fact", id)
		}
		seen[id] = true
		if err := (tasks.DeliverWebhook{JobID: testJobID, EventID: id, EventType: "x", Destination: "job"}).Validate(); err != nil {
			t.Fatalf("an event id does not validate in a payload: %v", err)
		}
	}
}

// TestEventIDOfAJobIDNotCanonical: an id that carries a job must give back
// exactly the job id it was made from, or its messages would be looked for
// under another job; a job id that is not a canonical UUID (tasks.JobID
// makes none) gets the older shape, which carries none.
func TestEventIDOfAJobIDNotCanonical(t *testing.T) {
	for _, jobID := range []string{strings.ToUpper(testJobID), "{" + testJobID + "}", "job-1", ""} {
		id := tasks.EventID(jobID, "final")
		if !regexp.MustCompile(`^evt_[0-9a-f]{32}$`).MatchString(id) {
			t.Errorf("EventID(%q) = %q, want the older shape evt_<32 hex>", jobID, id)
		}
		if got, ok := store.JobOfEvent(id); ok {
			t.Errorf("JobOfEvent(EventID(%q)) = %q, want no job", jobID, got)
		}
	}
}

func TestOutboxEntryID(t *testing.T) {
	for _, p := range []tasks.Payload{
		tasks.RequestPreview{JobID: testJobID, SessionCode: "S"},
		tasks.PollPreview{JobID: testJobID, SessionCode: "S", Seq: 4},
		tasks.DeliverWebhook{JobID: testJobID, EventID: testEventID, EventType: "preview.done", Destination: "job"},
	} {
		if got := tasks.OutboxEntry(p, time.Time{}).ID; got != p.TaskID() {
			t.Errorf("OutboxEntry(%T).ID = %q, want %q", p, got, p.TaskID())
		}
	}
}

// TestEmitNamesEachFactOnce: an event's id is derived from the fact it
// announces, so the same change applied twice emits the same id (one
// webhook-id for receivers to deduplicate), and different facts differ.
func TestEmitNamesEachFactOnce(t *testing.T) {
	emit := func(j store.Job, typ store.EventType) string {
		var c store.Change
		tasks.Emit(&c, &j, typ)
		if len(c.Events) != 1 || len(c.Outbox) != 1 {
			t.Fatalf("Emit made %d events and %d outbox entries, want 1 and 1", len(c.Events), len(c.Outbox))
		}
		if !eventIDPattern.MatchString(c.Events[0].ID) {
			t.Fatalf("event id %q, not evt_<48 hex>", c.Events[0].ID)
		}
		return c.Events[0].ID
	}
	job := store.Job{ID: testJobID, Polls: 3}
	other := store.Job{ID: "0b9c7a52-6c4e-5f0e-9a55-3a4f1f2a8d11", Polls: 3}
	later := job
	later.Polls = 4
	cases := []struct {
		name        string
		a, b        string
		wantSameIDs bool
	}{
		{"accepted, twice", emit(job, store.EventAccepted), emit(job, store.EventAccepted), true},
		{"the final event, whichever", emit(job, store.EventDone), emit(job, store.EventCanceled), true},
		{"progress of one poll, twice", emit(job, store.EventProgress), emit(job, store.EventProgress), true},
		{"progress of two polls", emit(job, store.EventProgress), emit(later, store.EventProgress), false},
		{"accepted and final", emit(job, store.EventAccepted), emit(job, store.EventDone), false},
		{"two jobs", emit(job, store.EventAccepted), emit(other, store.EventAccepted), false},
	}
	for _, tc := range cases {
		if (tc.a == tc.b) != tc.wantSameIDs {
			t.Errorf("%s: ids %s and %s, want same=%v", tc.name, tc.a, tc.b, tc.wantSameIDs)
		}
	}
}
