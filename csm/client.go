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

// RequestLimiter is a Limiter that holds new requests (AwaitTurn) to a
// smaller share of the rate than polls (GetSession): see RedisLimiter.
type RequestLimiter interface {
	Limiter
	WaitRequest(ctx context.Context) error
}

// Options configure a Client.
type Options struct {
	BaseURL string // e.g. https://api.csm.ai
	APIKey  string
	// Timeout bounds one call, reading the response included. Default 30s.
	Timeout time.Duration
	// Transport is the HTTP transport; default a dedicated clone of
	// http.DefaultTransport. It must never re-send a request by itself
	// (no retrying RoundTripper): the preview POST is billed.
	Transport http.RoundTripper
	// Limiter, when set, paces calls: GetSession waits on it, and callers
	// of RequestPreview take their turn with AwaitTurn first.
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
	body, err := c.do(ctx, call{op: op, method: http.MethodGet, path: "/image-to-3d-sessions/" + url.PathEscape(code), awaitTurn: true})
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

// AwaitTurn waits until the shared rate limiter (Options.Limiter) allows one
// call to CSM, for at most Options.Timeout; without a limiter it returns nil
// at once. Its error is a retryable *Error of KindTransport that is never
// MaybeAccepted: nothing was sent.
//
// RequestPreview does not wait on the limiter: a caller takes its turn here
// first, then records its intent to POST, then calls RequestPreview at once,
// so that no wait of the limiter sits between the recorded intent and the
// request being written.
func (c *Client) AwaitTurn(ctx context.Context) error {
	if c.limiter == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if rl, ok := c.limiter.(RequestLimiter); ok {
		if err := rl.WaitRequest(ctx); err != nil {
			return &Error{Op: "await turn", Kind: KindTransport, Retryable: true, Err: fmt.Errorf("rate limiter: %w", err)}
		}
		return nil
	}
	return c.awaitTurn(ctx, "await turn")
}

// requestCall marks a context whose calls belong to a new request.
type requestCall struct{}

// ForRequest marks the calls made with the returned context as part of a
// new preview request (the session read before the POST): their turns of
// the rate limit come from the requests' share (RequestLimiter), like the
// POST's own (AwaitTurn), so that a backlog of requests cannot spend the
// share kept for polls of running jobs.
func ForRequest(ctx context.Context) context.Context {
	return context.WithValue(ctx, requestCall{}, true)
}

func (c *Client) awaitTurn(ctx context.Context, op string) error {
	if c.limiter == nil {
		return nil
	}
	if rl, ok := c.limiter.(RequestLimiter); ok && ctx.Value(requestCall{}) != nil {
		if err := rl.WaitRequest(ctx); err != nil {
			return &Error{Op: op, Kind: KindTransport, Retryable: true, Err: fmt.Errorf("rate limiter: %w", err)}
		}
		return nil
	}
	if err := c.limiter.Wait(ctx); err != nil {
		return &Error{Op: op, Kind: KindTransport, Retryable: true, Err: fmt.Errorf("rate limiter: %w", err)}
	}
	return nil
}

// RequestPreview starts the preview mesh of a session. Each accepted call
// starts (and bills) a generation: callers must never repeat a call whose
// error has MaybeAccepted set.
//
// It does not wait on the rate limiter: callers take their turn with
// AwaitTurn first, before recording their intent to POST, and then call
// RequestPreview at once. From here to the request being written there is
// no wait of ours, only the transport's own: reusing a pooled connection, or
// else dialling one (DNS, TCP connect, TLS handshake, a proxy's CONNECT).
//
// The POST is sent exactly once: no transport may replay it (see do).
func (c *Client) RequestPreview(ctx context.Context, code string, p PreviewParams) (*PreviewJob, error) {
	const op = "request preview"
	if !ValidSessionCode(code) {
		return nil, &Error{Op: op, Kind: KindBadRequest, Message: "invalid session code"}
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, &Error{Op: op, Kind: KindBadRequest, Err: err}
	}
	body, err := c.do(ctx, call{op: op, method: http.MethodPost, path: "/image-to-3d-sessions/get-3d/preview/" + url.PathEscape(code), payload: payload})
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

// call is one request do sends.
type call struct {
	op, method, path string
	// payload, when set, is a JSON body, and the request is never replayed.
	payload []byte
	// awaitTurn makes do wait on the limiter first, within the call's
	// timeout.
	awaitTurn bool
}

// unreplayableBody hides the reader's type from net/http, so that
// http.NewRequest gives the request no GetBody.
type unreplayableBody struct{ io.Reader }

// do performs one call and returns the body of a successful response. It
// classifies every failure into an *Error.
func (c *Client) do(ctx context.Context, cl call) ([]byte, error) {
	op := cl.op
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if cl.awaitTurn {
		if err := c.awaitTurn(ctx, op); err != nil {
			return nil, err
		}
	}
	// A request with a body (the billed POST) must reach CSM at most once,
	// whatever the connection does. Go's transports re-send a request by
	// themselves in two places, and neither may fire here:
	//   - HTTP/2 (net/http's bundled http2 and x/net/http2,
	//     shouldRetryRequest and canRetryError): on REFUSED_STREAM, on a
	//     GOAWAY, and in net/http's copy on RST_STREAM(PROTOCOL_ERROR) from
	//     the peer, the request is replayed whatever its method, after the
	//     body was written too, as long as Request.GetBody can rewind the
	//     body. A proxy in front of
	//     CSM that resets the stream after forwarding the POST would then
	//     get, and CSM bill, a second one. Without GetBody the transport
	//     replays only a request whose body it has not started to read,
	//     i.e. one not sent at all.
	//   - HTTP/1 (Transport.roundTrip, persistConn.shouldRetryRequest): a
	//     request is replayed after a failure on a reused connection when
	//     nothing was written and its body can be rewound (GetBody), or when
	//     it is replayable (Request.isReplayable: GET, HEAD, OPTIONS, TRACE,
	//     or an Idempotency-Key / X-Idempotency-Key header), which also
	//     requires GetBody for a request with a body.
	// http.NewRequest sets GetBody for a *bytes.Reader, *bytes.Buffer or
	// *strings.Reader body, so the body goes in wrapped, with its length set
	// by hand, and GetBody stays nil: no transport can rewind, hence none can
	// replay, the POST; a failure after it was written comes back to the
	// caller with MaybeAccepted set. We never send an Idempotency-Key header
	// (CSM documents none, and it would mark the request idempotent). The
	// GET carries no body and may be replayed: reading a session is safe.
	var reqBody io.Reader
	if cl.payload != nil {
		reqBody = unreplayableBody{bytes.NewReader(cl.payload)}
	}
	// Whether the request was written in full decides, on a failure, whether
	// CSM may have acted on it.
	var written atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		if info.Err == nil {
			written.Store(true)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), cl.method, c.base+cl.path, reqBody)
	if err != nil {
		return nil, &Error{Op: op, Kind: KindBadRequest, Err: err}
	}
	req.Header.Set("x-api-key", c.apiKey)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if cl.payload != nil {
		req.ContentLength = int64(len(cl.payload))
		req.GetBody = nil // nil already (the body is wrapped); kept nil on purpose, see above
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
	// Our key is scrubbed from the whole body before anything reads it, so
	// that no part of it (a decode error's quote, a message cut to length)
	// can carry a piece of the key on.
	body = c.scrubBytes(body)
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"), c.now())

	var env envelope
	parsed := json.Unmarshal(body, &env) == nil
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Op: op, RetryAfter: retryAfter, Message: c.errorMessage(env, parsed, body)}
		classifyStatus(e, resp.StatusCode)
		return nil, e
	}
	// The legacy envelope can carry a failure inside an HTTP 200.
	if parsed && (env.statusCode() >= 400 || env.errorText() != "") {
		e := &Error{Op: op, RetryAfter: retryAfter, Message: c.errorMessage(env, parsed, body)}
		status := env.statusCode()
		if status == 0 {
			status = resp.StatusCode
		}
		classifyStatus(e, status)
		if status == http.StatusRequestTimeout {
			// The application answered, so it had the whole request: its
			// 408 is a timeout of its own work, which may have started.
			e.MaybeAccepted = true
		}
		return nil, e
	}
	return body, nil
}

// scrub removes our API key from an upstream message, should CSM ever echo
// it: messages end up in logs, in job errors and in asynq's last_err. It
// must run before any cut to length: a cut through the key would leave a
// prefix of it that no later scrub recognises.
func (c *Client) scrub(msg string) string {
	if c.apiKey == "" {
		return msg
	}
	return strings.ReplaceAll(msg, c.apiKey, redactedKey)
}

// scrubBytes is scrub for a raw response body.
func (c *Client) scrubBytes(body []byte) []byte {
	if c.apiKey == "" || !bytes.Contains(body, []byte(c.apiKey)) {
		return body
	}
	return bytes.ReplaceAll(body, []byte(c.apiKey), []byte(redactedKey))
}

const redactedKey = "[redacted]"

// errorMessage is the upstream message of a failed call, scrubbed of our
// key and then cleaned and cut to length, in that order. The decoded
// message is scrubbed again: a JSON string can spell the key with escapes
// that the raw body does not show.
func (c *Client) errorMessage(env envelope, parsed bool, body []byte) string {
	if parsed {
		msg, errText := c.scrub(env.messageText()), c.scrub(env.errorText())
		switch {
		case msg != "" && errText != "" && msg != errText:
			return cleanMessage(errText + ": " + msg)
		case msg != "":
			return cleanMessage(msg)
		case errText != "":
			return cleanMessage(errText)
		}
	}
	return cleanMessage(c.scrub(string(body)))
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
