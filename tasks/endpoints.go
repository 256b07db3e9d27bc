package tasks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/webhook"
)

// EndpointRequest registers a webhook endpoint.
type EndpointRequest struct {
	URL string `json:"url"`
	// EventTypes it wants; empty means every type.
	EventTypes  []string `json:"event_types,omitempty"`
	Description string   `json:"description,omitempty"`
	// Secret in whsec_ form; generated when empty. Only for v1.
	Secret string `json:"secret,omitempty"`
	// SignatureVersion is "v1" (default: HMAC-SHA256 with a whsec_ secret
	// both sides hold) or "v1a" (ed25519: previewd generates a key pair,
	// keeps the whsk_ private key and shows the whpk_ public key).
	SignatureVersion string `json:"signature_version,omitempty"`
}

// EndpointLimitError: creating the endpoint would pass the configured cap
// (ClientOptions.MaxEndpoints). It wraps store.ErrEndpointLimit.
type EndpointLimitError struct {
	Max int
}

func (e *EndpointLimitError) Error() string {
	return fmt.Sprintf("at most %d webhook endpoints may exist (PREVIEWD_MAX_ENDPOINTS, --max-endpoints); delete one or raise the setting", e.Max)
}

// Unwrap makes errors.Is(err, store.ErrEndpointLimit) hold.
func (e *EndpointLimitError) Unwrap() error { return store.ErrEndpointLimit }

// EventTypes lists every event a job can emit.
var EventTypes = []store.EventType{
	store.EventAccepted, store.EventProgress, store.EventDone, store.EventFailed, store.EventTimedOut, store.EventCanceled,
}

const maxDescription = 500

// defaultRotationWindow is how long a rotated-out endpoint secret keeps
// signing beside the new one, so receivers can switch without a gap.
const defaultRotationWindow = 24 * time.Hour

// defaultMaxEndpoints is config's default for --max-endpoints.
const defaultMaxEndpoints = 100

// AddEndpoint validates and registers an endpoint. It returns the endpoint
// and what its receiver verifies with: the whsec_ secret of a v1 endpoint,
// or the whpk_ public key of a v1a one (whose private key is never shown).
// Neither is shown again except on rotation. Past the cap it returns an
// *EndpointLimitError.
func (c *Client) AddEndpoint(ctx context.Context, req EndpointRequest) (store.Endpoint, string, error) {
	var fields []FieldError
	add := func(f, m string) { fields = append(fields, FieldError{Field: f, Message: m}) }
	if req.URL == "" {
		add("url", "is required")
	} else if msg := checkHTTPURL(req.URL); msg != "" {
		add("url", msg)
	} else if err := webhook.CheckURL(ctx, req.URL, c.opts.AllowPrivateWebhooks, c.opts.Resolver); err != nil {
		add("url", err.Error())
	}
	types := []store.EventType{} // empty: every type; never null in JSON
	for _, t := range req.EventTypes {
		if !slices.Contains(EventTypes, store.EventType(t)) {
			add("event_types", fmt.Sprintf("unknown event type %q", t))
			continue
		}
		if !slices.Contains(types, store.EventType(t)) {
			types = append(types, store.EventType(t))
		}
	}
	if msg := checkText(req.Description, maxDescription); msg != "" {
		add("description", msg)
	}
	version := req.SignatureVersion
	switch version {
	case "":
		version = store.SignatureV1
	case store.SignatureV1, store.SignatureV1a:
	default:
		add("signature_version", `must be "v1" (HMAC-SHA256) or "v1a" (ed25519)`)
	}
	if req.Secret != "" {
		if version == store.SignatureV1a {
			add("secret", "cannot be given for a v1a endpoint: previewd generates its key pair and returns the public key")
		} else if _, err := webhook.ParseSecret(req.Secret); err != nil {
			add("secret", err.Error())
		}
	}
	if len(fields) > 0 {
		return store.Endpoint{}, "", &ValidationError{Fields: fields}
	}
	stored, shown := req.Secret, req.Secret
	if stored == "" {
		var err error
		if stored, shown, err = newEndpointKey(version); err != nil {
			return store.Endpoint{}, "", err
		}
	}
	now := c.opts.Now()
	ep := store.Endpoint{
		ID: newEndpointID(), URL: req.URL, EventTypes: types, Description: req.Description,
		SignatureVersion: version, Enabled: true,
		CreatedAt: now, UpdatedAt: now,
		Secrets: []store.EndpointSecret{{Value: stored, CreatedAt: now}},
	}
	if err := c.store.CreateEndpoint(ctx, ep, c.opts.MaxEndpoints); err != nil {
		if errors.Is(err, store.ErrEndpointLimit) {
			return store.Endpoint{}, "", &EndpointLimitError{Max: c.opts.MaxEndpoints}
		}
		return store.Endpoint{}, "", err
	}
	return ep, shown, nil
}

// newEndpointKey generates an endpoint's signing key for its signature
// version: what previewd stores, and what the receiver is shown (the same
// whsec_ secret for v1; for v1a the whpk_ public key of the stored whsk_).
func newEndpointKey(version string) (stored, shown string, err error) {
	if version == store.SignatureV1a {
		return webhook.GenerateSigningKey()
	}
	secret, err := webhook.GenerateSecret()
	return secret, secret, err
}

func newEndpointID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("tasks: crypto/rand failed: " + err.Error())
	}
	return "ep_" + hex.EncodeToString(b)
}

// Endpoints lists every endpoint (without secrets in their JSON form).
func (c *Client) Endpoints(ctx context.Context) ([]store.Endpoint, error) {
	return c.store.Endpoints(ctx)
}

// EndpointPage returns a page of endpoints and the next page's cursor
// (see store.EndpointPage); store.ErrBadCursor for a cursor it did not give.
func (c *Client) EndpointPage(ctx context.Context, opts store.EndpointListOptions) ([]store.Endpoint, string, error) {
	return c.store.EndpointPage(ctx, opts)
}

// Endpoint returns one endpoint, or store.ErrNotFound.
func (c *Client) Endpoint(ctx context.Context, id string) (store.Endpoint, error) {
	if !store.IsEndpointID(id) {
		return store.Endpoint{}, fmt.Errorf("endpoint %q: %w", id, store.ErrNotFound)
	}
	return c.store.Endpoint(ctx, id)
}

// SetEndpointEnabled enables or disables an endpoint. Enabling clears the
// recorded failure streak and the reason it was disabled.
func (c *Client) SetEndpointEnabled(ctx context.Context, id string, enabled bool, reason string) (store.Endpoint, error) {
	if !store.IsEndpointID(id) {
		return store.Endpoint{}, fmt.Errorf("endpoint %q: %w", id, store.ErrNotFound)
	}
	if reason == "" {
		reason = "disabled by an operator"
	}
	return c.store.UpdateEndpoint(ctx, id, func(e *store.Endpoint, now time.Time) error {
		if enabled {
			e.Enabled, e.DisabledReason, e.DisabledAt, e.FailingSince = true, "", nil, nil
		} else {
			e.Disable(now, reason)
		}
		return nil
	})
}

// RotateEndpointSecret gives an endpoint a new signing key of its
// signature version. The previous ones keep signing beside it for the
// rotation window, so that receivers verifying with either pass until they
// switch. It returns what the receiver verifies with from now on: the new
// whsec_ secret, or for v1a the new whpk_ public key.
func (c *Client) RotateEndpointSecret(ctx context.Context, id string) (store.Endpoint, string, error) {
	if !store.IsEndpointID(id) {
		return store.Endpoint{}, "", fmt.Errorf("endpoint %q: %w", id, store.ErrNotFound)
	}
	var secret, shown string
	ep, err := c.store.UpdateEndpoint(ctx, id, func(e *store.Endpoint, now time.Time) error {
		// Generated here, once the version is known; a retried update
		// generates again, and only the written key is returned.
		var err error
		if secret, shown, err = newEndpointKey(e.SignatureVersion); err != nil {
			return err
		}
		expires := now.Add(c.opts.SecretRotationWindow)
		kept := e.Secrets[:0]
		for _, s := range e.Secrets {
			if s.ExpiresAt != nil && !now.Before(*s.ExpiresAt) {
				continue // long expired: drop it
			}
			if s.ExpiresAt == nil || s.ExpiresAt.After(expires) {
				s.ExpiresAt = &expires
			}
			kept = append(kept, s)
		}
		e.Secrets = append(kept, store.EndpointSecret{Value: secret, CreatedAt: now})
		return nil
	})
	if err != nil {
		return ep, "", err
	}
	return ep, shown, nil
}

// DeleteEndpoint removes an endpoint; deliveries to it stop.
func (c *Client) DeleteEndpoint(ctx context.Context, id string) error {
	if !store.IsEndpointID(id) {
		return fmt.Errorf("endpoint %q: %w", id, store.ErrNotFound)
	}
	return c.store.DeleteEndpoint(ctx, id)
}

// Messages returns the webhook messages of a job with their attempts.
func (c *Client) Messages(ctx context.Context, jobID string) ([]store.Message, error) {
	if _, err := c.Job(ctx, jobID); err != nil {
		return nil, err
	}
	return c.store.Messages(ctx, jobID)
}

// Message returns one message by id, with the id of its job.
func (c *Client) Message(ctx context.Context, msgID string) (store.Message, string, error) {
	jobID, err := c.store.JobOfMessage(ctx, msgID)
	if err != nil {
		return store.Message{}, "", err
	}
	m, err := c.store.Message(ctx, jobID, msgID)
	return m, jobID, err
}

// ErrNotReplayable: the message is still pending; it is being delivered.
var ErrNotReplayable = errors.New("message is pending delivery")

// ErrEnqueuePending: the change is committed and its task waits in the
// job's outbox, but enqueueing it failed; a worker's sweeper enqueues it.
var ErrEnqueuePending = errors.New("committed; enqueue pending (a worker's sweeper will retry)")

// Replay re-sends a stored message with its original id and body (and a
// fresh signature): it becomes pending again and gets a delivery task of
// its own. A pending message is left alone (ErrNotReplayable).
//
// The pending record and the replay's delivery task are committed together
// (the task in the job's outbox), so a replay whose enqueue fails is not
// left pending with no task: the sweeper enqueues it, and Replay says so
// with ErrEnqueuePending beside the message. Two replays racing each other
// make one replay.
func (c *Client) Replay(ctx context.Context, msgID string) (store.Message, error) {
	jobID, err := c.store.JobOfMessage(ctx, msgID)
	if err != nil {
		return store.Message{}, err
	}
	var pending bool
	m, err := c.store.UpdateMessage(ctx, jobID, msgID, func(m *store.Message, found bool) ([]store.OutboxEntry, error) {
		pending = false
		if !found {
			return nil, fmt.Errorf("message %s of job %s: %w", msgID, jobID, store.ErrNotFound)
		}
		if m.Status == store.MessagePending {
			pending = true
			return nil, store.ErrNoChange
		}
		m.Status, m.Reason = store.MessagePending, ""
		m.Replays++
		task := DeliverWebhook{JobID: jobID, EventID: m.EventID, EventType: string(m.EventType), Destination: m.Destination, Replay: m.Replays}
		return []store.OutboxEntry{OutboxEntry(task, time.Time{})}, nil
	})
	if err != nil {
		return m, err
	}
	if pending {
		return m, fmt.Errorf("message %s: %w", msgID, ErrNotReplayable)
	}
	if err := c.enqueuer.Flush(ctx, jobID); err != nil {
		return m, fmt.Errorf("replay %d of message %s %w: %w", m.Replays, msgID, ErrEnqueuePending, err)
	}
	return m, nil
}

// ReplaySelection chooses messages to replay.
type ReplaySelection struct {
	JobID      string    // every message of this job, or
	EndpointID string    // every message to this endpoint since Since
	Since      time.Time //
	All        bool      // also messages that were delivered (default: failed ones only)
}

// ReplayMany replays the selected messages and returns those it replayed.
func (c *Client) ReplayMany(ctx context.Context, sel ReplaySelection) ([]store.Message, error) {
	var ids []string
	switch {
	case sel.JobID != "":
		msgs, err := c.Messages(ctx, sel.JobID)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			ids = append(ids, m.ID)
		}
	case sel.EndpointID != "":
		if _, err := c.Endpoint(ctx, sel.EndpointID); err != nil {
			return nil, err
		}
		var err error
		if ids, err = c.store.EndpointMessages(ctx, sel.EndpointID, sel.Since); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("replay: choose a job or an endpoint")
	}
	var out []store.Message
	var errs []error
	for _, id := range ids {
		m, _, err := c.Message(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // expired
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if m.Status == store.MessagePending || (!sel.All && m.Status != store.MessageFailed) {
			continue
		}
		m, err = c.Replay(ctx, id)
		if errors.Is(err, ErrEnqueuePending) {
			out = append(out, m) // replayed; its task waits in the outbox
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	return out, errors.Join(errs...)
}
