// Package receiver is a webhook endpoint for previewd's own programs (the
// demo, the chaos harness): it verifies every signature with a secret of
// its own and records what it got, by webhook id and by job, so that a
// program can judge delivery from the receiving side.
package receiver

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/webhook"
)

// Final is the first final webhook a job got.
type Final struct {
	Type      store.EventType
	ErrorCode string // the job's error code, when it has one
	At        time.Time
	Count     int // final webhooks received for the job, retries included
}

// Receiver is an http.Handler; create it with New.
type Receiver struct {
	secret webhook.Secret

	mu        sync.Mutex
	delivered int
	rejected  int
	bodies    map[string]map[[32]byte]bool // webhook id → distinct bodies
	finals    map[string]Final             // job id → its first final webhook
}

// New returns a Receiver and the signing secret (whsec_...) the workers
// must sign with.
func New() (*Receiver, string, error) {
	text, err := webhook.GenerateSecret()
	if err != nil {
		return nil, "", fmt.Errorf("webhook secret: %w", err)
	}
	secret, err := webhook.ParseSecret(text)
	if err != nil {
		return nil, "", fmt.Errorf("webhook secret: %w", err)
	}
	return &Receiver{secret: secret, bodies: map[string]map[[32]byte]bool{}, finals: map[string]Final{}}, text, nil
}

// ServeHTTP answers 204 to a verified event, 401 to a bad signature.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, "read error", http.StatusBadRequest)
		return
	}
	if err := webhook.Verify(r.secret, req.Header, body, time.Now(), 5*time.Minute); err != nil {
		r.mu.Lock()
		r.rejected++
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev store.EventBody
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delivered++
	if r.bodies[id] == nil {
		r.bodies[id] = map[[32]byte]bool{}
	}
	r.bodies[id][sha256.Sum256(body)] = true
	if ev.Data.Status.Final() && ev.Type != store.EventProgress && ev.Type != store.EventAccepted {
		f := r.finals[ev.Data.ID]
		if f.Count == 0 {
			f.Type, f.At = ev.Type, time.Now()
			if ev.Data.Error != nil {
				f.ErrorCode = ev.Data.Error.Code
			}
		}
		f.Count++
		r.finals[ev.Data.ID] = f
	}
	w.WriteHeader(http.StatusNoContent)
}

// Final returns the job's first final webhook; false when none came yet.
func (r *Receiver) Final(jobID string) (Final, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.finals[jobID]
	return f, ok
}

// Totals counts verified deliveries and rejected (badly signed) ones.
func (r *Receiver) Totals() (delivered, rejected int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delivered, r.rejected
}

// BodiesByID counts the distinct bodies received per webhook id: more than
// one means one id was sent with different contents.
func (r *Receiver) BodiesByID() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.bodies))
	for id, b := range r.bodies {
		out[id] = len(b)
	}
	return out
}
