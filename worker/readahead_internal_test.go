package worker

import (
	"context"
	"errors"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestJobReadFirst: track reads ahead the job of a request or poll task,
// named by its payload, and of no other task, nor of a payload the
// handler will refuse.
func TestJobReadFirst(t *testing.T) {
	const job1, job2 = "7f1c2a4e-9a37-4d1b-8a55-2f0d8c7e91b3", "8e2d3b5f-0b48-4e2c-9b66-3a1e9d8fa2c4"
	tests := []struct {
		name    string
		typ     string
		payload string
		want    string
	}{
		{"request", tasks.TypeRequestPreview, `{"job_id":"` + job1 + `","session_code":"S"}`, job1},
		{"poll", tasks.TypePollPreview, `{"job_id":"` + job2 + `","session_code":"S","seq":3}`, job2},
		{"delivery", tasks.TypeDeliverWebhook, `{"job_id":"` + job1 + `","event_id":"e"}`, ""},
		{"malformed payload", tasks.TypePollPreview, `{"job_id":`, ""},
		{"job id no UUID", tasks.TypePollPreview, `{"job_id":"j2","session_code":"S","seq":3}`, ""},
	}
	for _, tt := range tests {
		if got := jobReadFirst(asynq.NewTask(tt.typ, []byte(tt.payload))); got != tt.want {
			t.Errorf("%s: jobReadFirst = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestFirstReadTakesTheReadAhead: a handler's first read of the job track
// read ahead is that read, error included.
func TestFirstReadTakesTheReadAhead(t *testing.T) {
	h := &Handlers{}
	read := &store.JobRead{ID: "j1", Job: store.Job{ID: "j1", Status: store.StatusGenerating}}
	j, _, err := h.firstRead(withReadAhead(context.Background(), read), "j1")
	if err != nil || j.ID != "j1" || j.Status != store.StatusGenerating {
		t.Errorf("firstRead = %+v, %v; want the read ahead", j, err)
	}
	gone := &store.JobRead{ID: "j2", Err: store.ErrNotFound}
	if _, _, err := h.firstRead(withReadAhead(context.Background(), gone), "j2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("firstRead of a job read ahead as not found = %v, want ErrNotFound", err)
	}
}
