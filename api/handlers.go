package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// Problem is an RFC 9457 problem detail.
type Problem struct {
	Type   string             `json:"type"`
	Title  string             `json:"title"`
	Status int                `json:"status"`
	Detail string             `json:"detail,omitempty"`
	Errors []tasks.FieldError `json:"errors,omitempty"` // the invalid fields, by JSON name
}

func writeProblem(w http.ResponseWriter, status int, title, detail string, fields []tasks.FieldError) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Problem{Type: "about:blank", Title: title, Status: status, Detail: detail, Errors: fields})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// internalError logs err and answers 500 without its text: errors can
// carry details an API client should not see.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("request failed", zap.String("method", r.Method), zap.String("route", r.Pattern), zap.Error(err))
	writeProblem(w, http.StatusInternalServerError, "Internal error", "the request could not be processed; it is safe to retry", nil)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "float64":
		return "a number"
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "bool":
		return "a boolean"
	}
	return "of another type"
}

// writeControlError answers the errors the producer API returns.
func (s *Server) writeControlError(w http.ResponseWriter, r *http.Request, err error, what string) {
	if v, ok := tasks.AsValidationError(err); ok {
		// What a check found out on its own (where a host resolves) is for
		// the operator: logged here, never in the answer.
		for _, f := range v.Fields {
			if f.Detail != "" {
				s.log.Info("request refused", zap.String("route", r.Pattern), zap.String("field", f.Field), zap.String("detail", f.Detail))
			}
		}
		writeProblem(w, http.StatusUnprocessableEntity, "Invalid request", v.Error(), v.Fields)
		return
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, http.StatusNotFound, "Not found", what+" not found (unknown, or expired after the retention period)", nil)
	case errors.Is(err, tasks.ErrIdempotencyConflict):
		writeProblem(w, http.StatusConflict, "Idempotency key reused",
			"this idempotency key was used for a different request; use a new key for a new preview",
			[]tasks.FieldError{{Field: "idempotency_key", Message: "was used for a different request"}})
	case errors.Is(err, tasks.ErrFinal):
		writeProblem(w, http.StatusConflict, "Job is final", "the job already reached a final status; nothing to cancel", nil)
	case errors.Is(err, tasks.ErrNotReplayable):
		writeProblem(w, http.StatusConflict, "Message pending", "the message is being delivered; replay it once it is delivered or failed", nil)
	default:
		s.internalError(w, r, err)
	}
}

func (s *Server) createPreview(w http.ResponseWriter, r *http.Request) {
	var req tasks.PreviewRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	if key := strings.TrimSpace(r.Header.Get("Idempotency-Key")); key != "" {
		if req.IdempotencyKey != "" && req.IdempotencyKey != key {
			writeProblem(w, http.StatusBadRequest, "Conflicting idempotency keys",
				"the Idempotency-Key header and the body's idempotency_key differ",
				[]tasks.FieldError{{Field: "idempotency_key", Message: "differs from the Idempotency-Key header"}})
			return
		}
		req.IdempotencyKey = key
	}
	job, created, err := s.control.Submit(r.Context(), req)
	switch {
	case err == nil:
	case job.ID != "" && !errors.Is(err, tasks.ErrIdempotencyConflict):
		// The job exists; only its enqueue is pending, which a worker's
		// sweeper completes. The client has its job.
		s.log.Warn("job created, enqueue pending", zap.String("job_id", job.ID), zap.Error(err))
	default:
		s.writeControlError(w, r, err, "job")
		return
	}
	w.Header().Set("Location", "/v1/previews/"+job.ID)
	if !created {
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, http.StatusOK, job)
		return
	}
	writeJSON(w, http.StatusCreated, job)
}

func (s *Server) getPreview(w http.ResponseWriter, r *http.Request) {
	job, err := s.control.Job(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeControlError(w, r, err, "job")
		return
	}
	writeJSON(w, http.StatusOK, job)
}

// JobList is a page of jobs.
type JobList struct {
	Items      []store.Job `json:"items"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

func (s *Server) listPreviews(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := store.ListOptions{Status: store.Status(q.Get("status")), Cursor: q.Get("cursor"), Limit: 50}
	var fields []tasks.FieldError
	if opts.Status != "" && !opts.Status.Valid() {
		fields = append(fields, tasks.FieldError{Field: "status", Message: "must be one of queued, requesting, generating, done, failed, timed_out, canceled"})
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 200 {
			fields = append(fields, tasks.FieldError{Field: "limit", Message: "must be a number from 1 to 200"})
		}
		opts.Limit = n
	}
	if len(fields) > 0 {
		writeProblem(w, http.StatusBadRequest, "Invalid query", "fix the named parameters", fields)
		return
	}
	jobs, next, err := s.control.List(r.Context(), opts)
	if errors.Is(err, store.ErrBadCursor) {
		writeProblem(w, http.StatusBadRequest, "Invalid query", "the cursor is not one this API returned",
			[]tasks.FieldError{{Field: "cursor", Message: "is invalid"}})
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if jobs == nil {
		jobs = []store.Job{}
	}
	// A list shows every caller's jobs to every caller: each webhook_url is
	// reduced to its origin, as in events, since its path and query often
	// carry the receiver's credentials. GET /v1/previews/{id} keeps it whole.
	for i := range jobs {
		jobs[i].WebhookURL = store.PublicURL(jobs[i].WebhookURL)
	}
	writeJSON(w, http.StatusOK, JobList{Items: jobs, NextCursor: next})
}

func (s *Server) cancelPreview(w http.ResponseWriter, r *http.Request) {
	job, err := s.control.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeControlError(w, r, err, "job")
		return
	}
	writeJSON(w, http.StatusOK, job)
}

// MessageList lists a job's webhook messages with their attempts.
type MessageList struct {
	Items []store.Message `json:"items"`
}

func (s *Server) previewWebhooks(w http.ResponseWriter, r *http.Request) {
	msgs, err := s.control.Messages(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeControlError(w, r, err, "job")
		return
	}
	if msgs == nil {
		msgs = []store.Message{}
	}
	writeJSON(w, http.StatusOK, MessageList{Items: msgs})
}

func (s *Server) replayMessage(w http.ResponseWriter, r *http.Request) {
	m, err := s.control.Replay(r.Context(), r.PathValue("id"))
	switch {
	case err == nil:
	case errors.Is(err, tasks.ErrEnqueuePending):
		// The replay is committed with its task in the job's outbox; a
		// worker's sweeper enqueues it. The message is pending either way.
		s.log.Warn("replay committed, enqueue pending", zap.String("message_id", m.ID), zap.Error(err))
	default:
		s.writeControlError(w, r, err, "message")
		return
	}
	writeJSON(w, http.StatusAccepted, m)
}

// EndpointWithSecret is an endpoint as created or rotated: the only time
// what its receiver verifies with is shown. That is the whsec_ secret of a
// v1 endpoint, or the whpk_ public key of a v1a one; the whsk_ private key
// of a v1a endpoint is never shown.
type EndpointWithSecret struct {
	store.Endpoint
	Secret    string `json:"secret,omitempty"`
	PublicKey string `json:"public_key,omitempty"`
}

func endpointWithKey(ep store.Endpoint, shown string) EndpointWithSecret {
	if ep.SignatureVersion == store.SignatureV1a {
		return EndpointWithSecret{Endpoint: ep, PublicKey: shown}
	}
	return EndpointWithSecret{Endpoint: ep, Secret: shown}
}

// EndpointList is a page of endpoints.
type EndpointList struct {
	Items      []store.Endpoint `json:"items"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

func (s *Server) createEndpoint(w http.ResponseWriter, r *http.Request) {
	var req tasks.EndpointRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	ep, shown, err := s.control.AddEndpoint(r.Context(), req)
	var limit *tasks.EndpointLimitError
	if errors.As(err, &limit) {
		writeProblem(w, http.StatusConflict, "Endpoint limit reached", limit.Error(), nil)
		return
	}
	if err != nil {
		s.writeControlError(w, r, err, "endpoint")
		return
	}
	w.Header().Set("Location", "/v1/endpoints/"+ep.ID)
	writeJSON(w, http.StatusCreated, endpointWithKey(ep, shown))
}

// listEndpoints pages like listPreviews: limit (1..200, default 50) and the
// cursor of the previous page's next_cursor.
func (s *Server) listEndpoints(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := store.EndpointListOptions{Cursor: q.Get("cursor"), Limit: 50}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 200 {
			writeProblem(w, http.StatusBadRequest, "Invalid query", "fix the named parameters",
				[]tasks.FieldError{{Field: "limit", Message: "must be a number from 1 to 200"}})
			return
		}
		opts.Limit = n
	}
	eps, next, err := s.control.EndpointPage(r.Context(), opts)
	if errors.Is(err, store.ErrBadCursor) {
		writeProblem(w, http.StatusBadRequest, "Invalid query", "the cursor is not one this API returned",
			[]tasks.FieldError{{Field: "cursor", Message: "is invalid"}})
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if eps == nil {
		eps = []store.Endpoint{}
	}
	writeJSON(w, http.StatusOK, EndpointList{Items: eps, NextCursor: next})
}

func (s *Server) getEndpoint(w http.ResponseWriter, r *http.Request) {
	ep, err := s.control.Endpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeControlError(w, r, err, "endpoint")
		return
	}
	writeJSON(w, http.StatusOK, ep)
}

func (s *Server) deleteEndpoint(w http.ResponseWriter, r *http.Request) {
	if err := s.control.DeleteEndpoint(r.Context(), r.PathValue("id")); err != nil {
		s.writeControlError(w, r, err, "endpoint")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// DisableRequest is the optional body of POST /v1/endpoints/{id}/disable.
type DisableRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (s *Server) disableEndpoint(w http.ResponseWriter, r *http.Request) {
	var req DisableRequest
	if r.ContentLength != 0 && !s.decodeBody(w, r, &req) {
		return
	}
	s.setEnabled(w, r, false, req.Reason)
}

func (s *Server) enableEndpoint(w http.ResponseWriter, r *http.Request) { s.setEnabled(w, r, true, "") }

func (s *Server) setEnabled(w http.ResponseWriter, r *http.Request, enabled bool, reason string) {
	ep, err := s.control.SetEndpointEnabled(r.Context(), r.PathValue("id"), enabled, reason)
	if err != nil {
		s.writeControlError(w, r, err, "endpoint")
		return
	}
	writeJSON(w, http.StatusOK, ep)
}

func (s *Server) rotateEndpointSecret(w http.ResponseWriter, r *http.Request) {
	ep, shown, err := s.control.RotateEndpointSecret(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeControlError(w, r, err, "endpoint")
		return
	}
	writeJSON(w, http.StatusOK, endpointWithKey(ep, shown))
}
