package store

import (
	"time"
)

// Status is previewd's own view of a job. It only moves forward:
// queued → requesting → generating → one final status.
type Status string

// The statuses of a job, in the order a job passes through them.
const (
	StatusQueued     Status = "queued"
	StatusRequesting Status = "requesting"
	StatusGenerating Status = "generating"
	StatusDone       Status = "done"
	StatusFailed     Status = "failed"
	StatusTimedOut   Status = "timed_out"
	StatusCanceled   Status = "canceled"
)

// Statuses lists every status.
var Statuses = []Status{StatusQueued, StatusRequesting, StatusGenerating, StatusDone, StatusFailed, StatusTimedOut, StatusCanceled}

// Final reports whether s is a status a job never leaves.
func (s Status) Final() bool {
	switch s {
	case StatusDone, StatusFailed, StatusTimedOut, StatusCanceled:
		return true
	}
	return false
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	for _, known := range Statuses {
		if s == known {
			return true
		}
	}
	return false
}

// EventType names a webhook event.
type EventType string

// The events a job emits. Exactly one final event is ever emitted per job.
const (
	EventAccepted EventType = "preview.accepted"
	EventProgress EventType = "preview.progress"
	EventDone     EventType = "preview.done"
	EventFailed   EventType = "preview.failed"
	EventTimedOut EventType = "preview.timed_out"
	EventCanceled EventType = "preview.canceled"
)

// FinalEvent returns the event announcing that a job reached final status s.
func FinalEvent(s Status) EventType {
	switch s {
	case StatusDone:
		return EventDone
	case StatusFailed:
		return EventFailed
	case StatusTimedOut:
		return EventTimedOut
	case StatusCanceled:
		return EventCanceled
	}
	panic("store: no final event for status " + string(s))
}

// Error codes a failed, timed-out or canceled job carries.
const (
	CodeSessionNotFound    = "session_not_found"
	CodeUpstreamRejected   = "upstream_rejected"
	CodePreviewFailed      = "preview_failed"
	CodePreviewUnconfirmed = "preview_unconfirmed"
	CodeSpinUnavailable    = "spin_unavailable"
	CodeDeadlineExceeded   = "deadline_exceeded"
	CodeCanceled           = "canceled"
	CodeRetriesExhausted   = "retries_exhausted"
	CodeInternal           = "internal"
)

// Job is one preview generation as previewd tracks it. Its JSON form is what
// `previewd status` prints; webhooks carry its public view (Public) as "data".
type Job struct {
	ID                string            `json:"id"`
	Status            Status            `json:"status"`
	SessionCode       string            `json:"session_code"`
	SelectedSpinIndex int               `json:"selected_spin_index"`
	SelectedSpin      string            `json:"selected_spin,omitempty"` // as given, or the spin URL read from the session before the POST
	ScaledBBox        []float64         `json:"scaled_bbox,omitempty"`
	PivotPoint        []float64         `json:"pivot_point,omitempty"`
	WebhookURL        string            `json:"webhook_url,omitempty"`
	WebhookGoneAt     *time.Time        `json:"webhook_gone_at,omitempty"` // the webhook_url answered 410 Gone: no more deliveries to it
	ExternalID        string            `json:"external_id,omitempty"`
	IdempotencyKey    string            `json:"idempotency_key,omitempty"`
	UniqueTrialKey    string            `json:"unique_trial_key"`
	UpstreamStatus    string            `json:"upstream_status"`
	PercentDone       *int              `json:"percent_done,omitempty"`
	MeshURLs          map[string]string `json:"mesh_urls,omitempty"` // url, glb, obj, usdz, fbx, zip: whatever the session offers
	Error             *JobError         `json:"error,omitempty"`
	CreatedAt         time.Time         `json:"created_at"`
	UpdatedAt         time.Time         `json:"updated_at"`
	Deadline          time.Time         `json:"deadline"`
	FinishedAt        *time.Time        `json:"finished_at,omitempty"`
	Polls             int               `json:"polls"`
	History           []Transition      `json:"history"`
	Request           RequestState      `json:"request"`
	Poll              PollState         `json:"poll"`
}

// JobError says why a job did not end done.
type JobError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Transition is one entry of a job's history: a change of our status or of
// the upstream status.
type Transition struct {
	At             time.Time `json:"at"`
	Status         Status    `json:"status"`
	UpstreamStatus string    `json:"upstream_status,omitempty"`
	Note           string    `json:"note,omitempty"`
}

// RequestState is the bookkeeping that keeps the billed preview POST to at
// most one per job.
type RequestState struct {
	// Attempts counts preview POSTs sent (each was refused or its outcome recorded).
	Attempts int `json:"attempts"`
	// IntentAt is set just before a POST and cleared once its outcome is
	// known. Found set by a later attempt, it means a POST may have been
	// accepted upstream: it is never sent again.
	IntentAt *time.Time `json:"intent_at,omitempty"`
	// IntentID names the handler run that recorded the intent: only that
	// run may POST, or clear the intent. Any other run that finds an
	// intent cannot know what became of its POST, and reconciles.
	IntentID   string     `json:"intent_id,omitempty"`
	Outcome    string     `json:"outcome,omitempty"` // accepted, rejected or unknown
	AcceptedAt *time.Time `json:"accepted_at,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	// BaselineStatus and BaselineMeshes describe the session just before our
	// POST, so that a final-looking status left over from an earlier
	// generation is not mistaken for ours.
	BaselineStatus string `json:"baseline_status,omitempty"`
	BaselineMeshes string `json:"baseline_meshes,omitempty"`
}

// Request outcomes.
const (
	OutcomeAccepted = "accepted"
	OutcomeRejected = "rejected"
	OutcomeUnknown  = "unknown"
)

// PollState is the bookkeeping of a job's single poll chain.
type PollState struct {
	// Seq is the sequence number of the poll task the chain expects next;
	// a poll task with another number is stale and does nothing.
	Seq         int        `json:"seq"`
	NextAt      *time.Time `json:"next_at,omitempty"`
	SawProgress bool       `json:"saw_progress,omitempty"` // upstream reported work on our preview since the POST
	LastError   string     `json:"last_error,omitempty"`
}

// maxHistory bounds the history so a session flapping between statuses
// cannot grow a job record without limit.
const maxHistory = 100

// SetStatus moves the job to status s, recording the transition. Moving to
// the current status records nothing.
func (j *Job) SetStatus(s Status, at time.Time, note string) {
	if j.Status == s {
		return
	}
	j.Status = s
	if s.Final() {
		t := at
		j.FinishedAt = &t
	}
	j.record(Transition{At: at, Status: s, UpstreamStatus: j.UpstreamStatus, Note: note})
}

// Finish moves the job to final status s with an optional error.
func (j *Job) Finish(s Status, at time.Time, jobErr *JobError, note string) {
	j.Error = jobErr
	j.Poll.NextAt = nil
	j.SetStatus(s, at, note)
}

// SetUpstreamStatus records a new raw upstream status, adding a history entry
// when it changed. It reports whether it changed.
func (j *Job) SetUpstreamStatus(raw string, at time.Time) bool {
	if raw == j.UpstreamStatus {
		return false
	}
	j.UpstreamStatus = raw
	j.record(Transition{At: at, Status: j.Status, UpstreamStatus: raw})
	return true
}

// Note adds a history entry that changes no status.
func (j *Job) Note(at time.Time, note string) {
	j.record(Transition{At: at, Status: j.Status, UpstreamStatus: j.UpstreamStatus, Note: note})
}

func (j *Job) record(t Transition) {
	if len(j.History) >= maxHistory {
		// Keep the first entry (creation) and drop the oldest after it.
		j.History = append(j.History[:1], j.History[2:]...)
	}
	j.History = append(j.History, t)
}
