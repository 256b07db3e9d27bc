package csmsim_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
)

func TestFaultReplies(t *testing.T) {
	tests := []struct {
		kind           csmsim.FaultKind
		retryAfter     time.Duration
		wantStatus     int
		wantRetryAfter string
		wantMessage    string // substring, case-insensitive
	}{
		{kind: csmsim.Fault401, wantStatus: 401, wantMessage: "invalid api key"},
		{kind: csmsim.Fault403, wantStatus: 403},
		{kind: csmsim.Fault404, wantStatus: 404},
		{kind: csmsim.Fault408, wantStatus: 408, wantMessage: "request timeout"},
		{kind: csmsim.Fault429, wantStatus: 429},
		{kind: csmsim.Fault429, retryAfter: 1500 * time.Millisecond, wantStatus: 429, wantRetryAfter: "2"},
		{kind: csmsim.FaultRateLimit400, wantStatus: 400, wantMessage: "rate limit"},
		{kind: csmsim.Fault500, wantStatus: 500},
		{kind: csmsim.Fault502, wantStatus: 502},
		{kind: csmsim.Fault503, wantStatus: 503},
		{kind: csmsim.Fault503, retryAfter: 7 * time.Second, wantStatus: 503, wantRetryAfter: "7"},
		{kind: csmsim.Fault500, retryAfter: 7 * time.Second, wantStatus: 500}, // only 429/503 carry it
	}
	for _, ep := range []csmsim.Endpoint{csmsim.EndpointGetSession, csmsim.EndpointPreview} {
		for _, tt := range tests {
			name := ep.String() + "/" + tt.kind.String()
			if tt.retryAfter > 0 {
				name += "/retry-after"
			}
			t.Run(name, func(t *testing.T) {
				sim, _ := newSim(t, csmsim.SessionConfig{
					Faults: []csmsim.Fault{{Endpoint: ep, Kind: tt.kind, RetryAfter: tt.retryAfter}},
				})
				method, path := http.MethodGet, sessionPath(code)
				if ep == csmsim.EndpointPreview {
					method, path = http.MethodPost, previewPath(code)
				}
				rec := serve(t, sim, method, path, turboBody(0))
				if rec.Code != tt.wantStatus {
					t.Fatalf("status = %d, want %d", rec.Code, tt.wantStatus)
				}
				if got := rec.Header().Get("Retry-After"); got != tt.wantRetryAfter {
					t.Errorf("Retry-After = %q, want %q", got, tt.wantRetryAfter)
				}
				body := decode(t, rec)
				msg, _ := body["message"].(string)
				if body["statusCode"] != float64(tt.wantStatus) || body["error"] == "" || msg == "" {
					t.Errorf("body = %v, want an error envelope", body)
				}
				if !strings.Contains(strings.ToLower(msg), tt.wantMessage) {
					t.Errorf("message = %q, want it to contain %q", msg, tt.wantMessage)
				}
				if got := sim.AcceptedPreviews(code); got != 0 {
					t.Errorf("AcceptedPreviews = %d, want 0", got)
				}
				// The fault is used up: the next request is answered normally.
				if rec := serve(t, sim, method, path, turboBody(0)); rec.Code != 200 {
					t.Errorf("next request = %d, want 200", rec.Code)
				}
				if got := sim.Requests(code, ep); got != 2 {
					t.Errorf("Requests = %d, want 2", got)
				}
			})
		}
	}
}

func TestFaultEnvelopeError(t *testing.T) {
	for _, ep := range []csmsim.Endpoint{csmsim.EndpointGetSession, csmsim.EndpointPreview} {
		t.Run(ep.String(), func(t *testing.T) {
			sim, _ := newSim(t, csmsim.SessionConfig{
				Faults: []csmsim.Fault{{Endpoint: ep, Kind: csmsim.FaultEnvelopeError}},
			})
			method, path := http.MethodGet, sessionPath(code)
			if ep == csmsim.EndpointPreview {
				method, path = http.MethodPost, previewPath(code)
			}
			rec := serve(t, sim, method, path, turboBody(0))
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200", rec.Code)
			}
			body := decode(t, rec)
			data, hasData := body["data"]
			if body["error"] != "Internal error" || body["statusCode"] != 500.0 || body["message"] == "" || !hasData || data != nil {
				t.Errorf("body = %v", body)
			}
			if got := sim.AcceptedPreviews(code); got != 0 {
				t.Errorf("AcceptedPreviews = %d, want 0", got)
			}
		})
	}
}

func TestFaultOrder(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{
		Faults: []csmsim.Fault{
			{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.Fault429, Times: 2},
			{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault502},
			{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.Fault500},
			{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultRateLimit400, Times: 2},
		},
	})
	steps := []struct {
		ep   csmsim.Endpoint
		want int
	}{
		{csmsim.EndpointPreview, 502},
		{csmsim.EndpointGetSession, 429},
		{csmsim.EndpointPreview, 400},
		{csmsim.EndpointGetSession, 429},
		{csmsim.EndpointGetSession, 500},
		{csmsim.EndpointGetSession, 200},
		{csmsim.EndpointPreview, 400},
		{csmsim.EndpointPreview, 200},
		{csmsim.EndpointGetSession, 200},
	}
	for i, s := range steps {
		method, path := http.MethodGet, sessionPath(code)
		if s.ep == csmsim.EndpointPreview {
			method, path = http.MethodPost, previewPath(code)
		}
		if rec := serve(t, sim, method, path, turboBody(0)); rec.Code != s.want {
			t.Errorf("step %d (%s): status %d, want %d", i, s.ep, rec.Code, s.want)
		}
	}
	if got := sim.AcceptedPreviews(code); got != 1 {
		t.Errorf("AcceptedPreviews = %d, want 1", got)
	}
}

func TestFaultAcceptThen502(t *testing.T) {
	sim, clk := newSim(t, csmsim.SessionConfig{
		Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThen502}},
	})
	rec := serve(t, sim, http.MethodPost, previewPath(code), turboBody(0))
	if rec.Code != http.StatusBadGateway {
		t.Fatalf("status = %d, want 502", rec.Code)
	}
	if body := decode(t, rec); body["statusCode"] != 502.0 {
		t.Errorf("body = %v", body)
	}
	if got := sim.AcceptedPreviews(code); got != 1 {
		t.Errorf("AcceptedPreviews = %d, want 1: the preview was accepted before the reply was lost", got)
	}
	if _, ok := sim.LastPreview(code); !ok {
		t.Error("LastPreview not recorded")
	}
	clk.Advance(time.Millisecond)
	if got := getSession(t, sim)["status"]; got != "training_preview" {
		t.Errorf("status = %v, want training_preview: generation started", got)
	}
}

func TestFaultAcceptThenReset(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{
		Faults: []csmsim.Fault{
			{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenReset},
			{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.FaultAcceptThenReset},
		},
	})
	srv := liveServer(t, sim)
	for _, tt := range []struct{ method, path string }{
		{http.MethodPost, previewPath(code)},
		{http.MethodGet, sessionPath(code)},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, strings.NewReader(turboBody(0)))
		req.Header.Set("x-api-key", apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s %s: got status %d, want a connection error", tt.method, tt.path, resp.StatusCode)
		}
	}
	if got := sim.AcceptedPreviews(code); got != 1 {
		t.Errorf("AcceptedPreviews = %d, want 1", got)
	}
}

func TestFaultAcceptThenHang(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{
		Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenHang}},
	})
	srv := liveServer(t, sim)
	const timeout = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+previewPath(code), strings.NewReader(turboBody(0)))
	req.Header.Set("x-api-key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := srv.Client().Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want the client to time out", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("gave up after %v, before the %v timeout", took, timeout)
	}
	if got := sim.AcceptedPreviews(code); got != 1 {
		t.Errorf("AcceptedPreviews = %d, want 1", got)
	}
}

func TestCloseReleasesHang(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{
		Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenHang}},
	})
	srv := liveServer(t, sim)
	accepted := make(chan struct{})
	sim.OnPreviewAccepted(func(string) { close(accepted) })
	errc := make(chan error, 1)
	go func() {
		// No client timeout: only Close can end this request.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+previewPath(code), strings.NewReader(turboBody(0)))
		req.Header.Set("x-api-key", apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-accepted
	sim.Close()
	if err := <-errc; err == nil {
		t.Error("hanging request got a response after Close, want a dropped connection")
	}
}
