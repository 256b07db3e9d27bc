package webhook_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/previewd/previewd/webhook"
)

// newReceiver starts an httptest server on loopback and counts requests.
func newReceiver(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// newLocalSender returns a Sender allowed to reach loopback receivers.
func newLocalSender(t *testing.T, opts webhook.SenderOptions) *webhook.Sender {
	t.Helper()
	opts.AllowPrivate = true
	s := webhook.NewSender(opts)
	t.Cleanup(s.CloseIdleConnections)
	return s
}

func asDeliveryError(t *testing.T, err error) *webhook.DeliveryError {
	t.Helper()
	var de *webhook.DeliveryError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *DeliveryError", err, err)
	}
	return de
}

func TestSendSuccessIsVerifiable(t *testing.T) {
	sec, enc := newSecret(t)
	ref := referenceReceiver(t, enc)
	body := []byte(`{"type":"preview.completed","data":{"job_id":"j_1"}}`)
	type seen struct {
		refErr, ourErr error
		header         http.Header
		body           []byte
	}
	got := make(chan seen, 1)
	srv, _ := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{
			refErr: ref.Verify(b, r.Header),
			ourErr: webhook.Verify(sec, r.Header, b, time.Now(), 0),
			header: r.Header.Clone(),
			body:   b,
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "thanks \xff")
	})

	s := newLocalSender(t, webhook.SenderOptions{})
	res, err := s.Send(t.Context(), srv.URL+"/hooks", webhook.NewSigner(sec), webhook.Message{ID: "msg_1", Body: body}, time.Now())
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if res.StatusCode != http.StatusAccepted || res.Latency <= 0 {
		t.Errorf("result = %+v", res)
	}
	if res.ResponsePrefix != "thanks \uFFFD" {
		t.Errorf("ResponsePrefix = %q, want invalid UTF-8 replaced", res.ResponsePrefix)
	}
	r := <-got
	if r.refErr != nil || r.ourErr != nil {
		t.Errorf("verification failed: reference %v, ours %v", r.refErr, r.ourErr)
	}
	if string(r.body) != string(body) {
		t.Errorf("body = %q", r.body)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/json",
		"User-Agent":   "previewd-webhooks/1",
		"Webhook-Id":   "msg_1",
	} {
		if v := r.header.Get(k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
}

func TestSendStatusClassification(t *testing.T) {
	srv, _ := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(code)
	})
	s := newLocalSender(t, webhook.SenderOptions{})
	signer := webhook.NewSigner(mustSecret(t))

	tests := []struct {
		code          int
		wantErr       bool
		wantGone      bool
		wantRetryable bool
	}{
		{code: 200},
		{code: 201},
		{code: 204},
		{code: 299},
		{code: 304, wantErr: true, wantRetryable: true},
		{code: 400, wantErr: true, wantRetryable: true},
		{code: 401, wantErr: true, wantRetryable: true},
		{code: 404, wantErr: true, wantRetryable: true},
		{code: 410, wantErr: true, wantGone: true},
		{code: 429, wantErr: true, wantRetryable: true},
		{code: 500, wantErr: true, wantRetryable: true},
		{code: 503, wantErr: true, wantRetryable: true},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			res, err := s.Send(t.Context(), srv.URL+"/?code="+strconv.Itoa(tt.code), signer, webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
			if res.StatusCode != tt.code {
				t.Errorf("StatusCode = %d", res.StatusCode)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				return
			}
			de := asDeliveryError(t, err)
			if de.StatusCode != tt.code || de.Gone != tt.wantGone || de.Retryable != tt.wantRetryable || de.Blocked {
				t.Errorf("DeliveryError = %+v", de)
			}
			if !strings.Contains(de.Error(), strconv.Itoa(tt.code)) {
				t.Errorf("Error() = %q does not name the status", de.Error())
			}
		})
	}
}

func TestSendDoesNotFollowRedirects(t *testing.T) {
	target, targetHits := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {})
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			srv, _ := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+"/stolen", code)
			})
			s := newLocalSender(t, webhook.SenderOptions{})
			res, err := s.Send(t.Context(), srv.URL, webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
			de := asDeliveryError(t, err)
			if res.StatusCode != code || de.StatusCode != code || !de.Retryable {
				t.Errorf("res %+v, err %+v", res, de)
			}
			if n := targetHits.Load(); n != 0 {
				t.Errorf("redirect target got %d requests", n)
			}
		})
	}
}

func TestSendRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	srv, _ := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("ra"); v != "" {
			w.Header().Set("Retry-After", v)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	s := newLocalSender(t, webhook.SenderOptions{})
	signer := webhook.NewSigner(mustSecret(t))

	tests := []struct {
		name  string
		value string
		want  time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "120", 2 * time.Minute},
		{"zero seconds", "0", 0},
		{"seconds over a day are clamped", "100000", 24 * time.Hour},
		{"seconds overflowing int64 are clamped", "99999999999999999999999", 24 * time.Hour},
		{"negative seconds", "-5", 0},
		{"http date ahead", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"http date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"http date far ahead is clamped", now.Add(72 * time.Hour).Format(http.TimeFormat), 24 * time.Hour},
		{"garbage", "soon", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := srv.URL + "/?ra=" + url.QueryEscape(tt.value)
			res, err := s.Send(t.Context(), u, signer, webhook.Message{ID: "m", Body: []byte("{}")}, now)
			if err == nil {
				t.Fatal("503 reported as success")
			}
			if res.RetryAfter != tt.want {
				t.Errorf("RetryAfter = %v, want %v", res.RetryAfter, tt.want)
			}
		})
	}
}

// TestSendHugeBodyIsNotBuffered streams 50 MiB; Send must stop after
// MaxResponseBody and return promptly, and the receiver must fail to write
// most of it.
func TestSendHugeBodyIsNotBuffered(t *testing.T) {
	const total = 50 << 20
	var written atomic.Int64
	done := make(chan struct{})
	srv, _ := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		defer close(done)
		w.Header().Set("Content-Length", strconv.Itoa(total))
		chunk := []byte(strings.Repeat("x", 32<<10))
		for written.Load() < total {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	s := newLocalSender(t, webhook.SenderOptions{Timeout: 10 * time.Second})
	start := time.Now()
	res, err := s.Send(t.Context(), srv.URL, webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(res.ResponsePrefix) != 256 || strings.Trim(res.ResponsePrefix, "x") != "" {
		t.Errorf("ResponsePrefix has %d bytes", len(res.ResponsePrefix))
	}
	if elapsed > 5*time.Second {
		t.Errorf("Send took %v", elapsed)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("receiver still writing after the connection should have closed")
	}
	if n := written.Load(); n >= total {
		t.Errorf("receiver wrote all %d bytes: body was drained", n)
	}
}

func TestSendTimeoutCoversWholeExchange(t *testing.T) {
	// Handlers block until the test ends; the request body is never read,
	// so the server would not notice the client going away by itself.
	tests := []struct {
		name    string
		handler func(release <-chan struct{}) http.HandlerFunc
		wantErr bool
	}{
		{name: "no response headers", wantErr: true, handler: func(release <-chan struct{}) http.HandlerFunc {
			return func(http.ResponseWriter, *http.Request) { <-release }
		}},
		// Headers arrive, then the body stalls: the verdict rests on the
		// status, but Send must still return within Timeout.
		{name: "stalled body", handler: func(release <-chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
				<-release
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			srv, _ := newReceiver(t, tt.handler(release))
			t.Cleanup(func() { close(release) }) // runs before srv.Close
			s := newLocalSender(t, webhook.SenderOptions{Timeout: 300 * time.Millisecond})
			start := time.Now()
			res, err := s.Send(t.Context(), srv.URL, webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Fatalf("Send returned after %v, Timeout was 300ms", elapsed)
			}
			if !tt.wantErr {
				if err != nil || res.ResponsePrefix != "partial" {
					t.Errorf("Send = %+v, %v", res, err)
				}
				return
			}
			de := asDeliveryError(t, err)
			if !de.Retryable || de.StatusCode != 0 || res.StatusCode != 0 {
				t.Errorf("DeliveryError = %+v", de)
			}
		})
	}
}

// TestSendBadReceivers answers from a raw TCP listener with broken HTTP.
// Send must return an error (or at worst a verdict) and never panic.
func TestSendBadReceivers(t *testing.T) {
	tests := []struct {
		name     string
		response string
		wantErr  bool
	}{
		{name: "not http", response: "hello there\r\n\r\n", wantErr: true},
		{name: "binary garbage", response: "\x00\xff\xfe\x01\r\n\r\n", wantErr: true},
		{name: "bad status code", response: "HTTP/1.1 abc OK\r\n\r\n", wantErr: true},
		{name: "status code too long", response: "HTTP/1.1 99999 Huh\r\n\r\n", wantErr: true},
		{name: "negative content length", response: "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", wantErr: true},
		{name: "header without colon", response: "HTTP/1.1 200 OK\r\nnonsense\r\n\r\n", wantErr: true},
		{name: "closed before anything", response: "", wantErr: true},
		{name: "truncated status line", response: "HTTP/1.1 20", wantErr: true},
		{name: "huge header", response: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 1<<20) + "\r\n\r\n", wantErr: true},
		{name: "body shorter than content length", response: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"},
		{name: "bad chunked encoding", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawServer(t, tt.response)
			s := newLocalSender(t, webhook.SenderOptions{Timeout: 2 * time.Second})
			_, err := s.Send(t.Context(), "http://"+addr+"/", webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
			if tt.wantErr {
				de := asDeliveryError(t, err)
				if !de.Retryable || de.Blocked {
					t.Errorf("DeliveryError = %+v", de)
				}
			}
		})
	}
}

// rawServer accepts connections on loopback, reads the request head, writes
// response verbatim and closes.
func rawServer(t *testing.T, response string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, response)
			})
		}
	})
	return ln.Addr().String()
}

func TestSendBlocksPrivateAddresses(t *testing.T) {
	srv, hits := newReceiver(t, func(http.ResponseWriter, *http.Request) {})
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name     string
		url      string
		resolver map[string][]netip.Addr // dial-time DNS, nil for none
	}{
		{name: "loopback literal", url: srv.URL},
		{name: "localhost", url: "http://localhost:" + strconv.Itoa(port)},
		// The name passes the pre-check (it is not resolved there) and
		// resolves to loopback when dialled: only the dial-time hook can
		// catch it, as with DNS rebinding.
		{name: "name rebinding to loopback", url: "http://rebind.example:" + strconv.Itoa(port),
			resolver: map[string][]netip.Addr{"rebind.example.": {netip.MustParseAddr("127.0.0.1")}}},
		{name: "name rebinding to mapped loopback", url: "http://rebind.example:" + strconv.Itoa(port),
			resolver: map[string][]netip.Addr{"rebind.example.": {netip.MustParseAddr("::ffff:127.0.0.1")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := webhook.NewSender(webhook.SenderOptions{Timeout: 2 * time.Second})
			t.Cleanup(s.CloseIdleConnections)
			if tt.resolver != nil {
				webhook.SetDialResolver(s, fakeResolver(t, tt.resolver))
			}
			_, err := s.Send(t.Context(), tt.url, webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
			de := asDeliveryError(t, err)
			if !de.Blocked || de.Retryable || de.Gone {
				t.Errorf("DeliveryError = %+v (%v)", de, de)
			}
			var uerr *webhook.URLError
			if !errors.As(err, &uerr) {
				t.Errorf("error %v does not wrap *URLError", err)
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("receiver saw %d requests", n)
			}
		})
	}

	// Control: with AllowPrivate the same rebinding name does reach the
	// receiver, so the test above really exercised the dial-time hook.
	t.Run("allowPrivate reaches it", func(t *testing.T) {
		s := newLocalSender(t, webhook.SenderOptions{Timeout: 2 * time.Second})
		webhook.SetDialResolver(s, fakeResolver(t, map[string][]netip.Addr{"rebind.example.": {netip.MustParseAddr("127.0.0.1")}}))
		if _, err := s.Send(t.Context(), "http://rebind.example:"+strconv.Itoa(port), webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now()); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if hits.Load() != 1 {
			t.Errorf("receiver saw %d requests, want 1", hits.Load())
		}
	})
}

func TestSendRefusesBadInput(t *testing.T) {
	s := newLocalSender(t, webhook.SenderOptions{})
	signer := webhook.NewSigner(mustSecret(t))
	tests := []struct {
		name        string
		url         string
		signer      *webhook.Signer
		msg         webhook.Message
		wantBlocked bool
	}{
		{name: "ftp", url: "ftp://127.0.0.1/", signer: signer, msg: webhook.Message{ID: "m"}, wantBlocked: true},
		{name: "userinfo", url: "http://a:b@127.0.0.1/", signer: signer, msg: webhook.Message{ID: "m"}, wantBlocked: true},
		{name: "no id", url: "http://127.0.0.1:1/", signer: signer},
		{name: "nil signer", url: "http://127.0.0.1:1/", msg: webhook.Message{ID: "m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Send(t.Context(), tt.url, tt.signer, tt.msg, time.Now())
			de := asDeliveryError(t, err)
			if de.Retryable || de.Blocked != tt.wantBlocked {
				t.Errorf("DeliveryError = %+v", de)
			}
			if strings.Contains(de.Error(), "a:b") {
				t.Errorf("Error() repeats credentials: %q", de.Error())
			}
		})
	}
}

// TestSendConcurrent shares one Sender between goroutines (run with -race).
func TestSendConcurrent(t *testing.T) {
	srv, hits := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	s := newLocalSender(t, webhook.SenderOptions{})
	signer := webhook.NewSigner(mustSecret(t))
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			if _, err := s.Send(t.Context(), srv.URL, signer, webhook.Message{ID: "m" + strconv.Itoa(i), Body: []byte("{}")}, time.Now()); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()
	if hits.Load() != 32 {
		t.Errorf("hits = %d", hits.Load())
	}
}

func TestDeliveryErrorNeverLeaksURL(t *testing.T) {
	// Nothing listens on port 1; the connection error must not repeat the
	// URL's query, which may carry a receiver token.
	s := newLocalSender(t, webhook.SenderOptions{Timeout: time.Second})
	_, err := s.Send(t.Context(), "http://127.0.0.1:1/hook?token=hunter2", webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m"}, time.Now())
	de := asDeliveryError(t, err)
	if !de.Retryable || strings.Contains(de.Error(), "hunter2") {
		t.Errorf("DeliveryError = %+v: %q", de, de.Error())
	}
}

func mustSecret(t *testing.T) webhook.Secret {
	t.Helper()
	s, _ := newSecret(t)
	return s
}
