package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
)

// Orphans: tasks asynq holds as active that no worker runs.
//
// A dead worker's tasks are rescued from its in-flight record (see
// liveness.go). Two faults leave an active task with no record anywhere:
// the reply of asynq's dequeue script lost on the Redis link (go-redis
// re-sends the script, which then dequeues the next task: the first stays
// active with a lease nobody extends), and a handler that succeeded while
// asynq's state update failed. asynq alone brings such a task back after
// its lease expires and its recoverer ticks, 55 to 120 s later. Every
// trusted worker therefore compares, now and then, the active tasks of its
// queues with every worker's in-flight record: a task seen active twice,
// orphanAfter apart, with no record and no live run in this process, gets a
// rescue copy (the same deterministic-id machinery, so racing scanners make
// one) and is marked superseded, so asynq's later re-run does nothing. A
// copy of a task that had in fact completed is harmless: every handler is
// idempotent.
const (
	orphanAfter = 3 * time.Second
	// orphanScanEvery: rescue rounds between two scans. A scan lists up to
	// orphanScanLimit active tasks per queue (asynq reads each one's data),
	// so it runs less often than the cheap dead-worker check.
	orphanScanEvery = 3
	orphanScanLimit = 1000
)

// OrphanTaskID is the id of the copy that replaces an orphaned task, by
// how often asynq had retried it: deterministic, so racing scanners make
// one copy.
func OrphanTaskID(taskID string, retried int) string {
	return RescueTaskID(taskID, "o"+strconv.Itoa(retried))
}

// rescueOrphans does one scan; beats are the registered workers.
func (w *Worker) rescueOrphans(ctx context.Context, beats []store.WorkerBeat) (int, error) {
	recorded := map[string]bool{}
	for _, id := range append([]string{w.opts.WorkerID}, workerIDs(beats)...) {
		recs, err := w.store.InflightTasks(ctx, id)
		if err != nil {
			return 0, err
		}
		for taskID := range recs {
			recorded[taskID] = true
		}
	}
	now := time.Now()
	seen := map[string]time.Time{}
	var enqueued int
	var errs []error
	for _, queue := range w.opts.Queues.All() {
		active, err := w.inspector().ListActiveTasks(queue, asynq.PageSize(orphanScanLimit))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list active tasks of %s: %w", queue, err))
			continue
		}
		for _, info := range active {
			if recorded[info.ID] || w.live.isRunning(info.ID) {
				continue
			}
			first, ok := w.live.orphanSince(info.ID)
			if !ok {
				first = now
			}
			seen[info.ID] = first
			if now.Sub(first) < orphanAfter {
				continue
			}
			created, err := w.rescueOrphan(ctx, info)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if created {
				enqueued++
			}
		}
	}
	w.live.setOrphans(seen)
	return enqueued, errors.Join(errs...)
}

func (w *Worker) rescueOrphan(ctx context.Context, info *asynq.TaskInfo) (bool, error) {
	by, err := w.store.SupersededBy(ctx, info.ID, markedJobOf(info.Type, info.Payload))
	if err != nil || by != "" {
		return false, err // already rescued: asynq's recoverer will find it superseded
	}
	log := w.log.With(zap.String("orphan_of_queue", info.Queue))
	rec := store.InflightTask{Type: info.Type, Queue: info.Queue, Payload: info.Payload, Retried: info.Retried, MaxRetry: info.MaxRetry}
	created, err := w.rescueTask(ctx, log, "o"+strconv.Itoa(info.Retried), info.ID, rec)
	if created {
		log.Warn("rescued a task left active with no worker running it", zap.String("task_id", info.ID))
	}
	return created, err
}

func workerIDs(beats []store.WorkerBeat) []string {
	ids := make([]string, len(beats))
	for i, b := range beats {
		ids[i] = b.ID
	}
	return ids
}

// orphanSince reports when a task was first seen orphaned by this worker.
func (l *liveness) orphanSince(taskID string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.orphans[taskID]
	return t, ok
}

// setOrphans keeps the candidates of the last scan: a task must be seen
// orphaned by consecutive scans.
func (l *liveness) setOrphans(seen map[string]time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.orphans = seen
}
