package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/webhook"
)

// PreviewRequest is what a backend asks for: the preview mesh of one CSM
// session. JSON names are those of the HTTP API and of error messages.
type PreviewRequest struct {
	// SessionCode is the CSM session, e.g. SESSION_1689257215_1674078.
	SessionCode string `json:"session_code"`
	// SelectedSpinIndex picks one of the session's four spins (0..3).
	SelectedSpinIndex int `json:"selected_spin_index"`
	// SelectedSpin is the URL of that spin. When empty, the worker reads it
	// from the session (turbo sessions require it). It is passed to CSM,
	// never fetched by previewd.
	SelectedSpin string `json:"selected_spin,omitempty"`
	// ScaledBBox is [width, height, depth] of the asset, each positive.
	ScaledBBox []float64 `json:"scaled_bbox,omitempty"`
	// PivotPoint is [x, y, z], each in [-0.5, 0.5].
	PivotPoint []float64 `json:"pivot_point,omitempty"`
	// WebhookURL receives the job's signed webhooks.
	WebhookURL string `json:"webhook_url,omitempty"`
	// ExternalID is the caller's own reference, returned as is.
	ExternalID string `json:"external_id,omitempty"`
	// IdempotencyKey makes repeated requests return the same job. Without
	// one, the key is derived from the request itself, so an identical
	// request returns the existing job rather than paying for a second
	// preview; pass a new key to ask for another generation on purpose.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// FieldError is one invalid field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
	// Detail is what the check found out that the client must not see (the
	// address a host resolves to, from previewd's resolver): for the log
	// only. It is neither encoded nor part of Error.
	Detail string `json:"-"`
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, msg string) error { return &FieldError{Field: field, Message: msg} }

// ValidationError lists every invalid field of a request.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Error()
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

const (
	maxURLLength        = 2048
	maxExternalIDLength = 256
	maxIdempotencyKey   = 255
	maxBBoxDimension    = 1e6
)

// Validate checks the request's syntax and ranges; it does no I/O. The
// returned error is a *ValidationError naming every invalid field.
func (r PreviewRequest) Validate() error {
	var fields []FieldError
	add := func(field, msg string) { fields = append(fields, FieldError{Field: field, Message: msg}) }

	switch {
	case r.SessionCode == "":
		add("session_code", "is required")
	case !csm.ValidSessionCode(r.SessionCode):
		add("session_code", "must be 1-128 letters, digits, '_' or '-'")
	}
	if r.SelectedSpinIndex < 0 || r.SelectedSpinIndex > 3 {
		add("selected_spin_index", "must be 0, 1, 2 or 3")
	}
	if r.SelectedSpin != "" {
		if msg := checkHTTPURL(r.SelectedSpin); msg != "" {
			add("selected_spin", msg)
		}
	}
	if r.ScaledBBox != nil {
		if len(r.ScaledBBox) != 3 {
			add("scaled_bbox", "must be 3 numbers: width, height, depth")
		} else {
			for _, v := range r.ScaledBBox {
				if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 || v > maxBBoxDimension {
					add("scaled_bbox", fmt.Sprintf("each dimension must be a number above 0 and at most %g", maxBBoxDimension))
					break
				}
			}
		}
	}
	if r.PivotPoint != nil {
		if len(r.PivotPoint) != 3 {
			add("pivot_point", "must be 3 numbers: x, y, z")
		} else {
			for _, v := range r.PivotPoint {
				if math.IsNaN(v) || v < -0.5 || v > 0.5 {
					add("pivot_point", "each coordinate must be between -0.5 and 0.5")
					break
				}
			}
		}
	}
	if r.WebhookURL != "" {
		if msg := checkHTTPURL(r.WebhookURL); msg != "" {
			add("webhook_url", msg)
		}
	}
	if msg := checkText(r.ExternalID, maxExternalIDLength); msg != "" {
		add("external_id", msg)
	}
	if msg := checkText(r.IdempotencyKey, maxIdempotencyKey); msg != "" {
		add("idempotency_key", msg)
	}
	if len(fields) > 0 {
		return &ValidationError{Fields: fields}
	}
	return nil
}

// CheckAddresses applies the address policy to the URLs something will
// reach: webhook_url, which previewd posts to, and selected_spin, which CSM
// fetches on our behalf (from inside its own network, where no dial-time
// check of ours protects it). Each must pass webhook.CheckedURL: http or
// https, no user info, no look-alike IP literal, and, unless allowPrivate,
// a public host (resolved with resolver; nil means net.DefaultResolver).
// Each is replaced by the checked form, its host in ASCII, which is what
// the job stores, previewd dials and CSM is sent. Call it after Validate.
//
// The error is a *ValidationError naming the field; what resolving found
// (which would map previewd's network for the client) is in each
// FieldError's Detail, not in its Message.
func (r *PreviewRequest) CheckAddresses(ctx context.Context, allowPrivate bool, resolver *net.Resolver) error {
	var fields []FieldError
	for _, f := range []struct {
		name string
		url  *string
	}{{"selected_spin", &r.SelectedSpin}, {"webhook_url", &r.WebhookURL}} {
		if *f.url == "" {
			continue
		}
		checked, err := webhook.CheckedURL(ctx, *f.url, allowPrivate, resolver)
		if err != nil {
			fe := FieldError{Field: f.name, Message: err.Error()}
			var uerr *webhook.URLError
			if errors.As(err, &uerr) {
				fe.Detail = uerr.Detail
			}
			fields = append(fields, fe)
			continue
		}
		*f.url = checked
	}
	if len(fields) > 0 {
		return &ValidationError{Fields: fields}
	}
	return nil
}

func checkHTTPURL(raw string) string {
	if len(raw) > maxURLLength {
		return fmt.Sprintf("must be at most %d characters", maxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "must be a valid URL"
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "must be an http or https URL"
	}
	if u.Host == "" {
		return "must have a host"
	}
	if u.User != nil {
		return "must not contain user info"
	}
	return ""
}

func checkText(s string, maxLen int) string {
	if len(s) > maxLen {
		return fmt.Sprintf("must be at most %d bytes", maxLen)
	}
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "must not contain control characters"
		}
	}
	return ""
}

// fingerprint identifies the request's content (everything but the
// idempotency key), to tell a repeated request from a different one that
// reuses a key.
func (r PreviewRequest) fingerprint() string {
	r.IdempotencyKey = ""
	if r.ScaledBBox != nil && len(r.ScaledBBox) == 0 {
		r.ScaledBBox = nil
	}
	if r.PivotPoint != nil && len(r.PivotPoint) == 0 {
		r.PivotPoint = nil
	}
	raw, err := json.Marshal(r)
	if err != nil {
		// Validate has refused NaN and infinities, the only values that fail.
		panic("tasks: fingerprint of a validated request: " + err.Error())
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// AsValidationError returns the *ValidationError in err's chain, if any.
func AsValidationError(err error) (*ValidationError, bool) {
	var v *ValidationError
	ok := errors.As(err, &v)
	return v, ok
}
