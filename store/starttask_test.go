package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

// TestStartTaskReadsTheJobAhead: StartTask records the task and, asked to,
// reads the job as GetSeen does, in one call: the same job, and a record
// UpdateFrom commits from; a job that is not there reads as not found; a
// superseded task gets no read, whether its mark is in its job's hash or,
// with no job named, a key of its own; with no job named there is no read.
func TestStartTaskReadsTheJobAhead(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	rec := store.InflightTask{Type: "preview:poll", Queue: "q", StartedAt: time.Now()}
	tests := []struct {
		name       string
		taskID     string
		readJob    string
		superseded bool
		wantRead   bool
		wantErr    error
	}{
		{name: "the job", taskID: "poll:a", readJob: job.ID, wantRead: true},
		{name: "a job not there", taskID: "poll:b", readJob: "no-such-job", wantRead: true, wantErr: store.ErrNotFound},
		{name: "superseded", taskID: "poll:c", readJob: job.ID, superseded: true},
		{name: "no job named", taskID: "poll:d"},
		{name: "superseded, no job named", taskID: "webhook:e", superseded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			worker := "w-" + tt.taskID
			if tt.superseded {
				if err := s.Supersede(ctx, tt.taskID, tt.readJob, "copy", time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			by, read, err := s.StartTask(ctx, worker, tt.taskID, rec, store.ReadAhead{Job: tt.readJob})
			if err != nil {
				t.Fatal(err)
			}
			if (by != "") != tt.superseded || (read != nil) != tt.wantRead {
				t.Fatalf("StartTask = superseded by %q, read %+v; want superseded %v, a read %v", by, read, tt.superseded, tt.wantRead)
			}
			recs, err := s.InflightTasks(ctx, worker)
			if err != nil || len(recs) != 1 {
				t.Errorf("in-flight record = %v, %v; want the task's", recs, err)
			}
			if read == nil {
				return
			}
			if !errors.Is(read.Err, tt.wantErr) || read.ID != tt.readJob {
				t.Fatalf("read of %s = %+v, want error %v", tt.readJob, read, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			if read.Job.ID != job.ID || read.Job.Status != job.Status {
				t.Errorf("read job %s (%s), want %s (%s)", read.Job.ID, read.Job.Status, job.ID, job.Status)
			}
			if _, _, _, err := s.UpdateFrom(ctx, job.ID, read.Seen, func(j *store.Job, now time.Time) (store.Change, error) {
				j.Note(now, "from the read ahead")
				return store.Change{}, nil
			}); err != nil {
				t.Errorf("UpdateFrom the read ahead: %v", err)
			}
		})
	}
}

// TestStartTaskReadsTheEndpointSetAhead: asked for it with the job,
// StartTask reads the endpoint set in the same call; EndpointsIn then
// reads those endpoints as they are now (one deleted since is left out,
// the oldest comes first). Not asked, or with no job to read, it reads
// no set.
func TestStartTaskReadsTheEndpointSetAhead(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	ctx := context.Background()
	job := newJob(time.Now())
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	for i, id := range []string{"ep_old", "ep_new", "ep_gone"} {
		e := store.Endpoint{ID: id, URL: "https://hooks.example.com/" + id, Enabled: true, SignatureVersion: store.SignatureV1,
			CreatedAt: created.Add(time.Duration(i) * time.Second)}
		if err := s.CreateEndpoint(ctx, e, 10); err != nil {
			t.Fatal(err)
		}
	}
	rec := store.InflightTask{Type: "preview:request", Queue: "q", StartedAt: time.Now()}
	tests := []struct {
		name     string
		ahead    store.ReadAhead
		wantRead bool
		wantSet  bool
	}{
		{name: "job and endpoint set", ahead: store.ReadAhead{Job: job.ID, EndpointIDs: true}, wantRead: true, wantSet: true},
		{name: "job only", ahead: store.ReadAhead{Job: job.ID}, wantRead: true},
		{name: "no job named", ahead: store.ReadAhead{EndpointIDs: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, read, err := s.StartTask(ctx, "w-"+tt.name, "request:"+tt.name, rec, tt.ahead)
			if err != nil {
				t.Fatal(err)
			}
			if (read != nil) != tt.wantRead || (read != nil && read.EndpointsRead != tt.wantSet) {
				t.Fatalf("StartTask read %+v; want a read %v, with the endpoint set %v", read, tt.wantRead, tt.wantSet)
			}
			if !tt.wantSet {
				return
			}
			if len(read.EndpointIDs) != 3 {
				t.Fatalf("endpoint set read ahead = %v, want the three endpoints", read.EndpointIDs)
			}
		})
	}

	_, read, err := s.StartTask(ctx, "w-later", "request:later", rec, store.ReadAhead{Job: job.ID, EndpointIDs: true})
	if err != nil || read == nil {
		t.Fatal(read, err)
	}
	if err := s.DeleteEndpoint(ctx, "ep_gone"); err != nil {
		t.Fatal(err)
	}
	eps, err := s.EndpointsIn(ctx, read.EndpointIDs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range eps {
		got = append(got, e.ID)
	}
	if strings.Join(got, ",") != "ep_old,ep_new" {
		t.Errorf("EndpointsIn(the set read ahead) after a deletion = %v, want ep_old,ep_new", got)
	}
	if eps, err := s.EndpointsIn(ctx, nil); err != nil || len(eps) != 0 {
		t.Errorf("EndpointsIn(no ids) = %v, %v; want none", eps, err)
	}
}

// TestSupersededMarkOfAJob: a task of a job is marked in the job's hash:
// StartTask and SupersededBy find the mark while it lives and not once its
// time is past (the task id may run again, a new task under an old id),
// though the key written beside it for earlier versions still exists; a
// job that is gone gets no mark, and no hash made of the mark alone.
func TestSupersededMarkOfAJob(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, r := newStore(t, clock)
	ctx := context.Background()
	job := newJob(now)
	if _, _, _, err := s.Create(ctx, job, "fp", nil); err != nil {
		t.Fatal(err)
	}
	taskID := "request:" + job.ID
	if err := s.Supersede(ctx, taskID, job.ID, "copy", time.Minute); err != nil {
		t.Fatal(err)
	}
	rec := store.InflightTask{Type: "preview:request", Queue: "q", StartedAt: now}
	check := func(when string, want string) {
		t.Helper()
		by, read, err := s.StartTask(ctx, "w-mark", taskID, rec, store.ReadAhead{Job: job.ID})
		if err != nil || by != want || (read == nil) != (want != "") {
			t.Errorf("%s: StartTask = superseded by %q, read %v, %v; want superseded by %q", when, by, read != nil, err, want)
		}
		if by, err := s.SupersededBy(ctx, taskID, job.ID); err != nil || (by == "" && want != "") {
			t.Errorf("%s: SupersededBy = %q, %v; want %q", when, by, err, want)
		}
	}
	check("while the mark lives", "copy")
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	check("once its time is past", "")

	gone := "no-such-job"
	if err := s.Supersede(ctx, "request:"+gone, gone, "copy", time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Client.Exists(ctx, r.Namespace+":{"+gone+"}:job").Result(); err != nil || n != 0 {
		t.Errorf("a gone job's hash exists = %d, %v after its task was marked; want none", n, err)
	}
}
