package csm_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
)

const (
	legacyCode = "SESSION_1689257215_1674078"
	seedCode   = "SESSION_P_44569824122"
)

// fakeClock is a settable clock for csmsim.Options.Now and csm.Options.Now.
func newFakeClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC))
}

// newClient returns a client of baseURL with testutil.SimAPIKey, changed by
// the optional edit.
func newClient(t *testing.T, baseURL string, edit func(*csm.Options)) *csm.Client {
	t.Helper()
	opts := csm.Options{BaseURL: baseURL, APIKey: testutil.SimAPIKey, Timeout: 10 * time.Second}
	if edit != nil {
		edit(&opts)
	}
	c, err := csm.New(opts)
	if err != nil {
		t.Fatalf("csm.New: %v", err)
	}
	return c
}

// spinURL is the image_url the simulator gives spin i of session code (and
// demands back as selected_spin on a turbo preview).
func spinURL(code string, i int) string {
	return csmsim.DefaultBaseAssetURL + "/spins/" + code + "/" + strconv.Itoa(i) + ".png"
}

// turboParams are valid preview params for a simulated turbo session.
func turboParams(code string, i int) csm.PreviewParams {
	return csm.PreviewParams{SelectedSpinIndex: i, SelectedSpin: spinURL(code, i)}
}

// recordedRequest is one request seen by a recorder.
type recordedRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// recorder is an http.Handler that records every request and passes it on
// to next (when set) with its body intact.
type recorder struct {
	next http.Handler

	mu   sync.Mutex
	reqs []recordedRequest
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "recorder: "+err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, recordedRequest{Method: r.Method, Path: r.URL.EscapedPath(), Header: r.Header.Clone(), Body: body})
	rc.mu.Unlock()
	if rc.next == nil {
		http.Error(w, "recorder: no handler", http.StatusTeapot)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rc.next.ServeHTTP(w, r)
}

// Requests returns a copy of the requests seen so far.
func (rc *recorder) Requests() []recordedRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recordedRequest(nil), rc.reqs...)
}

// newRecordingSim serves a simulator behind a recorder on a loopback port.
func newRecordingSim(t *testing.T, opts csmsim.Options) (*csmsim.Server, *recorder, string) {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testutil.SimAPIKey
	}
	sim := csmsim.New(opts)
	rec := &recorder{next: sim}
	srv := httptest.NewServer(rec)
	// sim.Close first: it releases handlers that would block srv.Close.
	t.Cleanup(func() {
		sim.Close()
		srv.Close()
	})
	return sim, rec, srv.URL
}

// newStubServer serves h on a loopback port, recording every request.
func newStubServer(t *testing.T, h http.HandlerFunc) (*recorder, string) {
	t.Helper()
	rec := &recorder{next: h}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	return rec, srv.URL
}

// replyWith returns a handler answering status, headers and body.
func replyWith(status int, header map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// asError fails the test unless err is (or wraps) a *csm.Error.
func asError(t *testing.T, err error) *csm.Error {
	t.Helper()
	if err == nil {
		t.Fatal("err = nil, want a *csm.Error")
	}
	var ce *csm.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %T %v, want a *csm.Error", err, err)
	}
	return ce
}

// wantError is the classification a failed call must carry.
type wantError struct {
	Kind          csm.Kind
	StatusCode    int
	Retryable     bool
	MaybeAccepted bool
	RetryAfter    time.Duration
}

// checkError compares err's classification with want and checks that the
// API key never leaks into its text.
func checkError(t *testing.T, err error, op string, want wantError) *csm.Error {
	t.Helper()
	ce := asError(t, err)
	got := wantError{Kind: ce.Kind, StatusCode: ce.StatusCode, Retryable: ce.Retryable, MaybeAccepted: ce.MaybeAccepted, RetryAfter: ce.RetryAfter}
	if got != want {
		t.Errorf("error = %+v, want %+v (err: %v)", got, want, err)
	}
	if ce.Op != op {
		t.Errorf("Op = %q, want %q", ce.Op, op)
	}
	if ce.RetryDelay() != ce.RetryAfter {
		t.Errorf("RetryDelay() = %v, want RetryAfter %v", ce.RetryDelay(), ce.RetryAfter)
	}
	if strings.Contains(err.Error(), testutil.SimAPIKey) {
		t.Errorf("error text leaks the API key: %q", err.Error())
	}
	return ce
}
