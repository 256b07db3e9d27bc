package api

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
)

// DashboardPath is where the asynq dashboard is served.
const DashboardPath = "/monitoring"

// Dashboard is asynqmon twice: read-write for the API's tokens and
// read-only (asynqmon refuses every non-GET API call) for the read-only
// tokens.
type Dashboard struct {
	readWrite, readOnly http.Handler
}

// sharedRedis hands asynqmon our existing connection instead of letting it
// dial its own (asynq.RedisConnOpt).
type sharedRedis struct{ c redis.UniversalClient }

func (s sharedRedis) MakeRedisClient() any { return s.c }

// NewDashboard builds the dashboard on rdb. Never call Close on what it
// builds: the connection is the caller's.
func NewDashboard(rdb redis.UniversalClient) *Dashboard {
	opts := func(readOnly bool) asynqmon.Options {
		return asynqmon.Options{
			RootPath:         DashboardPath,
			RedisConnOpt:     sharedRedis{rdb},
			PayloadFormatter: asynqmon.PayloadFormatterFunc(FormatPayload),
			ReadOnly:         readOnly,
		}
	}
	return &Dashboard{readWrite: asynqmon.New(opts(false)), readOnly: asynqmon.New(opts(true))}
}

// FormatPayload shows a task payload in the dashboard: the job it belongs
// to and where to read that job (the API route, and the job view's page:
// asynqmon shows the text as is, so a path to paste, not a link), then the payload (our payloads carry ids
// and parameters only, never secrets).
func FormatPayload(_ string, payload []byte) string {
	var p struct {
		JobID string `json:"job_id"`
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, payload, "", "  "); err != nil {
		return string(payload)
	}
	if json.Unmarshal(payload, &p) != nil || p.JobID == "" {
		return pretty.String()
	}
	return "job " + p.JobID + "  (GET /v1/previews/" + p.JobID + ")\njob view: " + UIPath + "/jobs/" + p.JobID + "\n" + pretty.String()
}

// dashboard admits the API's tokens read-write and the read-only tokens
// read-only, as HTTP Basic passwords (any user name, so a browser can log
// in) or bearer tokens. Everything under the path, its API included,
// answers 401 without them.
//
// A browser that has logged in sends the Basic credentials with every
// request to the dashboard, whichever page started it, so credentials
// alone do not show that the operator meant the request: a page on
// another site could post a form that pauses a queue or deletes tasks.
// Non-safe requests must therefore be same-origin (sameOrigin), and no
// page may frame the dashboard (clickjacking its buttons). Without tokens
// the Host must be loopback too, as for the API (authenticate).
func (s *Server) dashboard(d *Dashboard) http.Handler {
	return s.loggedIn("the dashboard", d.readWrite, d.readOnly)
}

// Views is a browser surface behind the dashboard's login (the job view,
// package ui): one handler for the API's tokens, one for read-only tokens.
type Views interface {
	Handler(readOnly bool) http.Handler
}

// UIPath is where the job view (Options.UI) is served.
const UIPath = "/ui"

// loggedIn guards a browser surface as the dashboard doc says: Basic (or
// bearer) tokens, same-origin non-safe requests, no framing, a loopback
// Host when open; then readWrite or readOnly serves by the token's kind.
func (s *Server) loggedIn(what string, readWrite, readOnly http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		if s.open() && !loopbackHost(r.Host) {
			http.Error(w, "403 forbidden: "+hostDetail, http.StatusForbidden)
			return
		}
		if field, ok := s.sameOrigin(r); !ok {
			http.Error(w, "403 forbidden: a page of another origin cannot change "+what+"'s state ("+field.Field+" "+field.Message+")", http.StatusForbidden)
			return
		}
		token := bearer(r)
		if _, password, ok := r.BasicAuth(); ok {
			token = password
		}
		switch {
		case s.open() || s.tokens.match(token):
			readWrite.ServeHTTP(w, r)
		case s.readOnly.match(token):
			readOnly.ServeHTTP(w, r)
		default:
			w.Header().Set("WWW-Authenticate", `Basic realm="previewd dashboard", charset="UTF-8"`)
			http.Error(w, "401 unauthorized: log in with any user name and an API token as the password", http.StatusUnauthorized)
		}
	})
}
