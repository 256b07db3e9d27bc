package tasks

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/store"
)

// Pusher turns a hint that a CSM session changed (CSM's unsigned account
// webhook) into an immediate poll of the session's live jobs. It never
// acts on the hint itself: the poll reads the session and decides.
//
// A push moves the job's next poll step (the task poll:<job>:<seq> of its
// single chain) to now; it never adds a task, so a flood of pushes costs
// at most one poll per job at a time: a step already due or running is
// left alone, and the poll that is running sees the push (NotePush) and
// runs its successor at once.
type Pusher struct {
	store     *store.Store
	enqueuer  *Enqueuer
	inspector *asynq.Inspector
	queues    Queues
}

// NewPusher returns a Pusher on an existing Redis connection, which it
// does not close.
func NewPusher(rdb redis.UniversalClient, namespace string) *Pusher {
	if namespace == "" {
		namespace = "previewd"
	}
	st := store.New(rdb, store.Options{Namespace: namespace})
	q := QueuesFor(namespace)
	return &Pusher{
		store:     st,
		enqueuer:  NewEnqueuer(asynq.NewClientFromRedisClient(rdb), st, q),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		queues:    q,
	}
}

// PollSession makes the next poll of every generating job of session code
// happen now, and returns how many jobs it found generating. Jobs that are
// gone or final leave the session index; jobs not yet generating (their
// POST not sent) have no poll to hurry and are skipped.
func (p *Pusher) PollSession(ctx context.Context, code string) (int, error) {
	ids, err := p.store.SessionJobs(ctx, code)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		live, err := p.pollJob(ctx, code, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if live {
			n++
		}
	}
	return n, errors.Join(errs...)
}

func (p *Pusher) pollJob(ctx context.Context, code, id string) (bool, error) {
	// Noted before the job is read: a poll whose commit comes after this
	// note sees it and runs its successor at once; a commit before it
	// shows in the read below, whose step is the one to hurry.
	if err := p.store.NotePush(ctx, id); err != nil {
		return false, err
	}
	j, err := p.store.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return false, p.store.UnindexSession(ctx, code, id)
	}
	if err != nil {
		return false, err
	}
	if j.Status.Final() {
		return false, p.store.UnindexSession(ctx, code, id)
	}
	if j.Status != store.StatusGenerating || j.Poll.Seq < 1 {
		return false, nil
	}
	return true, p.RunPollNow(ctx, PollPreview{JobID: j.ID, SessionCode: j.SessionCode, Seq: j.Poll.Seq})
}

// RunPollNow moves the scheduled poll step poll to now. A step already due
// or running is left as it is; a step whose commit has not been flushed
// yet is flushed first (the task is the same, by its id).
func (p *Pusher) RunPollNow(ctx context.Context, poll PollPreview) error {
	id := poll.TaskID()
	err := p.inspector.RunTask(p.queues.Polls, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		// Committed but not yet in asynq (its writer is between commit and
		// flush, or died there), or already done: flushing settles which.
		if ferr := p.enqueuer.Flush(ctx, poll.JobID); ferr != nil {
			return ferr
		}
		err = p.inspector.RunTask(p.queues.Polls, id)
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			return nil // done already: the job has moved on
		}
	}
	if err == nil {
		return nil
	}
	// asynq refuses to run a task that is already pending or active:
	// exactly the steps that need no hurrying.
	info, ierr := p.inspector.GetTaskInfo(p.queues.Polls, id)
	if ierr == nil && (info.State == asynq.TaskStatePending || info.State == asynq.TaskStateActive) {
		return nil
	}
	if errors.Is(ierr, asynq.ErrTaskNotFound) {
		return nil
	}
	return fmt.Errorf("run poll %s now: %w", id, err)
}
