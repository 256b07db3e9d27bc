package tasks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/store"
)

// Errors of the producer API.
var (
	// ErrIdempotencyConflict: the idempotency key was used before for a
	// different request.
	ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")
	// ErrFinal: the job is already final and cannot be canceled.
	ErrFinal = errors.New("job is already final")
)

// ClientOptions configure a Client. Zero values take the defaults of
// config.Default().
type ClientOptions struct {
	Namespace   string        // default "previewd"
	JobDeadline time.Duration // default 3h
	Retention   time.Duration // default 7 days
	// AllowPrivateWebhooks accepts webhook and selected_spin URLs on
	// loopback and private addresses (local development and tests only).
	AllowPrivateWebhooks bool
	// Resolver resolves webhook hosts for the address check; default net.DefaultResolver.
	Resolver *net.Resolver
	// SecretRotationWindow is how long a rotated-out endpoint secret keeps
	// signing beside the new one. Default 24h.
	SecretRotationWindow time.Duration
	// MaxEndpoints caps the webhook endpoints that may exist at once. Default 100.
	MaxEndpoints int
	Now          func() time.Time
}

// Client is the producer API: it validates preview requests, creates their
// job records and enqueues them. It is safe for concurrent use.
type Client struct {
	store    *store.Store
	enqueuer *Enqueuer
	opts     ClientOptions
}

// NewClient returns a Client on an existing Redis connection, which it does
// not close.
func NewClient(rdb redis.UniversalClient, opts ClientOptions) *Client {
	if opts.Namespace == "" {
		opts.Namespace = "previewd"
	}
	if opts.JobDeadline <= 0 {
		opts.JobDeadline = 3 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SecretRotationWindow <= 0 {
		opts.SecretRotationWindow = defaultRotationWindow
	}
	if opts.MaxEndpoints <= 0 {
		opts.MaxEndpoints = defaultMaxEndpoints
	}
	st := store.New(rdb, store.Options{Namespace: opts.Namespace, Retention: opts.Retention, Now: opts.Now})
	// An asynq client on a shared connection holds nothing to close.
	ac := asynq.NewClientFromRedisClient(rdb)
	return &Client{
		store:    st,
		enqueuer: NewEnqueuer(ac, st, QueuesFor(opts.Namespace)),
		opts:     opts,
	}
}

// Store returns the job store the client writes to.
func (c *Client) Store() *store.Store { return c.store }

// RequestPreview validates req, creates its job and enqueues the task that
// will send the preview POST. Repeating a request with the same idempotency
// key (or, without one, the same content) returns the same job and never
// causes a second POST. Errors: *ValidationError for bad input,
// ErrIdempotencyConflict for a key reused with different content.
func (c *Client) RequestPreview(ctx context.Context, req PreviewRequest) (store.Job, error) {
	job, _, err := c.Submit(ctx, req)
	return job, err
}

// Submit is RequestPreview that also reports whether this call created the
// job (false: an earlier request with the same key did).
func (c *Client) Submit(ctx context.Context, req PreviewRequest) (store.Job, bool, error) {
	if err := req.Validate(); err != nil {
		return store.Job{}, false, err
	}
	// Before the fingerprint: the job stores, and is identified by, the
	// checked URLs (hosts in ASCII).
	if err := req.CheckAddresses(ctx, c.opts.AllowPrivateWebhooks, c.opts.Resolver); err != nil {
		return store.Job{}, false, err
	}
	fp := req.fingerprint()
	job := newJob(req, JobID(req, fp), c.opts.Now(), c.opts.JobDeadline)

	// No outbox: the job's only task is enqueued right after the creation,
	// and a creator that dies in between leaves a queued job that the
	// sweeper's pass over new jobs enqueues (store.CreatedAfter), as a
	// repeat of this request does at once.
	stored, isNew, storedFP, err := c.store.Create(ctx, job, fp, nil)
	if err != nil {
		return store.Job{}, false, err
	}
	if storedFP != fp {
		return stored, false, fmt.Errorf("job %s: %w", stored.ID, ErrIdempotencyConflict)
	}
	if !isNew {
		// Best effort, and repeated by any repeat of the request (a new
		// job's creation wrote it): without it a push for the session
		// misses this job, whose safety-net poll still ends it.
		_ = c.store.IndexSession(ctx, stored.SessionCode, stored.ID, stored.Deadline)
	}
	if !isNew && stored.Status != store.StatusQueued {
		return stored, false, nil // its request task has run
	}
	// A repeat of a queued job enqueues again: if its creator died before
	// enqueueing, this finishes the creation; if the task is in asynq, the
	// enqueue is a no-op (and a request task that runs after the job left
	// queued does nothing: see worker.RequestPreview).
	if err := c.enqueuer.EnqueueRequest(ctx, stored); err != nil {
		return stored, isNew, fmt.Errorf("job %s created, enqueue pending (a worker's sweeper will retry): %w", stored.ID, err)
	}
	return stored, isNew, nil
}

// List returns a page of jobs, newest first (see store.ListOptions).
func (c *Client) List(ctx context.Context, opts store.ListOptions) ([]store.Job, string, error) {
	return c.store.List(ctx, opts)
}

// idNamespace scopes the name-based UUIDs of jobs.
var idNamespace = uuid.MustParse("7f1c2a51-8c3e-4d49-9a0e-6b1f2f6d0c3a")

// JobID returns the id of the job a request creates: a name-based UUID of its
// idempotency key, or of its content when it has none. The job record is
// thereby its own idempotency record.
func JobID(req PreviewRequest, fingerprint string) string {
	if req.IdempotencyKey != "" {
		return uuid.NewSHA1(idNamespace, []byte("key:"+req.IdempotencyKey)).String()
	}
	return uuid.NewSHA1(idNamespace, []byte("content:"+fingerprint)).String()
}

func newJob(req PreviewRequest, id string, now time.Time, deadline time.Duration) store.Job {
	return store.Job{
		ID:                id,
		Status:            store.StatusQueued,
		SessionCode:       req.SessionCode,
		SelectedSpinIndex: req.SelectedSpinIndex,
		SelectedSpin:      req.SelectedSpin,
		ScaledBBox:        req.ScaledBBox,
		PivotPoint:        req.PivotPoint,
		WebhookURL:        req.WebhookURL,
		ExternalID:        req.ExternalID,
		IdempotencyKey:    req.IdempotencyKey,
		CreatedAt:         now,
		UpdatedAt:         now,
		Deadline:          now.Add(deadline),
		History:           []store.Transition{{At: now, Status: store.StatusQueued}},
	}
}

// Job returns a job by id (store.ErrNotFound when unknown or expired).
func (c *Client) Job(ctx context.Context, id string) (store.Job, error) {
	if _, err := uuid.Parse(id); err != nil {
		return store.Job{}, fmt.Errorf("job %q: %w", id, store.ErrNotFound)
	}
	return c.store.Get(ctx, id)
}

// Cancel cancels a job that is not final and fires preview.canceled.
// Canceling a canceled job returns it unchanged; canceling a job in another
// final status returns ErrFinal. A preview POST already sent is not undone
// upstream (CSM has no cancel); polling stops.
func (c *Client) Cancel(ctx context.Context, id string) (store.Job, error) {
	if _, err := uuid.Parse(id); err != nil {
		return store.Job{}, fmt.Errorf("job %q: %w", id, store.ErrNotFound)
	}
	var final bool
	j, err := c.store.Update(ctx, id, func(j *store.Job, now time.Time) (store.Change, error) {
		final = false
		if j.Status.Final() {
			final = j.Status != store.StatusCanceled
			return store.Change{}, store.ErrNoChange
		}
		j.Finish(store.StatusCanceled, now, &store.JobError{Code: store.CodeCanceled, Message: "canceled by request"}, "")
		var change store.Change
		Emit(&change, j, store.EventCanceled)
		return change, nil
	})
	if err != nil {
		return j, err
	}
	if err := c.enqueuer.Flush(ctx, id); err != nil {
		return j, fmt.Errorf("job %s canceled, webhook enqueue pending: %w", id, err)
	}
	if final {
		return j, fmt.Errorf("job %s is %s: %w", id, j.Status, ErrFinal)
	}
	return j, nil
}
