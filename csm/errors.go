package csm

import (
	"fmt"
	"strings"
	"time"
)

// Kind classifies a failed CSM call.
type Kind string

// Kinds of failure.
const (
	KindTransport   Kind = "transport"    // no usable HTTP response: dial, TLS, timeout, reset
	KindTimeout     Kind = "timeout"      // 408: CSM or a proxy did not receive the whole request in time
	KindRateLimited Kind = "rate_limited" // 429, or a 400 worded as a rate limit
	KindAuth        Kind = "auth"         // 401/403: the API key is missing, wrong or revoked
	KindNotFound    Kind = "not_found"    // 404: no such session
	KindBadRequest  Kind = "bad_request"  // any other 4xx
	KindServer      Kind = "server"       // 5xx
	KindProtocol    Kind = "protocol"     // a 2xx whose body is not what the API documents
)

// Error is a failed CSM call. Handlers decide once, from Retryable and
// MaybeAccepted, what to do; they never parse messages.
type Error struct {
	Op         string // "get session" or "request preview"
	Kind       Kind
	StatusCode int    // HTTP status, or the envelope's statusCode when that is the failure; 0 without a response
	Message    string // upstream's message, shortened and stripped of control characters
	// Retryable says the same call may succeed later.
	Retryable bool
	// MaybeAccepted says the request may have reached CSM and been acted on
	// (a preview started and billed) even though the call failed: a 5xx, a
	// timeout or reset after the request was sent, or an unreadable 2xx.
	// It is false only when the failure proves the request was not acted on.
	MaybeAccepted bool
	// RetryAfter is the wait CSM asked for (Retry-After), when it did.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "csm %s: %s", e.Op, e.Kind)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (status %d)", e.StatusCode)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// RetryDelay returns the wait CSM asked for, zero when it asked for none.
func (e *Error) RetryDelay() time.Duration { return e.RetryAfter }

// rateLimitWords are the phrases that make a 400 a rate limit: CSM has been
// seen answering throttled calls with a 400 instead of a 429.
var rateLimitWords = []string{"rate limit", "rate-limit", "ratelimit", "too many", "quota", "throttl"}

func isRateLimitMessage(msg string) bool {
	lower := strings.ToLower(msg)
	for _, w := range rateLimitWords {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// classifyStatus fills Kind, Retryable and MaybeAccepted from an HTTP (or
// envelope) status code and the upstream message.
func classifyStatus(e *Error, status int) {
	e.StatusCode = status
	switch {
	case status == 429:
		e.Kind, e.Retryable = KindRateLimited, true
	case status == 400 && isRateLimitMessage(e.Message):
		e.Kind, e.Retryable = KindRateLimited, true
	case status == 408:
		// RFC 9110 §15.5.9: the server "did not receive a complete request
		// message within the time that it was prepared to wait". A proxy
		// that has not received the whole request has not forwarded it (a
		// proxy whose upstream is slow answers 504), and an origin cannot
		// act on a body it never got: the preview was not started, so the
		// POST may be sent again. CSM's own scripts retry it as a timeout.
		// (A 408 inside a 200 envelope came from the application, which had
		// the request: do treats that one as maybe accepted.)
		e.Kind, e.Retryable = KindTimeout, true
	case status == 401 || status == 403:
		e.Kind = KindAuth
	case status == 404:
		e.Kind = KindNotFound
	case status >= 400 && status < 500:
		e.Kind = KindBadRequest
	case status >= 500:
		// A 5xx says nothing about whether the work started: a proxy can
		// time out while the preview is being created behind it.
		e.Kind, e.Retryable, e.MaybeAccepted = KindServer, true, true
	default:
		// An envelope error with a success-looking code: upstream said no.
		e.Kind = KindBadRequest
	}
}

// cleanMessage shortens an upstream message and strips control characters,
// so that it is safe to log and to show in a job's error.
func cleanMessage(s string) string {
	const max = 300
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > max {
		cut := max
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
