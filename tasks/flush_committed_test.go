package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestFlushCommitted: the writer's flush of its own commit, from memory,
// ends as Flush does: the commit's tasks in asynq, the outbox empty, and no
// outbox index entry left for the sweeper; entries the commit did not
// write (a predecessor that died before its flush) are enqueued too.
func TestFlushCommitted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		leftovers int // entries a crashed writer left in the outbox before the commit
	}{
		{name: "only the commit's entries"},
		{name: "a predecessor's leftovers as well", leftovers: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tasks.ClientOptions{})
			ctx := context.Background()
			st := e.c.Store()
			j := e.request(t, tasks.PreviewRequest{SessionCode: "S"})
			want := map[string]bool{"request:" + j.ID: true}
			for seq := 1; seq <= tt.leftovers; seq++ {
				p := tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: seq}
				addOutbox(t, e, j.ID, tasks.OutboxEntry(p, time.Time{}))
				want[p.TaskID()] = true
			}
			p := tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: tt.leftovers + 1}
			want[p.TaskID()] = true
			_, c, err := st.UpdateCommitted(ctx, j.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				return store.Change{Outbox: []store.OutboxEntry{tasks.OutboxEntry(p, time.Time{})}}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Outbox) != 1 || !c.Indexed || c.JobID != j.ID {
				t.Fatalf("UpdateCommitted reported %+v, want the commit's one entry, indexed", c)
			}

			enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(e.r.Client), st, e.q)
			if err := enq.FlushCommitted(ctx, c); err != nil {
				t.Fatal(err)
			}
			if ob := e.outbox(t, j.ID); len(ob) != 0 {
				t.Errorf("outbox still holds %d entries", len(ob))
			}
			if left := e.outboxIndex(t); len(left) != 0 {
				t.Errorf("outbox index after the flush: %+v, want none", left)
			}
			checkIDs(t, "pending", taskIDs(append(e.pending(t, e.q.Previews), e.pending(t, e.q.Polls)...)), want)
		})
	}
}

// TestFlushCommittedKeepsAnEntryReindexedMeanwhile: a commit that indexes
// the job after the writer's commit (its first half, before its entries)
// keeps its index entry when the writer's flush finds the outbox empty, as
// with Flush: the drop goes by the score the writer's commit wrote.
func TestFlushCommittedKeepsAnEntryReindexedMeanwhile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	st := e.c.Store()
	j := e.request(t, tasks.PreviewRequest{SessionCode: "S"})
	p := tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 1}
	_, c, err := st.UpdateCommitted(ctx, j.ID, func(j *store.Job, now time.Time) (store.Change, error) {
		return store.Change{Outbox: []store.OutboxEntry{tasks.OutboxEntry(p, time.Time{})}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	hooked := hookedStore{Store: st, afterAck: func() {
		// The first half of a concurrent commit, in the same millisecond.
		if err := st.TouchOutboxIndex(ctx, j.ID); err != nil {
			t.Error(err)
		}
	}}
	enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(e.r.Client), hooked, e.q)
	if err := enq.FlushCommitted(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := st.OutboxIndexEntry(ctx, j.ID); err != nil || !ok {
		t.Fatalf("the flush dropped the index entry a concurrent commit had just written (%v)", err)
	}
}

// TestFlushRedoneCommit: a commit whose writer comes back if it dies
// (Change.Redone) writes no index entry, and its flush needs none: the
// entries are enqueued (a settled one acknowledged without its task) and
// the outbox left empty. When an enqueue fails, the flush says so (the
// writer's retry comes back) and indexes the outbox for the sweeper too.
func TestFlushRedoneCommit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		enqueueFails bool
		wantOutbox   int
		wantIndexed  bool
		wantErr      bool
		wantPolls    int
	}{
		{name: "enqueued", wantPolls: 1},
		{name: "an enqueue fails", enqueueFails: true, wantOutbox: 1, wantIndexed: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tasks.ClientOptions{})
			ctx := context.Background()
			st := e.c.Store()
			j := e.request(t, tasks.PreviewRequest{SessionCode: "S"})
			poll := tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 1}, time.Time{})
			delivered := tasks.OutboxEntry(tasks.DeliverWebhook{JobID: j.ID, EventID: tasks.EventID(j.ID, "accepted"), EventType: string(store.EventAccepted), Destination: tasks.DestinationJob}, time.Time{})
			_, c, err := st.UpdateCommitted(ctx, j.ID, func(j *store.Job, now time.Time) (store.Change, error) {
				return store.Change{Redone: true, Outbox: []store.OutboxEntry{poll, delivered}}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !c.Redone || c.Indexed || len(c.Outbox) != 2 {
				t.Fatalf("UpdateCommitted reported %+v, want the commit's two entries, redone, unindexed", c)
			}
			if left := e.outboxIndex(t); len(left) != 0 {
				t.Fatalf("outbox index after a redone commit: %+v, want none", left)
			}

			client := e.r.Client
			if tt.enqueueFails {
				client = redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
				t.Cleanup(func() { _ = client.Close() })
			}
			enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(client), st, e.q)
			err = enq.FlushCommittedSettled(ctx, c, map[string]bool{delivered.ID: true})
			if (err != nil) != tt.wantErr {
				t.Fatalf("flush: %v, want an error: %v", err, tt.wantErr)
			}
			if ob := e.outbox(t, j.ID); len(ob) != tt.wantOutbox {
				t.Errorf("outbox holds %d entries, want %d", len(ob), tt.wantOutbox)
			}
			if left := e.outboxIndex(t); (len(left) == 1 && left[0].JobID == j.ID) != tt.wantIndexed {
				t.Errorf("outbox index after the flush: %+v, want the job indexed: %v", left, tt.wantIndexed)
			}
			if n := len(e.pending(t, e.q.Polls)); n != tt.wantPolls {
				t.Errorf("%d polls pending, want %d", n, tt.wantPolls)
			}
			if n := len(e.pendingHooks(t)); n != 0 {
				t.Errorf("%d deliveries pending, want none (the settled one is acknowledged)", n)
			}
		})
	}
}

// TestNewJobIsEnqueuedByItsCreator: a new job is created with no outbox
// and no outbox index entry, its request task is enqueued right after, and
// the job is in its session's index; a repeat of the request while the job
// is queued enqueues the task again (its creator may have died before
// enqueueing), and one after the job moved on does not.
func TestNewJobIsEnqueuedByItsCreator(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	reads := &testutil.CommandCounter{Match: func(cmd redis.Cmder) bool { return cmd.Name() == "hgetall" || cmd.Name() == "zscore" }}
	e.r.Client.AddHook(reads)
	req := tasks.PreviewRequest{SessionCode: "S_FLUSH_NEW", IdempotencyKey: "k-" + t.Name()}
	j := e.request(t, req)
	if n := reads.Load(); n != 0 {
		t.Errorf("a new job's creation read its outbox or index back (%d reads)", n)
	}
	if ob := e.outbox(t, j.ID); len(ob) != 0 {
		t.Errorf("outbox still holds %d entries", len(ob))
	}
	if left := e.outboxIndex(t); len(left) != 0 {
		t.Errorf("outbox index after the creation: %+v, want none", left)
	}
	checkIDs(t, "pending", taskIDs(e.pending(t, e.q.Previews)), map[string]bool{"request:" + j.ID: true})
	ids, err := e.c.Store().SessionJobs(ctx, req.SessionCode)
	if err != nil || len(ids) != 1 || ids[0] != j.ID {
		t.Fatalf("session index %v (%v), want the job", ids, err)
	}

	// A repeat, after its creator died between the creation and the
	// enqueue (the task deleted): it finishes the job's creation.
	if err := e.inspector.DeleteTask(e.q.Previews, "request:"+j.ID); err != nil {
		t.Fatal(err)
	}
	if again := e.request(t, req); again.ID != j.ID {
		t.Fatalf("repeat made job %s, want %s", again.ID, j.ID)
	}
	checkIDs(t, "pending", taskIDs(e.pending(t, e.q.Previews)), map[string]bool{"request:" + j.ID: true})

	// A repeat after the job left queued (its request task ran) enqueues
	// nothing.
	if err := e.inspector.DeleteTask(e.q.Previews, "request:"+j.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Store().Update(ctx, j.ID, func(job *store.Job, _ time.Time) (store.Change, error) {
		job.Status = store.StatusRequesting
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.request(t, req)
	checkIDs(t, "pending", taskIDs(e.pending(t, e.q.Previews)), map[string]bool{})
}
