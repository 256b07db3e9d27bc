// Package tasks defines previewd's asynq tasks (type names, one typed payload
// per task, how each is enqueued) and the producer API that Go backends
// import to request previews: see Client.
//
// Payloads carry ids and parameters only, never secrets: operators read them
// in the asynq dashboard.
package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/store"
)

// Task type names.
const (
	TypeRequestPreview = "preview:request"
	TypePollPreview    = "preview:poll"
	TypeDeliverWebhook = "webhook:deliver"
	TypeFanoutWebhook  = "webhook:fanout"
)

// Queues are the asynq queues of one namespace, apart by urgency: the
// worker serves each pair with strict priority (see worker.Run), so that a
// backlog of new requests never delays the polls of running jobs, and the
// accepted and progress webhooks of a burst never delay a job's outcome.
// Previews and webhooks have servers (and workers) of their own, so a slow
// receiver never delays polling either.
//
// Previews and Webhooks keep the names of the versions before the split:
// the tasks those versions enqueued (polls and final deliveries included)
// are served after a rolling upgrade, at the lower priority, and a request
// task keeps one name, hence one task id, whichever version enqueues it.
type Queues struct {
	Polls         string // polls of running jobs: first
	Previews      string // new preview requests (the billed POST)
	FinalWebhooks string // fan-outs and first deliveries of final events: first
	Webhooks      string // accepted and progress events, and replays
}

// QueuesFor returns the queue names of a namespace.
func QueuesFor(namespace string) Queues {
	return Queues{
		Polls:         namespace + ":polls",
		Previews:      namespace + ":previews",
		FinalWebhooks: namespace + ":webhooks:final",
		Webhooks:      namespace + ":webhooks",
	}
}

// All lists every queue of the namespace, most urgent of each server first:
// what the worker serves and what orphan scans and metrics walk.
func (q Queues) All() []string {
	return []string{q.Polls, q.Previews, q.FinalWebhooks, q.Webhooks}
}

// Deliveries lists the webhook queues, final events first.
func (q Queues) Deliveries() []string { return []string{q.FinalWebhooks, q.Webhooks} }

// For returns the queue of p, chosen by urgency.
func (q Queues) For(p Payload) string {
	switch p := p.(type) {
	case RequestPreview:
		return q.Previews
	case PollPreview:
		return q.Polls
	case FanoutWebhook:
		return q.webhookQueue(p.EventType, 0)
	case DeliverWebhook:
		return q.webhookQueue(p.EventType, p.Replay)
	}
	return ""
}

// webhookQueue: a job's outcome goes ahead of its progress; a replay is an
// operator's re-send, never urgent.
func (q Queues) webhookQueue(eventType string, replay int) string {
	if replay == 0 && finalEvent(store.EventType(eventType)) {
		return q.FinalWebhooks
	}
	return q.Webhooks
}

func finalEvent(t store.EventType) bool {
	switch t {
	case store.EventDone, store.EventFailed, store.EventTimedOut, store.EventCanceled:
		return true
	}
	return false
}

// Payload is a task payload: it knows its task type, its deterministic task
// id (one task per purpose, whatever the number of enqueues) and how to
// check itself.
type Payload interface {
	TaskType() string
	TaskID() string
	Validate() error
}

// RequestPreview asks a worker to send the preview POST of a job.
type RequestPreview struct {
	JobID       string `json:"job_id"`
	SessionCode string `json:"session_code"`
}

// PollPreview asks a worker to read the session of a job once. Seq numbers
// the polls of a job's single chain.
type PollPreview struct {
	JobID       string `json:"job_id"`
	SessionCode string `json:"session_code"`
	Seq         int    `json:"seq"`
}

// FanoutWebhook asks a worker to address one stored event to its
// destinations: the job's webhook_url and every enabled endpoint
// subscribed to its type, one message each.
type FanoutWebhook struct {
	JobID     string `json:"job_id"`
	EventID   string `json:"event_id"`
	EventType string `json:"event_type"`
}

// DeliverWebhook asks a worker to deliver one stored event to one destination.
type DeliverWebhook struct {
	JobID       string `json:"job_id"`
	EventID     string `json:"event_id"`
	EventType   string `json:"event_type"`
	Destination string `json:"destination"` // "job" (the job's own webhook_url) or an endpoint id
	// Replay numbers a re-send requested by an operator (0 for the
	// original delivery), so that it gets a task of its own.
	Replay int `json:"replay,omitempty"`
	// Attempted counts the attempts made before this task ran (the one
	// made right after the event's commit): they count against the retry
	// schedule as the task's own do.
	Attempted int `json:"attempted,omitempty"`
}

// maxAttempted bounds DeliverWebhook.Attempted: one attempt is made before
// a delivery task today; the bound leaves room and refuses nonsense.
const maxAttempted = 10

// DestinationJob is the job's own webhook_url.
const DestinationJob = store.DestinationJob

// TaskType implements Payload.
func (RequestPreview) TaskType() string { return TypeRequestPreview }

// TaskType implements Payload.
func (PollPreview) TaskType() string { return TypePollPreview }

// TaskType implements Payload.
func (DeliverWebhook) TaskType() string { return TypeDeliverWebhook }

// TaskType implements Payload.
func (FanoutWebhook) TaskType() string { return TypeFanoutWebhook }

// TaskID implements Payload: one request task per job.
func (p RequestPreview) TaskID() string { return "request:" + p.JobID }

// TaskID implements Payload: one task per poll of the chain.
func (p PollPreview) TaskID() string { return "poll:" + p.JobID + ":" + strconv.Itoa(p.Seq) }

// TaskID implements Payload: one task per message (event, destination),
// and one per replay of it.
func (p DeliverWebhook) TaskID() string {
	id := "webhook:" + p.EventID + ":" + p.Destination
	if p.Replay > 0 {
		id += ":replay" + strconv.Itoa(p.Replay)
	}
	return id
}

// TaskID implements Payload: one fan-out per event.
func (p FanoutWebhook) TaskID() string { return "fanout:" + p.EventID }

// Validate implements Payload.
func (p RequestPreview) Validate() error {
	return errors.Join(checkJobID(p.JobID), checkSessionCode(p.SessionCode))
}

// Validate implements Payload.
func (p PollPreview) Validate() error {
	var seqErr error
	if p.Seq < 1 {
		seqErr = fieldErr("seq", "must be at least 1")
	}
	return errors.Join(checkJobID(p.JobID), checkSessionCode(p.SessionCode), seqErr)
}

// Validate implements Payload.
func (p DeliverWebhook) Validate() error {
	errs := []error{FanoutWebhook{JobID: p.JobID, EventID: p.EventID, EventType: p.EventType}.Validate()}
	if p.Destination != DestinationJob && !store.IsEndpointID(p.Destination) {
		errs = append(errs, fieldErr("destination", "must be \"job\" or an endpoint id"))
	}
	if p.Replay < 0 {
		errs = append(errs, fieldErr("replay", "must not be negative"))
	}
	if p.Attempted < 0 || p.Attempted > maxAttempted {
		errs = append(errs, fieldErr("attempted", fmt.Sprintf("must be between 0 and %d", maxAttempted)))
	}
	return errors.Join(errs...)
}

// Validate implements Payload.
func (p FanoutWebhook) Validate() error {
	var errs []error
	errs = append(errs, checkJobID(p.JobID))
	// Both shapes of event id (see EventID): tasks enqueued before ids
	// carried their job still carry the older one.
	if !store.IsEventID(p.EventID) {
		errs = append(errs, fieldErr("event_id", "must look like evt_<48 hex digits> (or evt_<32 hex digits>, an older event's)"))
	} else if jobID, ok := store.JobOfEvent(p.EventID); ok && jobID != p.JobID {
		// The job an event id carries is where its message is looked for
		// by id alone: a task that put the event under another job would
		// store a message nobody finds.
		errs = append(errs, fieldErr("event_id", "carries another job id than job_id"))
	}
	if p.EventType == "" {
		errs = append(errs, fieldErr("event_type", "is required"))
	}
	return errors.Join(errs...)
}

func checkJobID(id string) error {
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return fieldErr("job_id", "must be a UUID")
	}
	return nil
}

func checkSessionCode(code string) error {
	if !csm.ValidSessionCode(code) {
		return fieldErr("session_code", "must be 1-128 letters, digits, '_' or '-'")
	}
	return nil
}

// ErrMalformed marks a task whose payload cannot be processed; retrying it
// cannot help.
var ErrMalformed = errors.New("malformed task")

// maxPayloadBytes bounds a payload; ours are a few hundred bytes.
const maxPayloadBytes = 16 << 10

// Decode decodes and validates the payload of t. Every failure wraps
// ErrMalformed and names the problem.
func Decode[P Payload](t *asynq.Task) (P, error) {
	var p P
	if t.Type() != p.TaskType() {
		return p, fmt.Errorf("%w: task type %q, want %q", ErrMalformed, t.Type(), p.TaskType())
	}
	if err := decodePayload(t.Payload(), &p); err != nil {
		return p, err
	}
	return p, nil
}

func decodePayload[P Payload](raw []byte, p *P) error {
	if len(raw) > maxPayloadBytes {
		return fmt.Errorf("%w: %s payload of %d bytes is larger than %d", ErrMalformed, (*p).TaskType(), len(raw), maxPayloadBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return fmt.Errorf("%w: %s payload: %v", ErrMalformed, (*p).TaskType(), err)
	}
	// More() is false before a stray closing bracket: ask for EOF instead.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: %s payload: trailing data", ErrMalformed, (*p).TaskType())
	}
	if err := (*p).Validate(); err != nil {
		return fmt.Errorf("%w: %s payload: %v", ErrMalformed, (*p).TaskType(), err)
	}
	return nil
}

// Retry budgets and run-time limits per task type. Requests retry only
// failures that prove no preview was started, and auth faults: with
// backoff capped at 5 min, 60 retries outlast the default 3 h deadline,
// which is what ends a job whose key is wrong. Polls never spend retries on
// upstream answers, only on our own Redis failing; webhooks follow the
// delivery schedule of RetryDelay.
const (
	requestMaxRetry = 60
	pollMaxRetry    = 10
	// webhookMaxRetry bounds retries of deliveries whatever the configured
	// schedule; the delivery handler gives up when the schedule ends.
	webhookMaxRetry = 50
	requestTimeout  = 2 * time.Minute
	pollTimeout     = 2 * time.Minute
	webhookTimeout  = time.Minute
)

// NewTask builds the asynq task for p, due at processAt (now when zero).
func NewTask(p Payload, q Queues, processAt time.Time) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, p.TaskType(), err)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", p.TaskType(), err)
	}
	opts := []asynq.Option{asynq.TaskID(p.TaskID()), asynq.Queue(q.For(p))}
	switch p.(type) {
	case RequestPreview:
		opts = append(opts, asynq.MaxRetry(requestMaxRetry), asynq.Timeout(requestTimeout))
	case PollPreview:
		opts = append(opts, asynq.MaxRetry(pollMaxRetry), asynq.Timeout(pollTimeout))
	case DeliverWebhook, FanoutWebhook:
		opts = append(opts, asynq.MaxRetry(webhookMaxRetry), asynq.Timeout(webhookTimeout))
	default:
		return nil, fmt.Errorf("tasks: unknown payload type %T", p)
	}
	if !processAt.IsZero() {
		opts = append(opts, asynq.ProcessAt(processAt))
	}
	return asynq.NewTask(p.TaskType(), raw, opts...), nil
}
