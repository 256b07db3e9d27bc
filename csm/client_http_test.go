package csm_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/previewd/previewd/csm"
)

// callFunc is one of the two client calls, for tables that run both.
type callFunc struct {
	name string
	op   string
	call func(ctx context.Context, c *csm.Client) error
}

var bothCalls = []callFunc{
	{"get session", "get session", func(ctx context.Context, c *csm.Client) error {
		_, err := c.GetSession(ctx, legacyCode)
		return err
	}},
	{"request preview", "request preview", func(ctx context.Context, c *csm.Client) error {
		_, err := c.RequestPreview(ctx, legacyCode, turboParams(legacyCode, 0))
		return err
	}},
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// hangUpServer reads each request in full, then closes the connection
// without answering: the request arrived, the reply never does.
type hangUpServer struct {
	URL   string
	count atomic.Int32

	mu     sync.Mutex
	bodies [][]byte
}

func newHangUpServer(t *testing.T) *hangUpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hangUpServer{URL: "http://" + ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err == nil {
				body, _ := io.ReadAll(req.Body)
				s.mu.Lock()
				s.bodies = append(s.bodies, body)
				s.mu.Unlock()
				s.count.Add(1)
			}
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return s
}

func TestTransportFailures(t *testing.T) {
	tests := []struct {
		name    string
		baseURL func(t *testing.T) (string, func() int32) // base URL, requests the server read
		want    wantError
	}{
		{
			name: "connection refused",
			baseURL: func(t *testing.T) (string, func() int32) {
				return "http://" + closedAddr(t), func() int32 { return 0 }
			},
			want: wantError{Kind: csm.KindTransport, Retryable: true, MaybeAccepted: false},
		},
		{
			name: "request read, connection closed without a reply",
			baseURL: func(t *testing.T) (string, func() int32) {
				s := newHangUpServer(t)
				return s.URL, func() int32 { return s.count.Load() }
			},
			want: wantError{Kind: csm.KindTransport, Retryable: true, MaybeAccepted: true},
		},
	}
	for _, tt := range tests {
		for _, fn := range bothCalls {
			t.Run(tt.name+"/"+fn.name, func(t *testing.T) {
				base, served := tt.baseURL(t)
				err := fn.call(t.Context(), newClient(t, base, nil))
				checkError(t, err, fn.op, tt.want)
				wantServed := int32(0)
				if tt.want.MaybeAccepted {
					wantServed = 1 // and never re-sent by the transport
				}
				if got := served(); got != wantServed {
					t.Errorf("server read %d requests, want %d", got, wantServed)
				}
			})
		}
	}
}

// TestHangUpAfterFullPreviewBody: the server had the whole body, so it may
// have acted on it.
func TestHangUpAfterFullPreviewBody(t *testing.T) {
	s := newHangUpServer(t)
	_, err := newClient(t, s.URL, nil).RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 2))
	checkError(t, err, "request preview", wantError{Kind: csm.KindTransport, Retryable: true, MaybeAccepted: true})
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bodies) != 1 || !strings.Contains(string(s.bodies[0]), `"selected_spin_index":2`) {
		t.Errorf("server read bodies %q, want the one full preview body", s.bodies)
	}
}

func TestCanceledContextSendsNothing(t *testing.T) {
	for _, fn := range bothCalls {
		t.Run(fn.name, func(t *testing.T) {
			rec, base := newStubServer(t, replyWith(200, nil, `{}`))
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			err := fn.call(ctx, newClient(t, base, nil))
			checkError(t, err, fn.op, wantError{Kind: csm.KindTransport, Retryable: true})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want it to wrap context.Canceled", err)
			}
			if n := len(rec.Requests()); n != 0 {
				t.Errorf("%d requests sent, want 0", n)
			}
		})
	}
}

// stubLimiter is a csm.Limiter that counts its calls and returns err.
type stubLimiter struct {
	calls atomic.Int32
	err   error
}

func (l *stubLimiter) Wait(context.Context) error {
	l.calls.Add(1)
	return l.err
}

// TestGetSessionWaitsOnLimiter: a read takes its turn inside the call.
func TestGetSessionWaitsOnLimiter(t *testing.T) {
	refused := errors.New("limiter says no")
	tests := []struct {
		name     string
		err      error
		wantSent int
	}{
		{name: "allowed", wantSent: 1},
		{name: "refused", err: refused, wantSent: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, base := newStubServer(t, replyWith(200, nil, previewJobBody))
			lim := &stubLimiter{err: tt.err}
			_, err := newClient(t, base, func(o *csm.Options) { o.Limiter = lim }).GetSession(t.Context(), legacyCode)
			if n := lim.calls.Load(); n != 1 {
				t.Errorf("limiter waited on %d times, want 1", n)
			}
			if n := len(rec.Requests()); n != tt.wantSent {
				t.Errorf("%d requests sent, want %d", n, tt.wantSent)
			}
			if tt.err == nil {
				if err != nil {
					t.Errorf("err = %v, want nil", err)
				}
				return
			}
			checkError(t, err, "get session", wantError{Kind: csm.KindTransport, Retryable: true})
			if !errors.Is(err, refused) {
				t.Errorf("err = %v, want it to wrap the limiter's error", err)
			}
		})
	}
}

// TestRequestPreviewDoesNotWaitOnLimiter: the billed POST is written as
// soon as it is called, even when the limiter would refuse: the caller took
// its turn with AwaitTurn before recording its intent, and no wait may sit
// between that intent and the write.
func TestRequestPreviewDoesNotWaitOnLimiter(t *testing.T) {
	rec, base := newStubServer(t, replyWith(200, nil, previewJobBody))
	lim := &stubLimiter{err: errors.New("limiter says no")}
	c := newClient(t, base, func(o *csm.Options) { o.Limiter = lim })
	if _, err := c.RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 0)); err != nil {
		t.Fatalf("RequestPreview: %v", err)
	}
	if n := lim.calls.Load(); n != 0 {
		t.Errorf("RequestPreview waited on the limiter %d times, want 0", n)
	}
	if n := len(rec.Requests()); n != 1 {
		t.Errorf("%d requests sent, want 1", n)
	}
}

// TestAwaitTurn: AwaitTurn waits on the limiter and sends nothing.
func TestAwaitTurn(t *testing.T) {
	refused := errors.New("limiter says no")
	tests := []struct {
		name      string
		limiter   *stubLimiter // nil: no limiter configured
		canceled  bool
		wantErr   error
		wantCalls int32
	}{
		{name: "no limiter"},
		{name: "no limiter, canceled context", canceled: true},
		{name: "allowed", limiter: &stubLimiter{}, wantCalls: 1},
		{name: "refused", limiter: &stubLimiter{err: refused}, wantErr: refused, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, base := newStubServer(t, replyWith(200, nil, previewJobBody))
			c := newClient(t, base, func(o *csm.Options) {
				if tt.limiter != nil {
					o.Limiter = tt.limiter
				}
			})
			ctx, cancel := context.WithCancel(t.Context())
			t.Cleanup(cancel)
			if tt.canceled {
				cancel()
			}
			err := c.AwaitTurn(ctx)
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("AwaitTurn = %v, want nil", err)
				}
			} else {
				checkError(t, err, "await turn", wantError{Kind: csm.KindTransport, Retryable: true})
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want it to wrap %v", err, tt.wantErr)
				}
			}
			if tt.limiter != nil {
				if n := tt.limiter.calls.Load(); n != tt.wantCalls {
					t.Errorf("limiter waited on %d times, want %d", n, tt.wantCalls)
				}
			}
			if n := len(rec.Requests()); n != 0 {
				t.Errorf("%d requests sent, want 0", n)
			}
		})
	}
}

// previewJobBody answers both calls successfully: it is a valid preview
// job and, having a status, a decodable session.
const previewJobBody = `{"error":"","message":"Generating Mesh","statusCode":200,"data":{` +
	`"scenario":"SESSION_1689257215_1674078","session_code":"SESSION_1689257215_1674078",` +
	`"unique_trial_key":"168923176748ZJ@NcRfUjXn2r5u8x","status":"unprocessed",` +
	`"complete_job_data":{"id":"job:dreamfusion:SESSION_1689257215_1674078_168923176748ZJ@NcRfUjXn2r5u8x"}}}`

// TestEnvelopeAndStatusShapes covers replies the simulator does not produce.
func TestEnvelopeAndStatusShapes(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		header      map[string]string
		body        string
		onlyPreview bool // the shape only matters to the preview POST
		onlyGet     bool
		want        wantError
		wantMessage string // substring of Message
	}{
		{
			name: "200 with envelope statusCode 500", status: 200,
			body: `{"error":"Internal error","message":"worker crashed","statusCode":500,"data":null}`,
			want: wantError{Kind: csm.KindServer, StatusCode: 500, Retryable: true, MaybeAccepted: true}, wantMessage: "worker crashed",
		},
		{
			name: "200 with envelope statusCode 500 and no error text", status: 200,
			body: `{"error":"","message":"oops","statusCode":500}`,
			want: wantError{Kind: csm.KindServer, StatusCode: 500, Retryable: true, MaybeAccepted: true},
		},
		{
			name: "200 with error text and statusCode 200", status: 200,
			body: `{"error":"Session is locked","message":"","statusCode":200,"data":{}}`,
			want: wantError{Kind: csm.KindBadRequest, StatusCode: 200}, wantMessage: "Session is locked",
		},
		{
			name: "200 with error object", status: 200,
			body: `{"error":{"message":"spins are not ready"},"statusCode":400}`,
			want: wantError{Kind: csm.KindBadRequest, StatusCode: 400}, wantMessage: "spins are not ready",
		},
		{
			name: "400 quota exceeded", status: 400,
			body: `{"error":"Bad Request","message":"Quota exceeded for this API key","statusCode":400}`,
			want: wantError{Kind: csm.KindRateLimited, StatusCode: 400, Retryable: true}, wantMessage: "Quota exceeded",
		},
		{
			name: "400 throttled, plain text", status: 400, body: `Request throttled`,
			want: wantError{Kind: csm.KindRateLimited, StatusCode: 400, Retryable: true}, wantMessage: "Request throttled",
		},
		{
			name: "400 not a rate limit", status: 400,
			body: `{"error":"Bad Request","message":"selected_spin is required for turbo preview meshes","statusCode":400}`,
			want: wantError{Kind: csm.KindBadRequest, StatusCode: 400}, wantMessage: "selected_spin is required",
		},
		{
			name: "200 with statusCode as the string 429", status: 200,
			body: `{"error":"Too Many Requests","message":"slow down","statusCode":"429"}`,
			want: wantError{Kind: csm.KindRateLimited, StatusCode: 429, Retryable: true},
		},
		{
			name: "200 with statusCode 400 worded as a rate limit", status: 200,
			body: `{"error":"","message":"Too many requests","statusCode":400}`,
			want: wantError{Kind: csm.KindRateLimited, StatusCode: 400, Retryable: true},
		},
		{
			name: "408 HTML page from a proxy", status: 408, header: map[string]string{"Content-Type": "text/html", "Connection": "close"},
			body: "<html><head><title>408 Request Time-out</title></head><body><h1>408 Request Time-out</h1></body></html>",
			want: wantError{Kind: csm.KindTimeout, StatusCode: 408, Retryable: true}, wantMessage: "408 Request Time-out",
		},
		{
			// The application itself answered: it had the request, so its
			// timeout may be of work already started.
			name: "200 with envelope statusCode 408", status: 200,
			body: `{"error":"Request Timeout","message":"generation timed out","statusCode":408}`,
			want: wantError{Kind: csm.KindTimeout, StatusCode: 408, Retryable: true, MaybeAccepted: true}, wantMessage: "generation timed out",
		},
		{
			name: "418", status: 418, body: `{"message":"teapot"}`,
			want: wantError{Kind: csm.KindBadRequest, StatusCode: 418},
		},
		{
			name: "502 HTML page from a proxy", status: 502, header: map[string]string{"Content-Type": "text/html"},
			body: "<html><body><h1>502 Bad Gateway</h1></body></html>",
			want: wantError{Kind: csm.KindServer, StatusCode: 502, Retryable: true, MaybeAccepted: true}, wantMessage: "502 Bad Gateway",
		},
		{
			name: "redirect is not followed", status: 307, header: map[string]string{"Location": "/elsewhere"},
			want: wantError{Kind: csm.KindBadRequest, StatusCode: 307},
		},
		{
			name: "200 preview reply without unique_trial_key", status: 200, onlyPreview: true,
			body: `{"error":"","message":"Generating Mesh","statusCode":200,"data":{"scenario":"S","status":"unprocessed"}}`,
			want: wantError{Kind: csm.KindProtocol, StatusCode: 200, MaybeAccepted: true},
		},
		{
			name: "200 preview reply that is not JSON", status: 200, onlyPreview: true, body: "OK",
			want: wantError{Kind: csm.KindProtocol, StatusCode: 200, MaybeAccepted: true},
		},
		{
			name: "200 session reply that is not JSON", status: 200, onlyGet: true, body: "<html>",
			want: wantError{Kind: csm.KindProtocol, StatusCode: 200, Retryable: true},
		},
		{
			name: "200 session reply with an empty data object", status: 200, onlyGet: true,
			body: `{"error":"","message":"ok","statusCode":200,"data":{}}`,
			want: wantError{Kind: csm.KindProtocol, StatusCode: 200, Retryable: true},
		},
		{
			name: "200 larger than 1 MiB", status: 200,
			body: `{"data":{"status":"x","pad":"` + strings.Repeat("a", 1<<20) + `"}}`,
			want: wantError{Kind: csm.KindProtocol, StatusCode: 200, Retryable: true, MaybeAccepted: true},
		},
	}
	for _, tt := range tests {
		for _, fn := range bothCalls {
			if (tt.onlyPreview && fn.op != "request preview") || (tt.onlyGet && fn.op != "get session") {
				continue
			}
			t.Run(tt.name+"/"+fn.name, func(t *testing.T) {
				rec, base := newStubServer(t, func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/elsewhere" {
						replyWith(200, nil, previewJobBody)(w, r)
						return
					}
					replyWith(tt.status, tt.header, tt.body)(w, r)
				})
				err := fn.call(t.Context(), newClient(t, base, nil))
				ce := checkError(t, err, fn.op, tt.want)
				if !strings.Contains(ce.Message, tt.wantMessage) {
					t.Errorf("Message = %q, want it to contain %q", ce.Message, tt.wantMessage)
				}
				if n := len(rec.Requests()); n != 1 {
					t.Errorf("%d requests reached the server, want 1 (no redirect followed, no retry)", n)
				}
			})
		}
	}
}

// TestSuccessShapes: replies that must be accepted.
func TestSuccessShapes(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		wantKey string
	}{
		{"seed doc reply", 200, seedResponse, "168923176748ZJ@NcRfUjXn2r5u8x"},
		{"201 with statusCode 201", 201, strings.Replace(previewJobBody, `"statusCode":200`, `"statusCode":201`, 1), "168923176748ZJ@NcRfUjXn2r5u8x"},
		{"error null and false", 200, strings.Replace(previewJobBody, `"error":""`, `"error":null`, 1), "168923176748ZJ@NcRfUjXn2r5u8x"},
		{"error false", 200, strings.Replace(previewJobBody, `"error":""`, `"error":false`, 1), "168923176748ZJ@NcRfUjXn2r5u8x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, base := newStubServer(t, replyWith(tt.status, nil, tt.body))
			job, err := newClient(t, base, nil).RequestPreview(t.Context(), seedCode, csm.PreviewParams{})
			if err != nil {
				t.Fatalf("RequestPreview: %v", err)
			}
			if job.UniqueTrialKey != tt.wantKey || job.Status != "unprocessed" {
				t.Errorf("job = %+v, want key %q, status unprocessed", job, tt.wantKey)
			}
		})
	}
}

// TestErrorMessageIsSanitized: upstream text is shortened and stripped of
// control characters before it reaches logs and job errors.
func TestErrorMessageIsSanitized(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"control characters", "line one\nline two\r\x1b[31mred\x00\x7f"},
		{"long ASCII", strings.Repeat("x", 5000)},
		{"long multibyte", strings.Repeat("é", 400) + "ü"},
		{"invalid UTF-8", "bad \xff\xfe bytes"},
		{"long JSON message", `{"error":"Internal","message":"` + strings.Repeat("€", 200) + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, base := newStubServer(t, replyWith(500, nil, tt.body))
			_, err := newClient(t, base, nil).GetSession(t.Context(), legacyCode)
			ce := asError(t, err)
			msg := ce.Message
			if msg == "" {
				t.Fatal("Message is empty")
			}
			if !utf8.ValidString(msg) {
				t.Errorf("Message is not valid UTF-8: %q", msg)
			}
			if len(msg) > 300+len("…") {
				t.Errorf("Message is %d bytes, want at most 300 plus an ellipsis", len(msg))
			}
			for _, r := range msg {
				if r < 0x20 || r == 0x7f {
					t.Errorf("Message contains control character %U: %q", r, msg)
					break
				}
			}
		})
	}
}

func TestNewValidatesBaseURL(t *testing.T) {
	tests := []struct {
		name    string
		baseURL string
		wantErr bool
	}{
		{"empty", "", true},
		{"no scheme", "api.csm.ai", true},
		{"ftp", "ftp://api.csm.ai", true},
		{"no host", "http://", true},
		{"garbage", "://x", true},
		{"https", "https://api.csm.ai", false},
		{"port and trailing slash", "http://127.0.0.1:5566/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := csm.New(csm.Options{BaseURL: tt.baseURL, APIKey: "k"})
			if (err != nil) != tt.wantErr {
				t.Fatalf("New(%q) err = %v, want error %v", tt.baseURL, err, tt.wantErr)
			}
			if (c == nil) != tt.wantErr {
				t.Errorf("New(%q) client = %v", tt.baseURL, c)
			}
		})
	}
}

func TestBaseURLPath(t *testing.T) {
	tests := []struct {
		name     string
		suffix   string
		wantPath string
	}{
		{"no path", "", "/image-to-3d-sessions/" + legacyCode},
		{"trailing slash", "/", "/image-to-3d-sessions/" + legacyCode},
		{"prefix with slashes", "/api/v1//", "/api/v1/image-to-3d-sessions/" + legacyCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, base := newStubServer(t, replyWith(200, nil, previewJobBody))
			if _, err := newClient(t, base+tt.suffix, nil).GetSession(t.Context(), legacyCode); err != nil {
				t.Fatalf("GetSession: %v", err)
			}
			if reqs := rec.Requests(); len(reqs) != 1 || reqs[0].Path != tt.wantPath {
				t.Errorf("requests = %+v, want one to %s", reqs, tt.wantPath)
			}
		})
	}
}

// TestRetryAfter parses Retry-After through the client.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		status int
		value  string
		want   time.Duration
	}{
		{"absent", 429, "", 0},
		{"seconds", 429, "120", 2 * time.Minute},
		{"zero", 429, "0", 0},
		{"seconds on a 503", 503, "7", 7 * time.Second},
		{"HTTP-date", 429, now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"RFC 850 date", 503, now.Add(30 * time.Second).Format("Monday, 02-Jan-06 15:04:05 GMT"), 30 * time.Second},
		{"asctime date", 429, now.Add(45 * time.Second).Format(time.ANSIC), 45 * time.Second},
		{"garbage", 429, "soon", 0},
		{"fraction", 429, "1.5", 0},
		{"negative seconds", 429, "-5", 0},
		{"past date", 429, now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"an hour", 429, "3600", time.Hour},
		{"over an hour", 429, "3601", time.Hour},
		{"a day", 429, "86400", time.Hour},
		{"date a week away", 503, now.Add(7 * 24 * time.Hour).Format(http.TimeFormat), time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := retryAfterThroughClient(t, now, tt.status, tt.value)
			if got != tt.want {
				t.Errorf("Retry-After %q: RetryAfter = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
}

// TestRetryAfterHugeSeconds: a delay in seconds too large for a
// time.Duration must still be capped at an hour, not wrap around.
func TestRetryAfterHugeSeconds(t *testing.T) {
	now := time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		value string
	}{
		{"wraps negative", "10000000000"},            // 1e19 ns wraps to a negative Duration: 0
		{"wraps to milliseconds", "18446744074"},     // wraps to about 290ms
		{"beyond int64", "99999999999999999999"},     // Atoi fails: 0
		{"largest that fits", "9223372036"},          // fits: capped correctly
		{"one past what fits", "9223372037"},         // wraps negative: 0
		{"far past what fits", "922337203685477580"}, // wraps: garbage
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfterThroughClient(t, now, 429, tt.value); got != time.Hour {
				t.Errorf("Retry-After %q: RetryAfter = %v, want the 1h cap", tt.value, got)
			}
		})
	}
}

func retryAfterThroughClient(t *testing.T, now time.Time, status int, value string) time.Duration {
	t.Helper()
	header := map[string]string{}
	if value != "" {
		header["Retry-After"] = value
	}
	_, base := newStubServer(t, replyWith(status, header, `{"error":"x","message":"slow down","statusCode":429}`))
	c := newClient(t, base, func(o *csm.Options) { o.Now = func() time.Time { return now } })
	_, err := c.GetSession(t.Context(), legacyCode)
	ce := asError(t, err)
	if !ce.Retryable {
		t.Errorf("status %d: Retryable = false, want true", status)
	}
	return ce.RetryAfter
}
