package csmsim

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Endpoint names one of the simulated routes, for faults and counters.
type Endpoint int

const (
	// EndpointGetSession is GET /image-to-3d-sessions/{session_code}.
	EndpointGetSession Endpoint = iota
	// EndpointPreview is POST /image-to-3d-sessions/get-3d/preview/{session_code}.
	EndpointPreview

	numEndpoints = iota
)

// String returns a short name, handy for subtest names.
func (e Endpoint) String() string {
	switch e {
	case EndpointGetSession:
		return "get-session"
	case EndpointPreview:
		return "preview"
	}
	return "endpoint(" + strconv.Itoa(int(e)) + ")"
}

func (e Endpoint) valid() bool { return e >= 0 && e < numEndpoints }

func (e Endpoint) method() string {
	if e == EndpointPreview {
		return http.MethodPost
	}
	return http.MethodGet
}

// FaultKind is what an injected Fault does to a request.
type FaultKind int

const (
	// Fault401 answers 401 {"error":"Unauthorized","message":"invalid api key","statusCode":401}.
	Fault401 FaultKind = iota + 1
	// Fault403 answers 403 Forbidden.
	Fault403
	// Fault404 answers 404 "session not found".
	Fault404
	// Fault429 answers 429, with Retry-After when Fault.RetryAfter > 0.
	Fault429
	// FaultRateLimit400 answers 400 with a rate-limit worded message
	// ("Rate limit exceeded: too many requests"), which clients must retry.
	FaultRateLimit400
	// Fault500 answers 500.
	Fault500
	// Fault502 answers 502.
	Fault502
	// Fault503 answers 503, with Retry-After when Fault.RetryAfter > 0.
	Fault503
	// FaultEnvelopeError answers HTTP 200 whose legacy envelope reports the
	// failure: {"error":"Internal error","statusCode":500,"message":"...","data":null}.
	FaultEnvelopeError
	// FaultAcceptThen502 lets the request do its work (a preview POST is
	// accepted and billed) and then answers 502, like a proxy timing out.
	FaultAcceptThen502
	// FaultAcceptThenHang lets the request do its work, then blocks until the
	// request context ends (the client times out) or Server.Close, never answering.
	FaultAcceptThenHang
	// FaultAcceptThenReset lets the request do its work, then hijacks the
	// connection and closes it without a response.
	FaultAcceptThenReset
	// Fault408 answers 408 Request Timeout and closes the connection, as a
	// proxy does when the request did not reach it in full in time: the
	// request is not processed (no preview is accepted).
	Fault408
	// FaultEchoKey answers with the request's own x-api-key inside its
	// message, as a misconfigured proxy's error page might: the message is
	// Fault.EchoOffset filler dots, the key, then a tail long enough that a
	// client cutting messages to a few hundred bytes cuts after the key for
	// small offsets and through or before it for larger ones. The status is
	// Fault.EchoStatus, 503 when unset. Clients must let no part of the key
	// reach their errors or logs.
	FaultEchoKey
)

// String returns the constant's name without the Fault prefix.
func (k FaultKind) String() string {
	names := map[FaultKind]string{
		Fault401: "401", Fault403: "403", Fault404: "404", Fault429: "429",
		FaultRateLimit400: "RateLimit400", Fault500: "500", Fault502: "502", Fault503: "503",
		FaultEnvelopeError: "EnvelopeError", FaultAcceptThen502: "AcceptThen502",
		FaultAcceptThenHang: "AcceptThenHang", FaultAcceptThenReset: "AcceptThenReset",
		Fault408: "408", FaultEchoKey: "EchoKey",
	}
	if n, ok := names[k]; ok {
		return n
	}
	return "FaultKind(" + strconv.Itoa(int(k)) + ")"
}

// losesReply reports whether the request is processed normally and only its
// reply is replaced.
func (k FaultKind) losesReply() bool {
	return k == FaultAcceptThen502 || k == FaultAcceptThenHang || k == FaultAcceptThenReset
}

// Fault is one injected failure. Faults of a session are consumed in order:
// a request takes the first fault for its endpoint that has uses left.
type Fault struct {
	Endpoint Endpoint
	Kind     FaultKind
	// Times is how many consecutive matching requests the fault applies to;
	// 0 (or less) means 1.
	Times int
	// RetryAfter, when > 0, is sent as a Retry-After header on 429 and 503,
	// rounded up to whole seconds.
	RetryAfter time.Duration
	// EchoOffset is, for FaultEchoKey, the byte offset of the key in the
	// message (negative counts as 0).
	EchoOffset int
	// EchoStatus is FaultEchoKey's HTTP status; 0 means 503.
	EchoStatus int
}

// echoTail follows the echoed key: over 300 bytes, so that the message is
// longer than a 300-byte cut whatever the offset.
var echoTail = " was refused by the upstream proxy" + strings.Repeat(" (echoed for debugging)", 14)

func echoKeyMessage(key string, offset int) string {
	return strings.Repeat(".", max(offset, 0)) + key + echoTail
}

// writeFault answers r as f says. The FaultAcceptThen* kinds only decide
// how the reply is lost; the caller has already done the work.
func (s *Server) writeFault(w http.ResponseWriter, r *http.Request, f Fault) {
	switch f.Kind {
	case Fault401:
		writeError(w, http.StatusUnauthorized, "invalid api key")
	case Fault403:
		writeError(w, http.StatusForbidden, "api key is not allowed to access this resource")
	case Fault404:
		writeError(w, http.StatusNotFound, "session not found")
	case Fault408:
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, "request timeout: the request was not received in full in time")
	case Fault429:
		setRetryAfter(w, f.RetryAfter)
		writeError(w, http.StatusTooManyRequests, "Too many requests, please slow down")
	case FaultRateLimit400:
		writeError(w, http.StatusBadRequest, "Rate limit exceeded: too many requests")
	case Fault500:
		writeError(w, http.StatusInternalServerError, "internal server error")
	case Fault502, FaultAcceptThen502:
		writeError(w, http.StatusBadGateway, "bad gateway: upstream timed out")
	case Fault503:
		setRetryAfter(w, f.RetryAfter)
		writeError(w, http.StatusServiceUnavailable, "service temporarily unavailable")
	case FaultEnvelopeError:
		writeJSON(w, http.StatusOK, envelope{
			Error:      "Internal error",
			Message:    "something went wrong while processing the request",
			StatusCode: http.StatusInternalServerError,
		})
	case FaultEchoKey:
		status := f.EchoStatus
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		writeError(w, status, echoKeyMessage(r.Header.Get("x-api-key"), f.EchoOffset))
	case FaultAcceptThenHang:
		s.hang(r)
	case FaultAcceptThenReset:
		resetConn(w)
	default:
		writeError(w, http.StatusInternalServerError, "csmsim: unknown fault kind "+f.Kind.String())
	}
}

func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	if d <= 0 {
		return
	}
	secs := int64(math.Ceil(d.Seconds()))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
}
