package csmsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"time"
)

// maxPreviewBody bounds the preview POST body; real bodies are tiny.
const maxPreviewBody = 64 << 10

// previewRequest is a decoded, type-checked preview POST body.
type previewRequest struct {
	index    int
	hasIndex bool
	spin     string
	hasSpin  bool
	bbox     []float64
	pivot    []float64
}

// errInvalidJSON is the refusal of anything that is not one JSON object.
var errInvalidJSON = errors.New("invalid JSON body")

// decodePreview checks the body's JSON and field types; checks that need
// the session (turbo, spins) happen in accept. Error texts go to the client
// and name the offending field. A JSON null counts as an absent field.
func decodePreview(body []byte) (previewRequest, error) {
	var req previewRequest
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(body) {
		return req, errInvalidJSON
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return req, errInvalidJSON
	}
	field := func(name string) (json.RawMessage, bool) {
		raw, ok := fields[name]
		return raw, ok && string(raw) != "null"
	}

	if raw, ok := field("selected_spin_index"); ok {
		var n float64
		if err := json.Unmarshal(raw, &n); err != nil || n != math.Trunc(n) || n < 0 || n >= spinCount {
			return req, fmt.Errorf("selected_spin_index must be an integer from 0 to %d", spinCount-1)
		}
		req.index, req.hasIndex = int(n), true
	}
	if raw, ok := field("selected_spin"); ok {
		if err := json.Unmarshal(raw, &req.spin); err != nil {
			return req, errors.New("selected_spin must be a string")
		}
		req.hasSpin = true
	}
	if raw, ok := field("scaled_bbox"); ok {
		v, ok := numbers(raw)
		if !ok || len(v) != 3 || v[0] <= 0 || v[1] <= 0 || v[2] <= 0 {
			return req, errors.New("scaled_bbox must be an array of 3 positive numbers [width, height, depth]")
		}
		req.bbox = v
	}
	if raw, ok := field("pivot_point"); ok {
		v, ok := numbers(raw)
		if !ok || len(v) != 3 || !inPivotRange(v) {
			return req, errors.New("pivot_point must be an array of 3 numbers, each from -0.5 to 0.5")
		}
		req.pivot = v
	}
	return req, nil
}

// numbers decodes a JSON array whose items are all numbers.
func numbers(raw json.RawMessage) ([]float64, bool) {
	var items []any
	if err := json.Unmarshal(raw, &items); err != nil || items == nil {
		return nil, false
	}
	out := make([]float64, 0, len(items))
	for _, it := range items {
		f, ok := it.(float64)
		if !ok {
			return nil, false
		}
		out = append(out, f)
	}
	return out, true
}

func inPivotRange(v []float64) bool {
	for _, f := range v {
		if f < -0.5 || f > 0.5 {
			return false
		}
	}
	return true
}

// preview answers POST /image-to-3d-sessions/get-3d/preview/{code}.
func (s *Server) preview(w http.ResponseWriter, r *http.Request, ss *session, lost *Fault) {
	status, body := s.acceptPreview(r, ss)
	s.reply(w, r, lost, status, body)
}

// acceptPreview validates the request and, when it is valid, accepts it:
// counts it, records it, restarts the lifecycle and runs the hook. It
// returns the reply the client should get.
func (s *Server) acceptPreview(r *http.Request, ss *session) (int, any) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return badRequest("Content-Type must be application/json")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPreviewBody+1))
	switch {
	case err != nil:
		return badRequest(errInvalidJSON.Error())
	case len(body) > maxPreviewBody:
		return badRequest("request body too large")
	}
	req, err := decodePreview(body)
	if err != nil {
		return badRequest(err.Error())
	}
	if ss.cfg.SpinsNotReady {
		return badRequest("spins are not ready")
	}
	if ss.cfg.previewMesh() == "turbo" {
		switch {
		case !req.hasIndex:
			return badRequest("selected_spin_index is required for turbo preview meshes")
		case !req.hasSpin:
			return badRequest("selected_spin is required for turbo preview meshes")
		case req.spin != spinURL(s.baseURL, ss.code, req.index):
			return badRequest("selected_spin must be the image_url of spins[" + strconv.Itoa(req.index) + "]")
		}
	}

	now := s.now()
	s.mu.Lock()
	prev := ""
	if ss.gen != nil {
		prev = ss.gen.key
	}
	key := newTrialKey(now, prev)
	ss.gen = &generation{start: now, key: key}
	ss.accepted++
	s.total++
	ss.last = PreviewCall{
		SelectedSpinIndex: req.index,
		SelectedSpin:      req.spin,
		ScaledBBox:        req.bbox,
		PivotPoint:        req.pivot,
		At:                now,
		UniqueTrialKey:    key,
	}
	hook := s.onAccepted
	s.mu.Unlock()
	s.schedulePushes(ss, key)

	if hook != nil {
		hook(ss.code)
	}

	imageURL := req.spin
	if imageURL == "" {
		imageURL = assetURL(s.baseURL, "images", ss.code+".png")
	}
	return http.StatusOK, envelope{
		Message:    "Generating Mesh",
		StatusCode: http.StatusOK,
		Data:       newJob(ss.code, key, imageURL, now),
	}
}

func badRequest(msg string) (int, any) {
	return http.StatusBadRequest, errorBody{
		Error:      http.StatusText(http.StatusBadRequest),
		Message:    msg,
		StatusCode: http.StatusBadRequest,
	}
}

// job is the data of an accepted preview POST: a job record, not the
// session. Field order follows the seed doc's example.
type job struct {
	Scenario        string  `json:"scenario"`
	UniqueTrialKey  string  `json:"unique_trial_key"`
	Status          string  `json:"status"`
	CompleteJobData jobData `json:"complete_job_data"`
}

type jobData struct {
	Scenario       string `json:"scenario"`
	JobPriority    string `json:"job_priority"`
	Username       string `json:"username"`
	Call           string `json:"call"`
	UserID         string `json:"user_id"`
	Status         string `json:"status"`
	StartTime      string `json:"start_time"`
	UniqueTrialKey string `json:"unique_trial_key"`
	TaskData       string `json:"task_data"`
	ID             string `json:"id"`
}

type taskData struct {
	Scenario       string `json:"scenario"`
	UniqueTrialKey string `json:"unique_trial_key"`
	CustomerEmail  string `json:"customer_email"`
	ImageURL       string `json:"image_url"`
	TextPrompt     string `json:"text_prompt"`
	Keyword        string `json:"keyword"`
	DiscordUserID  string `json:"discord_user_id"`
}

const simUser = "sim@csm-sim.invalid"

func newJob(code, key, imageURL string, now time.Time) job {
	// task_data is JSON inside a string upstream; marshalling our own plain
	// struct cannot fail.
	task, _ := json.Marshal(taskData{
		Scenario:       code,
		UniqueTrialKey: key,
		CustomerEmail:  simUser,
		ImageURL:       imageURL,
	})
	return job{
		Scenario:       code,
		UniqueTrialKey: key,
		Status:         "unprocessed",
		CompleteJobData: jobData{
			Scenario:       code,
			JobPriority:    "2",
			Username:       simUser,
			Call:           "dreamfusion",
			UserID:         "000000",
			Status:         "unprocessed",
			StartTime:      fmt.Sprintf("%d.%07d", now.Unix(), now.Nanosecond()/100),
			UniqueTrialKey: key,
			TaskData:       string(task),
			ID:             "job:dreamfusion:" + code + "_" + key,
		},
	}
}

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newTrialKey invents a unique_trial_key shaped like the seed's
// "168923176748ZJ@NcRfUjXn2r5u8x": the clock in centiseconds, two random
// characters, '@', fourteen more. It never returns prev, so a re-preview
// always gets new mesh URLs.
func newTrialKey(now time.Time, prev string) string {
	for {
		b := strconv.AppendInt(nil, now.UnixMilli()/10, 10)
		for i := range 17 {
			if i == 2 {
				b = append(b, '@')
				continue
			}
			b = append(b, keyAlphabet[rand.IntN(len(keyAlphabet))])
		}
		if k := string(b); k != prev {
			return k
		}
	}
}
