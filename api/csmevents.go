package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/csm"
)

// CSMEventsPath receives CSM's own account webhooks (see CSMEvents).
const CSMEventsPath = "/v1/csm/events"

// PushTarget is what the CSM webhook route needs (tasks.Pusher): poll the
// live jobs of a session now, reporting how many it found.
type PushTarget interface {
	PollSession(ctx context.Context, code string) (int, error)
}

// CSMEvents opens POST /v1/csm/events?token=<Token> to CSM's account
// webhooks. CSM neither signs them nor sends headers of our choosing, only
// a URL, so the token rides in the query and the route is outside the API's
// bearer authentication. A push is a hint, never a fact: it only makes the
// named session's jobs poll now, and the poll decides.
type CSMEvents struct {
	Target PushTarget
	// Token is PREVIEWD_CSM_WEBHOOK_TOKEN; empty closes the route (404).
	Token string
}

// pushTimeout bounds the work of one push: CSM wants its answer quickly,
// and a poll missed here is caught by the safety-net schedule.
const pushTimeout = 2 * time.Second

// maxPushBytes bounds a push body: the current shape carries the session
// with its large fields stripped.
const maxPushBytes = 256 << 10

// csmEvents serves CSMEventsPath. The token is compared in constant time
// (over hashes, so its length does not show either) and never logged: the
// request log names the route, not the URL. Without a configured token, or
// with a wrong one, the route does not exist (404).
func (s *Server) csmEvents(w http.ResponseWriter, r *http.Request) {
	ev := s.opts.CSMEvents
	if ev == nil || ev.Token == "" || ev.Target == nil || !sameToken(r.URL.Query().Get("token"), ev.Token) {
		writeProblem(w, http.StatusNotFound, "Not found", "no such API route: "+r.Method+" "+r.URL.Path, nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPushBytes))
	if err != nil {
		writeProblem(w, http.StatusRequestEntityTooLarge, "Body too large", "a CSM event is at most 256 KiB", nil)
		return
	}
	kind, code := parsePush(body)
	if code == "" {
		s.log.Warn("CSM event of an unknown shape, naming no session; ignored",
			zap.String("event_type", kind), zap.Int("bytes", len(body)))
		w.WriteHeader(http.StatusAccepted)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pushTimeout)
	defer cancel()
	n, err := ev.Target.PollSession(ctx, code)
	if err != nil {
		// Polls that were hurried stay hurried; the others run on their
		// safety-net schedule. 503 so that a retrying sender tries again.
		s.log.Warn("CSM event: could not poll the session's jobs now", zap.String("session_code", code),
			zap.String("event_type", kind), zap.Int("jobs", n), zap.Error(err))
		writeProblem(w, http.StatusServiceUnavailable, "Unavailable", "the event could not be processed now", nil)
		return
	}
	s.log.Debug("CSM event", zap.String("session_code", code), zap.String("event_type", kind), zap.Int("jobs", n))
	w.WriteHeader(http.StatusNoContent)
}

func sameToken(got, want string) bool {
	g, h := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return got != "" && subtle.ConstantTimeCompare(g[:], h[:]) == 1
}

// pushShape holds the fields of both known shapes of CSM's webhooks: the
// legacy {"type": <status>, "payload": {"session_id", "status", ...}} and
// session_status_changed, wrapped the same way or with its fields at the
// top level ({"event": ..., "session_id", "new_status", "session_data"}).
type pushShape struct {
	Type        string          `json:"type"`
	Event       string          `json:"event"`
	SessionID   string          `json:"session_id"`
	SessionCode string          `json:"session_code"`
	SessionData *pushSession    `json:"session_data"`
	Payload     json.RawMessage `json:"payload"`
}

type pushSession struct {
	ID          string `json:"_id"`
	SessionCode string `json:"session_code"`
}

// parsePush returns the event's type (for the logs) and the session it
// names, or "" when it names none that looks like a session code. Nothing
// else in it is used: it is unsigned.
func parsePush(body []byte) (kind, code string) {
	var top pushShape
	if json.Unmarshal(body, &top) != nil {
		return "", ""
	}
	kind = top.Type
	if kind == "" {
		kind = top.Event
	}
	if len(kind) > 64 {
		kind = kind[:64]
	}
	candidates := top.codes()
	if len(top.Payload) > 0 {
		var inner pushShape
		if json.Unmarshal(top.Payload, &inner) == nil {
			candidates = append(inner.codes(), candidates...)
		}
	}
	for _, c := range candidates {
		if csm.ValidSessionCode(c) {
			return kind, c
		}
	}
	return kind, ""
}

func (p pushShape) codes() []string {
	out := []string{p.SessionID, p.SessionCode}
	if p.SessionData != nil {
		out = append(out, p.SessionData.ID, p.SessionData.SessionCode)
	}
	return out
}
