package store

import (
	"net/url"
	"time"
)

// EventData is the public view of a job: what webhook events carry as
// "data". Events go to every endpoint that subscribes, not only to the
// job's own webhook_url, so it leaves out what only the job's creator or
// previewd itself needs: webhook_url is reduced to its origin (see
// PublicURL), and the bookkeeping of the billed POST and of the poll chain
// (Job.Request, Job.Poll) is not there at all.
type EventData struct {
	ID                string            `json:"id"`
	Status            Status            `json:"status"`
	SessionCode       string            `json:"session_code"`
	SelectedSpinIndex int               `json:"selected_spin_index"`
	SelectedSpin      string            `json:"selected_spin,omitempty"`
	ScaledBBox        []float64         `json:"scaled_bbox,omitempty"`
	PivotPoint        []float64         `json:"pivot_point,omitempty"`
	WebhookURL        string            `json:"webhook_url,omitempty"`
	WebhookGoneAt     *time.Time        `json:"webhook_gone_at,omitempty"`
	ExternalID        string            `json:"external_id,omitempty"`
	IdempotencyKey    string            `json:"idempotency_key,omitempty"`
	UniqueTrialKey    string            `json:"unique_trial_key"`
	UpstreamStatus    string            `json:"upstream_status"`
	PercentDone       *int              `json:"percent_done,omitempty"`
	MeshURLs          map[string]string `json:"mesh_urls,omitempty"`
	Error             *JobError         `json:"error,omitempty"`
	CreatedAt         time.Time         `json:"created_at"`
	UpdatedAt         time.Time         `json:"updated_at"`
	Deadline          time.Time         `json:"deadline"`
	FinishedAt        *time.Time        `json:"finished_at,omitempty"`
	Polls             int               `json:"polls"`
	History           []Transition      `json:"history"`
}

// Public returns the job's public view, the data of its events.
func (j Job) Public() EventData {
	return EventData{
		ID:                j.ID,
		Status:            j.Status,
		SessionCode:       j.SessionCode,
		SelectedSpinIndex: j.SelectedSpinIndex,
		SelectedSpin:      j.SelectedSpin,
		ScaledBBox:        j.ScaledBBox,
		PivotPoint:        j.PivotPoint,
		WebhookURL:        PublicURL(j.WebhookURL),
		WebhookGoneAt:     j.WebhookGoneAt,
		ExternalID:        j.ExternalID,
		IdempotencyKey:    j.IdempotencyKey,
		UniqueTrialKey:    j.UniqueTrialKey,
		UpstreamStatus:    j.UpstreamStatus,
		PercentDone:       j.PercentDone,
		MeshURLs:          j.MeshURLs,
		Error:             j.Error,
		CreatedAt:         j.CreatedAt,
		UpdatedAt:         j.UpdatedAt,
		Deadline:          j.Deadline,
		FinishedAt:        j.FinishedAt,
		Polls:             j.Polls,
		History:           j.History,
	}
}

// PublicURL reduces a destination URL to what may be shown to parties other
// than its owner: scheme://host[:port]/, without user info, path, query or
// fragment. Receivers' credentials ride in the query ("?token=") and, as
// often, in the path (Slack's /services/T…/B…/secret, Discord's
// /api/webhooks/id/token), so only the origin is safe to repeat. An empty
// or unparsable URL gives "" (nothing is better than a leak).
func PublicURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host + "/"
}
