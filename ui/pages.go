package ui

import (
	"bytes"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"age":   humanDuration,
	"clock": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"ms":    func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + " ms" },
	"final": func(s store.Status) bool { return s.Final() },
	"deref": func(p *int) int { return *p },
}).ParseFS(templateFS, "templates/*.html"))

// render writes a page; a template error is logged and answered 500
// (nothing is written before the page is complete).
func (u *UI) render(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		u.log.Error("render page", zap.String("page", name), zap.Error(err))
		http.Error(w, "500 internal error: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

type errorData struct {
	Page
	Title, Detail string
}

// Page is what every page's layout needs.
type Page struct {
	Title, Root, Dashboard string
}

func (u *UI) page(title string) Page {
	return Page{Title: title, Root: u.opts.Root, Dashboard: u.opts.DashboardPath}
}

func (u *UI) errorPage(w http.ResponseWriter, status int, title, detail string) {
	u.render(w, status, "error.html", errorData{Page: u.page(title), Title: title, Detail: detail})
}

// internal logs err and answers a page without its text.
func (u *UI) internal(w http.ResponseWriter, r *http.Request, err error) {
	u.log.Error("job view request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
	u.errorPage(w, http.StatusInternalServerError, "Internal error", "the page could not be loaded; it is safe to retry")
}

type listData struct {
	Page
	Status     string
	Older      string
	Statuses   []store.Status
	Counts     []statusCount
	Jobs       []listRow
	Next, Self string
	Now        time.Time
}

type statusCount struct {
	Status store.Status
	N      int64
	Link   string
}

type listRow struct {
	store.Job
	Age time.Duration
}

// list is /ui/: a page of jobs newest first, filtered by status and age.
func (u *UI) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status, older := store.Status(q.Get("status")), strings.TrimSpace(q.Get("older"))
	opts := store.ListOptions{Status: status, Cursor: q.Get("cursor"), Limit: 50}
	if status != "" && !status.Valid() {
		u.errorPage(w, http.StatusBadRequest, "Invalid filter", "status must be one of queued, requesting, generating, done, failed, timed_out, canceled")
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 200 {
			u.errorPage(w, http.StatusBadRequest, "Invalid filter", "limit must be a number from 1 to 200")
			return
		}
		opts.Limit = n
	}
	now := u.opts.Now()
	if older != "" {
		d, err := time.ParseDuration(older)
		if err != nil || d <= 0 {
			u.errorPage(w, http.StatusBadRequest, "Invalid filter", "older must be a positive duration such as 30m, 2h or 90s")
			return
		}
		opts.CreatedBefore = now.Add(-d)
	}
	jobs, next, err := u.opts.Jobs.List(r.Context(), opts)
	if errors.Is(err, store.ErrBadCursor) {
		u.errorPage(w, http.StatusBadRequest, "Invalid page", "cursor is not one this page gave; start again from the first page")
		return
	}
	if err != nil {
		u.internal(w, r, err)
		return
	}
	data := listData{Page: u.page("Jobs"), Status: string(status), Older: older, Statuses: store.Statuses, Now: now}
	filter := func(st store.Status, cursor string) string {
		v := url.Values{}
		if st != "" {
			v.Set("status", string(st))
		}
		if older != "" {
			v.Set("older", older)
		}
		if cursor != "" {
			v.Set("cursor", cursor)
			if l := q.Get("limit"); l != "" {
				v.Set("limit", l)
			}
		}
		if len(v) == 0 {
			return u.opts.Root + "/"
		}
		return u.opts.Root + "/?" + v.Encode()
	}
	if next != "" {
		data.Next = filter(status, next)
	}
	if u.opts.Counts != nil {
		counts, err := u.opts.Counts.StatusCounts(r.Context())
		if err != nil {
			u.internal(w, r, err)
			return
		}
		for _, st := range store.Statuses {
			data.Counts = append(data.Counts, statusCount{Status: st, N: counts[st], Link: filter(st, "")})
		}
	}
	for _, j := range jobs {
		data.Jobs = append(data.Jobs, listRow{Job: j, Age: now.Sub(j.CreatedAt)})
	}
	u.render(w, http.StatusOK, "list.html", data)
}

type jobData struct {
	Page
	Job        store.Job
	WebhookURL string // its origin only: the path may carry the receiver's credentials
	Age        time.Duration
	Timeline   timeline
	Task       *taskLink
	Messages   []messageRow
	Meshes     []meshLink
	GLB        string // the proxied GLB's path, when the job has one
	Buttons    bool
	Flash      string
}

type taskLink struct {
	Queue, ID, URL string
}

type messageRow struct {
	store.Message
	Task       taskLink
	Replayable bool
	Numbered   []numberedAttempt
}

// numberedAttempt is an attempt with its number among all the message's
// attempts (the log keeps the latest ones only).
type numberedAttempt struct {
	store.Attempt
	N int
}

type meshLink struct {
	Format, URL string
}

// jobOf reads the job of a /ui/jobs/{id} page, or answers the error page
// and reports false.
func (u *UI) jobOf(w http.ResponseWriter, r *http.Request) (store.Job, bool) {
	j, err := u.opts.Jobs.Job(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		u.errorPage(w, http.StatusNotFound, "No such job", "job not found (unknown, or expired after the retention period)")
		return store.Job{}, false
	}
	if err != nil {
		u.internal(w, r, err)
		return store.Job{}, false
	}
	return j, true
}

// job is /ui/jobs/{id}.
func (u *UI) job(w http.ResponseWriter, r *http.Request, readOnly bool) {
	id := r.PathValue("id")
	j, ok := u.jobOf(w, r)
	if !ok {
		return
	}
	msgs, err := u.opts.Jobs.Messages(r.Context(), id)
	if err != nil {
		u.internal(w, r, err)
		return
	}
	now := u.opts.Now()
	data := jobData{
		Page: u.page("Job " + j.ID), Job: j, WebhookURL: store.PublicURL(j.WebhookURL), Age: now.Sub(j.CreatedAt),
		Timeline: buildTimeline(j, now), Buttons: !readOnly, Flash: flashes[r.URL.Query().Get("done")],
	}
	data.Task = u.currentTask(j)
	for _, m := range msgs {
		row := messageRow{Message: m, Task: u.messageTask(j.ID, m), Replayable: m.Status != store.MessagePending}
		first := m.AttemptsN - len(m.Attempts) + 1
		for i, a := range m.Attempts {
			row.Numbered = append(row.Numbered, numberedAttempt{Attempt: a, N: first + i})
		}
		data.Messages = append(data.Messages, row)
	}
	for format, link := range j.MeshURLs {
		data.Meshes = append(data.Meshes, meshLink{Format: format, URL: link})
	}
	sort.Slice(data.Meshes, func(a, b int) bool { return data.Meshes[a].Format < data.Meshes[b].Format })
	if u.opts.Mesh != nil && j.MeshURLs["glb"] != "" {
		data.GLB = u.opts.Root + "/jobs/" + url.PathEscape(j.ID) + "/mesh.glb"
	}
	u.render(w, http.StatusOK, "job.html", data)
}

var flashes = map[string]string{
	"canceled": "The job was canceled; its preview.canceled webhook is on its way.",
	"replayed": "The message was queued for delivery again.",
	"final":    "The job had already reached a final status: nothing to cancel.",
	"pending":  "The message is being delivered; replay it once it is delivered or failed.",
}

// currentTask is the asynq task that moves the job on: its request task
// until CSM accepted the preview, then the poll the chain expects next.
// A final job has none.
func (u *UI) currentTask(j store.Job) *taskLink {
	var p tasks.Payload
	switch j.Status {
	case store.StatusQueued, store.StatusRequesting:
		p = tasks.RequestPreview{JobID: j.ID, SessionCode: j.SessionCode}
	case store.StatusGenerating:
		p = tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: j.Poll.Seq}
	default:
		return nil
	}
	l := u.taskLink(u.queues.For(p), p.TaskID())
	return &l
}

// messageTask is the delivery task of a message's latest send (its
// replays have task ids of their own).
func (u *UI) messageTask(jobID string, m store.Message) taskLink {
	p := tasks.DeliverWebhook{JobID: jobID, EventID: m.EventID, EventType: string(m.EventType), Destination: m.Destination, Replay: m.Replays}
	return u.taskLink(u.queues.For(p), p.TaskID())
}

func (u *UI) taskLink(queue, id string) taskLink {
	return taskLink{Queue: queue, ID: id, URL: u.opts.DashboardPath + "/queues/" + url.PathEscape(queue) + "/tasks/" + url.PathEscape(id)}
}

func (u *UI) jobPath(id, done string) string {
	return u.opts.Root + "/jobs/" + url.PathEscape(id) + "?done=" + done
}

// cancel is the cancel button (full tokens only; api checks same-origin).
func (u *UI) cancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, err := u.opts.Jobs.Cancel(r.Context(), id)
	switch {
	case err == nil:
		http.Redirect(w, r, u.jobPath(id, "canceled"), http.StatusSeeOther)
	case errors.Is(err, tasks.ErrFinal):
		http.Redirect(w, r, u.jobPath(id, "final"), http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		u.errorPage(w, http.StatusNotFound, "No such job", "job not found (unknown, or expired after the retention period)")
	default:
		u.internal(w, r, err)
	}
}

// replay is a message's replay button (full tokens only).
func (u *UI) replay(w http.ResponseWriter, r *http.Request) {
	id, msg := r.PathValue("id"), r.PathValue("msg")
	_, err := u.opts.Jobs.Replay(r.Context(), msg)
	switch {
	case err == nil, errors.Is(err, tasks.ErrEnqueuePending):
		// Committed with its task in the job's outbox either way.
		http.Redirect(w, r, u.jobPath(id, "replayed"), http.StatusSeeOther)
	case errors.Is(err, tasks.ErrNotReplayable):
		http.Redirect(w, r, u.jobPath(id, "pending"), http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		u.errorPage(w, http.StatusNotFound, "No such message", "message not found (unknown, or expired after the retention period)")
	default:
		u.internal(w, r, err)
	}
}

// humanDuration is an age as people read it: 45s, 12m, 3h 05m, 4d 2h.
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		m := int(d.Minutes())
		s := int(d.Seconds()) - 60*m
		if s == 0 || m >= 10 {
			return strconv.Itoa(m) + "m"
		}
		return strconv.Itoa(m) + "m " + strconv.Itoa(s) + "s"
	case d < 48*time.Hour:
		h := int(d.Hours())
		return strconv.Itoa(h) + "h " + twoDigits(int(d.Minutes())-60*h) + "m"
	}
	days := int(d.Hours()) / 24
	return strconv.Itoa(days) + "d " + strconv.Itoa(int(d.Hours())-24*days) + "h"
}

func twoDigits(n int) string {
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}
