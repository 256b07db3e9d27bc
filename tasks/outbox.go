package tasks

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/store"
)

// envelope is how a task waits in a job's outbox until it is enqueued.
type envelope struct {
	Type      string          `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	ProcessAt time.Time       `json:"process_at,omitzero"`
}

// OutboxEntry returns the outbox entry that will enqueue p (at processAt,
// or at once when zero) once the change carrying it is committed.
func OutboxEntry(p Payload, processAt time.Time) store.OutboxEntry {
	raw, err := json.Marshal(p)
	if err != nil {
		panic("tasks: encode payload: " + err.Error()) // plain structs of strings and ints
	}
	data, err := json.Marshal(envelope{Type: p.TaskType(), Payload: raw, ProcessAt: processAt})
	if err != nil {
		panic("tasks: encode envelope: " + err.Error())
	}
	return store.OutboxEntry{ID: p.TaskID(), Data: data}
}

func taskFromEntry(e store.OutboxEntry, q Queues) (*asynq.Task, error) {
	var env envelope
	if err := json.Unmarshal(e.Data, &env); err != nil {
		return nil, fmt.Errorf("%w: outbox entry %s: %v", ErrMalformed, e.ID, err)
	}
	var p Payload
	var err error
	switch env.Type {
	case TypeRequestPreview:
		p, err = decodeAs[RequestPreview](env.Payload)
	case TypePollPreview:
		p, err = decodeAs[PollPreview](env.Payload)
	case TypeDeliverWebhook:
		p, err = decodeAs[DeliverWebhook](env.Payload)
	case TypeFanoutWebhook:
		p, err = decodeAs[FanoutWebhook](env.Payload)
	default:
		err = fmt.Errorf("%w: outbox entry %s: unknown task type %q", ErrMalformed, e.ID, env.Type)
	}
	if err != nil {
		return nil, err
	}
	return NewTask(p, q, env.ProcessAt)
}

func decodeAs[P Payload](raw []byte) (Payload, error) {
	var p P
	if err := decodePayload(raw, &p); err != nil {
		return nil, err
	}
	return p, nil
}

// outboxStore is what the Enqueuer needs of the store.
type outboxStore interface {
	Outbox(ctx context.Context, jobID string) ([]store.OutboxEntry, error)
	AckOutboxLeft(ctx context.Context, jobID string, ids ...string) (int64, error)
	AckOutbox(ctx context.Context, jobID string, ids ...string) error
	OutboxIndexEntry(ctx context.Context, jobID string) (store.IndexEntry, bool, error)
	DropOutboxIndex(ctx context.Context, e store.IndexEntry) error
	TouchOutboxIndex(ctx context.Context, jobID string) error
}

// Enqueuer moves committed outbox entries into asynq. Enqueueing is
// idempotent: every task has a deterministic id, and an id asynq already
// holds counts as enqueued.
type Enqueuer struct {
	client *asynq.Client
	store  outboxStore
	queues Queues
}

// NewEnqueuer returns an Enqueuer.
func NewEnqueuer(client *asynq.Client, s outboxStore, q Queues) *Enqueuer {
	return &Enqueuer{client: client, store: s, queues: q}
}

// Flush enqueues every pending outbox entry of a job, acknowledges those
// that are in asynq, and removes the job from the outbox index once its
// outbox is empty, so that the index holds only outboxes still to flush
// (the sweeper's work: those whose writer died before its own flush). It is
// safe to call any number of times, from any process.
func (e *Enqueuer) Flush(ctx context.Context, jobID string) error {
	// The index entry is read before the outbox: a commit indexes before it
	// writes its entries, so an entry re-indexed after this read has a new
	// score, and the drop below leaves it (see store.OutboxIndexEntry).
	idx, indexed, err := e.store.OutboxIndexEntry(ctx, jobID)
	if err != nil {
		return err
	}
	return e.flush(ctx, jobID, idx, indexed)
}

// FlushIndexed is Flush for a sweeper that read idx from the outbox index:
// the entry is dropped only if it still has the score the sweeper read, so
// that a commit that re-indexed the job since keeps its entry.
func (e *Enqueuer) FlushIndexed(ctx context.Context, idx store.IndexEntry) error {
	return e.flush(ctx, idx.JobID, idx, true)
}

// FlushCommitted is Flush for the writer of a commit, right after it: it
// enqueues the entries the commit wrote from memory, without reading the
// outbox or its index entry back, and drops the index entry by the score
// the commit wrote after its entries (store.Committed), once the outbox is
// empty. That score was written after the entries and before the count
// that finds the outbox empty, as a flush's own read of it would be, so a
// commit that re-indexes the job since keeps its entry. When the outbox
// holds more than the commit's entries (a predecessor's leftovers, a
// concurrent commit), or the commit wrote none or could not re-index, it
// falls back to Flush, which reads everything.
func (e *Enqueuer) FlushCommitted(ctx context.Context, c store.Committed) error {
	return e.FlushCommittedSettled(ctx, c, nil)
}

// FlushCommittedSettled is FlushCommitted for a writer that did the work of
// some of the commit's entries itself (a webhook delivered right after the
// commit): those named in settled are acknowledged without being enqueued.
// Until then they wait in the outbox like any other, so a writer that dies
// before this leaves them to its re-run or the sweeper, which enqueue them.
//
// A commit that wrote no index entry, as its writer comes back if it dies
// (store.Committed.Redone), is acknowledged without counting what is left:
// only its own entries are its business. Should an enqueue fail, the
// outbox is indexed for the sweeper, as Flush does, beside the writer's
// own retry.
func (e *Enqueuer) FlushCommittedSettled(ctx context.Context, c store.Committed, settled map[string]bool) error {
	if c.Redone && len(c.Outbox) > 0 {
		done, failed, errs := e.enqueueEntries(ctx, c.JobID, c.Outbox, settled)
		if err := e.store.AckOutbox(ctx, c.JobID, done...); err != nil {
			errs = append(errs, err)
		}
		if failed {
			if err := e.store.TouchOutboxIndex(ctx, c.JobID); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if len(c.Outbox) == 0 || (!c.Indexed && len(settled) == 0) {
		return e.Flush(ctx, c.JobID)
	}
	done, failed, errs := e.enqueueEntries(ctx, c.JobID, c.Outbox, settled)
	left, err := e.store.AckOutboxLeft(ctx, c.JobID, done...)
	switch {
	case err != nil:
		errs = append(errs, err)
	case failed:
		// An enqueue failed: keep the outbox findable, behind the
		// sweeper's grace, as Flush does.
		if err := e.store.TouchOutboxIndex(ctx, c.JobID); err != nil {
			errs = append(errs, err)
		}
	case left == 0 && c.Indexed:
		if err := e.store.DropOutboxIndex(ctx, c.Index); err != nil {
			errs = append(errs, err)
		}
	default:
		// Entries this commit did not write, or no index score to drop
		// the entry by: Flush reads both.
		errs = append(errs, e.Flush(ctx, c.JobID))
	}
	return errors.Join(errs...)
}

// EnqueueEntries enqueues entries of job jobID's outbox, acknowledging
// none, and returns those done with (enqueued, or corrupt and dropped) and
// whether an enqueue failed, with the errors joined. The caller
// acknowledges the done ones, or hands them to FlushCommittedSettled as
// settled.
func (e *Enqueuer) EnqueueEntries(ctx context.Context, jobID string, entries []store.OutboxEntry) (done []string, failed bool, err error) {
	done, failed, errs := e.enqueueEntries(ctx, jobID, entries, nil)
	return done, failed, errors.Join(errs...)
}

// enqueueEntries enqueues a job's outbox entries but those in settled, and
// returns those done with (enqueued, settled, or corrupt and dropped) for
// the acknowledgement, and whether an enqueue failed.
func (e *Enqueuer) enqueueEntries(ctx context.Context, jobID string, entries []store.OutboxEntry, settled map[string]bool) (done []string, failed bool, errs []error) {
	done = make([]string, 0, len(entries))
	for _, entry := range entries {
		if settled[entry.ID] {
			done = append(done, entry.ID)
			continue
		}
		task, err := taskFromEntry(entry, e.queues)
		if err != nil {
			// A corrupt entry can never be enqueued: drop it, loudly.
			errs = append(errs, err)
			done = append(done, entry.ID)
			continue
		}
		if err := e.enqueue(ctx, task); err != nil {
			errs = append(errs, fmt.Errorf("enqueue %s of job %s: %w", entry.ID, jobID, err))
			failed = true
			continue
		}
		done = append(done, entry.ID)
	}
	return done, failed, errs
}

func (e *Enqueuer) flush(ctx context.Context, jobID string, idx store.IndexEntry, indexed bool) error {
	entries, err := e.store.Outbox(ctx, jobID)
	if err != nil {
		return err
	}
	done, _, errs := e.enqueueEntries(ctx, jobID, entries, nil)
	var left int64
	if len(entries) > 0 {
		if left, err = e.store.AckOutboxLeft(ctx, jobID, done...); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	switch {
	case left == 0 && indexed:
		// Empty after the index read: nothing of a commit indexed at
		// idx.Score is left to enqueue. Every step is safe to re-run.
		if err := e.store.DropOutboxIndex(ctx, idx); err != nil {
			errs = append(errs, err)
		}
	case left > 0:
		// An enqueue failed, or a commit added entries meanwhile: keep the
		// outbox findable, behind the sweeper's grace (a failing entry
		// must not stay at the head of its queue).
		if err := e.store.TouchOutboxIndex(ctx, jobID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Enqueue enqueues the task of p (at processAt, or now when zero). A task
// with the same id already in asynq counts as enqueued.
func (e *Enqueuer) Enqueue(ctx context.Context, p Payload, processAt time.Time) error {
	task, err := NewTask(p, e.queues, processAt)
	if err != nil {
		return err
	}
	if err := e.enqueue(ctx, task); err != nil {
		return fmt.Errorf("enqueue %s: %w", p.TaskID(), err)
	}
	return nil
}

// EnqueueRequest enqueues the request task of a queued job: its creator's
// step right after the creation, repeated by the sweeper for a job whose
// creator died before it.
func (e *Enqueuer) EnqueueRequest(ctx context.Context, j store.Job) error {
	return e.Enqueue(ctx, RequestPreview{JobID: j.ID, SessionCode: j.SessionCode}, time.Time{})
}

func (e *Enqueuer) enqueue(ctx context.Context, task *asynq.Task) error {
	_, err := e.client.EnqueueContext(ctx, task)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// eventIDSpace names the events of previewd jobs (a UUIDv5 namespace), in
// ids of the older shape (see EventID).
var eventIDSpace = uuid.MustParse("6f1c2a4e-9a37-4d1b-8a55-2f0d8c7e91b3")

// EventID returns the id of the event announcing one fact about a job: the
// same fact always gets the same id, so a change applied twice (a re-sent
// script, a re-run task) stores and sends one event, which receivers can
// deduplicate by its webhook-id, never two.
//
// The id is "evt_" + the job id's 32 hex digits + the first 16 hex digits
// of the SHA-1 of (job id, fact): it carries its job, so a message is found
// by its id alone (store.JobOfEvent) with no lookup key in Redis, and 64
// bits tell apart the few facts of one job. A job id that is not a UUID in
// its canonical form, which tasks.JobID never makes, gets the older shape,
// "evt_" + 32 hex digits of a UUIDv5 of (job id, fact), which carries no
// job; so did every event before ids carried their job.
func EventID(jobID, fact string) string {
	if u, err := uuid.Parse(jobID); err != nil || u.String() != jobID {
		return "evt_" + strings.ReplaceAll(uuid.NewSHA1(eventIDSpace, []byte(jobID+"\x00"+fact)).String(), "-", "")
	}
	sum := sha1.Sum([]byte(jobID + "\x00" + fact))
	return "evt_" + strings.ReplaceAll(jobID, "-", "") + hex.EncodeToString(sum[:8])
}

// eventFact names the fact an event of type t announces about j: being
// accepted happens once, so does reaching a final status (whichever one:
// exactly one final event per job), and each progress event is the news
// of one poll's commit.
func eventFact(j *store.Job, t store.EventType) string {
	switch t {
	case store.EventAccepted:
		return string(t)
	case store.EventProgress:
		return string(t) + "/" + strconv.Itoa(j.Polls)
	}
	return "final"
}

// Emit adds events of the given types to change, each with the fan-out
// task that will address it to its destinations (the job's webhook_url and
// the endpoints subscribed to its type, as they are when it runs). Each
// event's id is derived from the fact it announces (see EventID).
func Emit(change *store.Change, j *store.Job, types ...store.EventType) {
	for _, t := range types {
		id := EventID(j.ID, eventFact(j, t))
		change.Events = append(change.Events, store.NewEvent{ID: id, Type: t})
		change.Outbox = append(change.Outbox, OutboxEntry(FanoutWebhook{JobID: j.ID, EventID: id, EventType: string(t)}, time.Time{}))
	}
}

// Destinations lists where an event of type typ about j goes now: the job's
// webhook_url (unless it asked to stop) and every enabled endpoint
// subscribed to the type.
func Destinations(j *store.Job, endpoints []store.Endpoint, typ store.EventType) []string {
	var dests []string
	if j.WebhookURL != "" && j.WebhookGoneAt == nil {
		dests = append(dests, DestinationJob)
	}
	for _, ep := range endpoints {
		if ep.Enabled && ep.Subscribed(typ) {
			dests = append(dests, ep.ID)
		}
	}
	return dests
}

// Address does in the commit what a fan-out task would do after it: each
// event Emit added to change gets, for every destination it has now (see
// Destinations), a pending message record and that message's delivery
// task, in place of its fan-out task. The commit then creates records and
// tasks atomically with the event: no fan-out hop, and nothing for a
// crash to split. A re-run of the change writes the same records and
// entries (existing records are kept, task ids are the messages').
func Address(change *store.Change, j *store.Job, now time.Time, endpoints []store.Endpoint) {
	if len(change.Events) == 0 {
		return
	}
	types := make(map[string]store.EventType, len(change.Events))
	for _, ev := range change.Events {
		types[FanoutWebhook{EventID: ev.ID}.TaskID()] = ev.Type
	}
	outbox := change.Outbox[:0:0]
	for _, entry := range change.Outbox {
		typ, isFanout := types[entry.ID]
		if !isFanout {
			outbox = append(outbox, entry)
			continue
		}
		eventID := strings.TrimPrefix(entry.ID, "fanout:")
		for _, dest := range Destinations(j, endpoints, typ) {
			change.Messages = append(change.Messages, store.Message{
				ID: store.MessageID(eventID, dest), EventID: eventID, EventType: typ,
				Destination: dest, Status: store.MessagePending, CreatedAt: now,
			})
			outbox = append(outbox, OutboxEntry(DeliverWebhook{
				JobID: j.ID, EventID: eventID, EventType: string(typ), Destination: dest,
			}, time.Time{}))
		}
	}
	change.Outbox = outbox
}
