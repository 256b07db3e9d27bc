// Package csm is the client of CSM.ai's image-to-3D REST API (the legacy
// session endpoints previewd uses): reading a session and starting its
// preview mesh. Every failure comes back as an *Error that says whether it is
// retryable and whether a preview may have been started anyway.
package csm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Limiter paces calls to CSM; Wait blocks until one call may be made.
type Limiter interface {
	Wait(ctx context.Context) error
}

// Options configure a Client.
type Options struct {
	BaseURL string // e.g. https://api.csm.ai
	APIKey  string
	// Timeout bounds one call, reading the response included. Default 30s.
	Timeout time.Duration
	// Transport is the HTTP transport; default a dedicated clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Limiter, when set, is waited on before every call.
	Limiter   Limiter
	UserAgent string
	Now       func() time.Time
}

// Client calls CSM. It is safe for concurrent use.
type Client struct {
	base    string
	apiKey  string
	timeout time.Duration
	http    *http.Client
	limiter Limiter
	ua      string
	now     func() time.Time
}

// maxResponseBytes bounds what is read of any response.
const maxResponseBytes = 1 << 20

// New returns a Client.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(opts.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("csm: base URL must be an absolute http(s) URL")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Transport == nil {
		opts.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "previewd/1"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Client{
		base:    u.Scheme + "://" + u.Host + trimSlash(u.Path),
		apiKey:  opts.APIKey,
		timeout: opts.Timeout,
		http: &http.Client{
			Transport: opts.Transport,
			// A redirect of a POST would turn it into a GET elsewhere; CSM
			// does not redirect, so a 3xx is reported, never followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		limiter: opts.Limiter,
		ua:      opts.UserAgent,
		now:     opts.Now,
	}, nil
}

func trimSlash(p string) string {
	for len(p) > 0 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return p
}

// sessionCodePattern is what previewd accepts as a session code: CSM's codes
// look like SESSION_1689257215_1674078. The code goes into a URL path.
var sessionCodePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidSessionCode reports whether code is safe to send.
func ValidSessionCode(code string) bool { return sessionCodePattern.MatchString(code) }

// GetSession reads a session.
func (c *Client) GetSession(ctx context.Context, code string) (*Session, error) {
	const op = "get session"
	if !ValidSessionCode(code) {
		return nil, &Error{Op: op, Kind: KindBadRequest, Message: "invalid session code"}
	}
	body, err := c.do(ctx, op, http.MethodGet, "/image-to-3d-sessions/"+url.PathEscape(code), nil)
	if err != nil {
		return nil, err
	}
	s, err := DecodeSession(body)
	if err != nil {
		return nil, &Error{Op: op, Kind: KindProtocol, StatusCode: http.StatusOK, Retryable: true, Err: err}
	}
	return s, nil
}

// PreviewParams are the body of a preview POST.
type PreviewParams struct {
	SelectedSpinIndex int       `json:"selected_spin_index"`
	SelectedSpin      string    `json:"selected_spin,omitempty"`
	ScaledBBox        []float64 `json:"scaled_bbox,omitempty"`
	PivotPoint        []float64 `json:"pivot_point,omitempty"`
}

// RequestPreview starts the preview mesh of a session. Each accepted call
// starts (and bills) a generation: callers must never repeat a call whose
// error has MaybeAccepted set.
func (c *Client) RequestPreview(ctx context.Context, code string, p PreviewParams) (*PreviewJob, error) {
	const op = "request preview"
	if !ValidSessionCode(code) {
		return nil, &Error{Op: op, Kind: KindBadRequest, Message: "invalid session code"}
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, &Error{Op: op, Kind: KindBadRequest, Err: err}
	}
	body, err := c.do(ctx, op, http.MethodPost, "/image-to-3d-sessions/get-3d/preview/"+url.PathEscape(code), payload)
	if err != nil {
		return nil, err
	}
	job, err := DecodePreviewJob(body)
	if err != nil {
		// A 2xx we cannot read may still have started the preview.
		return nil, &Error{Op: op, Kind: KindProtocol, StatusCode: http.StatusOK, MaybeAccepted: true, Err: err}
	}
	return job, nil
}

// do performs one call and returns the body of a successful response. It
// classifies every failure into an *Error.
func (c *Client) do(ctx context.Context, op, method, path string, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, &Error{Op: op, Kind: KindTransport, Retryable: true, Err: fmt.Errorf("rate limiter: %w", err)}
		}
	}
	var reqBody io.Reader
	if payload != nil {
		reqBody = bytes.NewReader(payload)
	}
	// Whether the request was written in full decides, on a failure, whether
	// CSM may have acted on it.
	var written atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		if info.Err == nil {
			written.Store(true)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, c.base+path, reqBody)
	if err != nil {
		return nil, &Error{Op: op, Kind: KindBadRequest, Err: err}
	}
	req.Header.Set("x-api-key", c.apiKey)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Error{Op: op, Kind: KindTransport, Retryable: true, MaybeAccepted: written.Load(), Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, &Error{Op: op, Kind: KindTransport, StatusCode: resp.StatusCode, Retryable: true, MaybeAccepted: true, Err: fmt.Errorf("read response: %w", err)}
	}
	if len(body) > maxResponseBytes {
		return nil, &Error{Op: op, Kind: KindProtocol, StatusCode: resp.StatusCode, Retryable: true, MaybeAccepted: true, Err: errors.New("response larger than 1 MiB")}
	}
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"), c.now())

	var env envelope
	parsed := json.Unmarshal(body, &env) == nil
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Op: op, RetryAfter: retryAfter, Message: c.scrub(errorMessage(env, parsed, body))}
		classifyStatus(e, resp.StatusCode)
		return nil, e
	}
	// The legacy envelope can carry a failure inside an HTTP 200.
	if parsed && (env.statusCode() >= 400 || env.errorText() != "") {
		e := &Error{Op: op, RetryAfter: retryAfter, Message: c.scrub(errorMessage(env, parsed, body))}
		status := env.statusCode()
		if status == 0 {
			status = resp.StatusCode
		}
		classifyStatus(e, status)
		return nil, e
	}
	return body, nil
}

// scrub removes our API key from an upstream message, should CSM ever echo
// it: messages end up in logs and in job errors.
func (c *Client) scrub(msg string) string {
	if c.apiKey == "" {
		return msg
	}
	return strings.ReplaceAll(msg, c.apiKey, "[redacted]")
}

func errorMessage(env envelope, parsed bool, body []byte) string {
	if parsed {
		msg, errText := env.messageText(), env.errorText()
		switch {
		case msg != "" && errText != "" && msg != errText:
			return cleanMessage(errText + ": " + msg)
		case msg != "":
			return cleanMessage(msg)
		case errText != "":
			return cleanMessage(errText)
		}
	}
	return cleanMessage(string(body))
}

// maxRetryAfter bounds the wait upstream can impose on one retry.
const maxRetryAfter = time.Hour

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// Compare in seconds first: a huge value would overflow a Duration.
		if err != nil || secs >= uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d < 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}
