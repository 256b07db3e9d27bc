package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sender defaults and bounds.
const (
	defaultTimeout         = 15 * time.Second
	defaultMaxResponseBody = 64 << 10
	defaultUserAgent       = "previewd-webhooks/1"

	responsePrefixLen = 256
	maxRetryAfter     = 24 * time.Hour

	// Connection-level bounds, each also capped by SenderOptions.Timeout.
	maxDialTimeout         = 10 * time.Second
	maxTLSHandshakeTimeout = 10 * time.Second
	maxResponseHeaderBytes = 64 << 10
)

// SenderOptions configures a Sender. Zero values mean the documented
// defaults.
type SenderOptions struct {
	// Timeout bounds one whole attempt: dialling, TLS, sending, waiting for
	// the response and reading the response prefix. Default 15s.
	Timeout time.Duration
	// AllowPrivate disables the address policy (local development, tests).
	AllowPrivate bool
	// MaxResponseBody is how many response body bytes are read at most;
	// the rest is dropped with the connection, never buffered. Default 64 KiB.
	MaxResponseBody int64
	// UserAgent is sent with every request. Default "previewd-webhooks/1".
	UserAgent string
}

// Sender delivers webhook requests, one attempt per Send. It is safe for
// concurrent use and keeps one connection pool, so create one per process
// and share it.
type Sender struct {
	client       *http.Client
	transport    *http.Transport
	dialer       *net.Dialer
	timeout      time.Duration
	maxBody      int64
	userAgent    string
	allowPrivate bool
}

// NewSender returns a Sender with opts, defaults applied.
func NewSender(opts SenderOptions) *Sender {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.MaxResponseBody <= 0 {
		opts.MaxResponseBody = defaultMaxResponseBody
	}
	if opts.UserAgent == "" {
		opts.UserAgent = defaultUserAgent
	}
	dialer := &net.Dialer{
		Timeout:   min(opts.Timeout, maxDialTimeout),
		KeepAlive: 30 * time.Second,
	}
	if !opts.AllowPrivate {
		// Runs after name resolution, on the address about to be
		// connected, so a name that resolved to a public address at
		// registration and to a private one now is still refused.
		dialer.Control = controlPublicOnly
	}
	transport := &http.Transport{
		Proxy:                  nil, // the policy must see the real peer, not a proxy
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    min(opts.Timeout, maxTLSHandshakeTimeout),
		ResponseHeaderTimeout:  opts.Timeout,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		DisableCompression:     true, // we read a prefix only; no gzip bombs
	}
	return &Sender{
		client: &http.Client{
			Transport: transport,
			Timeout:   opts.Timeout,
			// A redirect could point anywhere; receivers must give the
			// final URL. The 3xx is returned and treated as a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		transport:    transport,
		dialer:       dialer,
		timeout:      opts.Timeout,
		maxBody:      opts.MaxResponseBody,
		userAgent:    opts.UserAgent,
		allowPrivate: opts.AllowPrivate,
	}
}

// CloseIdleConnections closes pooled connections (and their goroutines);
// call it on shutdown. The Sender stays usable.
func (s *Sender) CloseIdleConnections() { s.transport.CloseIdleConnections() }

// Message is one webhook payload.
type Message struct {
	// ID goes into webhook-id. It must be the same on every retry of the
	// same event so receivers can de-duplicate.
	ID string
	// Body is sent byte for byte; it is what gets signed.
	Body []byte
}

// Result describes one attempt, successful or not.
type Result struct {
	// StatusCode is the response status, 0 when there was no response.
	StatusCode int
	// Latency is the time from sending to the end of reading the response
	// prefix (or to the failure).
	Latency time.Duration
	// ResponsePrefix is the first 256 bytes of the response body as valid
	// UTF-8 (invalid bytes replaced), for delivery logs.
	ResponsePrefix string
	// RetryAfter is the receiver's Retry-After (delta seconds, or an
	// HTTP-date relative to the now given to Send), clamped to [0, 24h];
	// 0 when absent or unparsable.
	RetryAfter time.Duration
}

// DeliveryError describes a failed attempt.
type DeliveryError struct {
	// StatusCode is the response status, 0 when there was no response.
	StatusCode int
	// Gone is true for 410 Gone: the receiver asks us to stop sending.
	Gone bool
	// Blocked is true when the URL or the dialled address was refused by
	// policy; nothing was sent.
	Blocked bool
	// Retryable is false for Gone, Blocked and invalid input; true for
	// timeouts, connection errors and any non-2xx status other than 410.
	Retryable bool
	// Err is the underlying cause, nil for a plain status failure.
	Err error
}

// Error describes the failure. It never contains the signing secret, the
// response body, or the URL (which may carry credentials).
func (e *DeliveryError) Error() string {
	switch {
	case e.Blocked:
		return "webhook: delivery blocked: URL " + errString(e.Err)
	case e.Gone:
		return "webhook: receiver responded 410 Gone"
	case e.StatusCode >= 300 && e.StatusCode < 400:
		return "webhook: receiver responded " + strconv.Itoa(e.StatusCode) + " (redirects are not followed)"
	case e.StatusCode != 0:
		return "webhook: receiver responded " + strconv.Itoa(e.StatusCode)
	default:
		return "webhook: delivery failed: " + errString(e.Err)
	}
}

// Unwrap returns Err.
func (e *DeliveryError) Unwrap() error { return e.Err }

func errString(err error) string {
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}

// Send POSTs msg.Body to rawURL with Content-Type application/json, the
// User-Agent and Standard Webhooks headers signed by signer with timestamp
// now. Only a 2xx is success (nil error); redirects are not followed. Any
// failure is a *DeliveryError.
//
// Unless AllowPrivate is set, the URL must pass CheckURL's syntactic and
// IP-literal checks, and the address actually dialled must be public.
// Names are not resolved in advance: the dialer's check covers them.
//
// The response body is read only up to MaxResponseBody, within Timeout; a
// failure while reading it does not change the verdict, which rests on the
// status code alone.
func (s *Sender) Send(ctx context.Context, rawURL string, signer *Signer, msg Message, now time.Time) (Result, error) {
	var res Result
	if err := checkURL(ctx, rawURL, s.allowPrivate, nil); err != nil {
		return res, &DeliveryError{Blocked: true, Err: err}
	}
	if signer == nil || msg.ID == "" {
		return res, &DeliveryError{Err: errors.New("message needs an ID and a signer")}
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(msg.Body))
	if err != nil {
		return res, &DeliveryError{Err: errors.New("cannot build request")}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.userAgent)
	signer.Headers(req.Header, msg.ID, now, msg.Body)

	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		res.Latency = time.Since(start)
		return res, transportError(err)
	}
	res.StatusCode = resp.StatusCode
	res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	res.ResponsePrefix = s.readPrefix(resp.Body)
	res.Latency = time.Since(start)

	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return res, nil
	case code == http.StatusGone:
		return res, &DeliveryError{StatusCode: code, Gone: true}
	default:
		return res, &DeliveryError{StatusCode: code, Retryable: true}
	}
}

// readPrefix reads at most maxBody bytes of body, keeps the first 256, and
// closes body. Closing before EOF drops the connection instead of draining
// a huge or endless body; small bodies are read to EOF so the connection
// can be reused.
func (s *Sender) readPrefix(body io.ReadCloser) string {
	defer body.Close()
	limited := io.LimitReader(body, s.maxBody)
	buf := make([]byte, min(responsePrefixLen, s.maxBody))
	n, _ := io.ReadFull(limited, buf)
	_, _ = io.Copy(io.Discard, limited) // errors only cut the prefix short
	return strings.ToValidUTF8(string(buf[:n]), "\uFFFD")
}

// transportError classifies an error from http.Client.Do.
func transportError(err error) *DeliveryError {
	// url.Error repeats the URL, which may carry credentials; keep the cause.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	var blocked *URLError
	if errors.As(err, &blocked) {
		return &DeliveryError{Blocked: true, Err: blocked}
	}
	return &DeliveryError{Retryable: true, Err: err}
}

// controlPublicOnly is a net.Dialer Control hook that refuses to connect
// to non-public addresses. address is the resolved "ip:port".
func controlPublicOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &URLError{Reason: "dialled address cannot be checked"}
	}
	if !IsPublic(ap.Addr()) {
		return &URLError{Reason: "host resolves to " + ap.Addr().String() + ", which is not a public address"}
	}
	return nil
}

// parseRetryAfter parses a Retry-After value, delta seconds or HTTP-date
// relative to now, clamped to [0, 24h]; 0 when empty or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter // only overflow can fail here
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
