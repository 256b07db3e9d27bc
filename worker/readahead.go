package worker

import (
	"context"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// A request or poll handler's first Redis command is the read of its job
// (GetSeen), one round trip after track wrote the task's in-flight record.
// track makes that read in its own round trip instead (store.StartTask)
// and hands it on in the context; the handler takes it with firstRead. The
// read is as fresh as the handler's own would be, a moment earlier: every
// write from it is a compare-and-set that refuses a stale record.
//
// A request handler's run always ends in a commit with an event (accepted,
// or failed), whose messages go to the endpoints: track reads the endpoint
// set ahead for it too, and the handler takes it with endpoints. The set is
// then as it was when the task started, not when its event was committed,
// a few hundred milliseconds later: an endpoint created in between gets
// the job's next events, not that one. The endpoints themselves are read
// at the commit, so one deleted or disabled meanwhile is not sent to. A
// poll handler reads the set itself, when it makes an event: most polls
// make none.

// readAheadKey is the context key of the read track made.
type readAheadKey struct{}

// readAheadOf names what the handler of t reads first: the job of a
// request or poll task, and the endpoint set for a request task; nothing
// for another task or a malformed payload (the handler then reports it).
func readAheadOf(t *asynq.Task) store.ReadAhead {
	switch t.Type() {
	case tasks.TypeRequestPreview:
		if p, err := tasks.Decode[tasks.RequestPreview](t); err == nil {
			return store.ReadAhead{Job: p.JobID, EndpointIDs: true}
		}
	case tasks.TypePollPreview:
		if p, err := tasks.Decode[tasks.PollPreview](t); err == nil {
			return store.ReadAhead{Job: p.JobID}
		}
	}
	return store.ReadAhead{}
}

// withReadAhead hands read on to the task's handler.
func withReadAhead(ctx context.Context, read *store.JobRead) context.Context {
	if read == nil {
		return ctx
	}
	return context.WithValue(ctx, readAheadKey{}, read)
}

// firstRead is GetSeen of job id for a handler's first read: the read
// track made, if it made one of that job, else a read now.
func (h *Handlers) firstRead(ctx context.Context, id string) (store.Job, store.Seen, error) {
	if read, ok := ctx.Value(readAheadKey{}).(*store.JobRead); ok && read.ID == id {
		return read.Job, read.Seen, read.Err
	}
	return h.store.GetSeen(ctx, id)
}

// endpoints returns the endpoints for the events of a commit: from the
// endpoint set track read ahead, if it read one, else read now.
func (h *Handlers) endpoints(ctx context.Context) ([]store.Endpoint, error) {
	if read, ok := ctx.Value(readAheadKey{}).(*store.JobRead); ok && read.EndpointsRead {
		return h.store.EndpointsIn(ctx, read.EndpointIDs)
	}
	return h.store.Endpoints(ctx)
}

// markedJobOf is the job whose hash holds the superseded mark of a task of
// type typ with payload (store.Supersede): the job track reads ahead for
// it, whose HMGET then reads the mark too; "" for a task whose mark is a
// key of its own. Rescuers and track must agree on it, so both derive it
// here.
func markedJobOf(typ string, payload []byte) string {
	return readAheadOf(asynq.NewTask(typ, payload)).Job
}
