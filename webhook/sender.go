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
	// Resolver looks up receivers' names, once per delivery (see Resolve).
	// Default net.DefaultResolver; any *net.Resolver fits.
	Resolver Resolver
}

// Resolver looks up a host's addresses, as *net.Resolver does.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Sender delivers webhook requests, one attempt per Send. It is safe for
// concurrent use and keeps one connection pool, so create one per process
// and share it.
type Sender struct {
	client       *http.Client
	transport    *http.Transport
	dialer       *net.Dialer
	resolver     Resolver
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
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	dialer := &net.Dialer{
		Timeout:   min(opts.Timeout, maxDialTimeout),
		KeepAlive: 30 * time.Second,
	}
	if !opts.AllowPrivate {
		// Runs on the address about to be connected (the one Resolve
		// found), so a name that resolved to a public address at
		// registration and to a private one now is still refused.
		dialer.Control = controlPublicOnly
	}
	s := &Sender{dialer: dialer, resolver: opts.Resolver}
	transport := &http.Transport{
		Proxy:                  nil, // the policy must see the real peer, not a proxy
		DialContext:            s.dial,
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
	s.client = &http.Client{
		Transport: transport,
		Timeout:   opts.Timeout,
		// A redirect could point anywhere; receivers must give the
		// final URL. The 3xx is returned and treated as a failure.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s.transport = transport
	s.timeout = opts.Timeout
	s.maxBody = opts.MaxResponseBody
	s.userAgent = opts.UserAgent
	s.allowPrivate = opts.AllowPrivate
	return s
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
	// Disable is true when the receiver answered "webhook-delivery:
	// disable" (as Svix honours it): stop delivering to this endpoint. It
	// can come with a 2xx, which still delivered the message.
	Disable bool
}

// DeliveryError describes a failed attempt.
type DeliveryError struct {
	// StatusCode is the response status, 0 when there was no response.
	StatusCode int
	// Gone is true for 410 Gone: the receiver asks us to stop sending.
	Gone bool
	// Disable is true when a non-2xx answer carried "webhook-delivery:
	// disable": the receiver asks us to stop sending, as with Gone.
	Disable bool
	// Blocked is true when the URL or the dialled address was refused by
	// policy; nothing was sent.
	Blocked bool
	// Retryable is false for Gone, Disable, Blocked and invalid input;
	// true for timeouts, connection errors, failed name lookups and any
	// other non-2xx status.
	Retryable bool
	// Err is the underlying cause, nil for a plain status failure.
	Err error
	// Detail is what the sender found out on its own while trying: the
	// resolver's address in a failed lookup, the address a name resolved
	// to, a connection's local and remote addresses. An operator needs it
	// in the log; a client must not see it in an attempt log, since it maps
	// the inside of previewd's network. Error never contains it.
	Detail string

	cause string // what Error says of Err; Err's own text when empty
}

// Error describes the failure. It never contains the signing secret, the
// response body, the URL (which may carry credentials), or Detail.
func (e *DeliveryError) Error() string {
	cause := e.cause
	if cause == "" {
		cause = errString(e.Err)
	}
	switch {
	case e.Blocked:
		return "webhook: delivery blocked: URL " + cause
	case e.Gone:
		return "webhook: receiver responded 410 Gone"
	case e.Disable:
		return "webhook: receiver responded " + strconv.Itoa(e.StatusCode) + " with webhook-delivery: disable"
	case e.StatusCode >= 300 && e.StatusCode < 400:
		return "webhook: receiver responded " + strconv.Itoa(e.StatusCode) + " (redirects are not followed)"
	case e.StatusCode != 0:
		return "webhook: receiver responded " + strconv.Itoa(e.StatusCode)
	default:
		return "webhook: delivery failed: " + cause
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

// Target is one receiver as a delivery reaches it. Limits count it by Host,
// Domain and Addr, and SendTo connects to Addr and nowhere else, so what a
// limit counts is what is dialled.
type Target struct {
	// URL is the webhook URL as stored; it is what the request is built
	// from (Host header, TLS server name, path).
	URL string
	// Host is the URL's host as NormalizeHost spells it.
	Host string
	// Domain is Host's registrable domain (see RegistrableDomain).
	Domain string
	// Port is the port dialled: the URL's, or the scheme's default.
	Port string
	// Addr is the address SendTo dials; the zero Addr until Resolve.
	Addr netip.Addr
}

// Target checks rawURL as Send does (CheckURL's syntactic and IP-literal
// checks, unless AllowPrivate) and returns its unresolved Target. It does
// no I/O. A refusal is a *DeliveryError with Blocked set.
func (s *Sender) Target(rawURL string) (Target, error) {
	if err := checkURL(context.Background(), rawURL, s.allowPrivate, nil); err != nil {
		return Target{}, &DeliveryError{Blocked: true, Err: err}
	}
	u, err := url.Parse(rawURL)
	if err != nil { // checkURL parsed it already
		return Target{}, &DeliveryError{Blocked: true, Err: &URLError{Reason: "is not a valid URL"}}
	}
	host, port := NormalizeHost(u.Hostname()), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return Target{URL: rawURL, Host: host, Domain: RegistrableDomain(host), Port: port}, nil
}

// Resolve looks t's host up, once, with the Sender's resolver and returns t
// with the address SendTo will dial: the resolver's first (most preferred)
// address, or the IP literal itself. A failed lookup is a retryable
// *DeliveryError saying only "could not resolve the host"; the resolver's
// own message, which names the resolver, is in Detail. The address policy
// is not applied here but when dialling, so it holds for every connection.
func (s *Sender) Resolve(ctx context.Context, t Target) (Target, error) {
	if addr, err := netip.ParseAddr(t.Host); err == nil {
		t.Addr = addr
		return t, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.dialer.Timeout)
	defer cancel()
	addrs, err := s.resolver.LookupNetIP(ctx, "ip", t.Host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("lookup " + t.Host + ": no addresses")
	}
	if err != nil {
		return t, &DeliveryError{Retryable: true, Err: err, cause: "could not resolve the host", Detail: err.Error()}
	}
	t.Addr = addrs[0].Unmap()
	return t, nil
}

// Send POSTs msg.Body to rawURL (see SendTo), resolving its host first.
func (s *Sender) Send(ctx context.Context, rawURL string, signer *Signer, msg Message, now time.Time) (Result, error) {
	t, err := s.Target(rawURL)
	if err != nil {
		return Result{}, err
	}
	if t, err = s.Resolve(ctx, t); err != nil {
		return Result{}, err
	}
	return s.SendTo(ctx, t, signer, msg, now)
}

// SendTo POSTs msg.Body to t.URL with Content-Type application/json, the
// User-Agent and Standard Webhooks headers signed by signer with timestamp
// now. Only a 2xx is success (nil error); redirects are not followed. Any
// failure is a *DeliveryError. A "webhook-delivery: disable" answer sets
// Result.Disable, and on a non-2xx makes the failure final.
//
// A new connection goes to t.Addr (from Resolve) and nowhere else: the name
// is not looked up again, so it cannot rebind between the check and the
// dial. Unless AllowPrivate is set, t.Addr must be public; that is checked
// on the socket about to connect. A pooled connection to the same URL host
// and port may be reused; it was checked when it was dialled.
//
// The response body is read only up to MaxResponseBody, within Timeout; a
// failure while reading it does not change the verdict, which rests on the
// status code alone.
func (s *Sender) SendTo(ctx context.Context, t Target, signer *Signer, msg Message, now time.Time) (Result, error) {
	var res Result
	if err := checkURL(ctx, t.URL, s.allowPrivate, nil); err != nil {
		return res, &DeliveryError{Blocked: true, Err: err}
	}
	if !t.Addr.IsValid() {
		return res, &DeliveryError{Err: errors.New("target not resolved")}
	}
	if signer == nil || msg.ID == "" {
		return res, &DeliveryError{Err: errors.New("message needs an ID and a signer")}
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, pinKey{}, t)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(msg.Body))
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
		return res, transportError(err, t.Addr)
	}
	res.StatusCode = resp.StatusCode
	res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	res.Disable = asksToDisable(resp.Header)
	res.ResponsePrefix = s.readPrefix(resp.Body)
	res.Latency = time.Since(start)

	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return res, nil
	case code == http.StatusGone:
		return res, &DeliveryError{StatusCode: code, Gone: true, Disable: res.Disable}
	case res.Disable:
		return res, &DeliveryError{StatusCode: code, Disable: true}
	default:
		return res, &DeliveryError{StatusCode: code, Retryable: true}
	}
}

// asksToDisable reports whether a response carries "webhook-delivery:
// disable", the receiver's request to stop delivering to it.
func asksToDisable(h http.Header) bool {
	for _, v := range h.Values("Webhook-Delivery") {
		if strings.EqualFold(strings.TrimSpace(v), "disable") {
			return true
		}
	}
	return false
}

// pinKey carries a request's Target to dial.
type pinKey struct{}

// dial is the transport's DialContext: a connection for a request sent by
// SendTo goes to its Target's address, never to a fresh lookup of the name.
func (s *Sender) dial(ctx context.Context, network, address string) (net.Conn, error) {
	t, ok := ctx.Value(pinKey{}).(Target)
	if !ok {
		return nil, errors.New("webhook: dial without a resolved target")
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil || NormalizeHost(host) != t.Host {
		// The transport dials the request's own host; anything else is
		// a bug, and dialling it would bypass the limits.
		return nil, errors.New("webhook: dialled host is not the resolved target")
	}
	return s.dialer.DialContext(ctx, network, net.JoinHostPort(t.Addr.String(), port))
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

// transportError classifies an error from http.Client.Do to a receiver
// dialled at addr. What Error says is generic (no addresses: "could not
// connect to the receiver: connection refused"); the full text is in
// Detail.
func transportError(err error, addr netip.Addr) *DeliveryError {
	// url.Error repeats the URL, which may carry credentials; keep the cause.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	var blocked *URLError
	if errors.As(err, &blocked) {
		return &DeliveryError{Blocked: true, Err: blocked, Detail: "dialled " + addr.String() + ": " + err.Error()}
	}
	return &DeliveryError{Retryable: true, Err: err, cause: publicCause(err), Detail: err.Error()}
}

// publicCause says what went wrong in words that name no address: a
// net.OpError's text carries the local and remote address, a DNSError's the
// resolver's.
func publicCause(err error) string {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		return "could not resolve the host"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "the receiver did not answer in time"
	case errors.As(err, &opErr):
		what := "the connection to the receiver failed"
		if opErr.Op == "dial" {
			what = "could not connect to the receiver"
		}
		var errno syscall.Errno
		if errors.As(opErr.Err, &errno) {
			return what + ": " + errno.Error()
		}
		return what
	}
	// What is left (EOF, malformed responses, TLS and certificate
	// failures) describes the receiver, not previewd's network.
	return err.Error()
}

// controlPublicOnly is a net.Dialer Control hook that refuses to connect
// to non-public addresses. address is the resolved "ip:port". The refusal
// names no address: the attempt log is the client's to read, and the
// address a name resolves to inside previewd's network is not.
func controlPublicOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &URLError{Reason: "dialled address cannot be checked"}
	}
	if !IsPublic(ap.Addr()) {
		return &URLError{Reason: "host resolves to a non-public address"}
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
