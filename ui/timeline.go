package ui

import (
	"time"

	"github.com/previewd/previewd/store"
)

// timeline is a job's history drawn as a horizontal SVG: on top a strip
// whose segments are the statuses, as long as the job spent in each
// (proportional to time), and below it the steps, evenly spaced so that
// their labels never overlap, each tied to its moment on the strip, with
// the time taken between consecutive steps written between them.
type timeline struct {
	Width, Height int
	StripY        int
	StripW        float64
	Segments      []tlSegment
	Steps         []tlStep
	Gaps          []tlGap
	Total         time.Duration
	LastX         float64
	Running       bool // the strip ends now, not at a final step
}

type tlSegment struct {
	X, W  float64
	Class string
	Title string
}

type tlStep struct {
	X, PX     float64 // the step's node, and its moment on the strip
	Label     string  // our status, or the upstream status it moved to
	Upstream  string
	Note      string
	FullNote  string
	At        time.Time
	Class     string
	NewStatus bool
}

type tlGap struct {
	X     float64
	Label string
}

const (
	tlPad      = 60.0
	tlStepSpan = 150.0
	tlMinWidth = 1000.0
	tlNoteLen  = 26
)

func buildTimeline(j store.Job, now time.Time) timeline {
	h := j.History
	if len(h) == 0 {
		return timeline{}
	}
	width := max(tlMinWidth, tlStepSpan*float64(len(h)-1)+2*tlPad)
	start := h[0].At
	end := h[len(h)-1].At
	running := !j.Status.Final()
	if running && now.After(end) {
		end = now
	}
	total := end.Sub(start)
	span := width - 2*tlPad
	at := func(t time.Time) float64 {
		if total <= 0 {
			return tlPad
		}
		return tlPad + span*float64(t.Sub(start))/float64(total)
	}
	tl := timeline{Width: int(width), Height: 170, StripY: 18, StripW: span, Total: total, Running: running}
	for i, e := range h {
		stepX := tlPad
		if len(h) > 1 {
			stepX = tlPad + span*float64(i)/float64(len(h)-1)
		}
		newStatus := i == 0 || e.Status != h[i-1].Status
		label := string(e.Status)
		if !newStatus && e.UpstreamStatus != "" && e.UpstreamStatus != h[i-1].UpstreamStatus {
			label = "upstream"
		} else if !newStatus {
			label = "note"
		}
		note := e.Note
		if len(note) > tlNoteLen {
			note = note[:tlNoteLen-1] + "…"
		}
		tl.Steps = append(tl.Steps, tlStep{
			X: stepX, PX: at(e.At), Label: label, Upstream: e.UpstreamStatus, Note: note, FullNote: e.Note,
			At: e.At, Class: "st-" + string(e.Status), NewStatus: newStatus,
		})
		if i > 0 {
			prev := tl.Steps[i-1]
			tl.Gaps = append(tl.Gaps, tlGap{X: (prev.X + stepX) / 2, Label: "+" + humanDuration(e.At.Sub(h[i-1].At))})
		}
	}
	tl.LastX = tl.Steps[len(tl.Steps)-1].X
	// A segment per stretch of one status, up to the next status change
	// (or the end of the strip).
	for i := 0; i < len(h); {
		k := i + 1
		for k < len(h) && h[k].Status == h[i].Status {
			k++
		}
		segEnd := end
		if k < len(h) {
			segEnd = h[k].At
		}
		x0, x1 := at(h[i].At), at(segEnd)
		if x1-x0 < 2 {
			x1 = x0 + 2 // an instant still shows
		}
		tl.Segments = append(tl.Segments, tlSegment{
			X: x0, W: x1 - x0, Class: "st-" + string(h[i].Status),
			Title: string(h[i].Status) + " for " + humanDuration(segEnd.Sub(h[i].At)),
		})
		i = k
	}
	return tl
}
