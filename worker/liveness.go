package worker

// Liveness: how the tasks of a worker that died (kill -9, OOM, a lost node)
// move again within seconds.
//
// asynq alone takes about 65 s and more: a dead server's task keeps its
// 30 s lease, the recoverer looks for leases expired 30 s ago once a
// minute, and it re-runs the task as a failure (spending a retry). Its own
// state updates are not to be leaned on either: v0.26.0 retries a failed
// update with the task's already-cancelled context, so such a task waits
// for that same recoverer. So previewd keeps its own liveness in Redis:
//
//   - Heartbeat. Each worker process has an id (a fresh UUID unless
//     Options.WorkerID says otherwise) and refreshes <ns>:{w:<id>}:alive
//     with a TTL of DeadAfter every HeartbeatInterval. The key's TTL is
//     judged by Redis's clock, so clock skew between machines cannot make
//     a live worker look dead.
//   - In-flight record. track, the outermost middleware, writes each task
//     it starts into the worker's hash <ns>:{w:<id>}:inflight (task id →
//     type, payload, retry budget) and removes it when the handler returns:
//     the records of the tasks that ended well within endedFlushInterval
//     go together, in one command.
//   - Rescuer. Every worker, every RescueInterval, looks for registered
//     workers whose alive key has expired and, for each task in their
//     in-flight hash, enqueues a rescue copy (same type and payload) under
//     the deterministic id <task id>~r<dead worker id>, then marks the
//     original superseded and removes the record. Rescuers racing over one
//     dead worker make one copy: the id conflicts, and the copy is kept
//     (asynq Retention) after it completes so that a rescuer with a stale
//     read cannot make a second one either.
//   - Supersession. When asynq's recoverer later re-runs the original, track
//     finds it superseded and returns at once: the task is done, no handler
//     runs, and no retry of the job is spent. The copy inherits the
//     original's remaining retry budget: a kill is not counted as a failure.
//   - Stranded returns. A handler that returns an error leaves its record,
//     marked returned (with when its retry was due), instead of removing
//     it. The worker's own round (and a rescuer, if the worker dies) looks
//     such a task up in asynq a couple of seconds later: back in a queue,
//     gone, or active again with the failure recorded → the record goes;
//     still active with no failure recorded → asynq's state update was
//     lost, and a copy is enqueued, due when the retry was, with the
//     failed run counted. Cost: one HSET per error return and one lookup
//     per record that outlives returnSettle.
//
// A rescue never relies on being right about death. A worker that is only
// slow (a long GC pause, a partition from Redis longer than DeadAfter) has
// its tasks rescued while it still runs them, and every handler already
// tolerates a concurrent duplicate of its task:
//   - request: the intent is a compare-and-set in the job; only one of the
//     two records it and POSTs. The other finds an intent it did not write
//     and reconciles by polling: it never POSTs. Billed once.
//   - poll: only the poll whose Seq the job expects commits, and the commit
//     is a compare-and-set on the version: one of the two schedules the
//     next poll, the other's commit is refused. One chain.
//   - fan-out: messages are created only if absent and delivery tasks have
//     deterministic ids: the second run adds nothing.
//   - delivery: a message already settled is not sent again; two runs that
//     overlap in the same second may both send it (same webhook id and
//     body, which receivers deduplicate): the at-least-once of webhooks.
// And the original's later re-run by asynq's recoverer finds the job moved
// on, whatever the copy did: request → the job is past requesting (flush
// only) or its intent exists (reconcile, no POST); poll → a stale Seq;
// fan-out → nothing new; delivery → the message settled. Supersession makes
// even those checks a second line of defence.
//
// A rescuer trusts its own view only after its own heartbeat has succeeded
// for a whole DeadAfter: after a Redis failover or an outage every alive key
// may have expired, and a worker that just reconnected would otherwise
// declare all its peers dead. Once it has beaten for DeadAfter, every live
// peer that reaches Redis has beaten too. One shortcut: a process's first
// beat trusts at once when Redis has been up for longer than DeadAfter (no
// outage can have wiped the alive keys), so that workers restarted one
// after another still rescue each other in seconds.
//
// From a kill to the job's next move: at most DeadAfter (the key expires)
// plus RescueInterval (a round) plus asynq's one-second task check, about
// 11 s with the defaults (8 s, 2 s). A fresh process started after the kill
// also waits DeadAfter from its start.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// Liveness defaults.
const (
	defaultHeartbeatInterval = time.Second
	defaultDeadAfter         = 8 * time.Second
	defaultRescueInterval    = 2 * time.Second
	// rescueRetention keeps a completed rescue copy's id taken for longer
	// than any rescue round lasts, so that no stale reader re-creates it.
	rescueRetention = 10 * time.Minute
	// minSupersededTTL: a superseded mark must outlive every later run of
	// the original: asynq's recovery (lease 30 s, cutoff 30 s, a tick a
	// minute) plus the retry delay it asks of us (up to hours for a
	// webhook); supersededTTL stretches it to the webhook schedule.
	minSupersededTTL = 24 * time.Hour
)

// livenessDefaults applies the defaults of the liveness options.
func (o *Options) livenessDefaults() {
	if o.WorkerID == "" {
		o.WorkerID = newWorkerID()
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = defaultHeartbeatInterval
	}
	if o.DeadAfter < 2*o.HeartbeatInterval {
		// A TTL shorter than two beats expires on one late beat.
		o.DeadAfter = max(defaultDeadAfter, 8*o.HeartbeatInterval)
	}
	if o.RescueInterval <= 0 {
		o.RescueInterval = min(defaultRescueInterval, o.DeadAfter/2)
	}
}

// liveness is one worker process's heartbeat and in-flight bookkeeping.
type liveness struct {
	client *asynq.Client
	info   string // what the alive key holds, for operators: pid and host

	inspectorOnce sync.Once
	inspector     *asynq.Inspector

	mu           sync.Mutex
	running      map[string]int                // task id → runs in this process now
	orphans      map[string]time.Time          // active tasks no worker records, since when (see orphans.go)
	rounds       int                           // rescue rounds done, to space orphan scans
	returned     map[string]store.InflightTask // tasks whose handler returned an error, until asynq is seen to have them
	healthySince time.Time                     // zero while heartbeats fail
	everHealthy  bool                          // a beat has succeeded in this process
	// ended are the tasks that ended well whose records are still to be
	// removed (flushEnded), and clearing those whose removal is on its way,
	// until cleared is closed: one command for all the tasks that end
	// within endedFlushInterval, rather than a round trip each.
	ended    map[string]bool
	clearing map[string]bool
	cleared  chan struct{}
}

// endedFlushInterval is how long the record of a task that ended well may
// outlive it. Should the worker die within it, its peers rescue a task that
// had finished: the copy finds its work done (see the notes above), so the
// cost is one wasted run, never a second effect.
const endedFlushInterval = 100 * time.Millisecond

func newLiveness(client *asynq.Client) *liveness {
	host, _ := os.Hostname()
	return &liveness{client: client, info: fmt.Sprintf("pid %d on %s", os.Getpid(), host),
		running: map[string]int{}, returned: map[string]store.InflightTask{}, ended: map[string]bool{}}
}

// enter notes a task starting, before its record is written: a removal of
// an earlier run's record still pending is called off, and one on its way
// is waited for, so that neither removes this run's.
func (l *liveness) enter(taskID string) {
	l.mu.Lock()
	l.running[taskID]++
	delete(l.returned, taskID) // running again: asynq did take it back
	delete(l.ended, taskID)
	var cleared chan struct{}
	if l.clearing[taskID] {
		cleared = l.cleared
	}
	l.mu.Unlock()
	if cleared != nil {
		<-cleared
	}
}

// endedWell queues the removal of a task's record (flushEnded).
func (l *liveness) endedWell(taskID string) {
	l.mu.Lock()
	l.ended[taskID] = true
	l.mu.Unlock()
}

// flushEnded removes the records of the tasks that ended well since the
// last flush, in one command. One it fails to remove is removed by the
// next rescue round's self-check (checkOwnRecord).
// Only endedLoop calls it, so one removal is on its way at a time.
func (w *Worker) flushEnded(ctx context.Context) {
	l := w.live
	l.mu.Lock()
	if len(l.ended) == 0 {
		l.mu.Unlock()
		return
	}
	ids := make([]string, 0, len(l.ended))
	for id := range l.ended {
		ids = append(ids, id)
	}
	cleared := make(chan struct{})
	l.clearing, l.ended, l.cleared = l.ended, map[string]bool{}, cleared
	l.mu.Unlock()
	bctx, cancel := bookkeeping(ctx)
	err := w.store.EndTask(bctx, w.opts.WorkerID, ids...)
	cancel()
	if err != nil {
		w.log.Warn("in-flight records not cleared; the next rescue round removes them", zap.Int("tasks", len(ids)), zap.Error(err))
	}
	l.mu.Lock()
	l.clearing, l.cleared = nil, nil
	l.mu.Unlock()
	close(cleared)
}

// endedLoop flushes ended tasks' records every endedFlushInterval, and
// once more when ctx ends.
func (w *Worker) endedLoop(ctx context.Context) {
	t := time.NewTicker(endedFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			w.flushEnded(ctx)
			return
		case <-t.C:
			w.flushEnded(ctx)
		}
	}
}

func (l *liveness) noteReturned(taskID string, rec store.InflightTask) {
	l.mu.Lock()
	l.returned[taskID] = rec
	l.mu.Unlock()
}

func (l *liveness) forgetReturned(taskID string) {
	l.mu.Lock()
	delete(l.returned, taskID)
	l.mu.Unlock()
}

// returnedNotes copies the local notes of returned tasks.
func (l *liveness) returnedNotes() map[string]store.InflightTask {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]store.InflightTask, len(l.returned))
	for id, rec := range l.returned {
		out[id] = rec
	}
	return out
}

func (w *Worker) inspector() *asynq.Inspector {
	w.live.inspectorOnce.Do(func() { w.live.inspector = asynq.NewInspectorFromRedisClient(w.rdb) })
	return w.live.inspector
}

func (l *liveness) leave(taskID string) {
	l.mu.Lock()
	if l.running[taskID]--; l.running[taskID] <= 0 {
		delete(l.running, taskID)
	}
	l.mu.Unlock()
}

func (l *liveness) isRunning(taskID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running[taskID] > 0
}

// ID is this worker process's id in the liveness records.
func (w *Worker) ID() string { return w.opts.WorkerID }

// RescueTaskID is the id of the copy that replaces task taskID of dead
// worker deadWorker: deterministic, so that rescuers racing make one.
func RescueTaskID(taskID, deadWorker string) string { return taskID + "~r" + deadWorker }

// track is the outermost middleware: it keeps the worker's in-flight record
// and skips a task that a rescue copy has superseded.
func (w *Worker) track(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		queue, _ := asynq.GetQueueName(ctx)
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		w.live.enter(id)
		defer w.live.leave(id)
		rec := store.InflightTask{
			Type: t.Type(), Queue: queue, Payload: t.Payload(), Retried: retried, MaxRetry: maxRetry, StartedAt: time.Now(),
		}
		by, read, err := w.store.StartTask(ctx, w.opts.WorkerID, id, rec, readAheadOf(t))
		if err != nil {
			// Run it anyway: a task we cannot record is only rescued the
			// slow way (asynq's recoverer) should this worker die now, and
			// its handler meets the same Redis fault and retries.
			w.log.Warn("in-flight record not written; the task runs unprotected by liveness",
				zap.String("task_type", t.Type()), zap.String("task_id", id), zap.Error(err))
		}
		if by != "" {
			w.log.Info("task superseded by its rescue copy; nothing to do",
				zap.String("task_type", t.Type()), zap.String("task_id", id), zap.String("rescue_task_id", by))
		} else {
			err = next.ProcessTask(withReadAhead(ctx, read), t)
		}
		bctx, cancel := bookkeeping(ctx)
		defer cancel()
		if by == "" && asynqMustRetry(err, retried, maxRetry) {
			// asynq is to put the task back for a retry, and may fail to
			// (see the package notes): keep the record, marked returned,
			// until the rescue round sees asynq has it.
			rec.ReturnedAt = time.Now()
			rec.RetryAt = rec.ReturnedAt.Add(w.retryDelay(retried, err, t))
			rec.Failed = isFailure(err)
			w.live.noteReturned(id, rec)
			if rerr := w.store.RecordTask(bctx, w.opts.WorkerID, id, rec); rerr != nil {
				w.log.Warn("in-flight record not marked returned; the local note stands in", zap.String("task_id", id), zap.Error(rerr))
			}
			return err
		}
		w.live.endedWell(id)
		if by != "" {
			return nil
		}
		return err
	})
}

// asynqMustRetry reports whether asynq is to move the task back to be run
// again after the handler returned err (a retry or a snooze, not a
// success, an archive or a shutdown's requeue). Only then can a failed
// state update leave the task stranded as active. A requeue at shutdown is
// left out: it keeps no failure time by which to tell a stranded task from
// one already running elsewhere, and the worker's heartbeat ends with it.
func asynqMustRetry(err error, retried, maxRetry int) bool {
	switch {
	case err == nil, errors.Is(err, asynq.SkipRetry), errors.Is(err, context.Canceled):
		return false
	case isFailure(err) && retried >= maxRetry:
		return false // archived
	}
	return true
}

// startLiveness beats once (so that no task is tracked by a worker that
// others could take for dead), then keeps beating and rescuing until the
// returned stop is called. stop withdraws the heartbeat, so that whatever
// the drain left running is rescued at the next round of any worker.
func (w *Worker) startLiveness(ctx context.Context) (stop func()) {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.beat(lctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.heartbeatLoop(lctx) })
	wg.Go(func() { w.rescueLoop(lctx) })
	wg.Go(func() { w.endedLoop(lctx) })
	return func() {
		cancel()
		wg.Wait()
		bctx, cancelB := bookkeeping(ctx)
		defer cancelB()
		if err := w.store.EndBeat(bctx, w.opts.WorkerID); err != nil {
			w.log.Warn("heartbeat not withdrawn; it expires by itself", zap.Error(err))
		}
	}
}

func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.beat(ctx)
		}
	}
}

// beat refreshes the heartbeat once and tracks since when it has been
// healthy. Liveness runs on the real clock (Options.Now may be a test's
// fake): the TTL it races is Redis's.
func (w *Worker) beat(ctx context.Context) {
	bctx, cancel := context.WithTimeout(ctx, w.opts.HeartbeatInterval)
	defer cancel()
	err := w.store.Beat(bctx, w.opts.WorkerID, w.live.info, w.opts.DeadAfter)
	w.live.mu.Lock()
	firstBeat := err == nil && !w.live.everHealthy
	w.live.mu.Unlock()
	var redisUp time.Duration
	if firstBeat {
		redisUp = w.redisUptime(bctx)
	}
	w.live.mu.Lock()
	defer w.live.mu.Unlock()
	switch {
	case err != nil && ctx.Err() == nil:
		if !w.live.healthySince.IsZero() {
			w.log.Warn("heartbeat failed; peers may rescue this worker's tasks if it lasts", zap.String("worker_id", w.opts.WorkerID), zap.Error(err))
		}
		w.live.healthySince = time.Time{}
	case err == nil && w.live.healthySince.IsZero():
		w.live.healthySince = time.Now()
		if firstBeat && redisUp >= w.opts.DeadAfter {
			// A process just started has no outage of its own to distrust,
			// and a Redis up for longer than a heartbeat's TTL has kept
			// every live peer's alive key: trusted at once. Without this,
			// workers restarted one after another (a rolling deploy, a
			// crash loop) would each wait DeadAfter before rescuing
			// anything, and no one would rescue for as long as it lasts.
			w.live.healthySince = w.live.healthySince.Add(-w.opts.DeadAfter)
		}
		w.live.everHealthy = true
		w.log.Info("heartbeat healthy", zap.String("worker_id", w.opts.WorkerID))
	}
}

// redisUptime is how long the Redis server has been up, or 0 when it
// cannot tell (a Cluster has as many answers as shards: no shortcut).
func (w *Worker) redisUptime(ctx context.Context) time.Duration {
	if _, cluster := w.rdb.(*redis.ClusterClient); cluster {
		return 0
	}
	info, err := w.rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "uptime_in_seconds:"); ok {
			secs, err := strconv.Atoi(v)
			if err != nil {
				return 0
			}
			return time.Duration(secs) * time.Second
		}
	}
	return 0
}

// trusted reports whether this worker's view of Redis has been sound long
// enough to judge other workers dead.
func (w *Worker) trusted() bool {
	w.live.mu.Lock()
	defer w.live.mu.Unlock()
	return !w.live.healthySince.IsZero() && time.Since(w.live.healthySince) >= w.opts.DeadAfter
}

func (w *Worker) rescueLoop(ctx context.Context) {
	for sleepSpread(ctx, w.opts.RescueInterval) {
		// A round is bounded: acting on a view of the registry much older
		// than a heartbeat's TTL would judge workers by stale facts.
		rctx, cancel := context.WithTimeout(ctx, w.opts.DeadAfter)
		var err error
		if w.trusted() {
			_, err = w.Rescue(rctx)
		} else {
			_, err = w.checkOwnRecord(rctx)
		}
		if err != nil && ctx.Err() == nil {
			w.log.Warn("rescue round failed", zap.Error(err))
		}
		cancel()
	}
}

// returnSettle is how long after a handler's error return asynq is given
// to record it before the task counts as stranded.
const returnSettle = 2 * time.Second

// checkOwnRecord goes through this worker's own in-flight record. A task it
// no longer runs whose handler succeeded (its removal failed) is removed. A
// task whose handler returned an error is checked in asynq: once asynq has
// it back (retry, pending, gone, or active again after a recorded failure)
// the record goes; if it is still active with no failure recorded since, asynq's
// state update was lost and the task is stranded until asynq's recoverer,
// a minute or more away: it gets a rescue copy, due when its retry was.
func (w *Worker) checkOwnRecord(ctx context.Context) (int, error) {
	recs, err := w.store.InflightTasks(ctx, w.opts.WorkerID)
	if err != nil {
		return 0, err
	}
	// A local note stands in for a record whose update failed.
	for id, note := range w.live.returnedNotes() {
		if rec, ok := recs[id]; !ok || rec.ReturnedAt.IsZero() {
			recs[id] = note
		}
	}
	log := w.log.With(zap.String("worker_id", w.opts.WorkerID))
	var done []string
	var errs []error
	var enqueued int
	for id, rec := range recs {
		switch {
		case w.live.isRunning(id):
			continue
		case rec.ReturnedAt.IsZero():
			done = append(done, id)
			continue
		case time.Since(rec.ReturnedAt) < returnSettle:
			continue
		}
		created, settled, err := w.resolveReturned(ctx, log, w.opts.WorkerID, id, rec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if created {
			enqueued++
		}
		if settled {
			done = append(done, id)
		}
	}
	if err := w.store.EndTask(ctx, w.opts.WorkerID, done...); err != nil {
		errs = append(errs, err)
	} else {
		for _, id := range done {
			w.live.forgetReturned(id)
		}
	}
	return enqueued, errors.Join(errs...)
}

// resolveReturned settles the record of a task whose handler returned an
// error: nothing to do when asynq has the task back, a rescue copy when it
// is stranded as active.
func (w *Worker) resolveReturned(ctx context.Context, log *zap.Logger, worker, id string, rec store.InflightTask) (created, settled bool, err error) {
	info, err := w.inspector().GetTaskInfo(rec.Queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return false, true, nil
	case err != nil:
		return false, false, fmt.Errorf("look up returned task %s: %w", id, err)
	case info.State != asynq.TaskStateActive:
		return false, true, nil
	case !info.LastFailedAt.IsZero() && info.LastFailedAt.Unix() >= rec.ReturnedAt.Unix():
		return false, true, nil // recorded, and running again somewhere
	}
	log.Warn("task stranded as active after its handler returned (asynq's state update was lost); rescuing it",
		zap.String("task_id", id), zap.Time("returned_at", rec.ReturnedAt))
	created, err = w.rescueTask(ctx, log, worker, id, rec)
	return created, err == nil, err
}

// Rescue does one rescue round: every registered worker other than this one
// whose heartbeat has expired has its in-flight tasks enqueued again as
// rescue copies, and is unregistered once nothing of it is left. It reports
// how many copies this call enqueued. Safe to run in any number of workers
// at once. The rescue loop calls it only once this worker's own heartbeat
// has been healthy for DeadAfter; a caller of its own must know as much.
func (w *Worker) Rescue(ctx context.Context) (int, error) {
	own, ownErr := w.checkOwnRecord(ctx)
	beats, err := w.store.Workers(ctx)
	if err != nil {
		return own, errors.Join(ownErr, err)
	}
	beats = slices.DeleteFunc(beats, func(b store.WorkerBeat) bool { return b.ID == w.opts.WorkerID })
	w.live.mu.Lock()
	w.live.rounds++
	scan := w.live.rounds%orphanScanEvery == 0
	w.live.mu.Unlock()
	if scan {
		n, err := w.rescueOrphans(ctx, beats)
		own += n
		ownErr = errors.Join(ownErr, err)
	}
	if len(beats) == 0 {
		return own, ownErr
	}
	ids := make([]string, len(beats))
	for i, b := range beats {
		ids[i] = b.ID
	}
	alive, err := w.store.Alive(ctx, ids)
	if err != nil {
		return own, errors.Join(ownErr, err)
	}
	enqueued := own
	errs := []error{ownErr}
	for _, b := range beats {
		if alive[b.ID] {
			continue
		}
		n, err := w.rescueWorker(ctx, b)
		enqueued += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return enqueued, errors.Join(errs...)
}

func (w *Worker) rescueWorker(ctx context.Context, b store.WorkerBeat) (int, error) {
	recs, err := w.store.InflightTasks(ctx, b.ID)
	if err != nil {
		return 0, err
	}
	log := w.log.With(zap.String("dead_worker", b.ID), zap.Time("last_beat", b.LastBeat))
	var done []string
	var errs []error
	var enqueued int
	for taskID, rec := range recs {
		var created bool
		var err error
		if rec.ReturnedAt.IsZero() {
			created, err = w.rescueTask(ctx, log, b.ID, taskID, rec) // it was running when the worker died
		} else {
			var settled bool
			created, settled, err = w.resolveReturned(ctx, log, b.ID, taskID, rec)
			if err == nil && !settled {
				err = fmt.Errorf("returned task %s of dead worker %s not settled", taskID, b.ID)
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if created {
			enqueued++
		}
		done = append(done, taskID)
	}
	// Only the fields rescued: a worker that was slow, not dead, may be
	// writing new ones.
	if err := w.store.EndTask(ctx, b.ID, done...); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := w.store.DropWorker(ctx, b); err != nil {
			errs = append(errs, err)
		}
	}
	return enqueued, errors.Join(errs...)
}

// rescueTask enqueues the copy of one task of a dead worker and marks the
// original superseded. created is false when another rescuer's copy exists
// already (the id conflicts), which is as good.
func (w *Worker) rescueTask(ctx context.Context, log *zap.Logger, dead, taskID string, rec store.InflightTask) (created bool, err error) {
	rid := RescueTaskID(taskID, dead)
	log = log.With(zap.String("task_type", rec.Type), zap.String("task_id", taskID), zap.String("rescue_task_id", rid))
	p, err := decodeInflight(rec)
	if err != nil {
		// The original was malformed: guard archives it when it re-runs.
		log.Error("in-flight task cannot be rescued; dropped", zap.Error(err))
		return false, nil
	}
	task, err := tasks.NewTask(p, w.opts.Queues, time.Time{})
	if err != nil {
		log.Error("in-flight task cannot be rescued; dropped", zap.Error(err))
		return false, nil
	}
	// Options given to Enqueue override those of the task (asynq documents
	// it): a new id, the retention that keeps it taken, and what is left of
	// the original's retry budget (the kill does not count).
	opts := []asynq.Option{asynq.TaskID(rid), asynq.Retention(rescueRetention)}
	if rec.MaxRetry > 0 {
		budget := rec.MaxRetry - rec.Retried
		if rec.Failed {
			budget-- // the failed run counts, as asynq would have counted it
		}
		opts = append(opts, asynq.MaxRetry(max(budget, 0)))
	}
	if rec.RetryAt.After(time.Now()) {
		opts = append(opts, asynq.ProcessAt(rec.RetryAt)) // the retry's pacing (Retry-After) stands
	}
	_, err = w.live.client.EnqueueContext(ctx, task, opts...)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
	case err != nil:
		return false, fmt.Errorf("enqueue rescue copy %s: %w", rid, err)
	default:
		created = true
	}
	// After the copy exists, never before: a rescuer dying in between
	// leaves the record for the next round, not a superseded task with no
	// copy.
	if err := w.store.Supersede(ctx, taskID, markedJobOf(rec.Type, rec.Payload), rid, w.supersededTTL()); err != nil {
		return created, err
	}
	if created {
		log.Warn("rescued a task of a dead worker", zap.Time("started_at", rec.StartedAt))
	}
	return created, nil
}

func newWorkerID() string { return uuid.NewString() }

// supersededTTL outlives every later run of a superseded original.
func (w *Worker) supersededTTL() time.Duration {
	longest := slices.Max(w.opts.Webhooks.Schedule)
	return max(minSupersededTTL, 2*longest)
}

// decodeInflight decodes a recorded task's payload, validating it.
func decodeInflight(rec store.InflightTask) (tasks.Payload, error) {
	t := asynq.NewTask(rec.Type, rec.Payload)
	switch rec.Type {
	case tasks.TypeRequestPreview:
		return tasks.Decode[tasks.RequestPreview](t)
	case tasks.TypePollPreview:
		return tasks.Decode[tasks.PollPreview](t)
	case tasks.TypeDeliverWebhook:
		return tasks.Decode[tasks.DeliverWebhook](t)
	case tasks.TypeFanoutWebhook:
		return tasks.Decode[tasks.FanoutWebhook](t)
	}
	return nil, fmt.Errorf("%w: unknown task type %q", tasks.ErrMalformed, rec.Type)
}
