package worker

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestReadAheadOf: track reads ahead the job of a request or poll task,
// named by its payload, and the endpoint set for a request task; nothing
// for another task, nor for a payload the handler will refuse.
func TestReadAheadOf(t *testing.T) {
	const job1, job2 = "7f1c2a4e-9a37-4d1b-8a55-2f0d8c7e91b3", "8e2d3b5f-0b48-4e2c-9b66-3a1e9d8fa2c4"
	tests := []struct {
		name    string
		typ     string
		payload string
		want    store.ReadAhead
	}{
		{"request", tasks.TypeRequestPreview, `{"job_id":"` + job1 + `","session_code":"S"}`, store.ReadAhead{Job: job1, EndpointIDs: true}},
		{"poll", tasks.TypePollPreview, `{"job_id":"` + job2 + `","session_code":"S","seq":3}`, store.ReadAhead{Job: job2}},
		{"delivery", tasks.TypeDeliverWebhook, `{"job_id":"` + job1 + `","event_id":"e"}`, store.ReadAhead{}},
		{"malformed payload", tasks.TypePollPreview, `{"job_id":`, store.ReadAhead{}},
		{"malformed request", tasks.TypeRequestPreview, `{"job_id":"j1"}`, store.ReadAhead{}},
		{"job id no UUID", tasks.TypePollPreview, `{"job_id":"j2","session_code":"S","seq":3}`, store.ReadAhead{}},
	}
	for _, tt := range tests {
		if got := readAheadOf(asynq.NewTask(tt.typ, []byte(tt.payload))); got != tt.want {
			t.Errorf("%s: readAheadOf = %+v, want %+v", tt.name, got, tt.want)
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

// endpointStore answers the two endpoint reads and counts them; the
// other Store methods are not called by Handlers.endpoints.
type endpointStore struct {
	Store
	listed int      // Endpoints calls
	in     []string // the ids of the last EndpointsIn call
}

func (s *endpointStore) Endpoints(context.Context) ([]store.Endpoint, error) {
	s.listed++
	return []store.Endpoint{{ID: "ep_listed"}}, nil
}

func (s *endpointStore) EndpointsIn(_ context.Context, ids []string) ([]store.Endpoint, error) {
	s.in = ids
	var out []store.Endpoint
	for _, id := range ids {
		out = append(out, store.Endpoint{ID: id})
	}
	return out, nil
}

// TestEndpointsTakeTheSetReadAhead: the endpoints of a commit's events come
// from the set track read ahead when it read one (even an empty one), and
// are listed otherwise.
func TestEndpointsTakeTheSetReadAhead(t *testing.T) {
	tests := []struct {
		name       string
		read       *store.JobRead
		want       string
		wantListed int
	}{
		{name: "set read ahead", read: &store.JobRead{ID: "j1", EndpointIDs: []string{"ep_a"}, EndpointsRead: true}, want: "ep_a"},
		{name: "empty set read ahead", read: &store.JobRead{ID: "j1", EndpointsRead: true}, want: ""},
		{name: "job read, no set", read: &store.JobRead{ID: "j1"}, want: "ep_listed", wantListed: 1},
		{name: "nothing read ahead", want: "ep_listed", wantListed: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &endpointStore{}
			h := &Handlers{store: s}
			eps, err := h.endpoints(withReadAhead(context.Background(), tt.read))
			var ids []string
			for _, e := range eps {
				ids = append(ids, e.ID)
			}
			if err != nil || strings.Join(ids, ",") != tt.want || s.listed != tt.wantListed {
				t.Errorf("endpoints = %v, %v after %d listings; want %q after %d", ids, err, s.listed, tt.want, tt.wantListed)
			}
		})
	}
}
