package tasks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// outboxIndex lists every entry of the outbox index, stale or not.
func (e *env) outboxIndex(t *testing.T) []store.IndexEntry {
	t.Helper()
	entries, err := e.c.Store().StaleOutboxes(context.Background(), e.clock.Now().Add(24*time.Hour), 10000)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// TestFlushEmptiesTheOutboxIndex: outboxes flushed in the normal course
// (creation, a worker's change, a cancel) leave nothing in the outbox index
// for the sweeper, so the index does not grow with the job rate.
func TestFlushEmptiesTheOutboxIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(e.r.Client), e.c.Store(), e.q)
	const n = 30
	for i := range n {
		j := e.request(t, tasks.PreviewRequest{SessionCode: fmt.Sprintf("SESSION_%d", i)})
		e.clock.Advance(time.Millisecond)
		switch i % 3 {
		case 0: // a worker's change with a task to enqueue
			addOutbox(t, e, j.ID, tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 1}, time.Time{}))
			if err := enq.Flush(ctx, j.ID); err != nil {
				t.Fatal(err)
			}
		case 1: // a cancel, which emits an event
			if _, err := e.c.Cancel(ctx, j.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if left := e.outboxIndex(t); len(left) != 0 {
		t.Fatalf("outbox index holds %d entries after %d jobs flushed normally, want none: %+v", len(left), n, left[:min(3, len(left))])
	}
}

// hookedStore is the real store with a hook run right after a flush's
// acknowledgement: where a concurrent writer's commit can land.
type hookedStore struct {
	*store.Store
	afterAck func()
}

func (s hookedStore) AckOutboxLeft(ctx context.Context, jobID string, ids ...string) (int64, error) {
	left, err := s.Store.AckOutboxLeft(ctx, jobID, ids...)
	s.afterAck()
	return left, err
}

// TestFlushKeepsAnEntryReindexedMeanwhile: a commit that indexes the job
// after the flush read the index (commits index before they write their
// outbox entries) keeps its entry, even in the same millisecond, so that the
// sweeper still finds its outbox if its writer dies before flushing.
func TestFlushKeepsAnEntryReindexedMeanwhile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tasks.ClientOptions{})
	ctx := context.Background()
	st := e.c.Store()
	j := e.request(t, tasks.PreviewRequest{SessionCode: "S"})
	addOutbox(t, e, j.ID, tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 1}, time.Time{}))

	hooked := hookedStore{Store: st, afterAck: func() {
		// The first half of a concurrent commit: its index write. (The
		// clock does not move: the same millisecond as the entry read.)
		if err := st.TouchOutboxIndex(ctx, j.ID); err != nil {
			t.Error(err)
		}
	}}
	enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(e.r.Client), hooked, e.q)
	if err := enq.Flush(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := st.OutboxIndexEntry(ctx, j.ID); err != nil || !ok {
		t.Fatalf("a flush dropped the index entry a concurrent commit had just written (%v)", err)
	}
	// The commit's second half lands and its writer dies before flushing:
	// past the sweeper's grace, the outbox is found.
	addOutbox(t, e, j.ID, tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 2}, time.Time{}))
	e.clock.Advance(time.Minute)
	stale, err := st.StaleOutboxes(ctx, e.clock.Now().Add(-30*time.Second), 10)
	if err != nil || len(stale) != 1 || stale[0].JobID != j.ID {
		t.Fatalf("StaleOutboxes = %+v, %v; want the job", stale, err)
	}
	if err := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(e.r.Client), st, e.q).FlushIndexed(ctx, stale[0]); err != nil {
		t.Fatal(err)
	}
	if left := e.outboxIndex(t); len(left) != 0 {
		t.Errorf("outbox index after the sweep's flush: %+v", left)
	}
}

// TestFlushReindexesWhatItLeaves: a flush whose enqueue fails leaves the
// job indexed, scored now, so the sweeper retries it after its grace and
// an entry that keeps failing does not stay at the head of its queue.
func TestFlushReindexesWhatItLeaves(t *testing.T) {
	t.Parallel()
	for _, dropFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("index entry gone before: %v", dropFirst), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tasks.ClientOptions{})
			ctx := context.Background()
			st := e.c.Store()
			j := e.request(t, tasks.PreviewRequest{SessionCode: "S"})
			addOutbox(t, e, j.ID, tasks.OutboxEntry(tasks.PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: 1}, time.Time{}))
			if dropFirst {
				idx, _, err := st.OutboxIndexEntry(ctx, j.ID)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.DropOutboxIndex(ctx, idx); err != nil {
					t.Fatal(err)
				}
			}
			e.clock.Advance(time.Minute)

			// asynq on a Redis that does not answer: every enqueue fails.
			dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
			t.Cleanup(func() { _ = dead.Close() })
			enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(dead), st, e.q)
			if err := enq.Flush(ctx, j.ID); err == nil {
				t.Fatal("Flush with asynq unreachable returned nil")
			}
			if ob := e.outbox(t, j.ID); len(ob) != 1 {
				t.Fatalf("outbox holds %d entries, want the one not enqueued", len(ob))
			}
			idx, ok, err := st.OutboxIndexEntry(ctx, j.ID)
			if err != nil || !ok {
				t.Fatalf("outbox left behind is not indexed (%v)", err)
			}
			if want := float64(e.clock.Now().UnixMilli()); idx.Score < want {
				t.Errorf("index score %v, want the time of the failed flush %v or later", idx.Score, want)
			}
		})
	}
}
