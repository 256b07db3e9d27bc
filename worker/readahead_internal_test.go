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
// named by its payload, and of no other task.
func TestJobReadFirst(t *testing.T) {
	tests := []struct {
		name    string
		typ     string
		payload string
		want    string
	}{
		{"request", tasks.TypeRequestPreview, `{"job_id":"j1","session_code":"S"}`, "j1"},
		{"poll", tasks.TypePollPreview, `{"job_id":"j2","session_code":"S","seq":3}`, "j2"},
		{"delivery", tasks.TypeDeliverWebhook, `{"job_id":"j3","event_id":"e"}`, ""},
		{"malformed payload", tasks.TypePollPreview, `{"job_id":`, ""},
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
