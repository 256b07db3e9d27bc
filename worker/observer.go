package worker

import (
	"time"

	"github.com/previewd/previewd/store"
)

// Observer receives what the handlers measure (metrics live elsewhere).
type Observer interface {
	// UpstreamCall: one call to CSM, its endpoint ("get_session",
	// "request_preview"), outcome ("ok" or a csm.Kind) and latency.
	UpstreamCall(endpoint, outcome string, latency time.Duration)
	UpstreamRateLimited()
	UpstreamAuthFault()
	// BudgetExhausted: a preview request waits for the spending guard's
	// window ("hour" or "day").
	BudgetExhausted(window string)
	// JobFinished: a job reached a final status (called once per job by
	// the process that finished it).
	JobFinished(j store.Job)
	// WebhookAttempt: one delivery attempt.
	WebhookAttempt(outcome string, latency time.Duration)
	// FinalWebhookDelivered: a job's final event reached a destination,
	// this long after the poll that saw the final status.
	FinalWebhookDelivered(delay time.Duration)
}

// NopObserver observes nothing.
type NopObserver struct{}

// UpstreamCall implements Observer.
func (NopObserver) UpstreamCall(string, string, time.Duration) {}

// UpstreamRateLimited implements Observer.
func (NopObserver) UpstreamRateLimited() {}

// UpstreamAuthFault implements Observer.
func (NopObserver) UpstreamAuthFault() {}

// BudgetExhausted implements Observer.
func (NopObserver) BudgetExhausted(string) {}

// JobFinished implements Observer.
func (NopObserver) JobFinished(store.Job) {}

// WebhookAttempt implements Observer.
func (NopObserver) WebhookAttempt(string, time.Duration) {}

// FinalWebhookDelivered implements Observer.
func (NopObserver) FinalWebhookDelivered(time.Duration) {}
