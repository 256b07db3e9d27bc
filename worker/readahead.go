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

// readAheadKey is the context key of the read track made.
type readAheadKey struct{}

// jobReadFirst names the job whose record the handler of t reads first,
// or "" when t is no request or poll task (or its payload is malformed:
// the handler then reports it).
func jobReadFirst(t *asynq.Task) string {
	switch t.Type() {
	case tasks.TypeRequestPreview:
		if p, err := tasks.Decode[tasks.RequestPreview](t); err == nil {
			return p.JobID
		}
	case tasks.TypePollPreview:
		if p, err := tasks.Decode[tasks.PollPreview](t); err == nil {
			return p.JobID
		}
	}
	return ""
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
