package csmsim

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Schema selects how a session reports its status.
type Schema int

const (
	// SchemaLegacy reports data.status (spin_generate_done, training_preview,
	// preview_done, ...) and no percent_done.
	SchemaLegacy Schema = iota
	// Schema2025 reports data.session_status (queued, in_progress, complete,
	// failed) and data.percent_done, and no status key.
	Schema2025
)

// defaultGenerationTime is SessionConfig.GenerationTime when it is unset.
const defaultGenerationTime = 3 * time.Second

// SessionConfig describes one simulated session and how it misbehaves.
// Lifecycle durations are measured on Options.Now from the last accepted
// preview POST.
type SessionConfig struct {
	Schema Schema
	// PreviewMesh is "turbo" (default when empty), "hd" or "fast_sculpt".
	// Turbo sessions require selected_spin_index and selected_spin.
	PreviewMesh string
	// QueueTime is how long after an accepted preview POST the session still
	// looks as if nothing happened (legacy: spin_generate_done; 2025: queued,
	// percent 0) before generation starts.
	QueueTime time.Duration
	// GenerationTime is how long generation takes after QueueTime; default 3s.
	// With AutoRefine the refine stage takes as long again.
	GenerationTime time.Duration
	// Fail ends generation in preview_failed (legacy) / failed (2025).
	Fail bool
	// UnknownStatus, when set, is reported as the status (legacy status,
	// 2025 session_status) during the first half of generation.
	UnknownStatus string
	// Stuck makes generation never finish: training_preview / in_progress
	// forever, 2025 percent_done stopping at 50. It overrides Fail.
	Stuck bool
	// AutoRefine (legacy only): when the preview finishes, training_refine
	// for GenerationTime, then refine_done with the mesh_url* fields filled.
	// preview_done is never observed: upstream can pass it between two polls,
	// and the filled preview URLs are what tell the client its mesh is ready.
	AutoRefine bool
	// GoneAfter, when > 0, makes every request for this session answer 404
	// once this long has passed since the last accepted preview POST, as if
	// the session had been deleted.
	GoneAfter time.Duration
	// Latency is real time added before answering every request for this
	// session, cut short when the request context ends.
	Latency time.Duration
	// Faults are injected in order; see Fault.
	Faults []Fault
	// SpinsNotReady keeps the session in its spin stage with no spins
	// (legacy spin_generate_processing, 2025 in_progress); the preview POST
	// answers 400 "spins are not ready".
	SpinsNotReady bool
}

func (c SessionConfig) previewMesh() string {
	if c.PreviewMesh == "" {
		return "turbo"
	}
	return c.PreviewMesh
}

func (c SessionConfig) generationTime() time.Duration {
	if c.GenerationTime <= 0 {
		return defaultGenerationTime
	}
	return c.GenerationTime
}

// session is the mutable state of one session; the Server's mutex guards
// everything but code and cfg, which never change.
type session struct {
	code string
	cfg  SessionConfig

	faultsLeft []int // uses left per cfg.Faults entry
	requests   [numEndpoints]int
	accepted   int
	last       PreviewCall
	gen        *generation // nil until a preview is accepted
	// pushedStatus is the status of the last push (old_status of the next).
	pushedStatus string
}

// generation is the preview job started by the last accepted preview POST.
type generation struct {
	start time.Time
	key   string
}

func newSession(code string, cfg SessionConfig) *session {
	cfg.Faults = append([]Fault(nil), cfg.Faults...) // the caller may reuse its slice
	left := make([]int, len(cfg.Faults))
	for i, f := range cfg.Faults {
		left[i] = max(f.Times, 1)
	}
	return &session{code: code, cfg: cfg, faultsLeft: left}
}

// takeFault consumes one use of the first fault for ep that has uses left.
func (ss *session) takeFault(ep Endpoint) (Fault, bool) {
	for i, f := range ss.cfg.Faults {
		if f.Endpoint == ep && ss.faultsLeft[i] > 0 {
			ss.faultsLeft[i]--
			return f, true
		}
	}
	return Fault{}, false
}

// gone reports whether the session reads as deleted at now.
func (ss *session) gone(now time.Time) bool {
	return ss.cfg.GoneAfter > 0 && ss.gen != nil && now.Sub(ss.gen.start) >= ss.cfg.GoneAfter
}

// stage is a schema-neutral point in the session lifecycle.
type stage int

const (
	stageSpinsProcessing stage = iota
	stageSpinsDone
	stageQueued
	stagePreviewing
	stagePreviewDone
	stagePreviewFailed
	stageRefining
	stageRefineDone
)

// stageAt places the session in its lifecycle at now. percent is the 2025
// percent_done while previewing; early is true in the first half of
// generation, when UnknownStatus applies.
func (ss *session) stageAt(now time.Time) (st stage, percent int, early bool) {
	cfg := ss.cfg
	if ss.gen == nil {
		if cfg.SpinsNotReady {
			return stageSpinsProcessing, 0, false
		}
		return stageSpinsDone, 100, false
	}
	elapsed := now.Sub(ss.gen.start)
	if elapsed < cfg.QueueTime {
		return stageQueued, 0, false
	}
	g, total := elapsed-cfg.QueueTime, cfg.generationTime()
	percent = int(100 * g.Seconds() / total.Seconds())
	early = g < total/2
	switch {
	case cfg.Stuck:
		return stagePreviewing, min(percent, 50), early
	case g < total:
		return stagePreviewing, min(percent, 99), early
	case cfg.Fail:
		return stagePreviewFailed, 100, false
	case !cfg.AutoRefine || cfg.Schema == Schema2025:
		return stagePreviewDone, 100, false
	case g < 2*total:
		return stageRefining, 100, false
	default:
		return stageRefineDone, 100, false
	}
}

var (
	legacyStatus = map[stage]string{
		stageSpinsProcessing: "spin_generate_processing",
		stageSpinsDone:       "spin_generate_done",
		stageQueued:          "spin_generate_done", // upstream has not caught up yet
		stagePreviewing:      "training_preview",
		stagePreviewDone:     "preview_done",
		stagePreviewFailed:   "preview_failed",
		stageRefining:        "training_refine",
		stageRefineDone:      "refine_done",
	}
	status2025 = map[stage]string{
		stageSpinsProcessing: "in_progress",
		stageSpinsDone:       "complete", // the spin stage: a trap for naive clients
		stageQueued:          "queued",
		stagePreviewing:      "in_progress",
		stagePreviewDone:     "complete",
		stagePreviewFailed:   "failed",
		stageRefining:        "in_progress",
		stageRefineDone:      "complete",
	}
)

// spinCount is the number of spins a session offers (turbo has 4).
const spinCount = 4

// sessionData is the session as the GET endpoint reports it. Mesh URL
// fields are always present, "" until their stage finishes.
type sessionData struct {
	SessionCode   string `json:"session_code"`
	Status        string `json:"status,omitempty"`
	SessionStatus string `json:"session_status,omitempty"`
	PercentDone   *int   `json:"percent_done,omitempty"`
	PreviewMesh   string `json:"preview_mesh"`
	ImageURL      string `json:"image_url"`
	Spins         []spin `json:"spins"`

	PreviewMeshURL     string `json:"preview_mesh_url"`
	PreviewMeshURLGLB  string `json:"preview_mesh_url_glb"`
	PreviewMeshURLZip  string `json:"preview_mesh_url_zip"`
	PreviewMeshURLUSDZ string `json:"preview_mesh_url_usdz"`
	PreviewMeshURLFBX  string `json:"preview_mesh_url_fbx"`

	MeshURL     string `json:"mesh_url"`
	MeshURLGLB  string `json:"mesh_url_glb"`
	MeshURLObj  string `json:"mesh_url_obj"`
	MeshURLZip  string `json:"mesh_url_zip"`
	MeshURLUSDZ string `json:"mesh_url_usdz"`
	MeshURLFBX  string `json:"mesh_url_fbx"`
}

type spin struct {
	ImageURL string `json:"image_url"`
}

// snapshot renders the session at now.
func (ss *session) snapshot(now time.Time, base string) sessionData {
	st, percent, early := ss.stageAt(now)
	d := sessionData{
		SessionCode: ss.code,
		PreviewMesh: ss.cfg.previewMesh(),
		ImageURL:    assetURL(base, "images", ss.code+".png"),
		Spins:       []spin{}, // [] rather than null when spins are not ready
	}
	if !ss.cfg.SpinsNotReady {
		for i := range spinCount {
			d.Spins = append(d.Spins, spin{ImageURL: spinURL(base, ss.code, i)})
		}
	}

	status := legacyStatus[st]
	if ss.cfg.Schema == Schema2025 {
		status = status2025[st]
		d.PercentDone = &percent
	}
	if st == stagePreviewing && early && ss.cfg.UnknownStatus != "" {
		status = ss.cfg.UnknownStatus
	}
	if ss.cfg.Schema == Schema2025 {
		d.SessionStatus = status
	} else {
		d.Status = status
	}

	if st == stagePreviewDone || st == stageRefining || st == stageRefineDone {
		mesh := func(name string) string { return assetURL(base, "meshes", ss.code, ss.gen.key, name) }
		d.PreviewMeshURL = mesh("preview.obj")
		d.PreviewMeshURLGLB = mesh("preview.glb")
		d.PreviewMeshURLZip = mesh("preview.zip")
		d.PreviewMeshURLUSDZ = mesh("preview.usdz")
		d.PreviewMeshURLFBX = mesh("preview.fbx")
		if st == stageRefineDone {
			d.MeshURL = mesh("refine_mesh.obj")
			d.MeshURLGLB = mesh("refine.glb")
			d.MeshURLObj = mesh("refine.obj")
			d.MeshURLZip = mesh("refine.zip")
			d.MeshURLUSDZ = mesh("refine.usdz")
			d.MeshURLFBX = mesh("refine.fbx")
		}
	}
	return d
}

// spinURL is the image_url of spin i of session code.
func spinURL(base, code string, i int) string {
	return assetURL(base, "spins", code, strconv.Itoa(i)+".png")
}

// assetURL joins escaped path segments under base. Session codes are opaque,
// so they are escaped rather than trusted to be URL-safe.
func assetURL(base string, segments ...string) string {
	var b strings.Builder
	b.WriteString(base)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}
