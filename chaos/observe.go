package chaos

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/previewd/previewd/csmsim"
)

// simFront sits in front of the simulator. Each worker slot reaches it
// through its own Toxiproxy proxy and its own listener, so every request is
// attributed to the worker that sent it: that is how a kill's recovery is
// measured without asking previewd anything.
type simFront struct {
	sim *csmsim.Server

	mu       sync.Mutex
	contacts map[string][]Contact // session code → requests in arrival order
	served   map[string]bool      // session code → a read showed the preview mesh ready
	requests int
}

func newSimFront(sim *csmsim.Server) *simFront {
	return &simFront{sim: sim, contacts: map[string][]Contact{}, served: map[string]bool{}}
}

// sessionOf returns the session code of a simulator path: its last segment.
func sessionOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[i+1:]
	}
	return path
}

// handler serves the simulator to one worker slot.
func (f *simFront) handler(slot int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := sessionOf(r.URL.Path)
		f.mu.Lock()
		f.contacts[code] = append(f.contacts[code], Contact{Slot: slot, At: time.Now(), Post: r.Method == http.MethodPost})
		n := len(f.contacts[code]) - 1
		f.requests++
		f.mu.Unlock()
		if r.Method != http.MethodGet {
			f.sim.ServeHTTP(w, r)
			return
		}
		rec := &capture{ResponseWriter: w}
		f.sim.ServeHTTP(rec, r)
		if rec.status == http.StatusOK && meshReady(rec.body.Bytes()) {
			f.mu.Lock()
			f.served[code] = true
			f.contacts[code][n].Ready = true
			f.mu.Unlock()
		}
	})
}

// meshReady reports whether a session read shows preview mesh URLs.
func meshReady(body []byte) bool {
	var env struct {
		Data struct {
			PreviewMeshURL string `json:"preview_mesh_url"`
		} `json:"data"`
	}
	return json.Unmarshal(body, &env) == nil && env.Data.PreviewMeshURL != ""
}

func (f *simFront) meshServed(code string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served[code]
}

func (f *simFront) track(code string) []Contact {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Contact(nil), f.contacts[code]...)
}

func (f *simFront) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// capture records the status and body of a reply while passing it on.
type capture struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (c *capture) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (the
// simulator's reset faults hijack it).
func (c *capture) Unwrap() http.ResponseWriter { return c.ResponseWriter }
