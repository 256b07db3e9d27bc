package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/tasks"
)

const (
	testJobID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	// testEventID carries testJobID, as every new event id does.
	testEventID = "evt_6ba7b8109dad11d180b400c04fd430c80123456789abcdef"
	// testLegacyEventID has the shape of events made before ids carried
	// their job, which tasks in flight at an upgrade still carry.
	testLegacyEventID = "evt_0123456789abcdef0123456789abcdef"
)

func TestQueuesFor(t *testing.T) {
	q := tasks.QueuesFor("ns1")
	// Previews and Webhooks keep their names across versions: tasks already
	// enqueued there must be served after an upgrade.
	want := tasks.Queues{Polls: "ns1:polls", Previews: "ns1:previews", FinalWebhooks: "ns1:webhooks:final", Webhooks: "ns1:webhooks"}
	if q != want {
		t.Errorf("QueuesFor(ns1) = %+v, want %+v", q, want)
	}
	if got := q.All(); !slices.Equal(got, []string{want.Polls, want.Previews, want.FinalWebhooks, want.Webhooks}) {
		t.Errorf("All() = %q", got)
	}
}

func TestPayloadTypesAndIDs(t *testing.T) {
	tests := []struct {
		name     string
		p        tasks.Payload
		wantType string
		wantID   string
	}{
		{name: "request", p: tasks.RequestPreview{JobID: testJobID, SessionCode: "S"},
			wantType: tasks.TypeRequestPreview, wantID: "request:" + testJobID},
		{name: "poll", p: tasks.PollPreview{JobID: testJobID, SessionCode: "S", Seq: 12},
			wantType: tasks.TypePollPreview, wantID: "poll:" + testJobID + ":12"},
		{name: "webhook", p: tasks.DeliverWebhook{JobID: testJobID, EventID: testEventID, EventType: "preview.done", Destination: tasks.DestinationJob},
			wantType: tasks.TypeDeliverWebhook, wantID: "webhook:" + testEventID + ":job"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.TaskType(); got != tt.wantType {
				t.Errorf("TaskType() = %q, want %q", got, tt.wantType)
			}
			if got := tt.p.TaskID(); got != tt.wantID {
				t.Errorf("TaskID() = %q, want %q", got, tt.wantID)
			}
			if err := tt.p.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}

// decodeAny decodes raw as a task of the given type into the payload type
// that owns taskType, so one table can cover every payload.
func decodeAny(t *testing.T, want tasks.Payload, taskType string, raw []byte) (tasks.Payload, error) {
	t.Helper()
	task := asynq.NewTask(taskType, raw)
	switch want.(type) {
	case tasks.RequestPreview:
		return tasks.Decode[tasks.RequestPreview](task)
	case tasks.PollPreview:
		return tasks.Decode[tasks.PollPreview](task)
	case tasks.DeliverWebhook:
		return tasks.Decode[tasks.DeliverWebhook](task)
	case tasks.FanoutWebhook:
		return tasks.Decode[tasks.FanoutWebhook](task)
	}
	t.Fatalf("no decoder for %T", want)
	return nil, nil
}

func TestDecode(t *testing.T) {
	req := tasks.RequestPreview{JobID: testJobID, SessionCode: "SESSION_1"}
	poll := tasks.PollPreview{JobID: testJobID, SessionCode: "SESSION_1", Seq: 3}
	hook := tasks.DeliverWebhook{JobID: testJobID, EventID: testEventID, EventType: "preview.done", Destination: "job"}
	// pad makes a payload of exactly n bytes: valid JSON followed by spaces.
	pad := func(raw string, n int) string { return raw + strings.Repeat(" ", n-len(raw)) }

	const reqJSON = `{"job_id":"` + testJobID + `","session_code":"SESSION_1"}`
	const pollJSON = `{"job_id":"` + testJobID + `","session_code":"SESSION_1","seq":3}`
	const hookJSON = `{"job_id":"` + testJobID + `","event_id":"` + testEventID + `","event_type":"preview.done","destination":"job"}`

	tests := []struct {
		name     string
		want     tasks.Payload // the payload type decoded into, and the value when valid
		taskType string        // default want.TaskType()
		raw      string
		wantErr  bool
	}{
		{name: "request valid", want: req, raw: reqJSON},
		{name: "request valid, whitespace around", want: req, raw: " \n" + reqJSON + "\n\t "},
		{name: "request valid, keys reordered", want: req, raw: `{"session_code":"SESSION_1","job_id":"` + testJobID + `"}`},
		{name: "request valid at 16 KiB", want: req, raw: pad(reqJSON, 16<<10)},
		{name: "poll valid", want: poll, raw: pollJSON},
		{name: "webhook valid", want: hook, raw: hookJSON},
		{name: "webhook valid, an older event id", want: tasks.DeliverWebhook{JobID: testJobID, EventID: testLegacyEventID, EventType: "preview.done", Destination: "job"},
			raw: strings.Replace(hookJSON, testEventID, testLegacyEventID, 1)},

		{name: "request: wrong task type", want: req, taskType: tasks.TypePollPreview, raw: reqJSON, wantErr: true},
		{name: "poll: wrong task type", want: poll, taskType: tasks.TypeRequestPreview, raw: pollJSON, wantErr: true},
		{name: "webhook: wrong task type", want: hook, taskType: "webhook:other", raw: hookJSON, wantErr: true},
		{name: "request: unknown field", want: req, raw: `{"job_id":"` + testJobID + `","session_code":"SESSION_1","api_key":"x"}`, wantErr: true},
		{name: "poll: unknown field", want: poll, raw: `{"job_id":"` + testJobID + `","session_code":"SESSION_1","seq":3,"extra":1}`, wantErr: true},
		{name: "webhook: unknown field", want: hook, raw: strings.TrimSuffix(hookJSON, "}") + `,"secret":"s"}`, wantErr: true},
		{name: "request: trailing object", want: req, raw: reqJSON + `{}`, wantErr: true},
		{name: "request: trailing garbage", want: req, raw: reqJSON + `x`, wantErr: true},
		{name: "poll: trailing number", want: poll, raw: pollJSON + ` 1`, wantErr: true},
		{name: "webhook: second payload", want: hook, raw: hookJSON + hookJSON, wantErr: true},
		{name: "request: not JSON", want: req, raw: `job_id=1`, wantErr: true},
		{name: "request: empty", want: req, raw: ``, wantErr: true},
		{name: "request: null", want: req, raw: `null`, wantErr: true},
		{name: "request: array", want: req, raw: `[]`, wantErr: true},
		{name: "request: truncated", want: req, raw: reqJSON[:len(reqJSON)-2], wantErr: true},
		{name: "request: oversized", want: req, raw: pad(reqJSON, 16<<10+1), wantErr: true},
		{name: "webhook: oversized", want: hook, raw: pad(hookJSON, 64<<10), wantErr: true},
		{name: "request: job id not a UUID", want: req, raw: `{"job_id":"job-1","session_code":"SESSION_1"}`, wantErr: true},
		{name: "request: job id in braces", want: req, raw: `{"job_id":"{` + testJobID + `}","session_code":"SESSION_1"}`, wantErr: true},
		{name: "request: job id as urn", want: req, raw: `{"job_id":"urn:uuid:` + testJobID + `","session_code":"SESSION_1"}`, wantErr: true},
		{name: "request: job id without dashes", want: req, raw: `{"job_id":"` + strings.ReplaceAll(testJobID, "-", "") + `","session_code":"SESSION_1"}`, wantErr: true},
		{name: "request: job id missing", want: req, raw: `{"session_code":"SESSION_1"}`, wantErr: true},
		{name: "request: job id a number", want: req, raw: `{"job_id":1,"session_code":"SESSION_1"}`, wantErr: true},
		{name: "request: session code invalid", want: req, raw: `{"job_id":"` + testJobID + `","session_code":"../etc"}`, wantErr: true},
		{name: "request: session code empty", want: req, raw: `{"job_id":"` + testJobID + `","session_code":""}`, wantErr: true},
		{name: "poll: bad job id", want: poll, raw: `{"job_id":"x","session_code":"SESSION_1","seq":3}`, wantErr: true},
		{name: "poll: bad session code", want: poll, raw: `{"job_id":"` + testJobID + `","session_code":"a b","seq":3}`, wantErr: true},
		{name: "poll: seq 0", want: poll, raw: `{"job_id":"` + testJobID + `","session_code":"SESSION_1","seq":0}`, wantErr: true},
		{name: "poll: seq missing", want: poll, raw: `{"job_id":"` + testJobID + `","session_code":"SESSION_1"}`, wantErr: true},
		{name: "poll: seq negative", want: poll, raw: `{"job_id":"` + testJobID + `","session_code":"SESSION_1","seq":-4}`, wantErr: true},
		{name: "poll: seq fractional", want: poll, raw: `{"job_id":"` + testJobID + `","session_code":"SESSION_1","seq":1.5}`, wantErr: true},
		{name: "poll: seq a string", want: poll, raw: `{"job_id":"` + testJobID + `","session_code":"SESSION_1","seq":"1"}`, wantErr: true},
		{name: "webhook: bad job id", want: hook, raw: strings.Replace(hookJSON, testJobID, "nope", 1), wantErr: true},
		{name: "webhook: event id without prefix", want: hook, raw: strings.Replace(hookJSON, testEventID, strings.TrimPrefix(testEventID, "evt_"), 1), wantErr: true},
		{name: "webhook: event id 31 hex", want: hook, raw: strings.Replace(hookJSON, testEventID, testEventID[:len(testEventID)-1], 1), wantErr: true},
		{name: "webhook: event id uppercase hex", want: hook, raw: strings.Replace(hookJSON, testEventID, "evt_"+strings.ToUpper(strings.TrimPrefix(testEventID, "evt_")), 1), wantErr: true},
		{name: "webhook: event id with newline", want: hook, raw: strings.Replace(hookJSON, testEventID, testEventID+`\n`, 1), wantErr: true},
		{name: "webhook: event id 49 hex", want: hook, raw: strings.Replace(hookJSON, testEventID, testEventID+"0", 1), wantErr: true},
		{name: "webhook: event id 33 hex", want: hook, raw: strings.Replace(hookJSON, testEventID, testLegacyEventID+"0", 1), wantErr: true},
		{name: "webhook: event id of another job", want: hook, raw: strings.Replace(hookJSON, testEventID, "evt_0b9c7a526c4e5f0e9a553a4f1f2a8d110123456789abcdef", 1), wantErr: true},
		{name: "webhook: event type empty", want: hook, raw: strings.Replace(hookJSON, "preview.done", "", 1), wantErr: true},
		{name: "webhook: other destination", want: hook, raw: strings.Replace(hookJSON, `"destination":"job"`, `"destination":"https://8.8.8.8/"`, 1), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			taskType := tt.taskType
			if taskType == "" {
				taskType = tt.want.TaskType()
			}
			got, err := decodeAny(t, tt.want, taskType, []byte(tt.raw))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Decode(%.80q) = %+v, want an error", tt.raw, got)
				}
				if !errors.Is(err, tasks.ErrMalformed) {
					t.Errorf("Decode error %v does not wrap ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode(%.80q) = %v", tt.raw, err)
			}
			if got != tt.want {
				t.Errorf("Decode = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDecodeTrailingClosingBracket: a payload followed by a stray "}" or "]"
// is trailing data like any other.
func TestDecodeTrailingClosingBracket(t *testing.T) {
	const reqJSON = `{"job_id":"` + testJobID + `","session_code":"SESSION_1"}`
	for _, suffix := range []string{"}", "]", " ]]]"} {
		t.Run(suffix, func(t *testing.T) {
			_, err := tasks.Decode[tasks.RequestPreview](asynq.NewTask(tasks.TypeRequestPreview, []byte(reqJSON+suffix)))
			if !errors.Is(err, tasks.ErrMalformed) {
				t.Errorf("Decode(payload + %q) = %v, want ErrMalformed", suffix, err)
			}
		})
	}
}

// customPayload is a valid Payload that NewTask does not know.
type customPayload struct{}

func (customPayload) TaskType() string { return "custom" }
func (customPayload) TaskID() string   { return "custom:1" }
func (customPayload) Validate() error  { return nil }

func TestNewTaskRefuses(t *testing.T) {
	q := tasks.QueuesFor("ns")
	tests := []struct {
		name          string
		p             tasks.Payload
		wantMalformed bool
	}{
		{name: "invalid request", p: tasks.RequestPreview{JobID: "x", SessionCode: "S"}, wantMalformed: true},
		{name: "invalid poll seq", p: tasks.PollPreview{JobID: testJobID, SessionCode: "S"}, wantMalformed: true},
		{name: "invalid webhook destination", p: tasks.DeliverWebhook{JobID: testJobID, EventID: testEventID, EventType: "x", Destination: "y"}, wantMalformed: true},
		{name: "unknown payload type", p: customPayload{}},
		{name: "pointer payload", p: &tasks.RequestPreview{JobID: testJobID, SessionCode: "S"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task, err := tasks.NewTask(tt.p, q, time.Time{})
			if err == nil {
				t.Fatalf("NewTask(%#v) = %v, want an error", tt.p, task)
			}
			if got := errors.Is(err, tasks.ErrMalformed); got != tt.wantMalformed {
				t.Errorf("NewTask error %v: errors.Is(ErrMalformed) = %v, want %v", err, got, tt.wantMalformed)
			}
		})
	}
}

func TestNewTaskEnqueued(t *testing.T) {
	r := testutil.NewRedis(t)
	q := tasks.QueuesFor(r.Namespace)
	client := asynq.NewClientFromRedisClient(r.Client)
	inspector := asynq.NewInspectorFromRedisClient(r.Client)
	ctx := context.Background()
	future := time.Now().Add(time.Hour).Truncate(time.Second)

	tests := []struct {
		name         string
		p            tasks.Payload
		processAt    time.Time
		wantQueue    string
		wantMaxRetry int
		wantTimeout  time.Duration
		wantState    asynq.TaskState
	}{
		{name: "request now", p: tasks.RequestPreview{JobID: testJobID, SessionCode: "S"},
			wantQueue: q.Previews, wantMaxRetry: 60, wantTimeout: 2 * time.Minute, wantState: asynq.TaskStatePending},
		{name: "poll now", p: tasks.PollPreview{JobID: testJobID, SessionCode: "S", Seq: 1},
			wantQueue: q.Polls, wantMaxRetry: 10, wantTimeout: 2 * time.Minute, wantState: asynq.TaskStatePending},
		{name: "poll later", p: tasks.PollPreview{JobID: testJobID, SessionCode: "S", Seq: 2}, processAt: future,
			wantQueue: q.Polls, wantMaxRetry: 10, wantTimeout: 2 * time.Minute, wantState: asynq.TaskStateScheduled},
		{name: "webhook now", p: tasks.DeliverWebhook{JobID: testJobID, EventID: testEventID, EventType: "preview.done", Destination: "job"},
			wantQueue: q.FinalWebhooks, wantMaxRetry: 50, wantTimeout: time.Minute, wantState: asynq.TaskStatePending},
		{name: "webhook later", p: tasks.DeliverWebhook{JobID: testJobID, EventID: "evt_ffffffffffffffffffffffffffffffff", EventType: "preview.done", Destination: "job"}, processAt: future,
			wantQueue: q.FinalWebhooks, wantMaxRetry: 50, wantTimeout: time.Minute, wantState: asynq.TaskStateScheduled},
		{name: "accepted webhook", p: tasks.DeliverWebhook{JobID: testJobID, EventID: "evt_11111111111111111111111111111111", EventType: "preview.accepted", Destination: "job"},
			wantQueue: q.Webhooks, wantMaxRetry: 50, wantTimeout: time.Minute, wantState: asynq.TaskStatePending},
		{name: "replay of a final webhook", p: tasks.DeliverWebhook{JobID: testJobID, EventID: testEventID, EventType: "preview.failed", Destination: "job", Replay: 1},
			wantQueue: q.Webhooks, wantMaxRetry: 50, wantTimeout: time.Minute, wantState: asynq.TaskStatePending},
		{name: "fanout of a final event", p: tasks.FanoutWebhook{JobID: testJobID, EventID: testEventID, EventType: "preview.timed_out"},
			wantQueue: q.FinalWebhooks, wantMaxRetry: 50, wantTimeout: time.Minute, wantState: asynq.TaskStatePending},
		{name: "fanout of a progress event", p: tasks.FanoutWebhook{JobID: testJobID, EventID: "evt_22222222222222222222222222222222", EventType: "preview.progress"},
			wantQueue: q.Webhooks, wantMaxRetry: 50, wantTimeout: time.Minute, wantState: asynq.TaskStatePending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task, err := tasks.NewTask(tt.p, q, tt.processAt)
			if err != nil {
				t.Fatalf("NewTask: %v", err)
			}
			if task.Type() != tt.p.TaskType() {
				t.Errorf("task type = %q, want %q", task.Type(), tt.p.TaskType())
			}
			if _, err := client.EnqueueContext(ctx, task); err != nil {
				t.Fatalf("enqueue: %v", err)
			}
			info, err := inspector.GetTaskInfo(tt.wantQueue, tt.p.TaskID())
			if err != nil {
				t.Fatalf("GetTaskInfo(%s, %s): %v", tt.wantQueue, tt.p.TaskID(), err)
			}
			if info.Queue != tt.wantQueue || info.ID != tt.p.TaskID() || info.Type != tt.p.TaskType() {
				t.Errorf("task in queue %q id %q type %q, want %q %q %q", info.Queue, info.ID, info.Type, tt.wantQueue, tt.p.TaskID(), tt.p.TaskType())
			}
			if info.MaxRetry != tt.wantMaxRetry {
				t.Errorf("MaxRetry = %d, want %d", info.MaxRetry, tt.wantMaxRetry)
			}
			if info.Timeout != tt.wantTimeout {
				t.Errorf("Timeout = %s, want %s", info.Timeout, tt.wantTimeout)
			}
			if info.State != tt.wantState {
				t.Errorf("State = %v, want %v", info.State, tt.wantState)
			}
			if !tt.processAt.IsZero() && !info.NextProcessAt.Equal(tt.processAt) {
				t.Errorf("NextProcessAt = %v, want %v", info.NextProcessAt, tt.processAt)
			}
			// The stored payload decodes back to the payload.
			back, err := decodeAny(t, tt.p, info.Type, info.Payload)
			if err != nil || back != tt.p {
				t.Errorf("stored payload decodes to %+v, %v; want %+v", back, err, tt.p)
			}
			// Enqueueing the same payload again is refused by its task id.
			again, err := tasks.NewTask(tt.p, q, tt.processAt)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.EnqueueContext(ctx, again); !errors.Is(err, asynq.ErrTaskIDConflict) {
				t.Errorf("second enqueue = %v, want ErrTaskIDConflict", err)
			}
		})
	}
}

// TestPayloadJSONNames pins the wire names: a renamed field would strand the
// tasks already queued by the previous version.
func TestPayloadJSONNames(t *testing.T) {
	tests := []struct {
		name string
		p    tasks.Payload
		want string
	}{
		{name: "request", p: tasks.RequestPreview{JobID: "j", SessionCode: "s"}, want: `{"job_id":"j","session_code":"s"}`},
		{name: "poll", p: tasks.PollPreview{JobID: "j", SessionCode: "s", Seq: 2}, want: `{"job_id":"j","session_code":"s","seq":2}`},
		{name: "webhook", p: tasks.DeliverWebhook{JobID: "j", EventID: "e", EventType: "t", Destination: "d"}, want: `{"job_id":"j","event_id":"e","event_type":"t","destination":"d"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := json.Marshal(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if string(raw) != tt.want {
				t.Errorf("json = %s, want %s", raw, tt.want)
			}
		})
	}
}
