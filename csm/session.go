package csm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Session is what GET /image-to-3d-sessions/{code} says about a session, in
// either the older schema (Status) or the 2025 one (SessionStatus and
// PercentDone).
type Session struct {
	Code          string
	Status        string // older schema
	SessionStatus string // 2025 schema
	PercentDone   *int   // 2025 schema, 0..100
	PreviewMesh   string // turbo, hd, fast_sculpt
	Spins         []Spin
	Preview       Meshes // preview_mesh_url*
	Refined       Meshes // mesh_url* (after refine)
}

// Spin is one of the session's generated views.
type Spin struct {
	ImageURL string `json:"image_url"`
}

// Meshes are the mesh URLs of one stage; "" until the stage finishes.
type Meshes struct {
	URL, GLB, OBJ, ZIP, USDZ, FBX string
}

// Map returns the non-empty URLs by format name.
func (m Meshes) Map() map[string]string {
	out := map[string]string{}
	for k, v := range map[string]string{"url": m.URL, "glb": m.GLB, "obj": m.OBJ, "zip": m.ZIP, "usdz": m.USDZ, "fbx": m.FBX} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// Empty reports whether no URL is set.
func (m Meshes) Empty() bool { return len(m.Map()) == 0 }

// RawStatus is the status string as upstream sent it: the 2025
// session_status when present, else the older status.
func (s *Session) RawStatus() string {
	if s.SessionStatus != "" {
		return s.SessionStatus
	}
	return s.Status
}

// MeshURLs returns the preview mesh URLs, or the refined ones when the
// session offers only those.
func (s *Session) MeshURLs() map[string]string {
	if !s.Preview.Empty() {
		return s.Preview.Map()
	}
	return s.Refined.Map()
}

// MeshFingerprint identifies the set of mesh URLs the session offers now, so
// that a later read can tell whether they changed. "" when there are none.
func (s *Session) MeshFingerprint() string {
	m := s.MeshURLs()
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, m[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Phase is what a session status means for a preview we requested.
type Phase int

// Phases, from least to most informative.
const (
	// PhaseUnknown: a status we do not know. CSM adds statuses over time;
	// treat it as still working.
	PhaseUnknown Phase = iota
	// PhaseSpinStage: spin_generate_*; seen after our POST it means
	// upstream has not caught up with it yet.
	PhaseSpinStage
	PhaseGenerating
	PhaseDone
	PhaseFailed
)

func (p Phase) String() string {
	switch p {
	case PhaseSpinStage:
		return "spin_stage"
	case PhaseGenerating:
		return "generating"
	case PhaseDone:
		return "done"
	case PhaseFailed:
		return "failed"
	}
	return "unknown"
}

// phases maps every status string CSM is known to send.
var phases = map[string]Phase{
	// Older schema.
	"spin_generate_processing": PhaseSpinStage,
	"spin_generate_done":       PhaseSpinStage,
	"spin_generate_failed":     PhaseSpinStage,
	"unprocessed":              PhaseGenerating, // the job record's state when accepted
	"training_preview":         PhaseGenerating,
	"preview_done":             PhaseDone,
	"preview_failed":           PhaseFailed,
	// With auto refine a session can pass preview_done between two polls:
	// any refine status means the preview mesh is ready.
	"training_refine": PhaseDone,
	"refine_done":     PhaseDone,
	"refine_failed":   PhaseDone,
}

var phases2025 = map[string]Phase{
	"queued":      PhaseGenerating,
	"in_progress": PhaseGenerating,
	"complete":    PhaseDone,
	"failed":      PhaseFailed,
}

// Phase maps the session's status. An explicit failure or generating status
// wins; otherwise a done status or any preview mesh URL means done.
func (s *Session) Phase() Phase {
	var p Phase
	var known bool
	if s.SessionStatus != "" {
		p, known = phases2025[s.SessionStatus]
	} else {
		p, known = phases[s.Status]
	}
	switch {
	case known && (p == PhaseFailed || p == PhaseGenerating):
		return p
	case (known && p == PhaseDone) || !s.Preview.Empty():
		return PhaseDone
	case known:
		return p
	}
	return PhaseUnknown
}

// sessionData is the wire shape of a session, lenient where upstream has
// been seen to vary (numbers as strings, fields missing).
type sessionData struct {
	SessionCode   string   `json:"session_code"`
	Status        string   `json:"status"`
	SessionStatus string   `json:"session_status"`
	PercentDone   *flexInt `json:"percent_done"`
	PreviewMesh   string   `json:"preview_mesh"`
	Spins         []Spin   `json:"spins"`
	PreviewURL    string   `json:"preview_mesh_url"`
	PreviewGLB    string   `json:"preview_mesh_url_glb"`
	PreviewOBJ    string   `json:"preview_mesh_url_obj"`
	PreviewZIP    string   `json:"preview_mesh_url_zip"`
	PreviewUSDZ   string   `json:"preview_mesh_url_usdz"`
	PreviewFBX    string   `json:"preview_mesh_url_fbx"`
	MeshURL       string   `json:"mesh_url"`
	MeshGLB       string   `json:"mesh_url_glb"`
	MeshOBJ       string   `json:"mesh_url_obj"`
	MeshZIP       string   `json:"mesh_url_zip"`
	MeshUSDZ      string   `json:"mesh_url_usdz"`
	MeshFBX       string   `json:"mesh_url_fbx"`
}

func (d sessionData) session() *Session {
	s := &Session{
		Code:          d.SessionCode,
		Status:        strings.TrimSpace(d.Status),
		SessionStatus: strings.TrimSpace(d.SessionStatus),
		PreviewMesh:   d.PreviewMesh,
		Spins:         d.Spins,
		Preview:       Meshes{URL: d.PreviewURL, GLB: d.PreviewGLB, OBJ: d.PreviewOBJ, ZIP: d.PreviewZIP, USDZ: d.PreviewUSDZ, FBX: d.PreviewFBX},
		Refined:       Meshes{URL: d.MeshURL, GLB: d.MeshGLB, OBJ: d.MeshOBJ, ZIP: d.MeshZIP, USDZ: d.MeshUSDZ, FBX: d.MeshFBX},
	}
	if d.PercentDone != nil {
		p := int(*d.PercentDone)
		s.PercentDone = &p
	}
	return s
}

// flexInt decodes a number or a numeric string, clamped to 0..100.
type flexInt int

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(strings.Trim(string(bytes.TrimSpace(b)), `"`))
	if s == "" || s == "null" {
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if errors.Is(err, strconv.ErrRange) {
		err = nil // ±Inf or a denormal: clamped below
	}
	if err != nil || math.IsNaN(v) {
		return fmt.Errorf("percent_done: not a number: %.20q", s)
	}
	*f = flexInt(math.Max(0, math.Min(100, math.Round(v))))
	return nil
}

// envelope is the legacy response wrapper. Error and StatusCode are decoded
// leniently because they are what tells a failure inside an HTTP 200.
type envelope struct {
	Error      json.RawMessage `json:"error"`
	Message    json.RawMessage `json:"message"`
	StatusCode json.RawMessage `json:"statusCode"`
	Data       json.RawMessage `json:"data"`
}

// errorText returns the envelope's error as text, "" when there is none.
func (e envelope) errorText() string {
	return rawText(e.Error)
}

func (e envelope) messageText() string {
	return rawText(e.Message)
}

// statusCode returns the envelope's statusCode, 0 when absent or unreadable.
func (e envelope) statusCode() int {
	s := strings.Trim(string(bytes.TrimSpace(e.StatusCode)), `"`)
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

func rawText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) || bytes.Equal(raw, []byte("false")) {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	var obj struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(raw, &obj); err == nil && obj.Message != "" {
		return obj.Message
	}
	return string(raw)
}

var errNoData = errors.New("response has no data object")

// DecodeSession decodes a GET session response body: the legacy envelope
// with the session in data, or (defensively) the session at top level.
func DecodeSession(body []byte) (*Session, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("decode session response: %w", err)
	}
	raw := bytes.TrimSpace(env.Data)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		raw = body
	}
	var d sessionData
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("decode session: %w", err)
	}
	if strings.TrimSpace(d.Status) == "" && strings.TrimSpace(d.SessionStatus) == "" && d.SessionCode == "" {
		return nil, fmt.Errorf("decode session: %w", errNoData)
	}
	return d.session(), nil
}

// PreviewJob is the job record CSM returns for an accepted preview POST.
type PreviewJob struct {
	Scenario       string // the session code
	UniqueTrialKey string
	Status         string // "unprocessed" when accepted
	JobID          string // complete_job_data.id, e.g. job:dreamfusion:...
}

// DecodePreviewJob decodes the data of a preview POST response. A response
// without a unique_trial_key is a protocol error.
func DecodePreviewJob(body []byte) (*PreviewJob, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("decode preview response: %w", err)
	}
	var d struct {
		Scenario       string `json:"scenario"`
		UniqueTrialKey string `json:"unique_trial_key"`
		Status         string `json:"status"`
		Complete       struct {
			ID string `json:"id"`
		} `json:"complete_job_data"`
	}
	if len(bytes.TrimSpace(env.Data)) == 0 {
		return nil, fmt.Errorf("decode preview response: %w", errNoData)
	}
	if err := json.Unmarshal(env.Data, &d); err != nil {
		return nil, fmt.Errorf("decode preview job: %w", err)
	}
	if strings.TrimSpace(d.UniqueTrialKey) == "" {
		return nil, errors.New("decode preview job: no unique_trial_key")
	}
	return &PreviewJob{Scenario: d.Scenario, UniqueTrialKey: d.UniqueTrialKey, Status: d.Status, JobID: d.Complete.ID}, nil
}
