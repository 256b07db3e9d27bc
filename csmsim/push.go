package csmsim

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// PushShape selects the shape of the account webhooks the Server sends
// (shared/csm-api.md, "CSM's own webhooks").
type PushShape int

const (
	// PushLegacy: {"type": <legacy status>, "payload": {"session_id", "status", "preview_mesh_url", ...}}.
	PushLegacy PushShape = iota
	// PushCurrent: {"type": "session_status_changed", "payload": {"session_id", "old_status", "new_status", "session_data", ...}}.
	PushCurrent
	// PushCurrentFlat: session_status_changed with its fields at the top level.
	PushCurrentFlat
	// PushAlternate cycles through the three shapes above, push by push.
	PushAlternate
)

// PushOptions make the Server post account webhooks, as CSM does when a
// session changes status: unsigned JSON to one URL.
type PushOptions struct {
	// URL receives the pushes; empty sends none.
	URL   string
	Shape PushShape
	// Client sends them; default a client with a 5 s timeout.
	Client *http.Client
}

// pusher is the Server's push state; its own mutex, never held with s.mu
// while sending.
type pusher struct {
	mu     sync.Mutex
	timers []*time.Timer
	sent   int
	failed int
	n      int // pushes made, for PushAlternate
	wg     sync.WaitGroup
}

// schedulePushes arms the pushes of the generation started at accept: one
// when generation starts (after QueueTime), one when it ends, and with
// AutoRefine one when the refine ends. They fire on real time (time.AfterFunc):
// a Server whose Options.Now is a fake clock should push by hand (Push).
// A generation replaced by a later accepted POST pushes nothing more.
func (s *Server) schedulePushes(ss *session, key string) {
	if s.push.URL == "" {
		return
	}
	cfg := ss.cfg
	at := []time.Duration{cfg.QueueTime, cfg.QueueTime + cfg.generationTime()}
	if cfg.AutoRefine && cfg.Schema == SchemaLegacy && !cfg.Fail && !cfg.Stuck {
		at = append(at, cfg.QueueTime+2*cfg.generationTime())
	}
	if cfg.Stuck {
		at = at[:1]
	}
	p := &s.pushes
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range at {
		p.timers = append(p.timers, time.AfterFunc(d, func() {
			s.mu.Lock()
			current := ss.gen != nil && ss.gen.key == key
			s.mu.Unlock()
			if current {
				s.Push(ss.code)
			}
		}))
	}
}

// Push sends one account webhook for session code as it is now (unknown
// codes send nothing), and reports whether the receiver answered 2xx. It
// blocks until the receiver answers or the client gives up.
func (s *Server) Push(code string) bool {
	if s.push.URL == "" {
		return false
	}
	s.mu.Lock()
	ss := s.sessions[code]
	var body []byte
	if ss != nil {
		s.pushes.mu.Lock()
		shape := s.push.Shape
		if shape == PushAlternate {
			shape = PushShape(s.pushes.n % 3)
		}
		s.pushes.n++
		s.pushes.wg.Add(1)
		s.pushes.mu.Unlock()
		body = s.pushBody(ss, shape)
	}
	s.mu.Unlock()
	if ss == nil {
		return false
	}
	defer s.pushes.wg.Done()
	ok := s.sendPush(body)
	s.pushes.mu.Lock()
	if ok {
		s.pushes.sent++
	} else {
		s.pushes.failed++
	}
	s.pushes.mu.Unlock()
	return ok
}

// PushesSent reports the pushes answered 2xx and those that were not.
func (s *Server) PushesSent() (ok, failed int) {
	s.pushes.mu.Lock()
	defer s.pushes.mu.Unlock()
	return s.pushes.sent, s.pushes.failed
}

func (s *Server) sendPush(body []byte) bool {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.push.URL, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	client := s.push.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// stopPushes stops the armed pushes (Close).
func (s *Server) stopPushes() {
	s.pushes.mu.Lock()
	for _, t := range s.pushes.timers {
		t.Stop()
	}
	s.pushes.timers = nil
	s.pushes.mu.Unlock()
}

// pushBody renders a push of session ss in shape; s.mu is held.
func (s *Server) pushBody(ss *session, shape PushShape) []byte {
	now := s.now()
	d := ss.snapshot(now, s.baseURL)
	st, _, _ := ss.stageAt(now)
	var v any
	switch shape {
	case PushLegacy:
		status := legacyStatus[st]
		v = map[string]any{"type": status, "payload": map[string]any{
			"session_id": ss.code, "status": status,
			"preview_mesh_url": d.PreviewMeshURL, "preview_mesh_url_glb": d.PreviewMeshURLGLB,
			"preview_mesh_url_fbx": d.PreviewMeshURLFBX, "selected_spin_index": ss.last.SelectedSpinIndex,
		}}
	default:
		status := d.Status
		if status == "" {
			status = d.SessionStatus
		}
		fields := map[string]any{
			"event": "session_status_changed", "session_id": ss.code, "user_id": "user_sim",
			"session_type": "image_to_3d", "old_status": ss.pushedStatus, "new_status": status,
			"timestamp": now.UTC().Format(time.RFC3339Nano), "session_data": d,
		}
		if shape == PushCurrentFlat {
			v = fields
		} else {
			v = map[string]any{"type": "session_status_changed", "payload": fields}
		}
		ss.pushedStatus = status
	}
	body, err := json.Marshal(v)
	if err != nil {
		panic("csmsim: encode push: " + err.Error()) // maps of strings and ints
	}
	return body
}
