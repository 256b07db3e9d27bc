// Package store owns previewd's records in Redis: jobs with the webhook
// events they emitted (in the job's record, see record.go), the delivery
// log of those events, and a per-job outbox of tasks still to be enqueued.
//
// Every key of one job shares the hash tag {<job id>}, so each multi-key
// script touches a single Redis Cluster slot. The two indexes across jobs
// (jobs with a pending outbox, jobs by deadline) are sorted sets written by
// separate commands that are safe to repeat.
//
// A job changes only through Update, a compare-and-set on its version run as
// one Lua script that also refuses to move a job backwards or out of a final
// status, and records the events and outbox entries of the change atomically
// with it.
package store

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors.
var (
	ErrNotFound = errors.New("job not found")
	// ErrNoChange, returned by an Update function, ends the update without writing.
	ErrNoChange = errors.New("no change")
	// ErrIllegalTransition means an update tried to move a job backwards or
	// out of a final status; the job was not changed.
	ErrIllegalTransition = errors.New("illegal status transition")
	// ErrContention means an update lost the compare-and-set too many times in a row.
	ErrContention = errors.New("job update contention")
	// ErrNotReplicated means a Durable change was committed on the primary
	// but fewer than Options.MinReplicas replicas acknowledged it within
	// Options.ReplicaTimeout: a failover now could lose it.
	ErrNotReplicated = errors.New("change not acknowledged by enough replicas")
)

// Options configure a Store.
type Options struct {
	// Namespace prefixes every key. Default "previewd".
	Namespace string
	// Retention is how long a finished job and its events are kept. Default 7 days.
	Retention time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// MinReplicas is how many replicas must acknowledge a Durable change
	// (Redis WAIT) before Update reports it committed; 0 (the default)
	// waits for none. Replication is asynchronous: without this an
	// acknowledged write can vanish when its primary fails over.
	MinReplicas int
	// ReplicaTimeout bounds that wait. Default 500ms.
	ReplicaTimeout time.Duration
	// SlotReuse lets this Store reuse a seat of a delivery slot it took
	// (AcquireSlots) for further deliveries to the same destination for
	// this long after the take, instead of taking a seat per delivery
	// (see slotBank). 0 (the default) takes and gives back a seat per
	// delivery; workers run with DefaultSlotReuse.
	SlotReuse time.Duration
}

// Store reads and writes job records in Redis.
type Store struct {
	rdb            redis.UniversalClient
	ns             string
	retention      time.Duration
	now            func() time.Time
	minReplicas    int
	replicaTimeout time.Duration
	bank           *slotBank // nil without Options.SlotReuse
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient, opts Options) *Store {
	if opts.Namespace == "" {
		opts.Namespace = "previewd"
	}
	if opts.Retention <= 0 {
		opts.Retention = 7 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReplicaTimeout <= 0 {
		opts.ReplicaTimeout = 500 * time.Millisecond
	}
	s := &Store{rdb: rdb, ns: opts.Namespace, retention: opts.Retention, now: opts.Now,
		minReplicas: opts.MinReplicas, replicaTimeout: opts.ReplicaTimeout}
	if opts.SlotReuse > 0 {
		s.bank = newSlotBank(opts.SlotReuse, s.giveBackBanked)
	}
	return s
}

// Retention is how long finished jobs are kept.
func (s *Store) Retention() time.Duration { return s.retention }

// Now returns the store's clock reading.
func (s *Store) Now() time.Time { return s.now() }

func (s *Store) jobKey(id string) string          { return s.ns + ":{" + id + "}:job" }
func (s *Store) eventsKey(id string) string       { return s.ns + ":{" + id + "}:events" }
func (s *Store) legacyOutboxKey(id string) string { return s.ns + ":{" + id + "}:outbox" }
func (s *Store) messagesKey(id string) string     { return s.ns + ":{" + id + "}:messages" }
func (s *Store) outboxIndexKey() string           { return s.ns + ":index:outbox" }
func (s *Store) deadlineIndexKey() string         { return s.ns + ":index:deadlines" }

// KeysOf lists the Redis keys that hold the records of one job: its
// record (its latest events included), the events hash (older events, when
// there are more than a record holds), the outbox hash of earlier versions
// (this one's outbox entries are fields of the record's hash) and its
// messages.
func (s *Store) KeysOf(id string) []string {
	return []string{s.jobKey(id), s.eventsKey(id), s.legacyOutboxKey(id), s.messagesKey(id)}
}

// OutboxEntry is a task to enqueue once the change that produced it is
// committed. ID is unique within the job (the task id does well); Data is
// opaque to the store.
type OutboxEntry struct {
	ID   string
	Data []byte
}

// NewEvent asks Update to record an event. The store renders its body from
// the job as it is after the change.
type NewEvent struct {
	ID   string
	Type EventType
}

// Change is what an Update function adds beside the job itself.
type Change struct {
	Events []NewEvent
	Outbox []OutboxEntry
	// Redone says the writer runs again if it dies before flushing the
	// change's outbox entries (a task handler with retries left, whose
	// re-run flushes its job's outbox): the commit then writes no outbox
	// index entry at all, the sweeper's way to an outbox whose writer
	// never comes back. Its flush acknowledges the entries, and indexes
	// the outbox only if an enqueue failed (Committed.Redone).
	Redone bool
	// Messages are delivery records created with the change (the events'
	// messages, addressed at commit instead of by a fan-out task): a
	// record already there is kept, so a re-run cannot reset one that a
	// delivery moved on. Their ids must name events of this job, as a
	// message is found by its id alone through the job its event id
	// carries (see JobOfMessage).
	Messages []Message
	// Durable asks Update to return only once Options.MinReplicas replicas
	// hold the change, or ErrNotReplicated (the change stays committed on
	// the primary: the caller decides what that means).
	Durable bool
	// Slots are the delivery slots of a delivery the writer makes right
	// after the commit (the job's own webhook, sent inline), to take in
	// the commit's round trip instead of one of their own, as AcquireSlots
	// takes them. Committed.Slots says whether the commit took them all;
	// when it did not (a slot full, the commit lost or failed), the update
	// has given back what it took. Ignored with Durable (that pipeline
	// goes to the job's primary only).
	Slots *SlotTake
}

// SlotTake is a delivery's slots, held by Holder for Lease.
type SlotTake struct {
	Holder string
	Lease  time.Duration
	Slots  []Slot
}

// Event is a stored webhook event: its id and the exact bytes sent for it.
type Event struct {
	ID   string
	Body []byte
}

// EventBody is the JSON body of every webhook event. Data is the job's
// public view: events reach every endpoint, not only the job's creator.
type EventBody struct {
	Type      EventType `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      EventData `json:"data"`
}

var (
	//go:embed lua/create.lua
	createSource string
	//go:embed lua/update.lua
	updateSource string
	//go:embed lua/record_message.lua
	recordMessageSource string
	//go:embed lua/zrem_if_score.lua
	zremIfScoreSource string
	//go:embed lua/create_message.lua
	createMessageSource string

	createScript        = redis.NewScript(createSource)
	updateScript        = redis.NewScript(seatsSource + updateSource)
	recordMessageScript = redis.NewScript(seatsSource + recordMessageSource)
	zremIfScoreScript   = redis.NewScript(zremIfScoreSource)
	createMessageScript = redis.NewScript(createMessageSource)
)

// Create stores job unless a job with its id exists. It returns the stored
// job, whether this call created it, and the request fingerprint the stored
// job was created with (compare it to detect an idempotency key reused for a
// different request). The outbox entries are stored with a new job only
// (tasks.Client gives none: it enqueues the request itself, see
// created_sweep.go). A new job also enters its session's index (see
// IndexSession) in the round trip that finishes its other entries.
func (s *Store) Create(ctx context.Context, job Job, fingerprint string, outbox []OutboxEntry) (Job, bool, string, error) {
	doc, err := marshalRecord(job)
	if err != nil {
		return Job{}, false, "", fmt.Errorf("encode job %s: %w", job.ID, err)
	}
	// Indexed before the job exists, in one round trip: the outbox, if any,
	// so that a crash before the script leaves an index entry pointing at
	// nothing rather than an outbox nobody will flush; the deadline, so
	// that no job lives without a deadline backstop; the creation listing,
	// so that no job lives unlisted (Update writes only the status listing)
	// and none escapes the sweeper's pass over new jobs. NX for
	// the last two, so that an idempotent repeat does not move the entries
	// of the job it repeats (fixDeadlineIndexIn below settles them once the
	// script says which job is stored). Listings skip entries of jobs that
	// do not exist.
	//
	// On one Redis (a primary, with or without Sentinel) the two entries go
	// in the script's own round trip, ahead of it: a connection's commands
	// run in the order sent, so the script never runs without them having
	// run first. Not on Cluster, where a pipeline is split per node and the
	// job's node may run the script while the indexes' node failed; nor with
	// an outbox, whose index write is checked before the script.
	//
	// There the rest of a new job's entries go ahead too, so that a new job
	// costs one round trip: its status listing (NX, like the creation
	// listing), the counter and the session index (best effort: a lost
	// increment only skews a metric, and a push then misses the job, whose
	// safety-net poll still ends it). A repeat takes back what they wrote
	// for it in the round trip it makes anyway (see below); a script that
	// fails after them, or a pipeline re-sent after a lost reply, counts
	// one creation too many.
	z := redis.Z{Score: float64(job.Deadline.Unix()), Member: job.ID}
	created := redis.Z{Score: float64(job.CreatedAt.UnixMilli()), Member: job.ID}
	_, cluster := s.rdb.(*redis.ClusterClient)
	ahead := len(outbox) == 0 && !cluster
	var index *redis.Cmd
	var deadlineNX, createdNX, listedNX, counted *redis.IntCmd
	indexIn := func(p redis.Pipeliner) {
		if len(outbox) > 0 {
			index = s.indexOutboxIn(ctx, p, job.ID)
		}
		deadlineNX = p.ZAddNX(ctx, s.deadlineIndexKey(), z)
		createdNX = p.ZAddNX(ctx, s.createdIndexKey(), created)
		if ahead {
			listedNX = p.ZAddNX(ctx, s.statusIndexKey(job.Status), created)
			counted = p.Incr(ctx, s.statsKey("jobs_created"))
			s.indexSessionIn(ctx, p, job.SessionCode, job.ID, job.Deadline)
		}
	}
	if !ahead {
		cmds, _ := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			indexIn(p)
			return nil
		})
		if err := cmdsErr(cmds, index); err != nil { // the index write is read by indexedScore
			return Job{}, false, "", fmt.Errorf("index job %s: %w", job.ID, err)
		}
		if index != nil {
			if _, err := s.indexedScore(ctx, index, job.ID); err != nil {
				return Job{}, false, "", fmt.Errorf("index outbox of job %s: %w", job.ID, err)
			}
		}
	}
	args := []any{doc, string(job.Status), fingerprint, s.ttl(job, s.now()).Milliseconds(), newNonce(), len(outbox)}
	args = appendOutboxFields(args, outbox)
	keys := []string{s.jobKey(job.ID)}
	var script *redis.Cmd
	if ahead {
		// An entry whose reply is an error reads as not written (Val 0):
		// the writes after the script write it again.
		script = s.runScriptAlong(ctx, createScript, keys, args, indexIn, nil)
	} else {
		script = createScript.Run(ctx, s.rdb, keys, args...)
	}
	res, err := script.Slice()
	if err != nil {
		return Job{}, false, "", fmt.Errorf("create job %s: %w", job.ID, err)
	}
	isNew, _ := res[0].(int64)
	if mine, _ := sliceInt(res, 3); isNew == 1 || mine == 1 {
		if ahead && deadlineNX.Val() == 1 && createdNX.Val() == 1 && listedNX.Val() == 1 {
			return job, true, fingerprint, nil // every entry went with the script
		}
		// One round trip: the deadline and the listing entries, with this
		// job's own scores (an attempt that died before its script may have
		// left the NX entries with its own), and, unless they went ahead,
		// the counter and the session index.
		// An NX above that answered 1 wrote this job's own score: only
		// one that found an entry (or whose reply was lost, and re-sent)
		// needs writing again.
		var bestEffort []redis.Cmder
		cmds, _ := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if deadlineNX.Val() != 1 {
				s.fixDeadlineIndexIn(ctx, p, job, true)
			}
			s.indexListingIn(ctx, p, job, "", createdNX.Val() != 1)
			if !ahead {
				bestEffort = append(bestEffort, p.Incr(ctx, s.statsKey("jobs_created")))
				bestEffort = append(bestEffort, s.indexSessionIn(ctx, p, job.SessionCode, job.ID, job.Deadline)...)
			}
			return nil
		})
		if err := cmdsErr(cmds, bestEffort...); err != nil {
			return job, true, fingerprint, fmt.Errorf("index job %s: %w", job.ID, err)
		}
		return job, true, fingerprint, nil
	}
	storedFingerprint, _ := res[1].(string)
	storedDoc, _ := res[2].(string)
	var stored Job
	if err := unmarshalRecord([]byte(storedDoc), &stored); err != nil {
		return Job{}, false, "", fmt.Errorf("decode job %s: %w", job.ID, err)
	}
	// A repeat also repairs the listing a crashed creator may have missed
	// (the creation entry included: the NX above may have put this
	// request's own creation time there), and takes back what went ahead
	// for a new job: the count, and entries the stored job does not have
	// (a listing under a status it has left, never to come back; an index
	// entry under a session that is not its own, when the request reused
	// its idempotency key for another session).
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		s.fixDeadlineIndexIn(ctx, p, stored, false)
		s.indexListingIn(ctx, p, stored, "", true)
		if ahead {
			if stored.Status != job.Status {
				p.ZRem(ctx, s.statusIndexKey(job.Status), job.ID)
			}
			if counted.Err() == nil {
				p.Decr(ctx, s.statsKey("jobs_created"))
			}
			if stored.SessionCode != job.SessionCode {
				p.SRem(ctx, s.sessionKey(job.SessionCode), job.ID)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return stored, false, storedFingerprint, fmt.Errorf("index job %s: %w", stored.ID, err)
	}
	return stored, false, storedFingerprint, nil
}

// Get returns the job with the given id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Job, error) {
	j, _, err := s.GetSeen(ctx, id)
	return j, err
}

// Seen is a job's record as a read or a commit left it, for UpdateFrom to
// start from instead of reading the job again. The zero Seen has nothing:
// UpdateFrom then reads.
type Seen struct {
	version string
	doc     []byte
}

// GetSeen is Get, and also returns the record as read, for UpdateFrom.
func (s *Store) GetSeen(ctx context.Context, id string) (Job, Seen, error) {
	return seenFrom(id, s.rdb.HMGet(ctx, s.jobKey(id), "v", "doc"))
}

// seenFrom decodes GetSeen's read: an HMGET whose first fields are the
// version and the document (StartTask's asks for one more).
func seenFrom(id string, cmd *redis.SliceCmd) (Job, Seen, error) {
	vals, err := cmd.Result()
	if err != nil {
		return Job{}, Seen{}, fmt.Errorf("read job %s: %w", id, err)
	}
	version, _ := vals[0].(string)
	doc, _ := vals[1].(string)
	if version == "" || doc == "" {
		return Job{}, Seen{}, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	seen := Seen{version: version, doc: []byte(doc)}
	j, err := seen.job()
	if err != nil {
		return Job{}, Seen{}, fmt.Errorf("decode job %s: %w", id, err)
	}
	return j, seen, nil
}

// job decodes the record afresh: every caller gets a Job of its own.
func (seen Seen) job() (Job, error) {
	r, err := seen.record()
	return r.Job, err
}

// record decodes the whole record afresh, events included.
func (seen Seen) record() (record, error) {
	var r record
	err := unmarshalRecord(seen.doc, &r)
	return r, err
}

// maxUpdateAttempts bounds the compare-and-set loop; contention on one job is
// rare (a poll racing a cancel), so running out means something is wrong.
const maxUpdateAttempts = 20

// Update applies fn to the current job and commits the result atomically with
// the events and outbox entries fn returns, if and only if no other writer
// changed the job meanwhile; otherwise it reloads the job and calls fn again.
// fn must not have side effects beyond the job it is given. If fn returns
// ErrNoChange, nothing is written and Update returns the job as read.
// Update returns ErrIllegalTransition if fn moved the job backwards or out of
// a final status.
func (s *Store) Update(ctx context.Context, id string, fn func(j *Job, now time.Time) (Change, error)) (Job, error) {
	j, _, err := s.UpdateCommitted(ctx, id, fn)
	return j, err
}

// Committed is what a commit put in its job's outbox: the change's entries
// and the outbox index entry as written after them, so that the writer's
// flush (tasks.Enqueuer.FlushCommitted) enqueues them without reading
// them back.
type Committed struct {
	JobID string
	// Outbox holds the entries of the change that committed (nil when it
	// had none, or when nothing was committed).
	Outbox []OutboxEntry
	// Index is the job's outbox index entry as the commit wrote it after
	// its entries; Indexed is false when that write failed (or there was
	// none): a flush then reads the index itself.
	Index   IndexEntry
	Indexed bool
	// Redone is the change's Redone: no index entry was written, the
	// writer's own re-run is what finds the entries should it die.
	Redone bool
	// Events holds the change's events as this commit stored them (an
	// event the job's record already held is not there: its stored body is
	// the one to send, and the delivery task reads it).
	Events []CommittedEvent
	// Slots is the change's Slots when the commit took every one: the
	// writer holds them and gives them back (ReleaseSlots,
	// SaveMessageReleasing). Nil when it took none.
	Slots *SlotTake
}

// CommittedEvent is an event as the commit that created it stored it.
type CommittedEvent struct {
	ID   string
	Type EventType
	Body []byte
}

// UpdateCommitted is Update, and also reports what the commit put in the
// job's outbox (a zero Committed but for JobID when fn returned
// ErrNoChange or the update failed).
func (s *Store) UpdateCommitted(ctx context.Context, id string, fn func(j *Job, now time.Time) (Change, error)) (Job, Committed, error) {
	j, _, c, err := s.UpdateFrom(ctx, id, Seen{}, fn)
	return j, c, err
}

// UpdateFrom is UpdateCommitted from a record the caller has seen (GetSeen,
// or an earlier UpdateFrom) instead of a fresh read: the compare-and-set
// refuses a commit from it if the job changed since, as it refuses any
// other, and the job is then read again. An ErrNoChange that fn concludes
// from the seen record is checked on a fresh read, so that it never rests
// on an old one. It also returns the record as this call left it, for the
// caller's next UpdateFrom.
func (s *Store) UpdateFrom(ctx context.Context, id string, seen Seen, fn func(j *Job, now time.Time) (Change, error)) (Job, Seen, Committed, error) {
	none := Committed{JobID: id}
	// relist: an attempt moved the job's listing with a commit that lost
	// (or whose outcome is unknown); listed is the job to list again, as
	// last read, or as committed by a later attempt that did not move it.
	relist, listed := false, Job{}
	// sentSlots: the slot takes attempts queued along with their commits;
	// held: those of the commit that landed and took them all, which the
	// caller holds. The others are given back.
	var sentSlots []*SlotTake
	var held *SlotTake
	defer func() {
		if relist {
			s.relistJob(ctx, listed)
		}
		for _, t := range sentSlots {
			if held == nil || t.Holder != held.Holder {
				s.giveBackSlots(ctx, t)
			}
		}
	}()
	for range maxUpdateAttempts {
		fromSeen := seen.version != ""
		if !fromSeen {
			var err error
			if _, seen, err = s.GetSeen(ctx, id); err != nil {
				return Job{}, Seen{}, none, err
			}
		}
		r, err := seen.record()
		if err != nil {
			return Job{}, Seen{}, none, fmt.Errorf("decode job %s: %w", id, err)
		}
		j := r.Job
		listed = j
		deadline := j.Deadline
		read := seen
		seen = Seen{} // used once: a retry reads
		now := s.now()
		before := j.Status
		change, err := fn(&j, now)
		if errors.Is(err, ErrNoChange) {
			if fromSeen {
				continue
			}
			return j, read, none, nil
		}
		if err != nil {
			return j, Seen{}, none, err
		}
		j.UpdatedAt = now
		r.Job = j
		doc, res, err := s.commit(ctx, r, !j.Deadline.Equal(deadline), read.version, before, change, now)
		relist = relist || (res.listed && !res.committed)
		if res.finishSent && !res.committed {
			s.unfinish(ctx, j, deadline)
		}
		if res.slotsSent && !slices.ContainsFunc(sentSlots, func(t *SlotTake) bool { return t.Holder == change.Slots.Holder }) {
			sentSlots = append(sentSlots, change.Slots)
		}
		if err != nil && !errors.Is(err, ErrNotReplicated) {
			return Job{}, Seen{}, none, err
		}
		if !res.committed {
			continue
		}
		// A commit that moved the job's listing itself covers the moves of
		// the attempts that lost before it; one that did not leaves its
		// status to list again.
		relist, listed = relist && !res.listed, j
		c := s.afterCommit(ctx, j, before, change, res)
		if res.slotsTaken {
			c.Slots, held = change.Slots, change.Slots
		}
		return j, nextSeen(read.version, doc), c, err
	}
	return Job{}, Seen{}, none, fmt.Errorf("update job %s: %w", id, ErrContention)
}

// relistJob lists j under its status again after an attempt of an update
// moved the job's listing along with a commit that then lost its
// compare-and-set (see commitDoc): that attempt removed the job from the
// status it read, which may be the job's status still. Best effort, like
// every listing write; it only adds, so it never takes away an entry a
// concurrent writer's commit made.
func (s *Store) relistJob(ctx context.Context, j Job) {
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		s.indexListingIn(ctx, p, j, "", false)
		return nil
	})
}

// giveBackSlots gives back the slots an update's commit took along but
// did not keep (see Change.Slots). Best effort: a slot not given back is
// freed when its lease ends.
func (s *Store) giveBackSlots(ctx context.Context, t *SlotTake) {
	destinations := make([]string, len(t.Slots))
	for i, sl := range t.Slots {
		destinations[i] = sl.Destination
	}
	_ = s.ReleaseSlots(context.WithoutCancel(ctx), t.Holder, destinations)
}

// nextSeen is the record a commit at version wrote: the script moves the
// version on by one. (A commit confirmed by its nonce after a lost reply
// may have been followed by others: the next UpdateFrom's compare-and-set
// then refuses it, and it reads again.)
func nextSeen(version string, doc []byte) Seen {
	v, err := strconv.ParseInt(version, 10, 64)
	if err != nil {
		return Seen{}
	}
	return Seen{version: strconv.FormatInt(v+1, 10), doc: doc}
}

// afterCommit writes what a commit changes in the indexes across jobs, in
// one round trip (a Cluster client splits it per node): every command is
// on a key of its own, and each is safe to repeat.
//   - The outbox index again, after the entries: a flush running meanwhile
//     may have found the outbox still empty and dropped the entry commit
//     made before them; this one outlives it (every index write raises the
//     score), so a crash before the writer's own flush still leaves the
//     sweeper a way to the entries. Best effort: the entry made before the
//     commit covers the usual case. Its score is what the writer's flush
//     drops the entry by. A writer that re-runs and flushes after a crash
//     (Change.Redone) writes no entry, before or after.
//   - The status listing, when the status changed and the commit did not
//     move it in its own round trip (see commitDoc). Best effort: listings
//     check each job's status as they read it.
//   - On reaching a final status, finishedIn's writes, when the commit did
//     not send them along in its own round trip (a durable one: see
//     commitDoc).
func (s *Store) afterCommit(ctx context.Context, j Job, before Status, change Change, res commitResult) Committed {
	outbox := change.Outbox
	c := Committed{JobID: j.ID, Outbox: outbox, Index: IndexEntry{JobID: j.ID}, Redone: change.Redone, Events: res.fresh}
	reindex := len(outbox) > 0 && !change.Redone
	finished := j.Status.Final() && !before.Final() && !res.finishSent
	relist := j.Status != before && !res.listed
	if !reindex && !relist && !finished {
		return c
	}
	var index *redis.Cmd
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if reindex {
			index = s.indexOutboxIn(ctx, p, j.ID)
		}
		if relist {
			s.indexListingIn(ctx, p, j, before, false)
		}
		if finished {
			s.finishedIn(ctx, p, j)
		}
		return nil
	})
	if index == nil {
		return c
	}
	if score, err := s.indexedScore(ctx, index, j.ID); err == nil {
		c.Index.Score, c.Indexed = score, true
	}
	return c
}

// finishedIn queues, in a pipeline, the writes across jobs of job j
// reaching its final status: its deadline entry goes, its status's
// finished counter counts it, and its session index entry goes (see
// IndexSession). Each is best effort: the sweeper drops deadline entries
// of final jobs, a lost increment only skews a metric, and a session's
// stale entry is checked by every pusher and expires with the set.
func (s *Store) finishedIn(ctx context.Context, p redis.Pipeliner, j Job) {
	p.ZRem(ctx, s.deadlineIndexKey(), j.ID)
	p.Incr(ctx, s.statsKey("jobs_finished:"+string(j.Status)))
	p.SRem(ctx, s.sessionKey(j.SessionCode), j.ID)
}

// unfinish takes back the writes finishedIn sent along with a commit of
// j that did not land, in one round trip: the job keeps its deadline entry
// at deadline, its stored one (NX: an entry there stays), and its session
// entry. A commit whose outcome is unknown is taken back too: had it
// landed after all, the job keeps a stale deadline entry and session entry
// (both harmless, as above) and its count is one short; so does a job
// that the writer it lost to finished (its count is right). Should the
// writer die before this, the job misses its deadline entry while its
// task lives on (asynq runs it again), and that run writes them all again
// when it finishes the job.
func (s *Store) unfinish(ctx context.Context, j Job, deadline time.Time) {
	ctx = context.WithoutCancel(ctx)
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Decr(ctx, s.statsKey("jobs_finished:"+string(j.Status)))
		p.ZAddNX(ctx, s.deadlineIndexKey(), redis.Z{Score: float64(deadline.Unix()), Member: j.ID})
		s.indexSessionIn(ctx, p, j.SessionCode, j.ID, deadline)
		return nil
	})
}

// commitResult is what one compare-and-set did: whether it committed, and
// the events it is sure it stored with the bodies it sent.
type commitResult struct {
	committed bool
	fresh     []CommittedEvent
	// listed: the job's listing move went with the compare-and-set, in its
	// round trip, whatever the compare-and-set then did (see commitDoc).
	listed bool
	// slotsSent: the change's slot takes went along too; slotsTaken: they
	// took every slot, and the compare-and-set committed.
	slotsSent, slotsTaken bool
	// finishSent: the writes of a job reaching a final status (finishedIn)
	// went along too, whatever the compare-and-set then did.
	finishSent bool
}

// commit runs the compare-and-set of r's job at version, with the
// change's events added to the record (an event it already holds keeps its
// body: a re-run of a change resends what was stored); it returns the
// record it wrote and what the commit did. moved says the change moved the
// job's deadline, and with it the expiry of its keys.
func (s *Store) commit(ctx context.Context, r record, moved bool, version string, before Status, change Change, now time.Time) ([]byte, commitResult, error) {
	j := r.Job
	var fresh []CommittedEvent
	for _, e := range change.Events {
		if r.has(e.ID) {
			continue
		}
		body, err := json.Marshal(EventBody{Type: e.Type, Timestamp: now.UTC(), Data: j.Public()})
		if err != nil {
			return nil, commitResult{}, fmt.Errorf("encode event %s: %w", e.ID, err)
		}
		r.Events = append(r.Events, storedEvent{ID: e.ID, Body: body})
		fresh = append(fresh, CommittedEvent{ID: e.ID, Type: e.Type, Body: body})
	}
	spilled := r.spill()
	doc, err := marshalRecord(r)
	if err != nil {
		return nil, commitResult{}, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	res, err := s.commitDoc(ctx, r, doc, spilled, moved, version, before, change, fresh, now)
	if res.committed {
		// This record is the one stored, a re-run recognised by its
		// nonce included (its first run wrote these very bytes).
		res.fresh = fresh
	}
	return doc, res, err
}

// commitDoc runs the compare-and-set of the record doc; fresh are the
// events this commit adds to it.
func (s *Store) commitDoc(ctx context.Context, r record, doc []byte, spilled []storedEvent, moved bool, version string, before Status, change Change, fresh []CommittedEvent, now time.Time) (commitResult, error) {
	j := r.Job
	args := []any{version, string(j.Status), doc, s.ttl(j, now).Milliseconds(), newNonce(), flag(r.EventsSpilled), flag(moved), len(spilled)}
	for _, e := range spilled {
		packed, err := pack(e.Body)
		if err != nil {
			return commitResult{}, fmt.Errorf("pack event %s: %w", e.ID, err)
		}
		args = append(args, e.ID, packed)
	}
	args = append(args, len(change.Outbox))
	args = appendOutboxFields(args, change.Outbox)
	args = append(args, len(change.Messages))
	for _, m := range change.Messages {
		raw, err := encodeMessage(m)
		if err != nil {
			return commitResult{}, fmt.Errorf("encode message %s: %w", m.ID, err)
		}
		// Only a message of an event made before this commit can have a
		// record an earlier version stored under its full id (a re-run of
		// the change that made the event); a fresh event's messages skip
		// the script's look at that field.
		field, legacy := messageFields(j.ID, m.ID)
		if slices.ContainsFunc(fresh, func(e CommittedEvent) bool { return e.ID == m.EventID }) {
			legacy = ""
		}
		args = append(args, field, legacy, raw)
	}
	durable := change.Durable && s.minReplicas > 0
	seat, others := s.splitSeat(j.ID, change.Slots, durable)
	args = append(args, seat...)
	if err := s.prepareCommit(ctx, j.ID, change); err != nil {
		return commitResult{}, err
	}
	keys := []string{s.jobKey(j.ID), s.eventsKey(j.ID), s.messagesKey(j.ID)}
	// A change of status moves the job's listing in the commit's round
	// trip, not in one after it: the move is sent before the outcome is
	// known. When the commit lands, that is the move afterCommit would have
	// made (on Cluster the nodes may apply it first: listings check each
	// job's status as they read it). When it loses, the job is listed under
	// the status it was about to leave again (UpdateFrom's relist): the
	// loss leaves at worst an extra entry, which listings skip, and, should
	// the writer die before relisting, a job missing from its status's
	// listing until its next move. The status listing is best effort, like
	// every listing write.
	//
	// The slots of the delivery the writer makes next go along the same
	// way (Change.Slots), the job's own seat in the script itself;
	// UpdateFrom gives them back unless the commit landed and took them
	// all.
	//
	// So do the writes of a job reaching a final status (finishedIn): when
	// the commit does not land, UpdateFrom takes them back (unfinish)
	// before it tries again.
	sent := commitResult{listed: j.Status != before && !durable, slotsSent: change.Slots != nil && !durable,
		finishSent: j.Status.Final() && !before.Final() && !durable}
	var along func(redis.Pipeliner)
	var taking *slotTaking
	if sent.listed || len(others) > 0 || sent.finishSent {
		along = func(p redis.Pipeliner) {
			if sent.listed {
				s.indexListingIn(ctx, p, j, before, false)
			}
			if sent.finishSent {
				s.finishedIn(ctx, p, j)
			}
			if len(others) > 0 {
				taking = s.takeSlotsIn(ctx, p, change.Slots.Holder, change.Slots.Lease, others)
			}
		}
	}
	res, replicas, err := s.runUpdate(ctx, keys, args, durable, along)
	if err != nil {
		// The listing may have moved (relisting only adds an entry, so it
		// is harmless when the commit landed after all).
		return sent, fmt.Errorf("update job %s: %w", j.ID, err)
	}
	res, seatReply, seatAsked := strings.Cut(res, ":")
	switch res {
	case "ok", "ok-again":
		// "ok-again": a re-run recognised by its nonce after a lost reply.
		done := sent
		done.committed = true
		if sent.slotsSent {
			// A slot full or a take that failed leaves the delivery to take
			// its slots itself, or its task to. Full: settleSlots gave every
			// other one back already; what may still be held, UpdateFrom
			// gives back.
			seated := seatAsked && seatReply == "seat"
			taken, mayHold := true, seated
			if taking != nil {
				var settleErr error
				taken, settleErr = s.settleSlots(ctx, taking)
				mayHold = mayHold || taken || settleErr != nil
			}
			done.slotsTaken = taken && (seated || !seatAsked)
			done.slotsSent = mayHold
		}
		if change.Durable && replicas < s.minReplicas {
			return done, fmt.Errorf("job %s: %d of %d replicas within %s: %w", j.ID, replicas, s.minReplicas, s.replicaTimeout, ErrNotReplicated)
		}
		return done, nil
	case "conflict":
		return sent, nil
	case "notfound":
		return commitResult{slotsSent: sent.slotsSent}, fmt.Errorf("job %s: %w", j.ID, ErrNotFound)
	case "illegal":
		return sent, fmt.Errorf("job %s to %s: %w", j.ID, j.Status, ErrIllegalTransition)
	}
	return commitResult{slotsSent: sent.slotsSent}, fmt.Errorf("update job %s: unexpected script reply %q", j.ID, res)
}

// splitSeat returns the update script's last arguments, the job's own
// seat among slots taken in the commit (seats.lua: holder, lease end, now,
// limit; an empty holder when there is none), and the other slots, to take
// along in its pipeline. A durable commit takes none.
func (s *Store) splitSeat(jobID string, take *SlotTake, durable bool) (seat []any, others []Slot) {
	seat = []any{"", 0, 0, 0}
	if take == nil || durable {
		return seat, nil
	}
	for _, sl := range take.Slots {
		if id, ok := slotJob(sl.Destination); ok && id == jobID {
			seat = seatArgs(take.Holder, s.now(), take.Lease, sl.Limit)
			continue
		}
		others = append(others, sl)
	}
	return seat, others
}

// prepareCommit writes, before a commit, the cross-job entries that must
// not be missing if the writer dies right after it, in one round trip:
//   - the outbox index entry, unless the writer comes back (Change.Redone):
//     a crash between the two leaves an entry pointing at nothing
//     (harmless) rather than an outbox nobody will ever flush (indexed
//     again after it: see afterCommit);
//   - each new message's endpoint listing (IndexEndpointMessage); a
//     message needs no lookup by id, its event id carries the job
//     (JobOfEvent).
//
// Each is safe to repeat; a commit that then fails leaves them pointing
// at nothing, which their readers skip.
func (s *Store) prepareCommit(ctx context.Context, jobID string, change Change) error {
	indexOutbox := len(change.Outbox) > 0 && !change.Redone
	if !indexOutbox && len(change.Messages) == 0 {
		return nil
	}
	if len(change.Messages) == 0 {
		return s.indexOutbox(ctx, jobID)
	}
	var index *redis.Cmd
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if indexOutbox {
			index = s.indexOutboxIn(ctx, p, jobID)
		}
		for _, m := range change.Messages {
			if m.Destination != DestinationJob {
				s.indexEndpointMessageIn(ctx, p, m.Destination, m.ID, m.CreatedAt)
			}
		}
		return nil
	})
	if index != nil {
		if err = cmdsErr(cmds, index); err == nil {
			_, err = s.indexedScore(ctx, index, jobID)
		}
	}
	if err != nil {
		return fmt.Errorf("prepare the commit of job %s: %w", jobID, err)
	}
	return nil
}

// runUpdate runs the update script; when durable, it also waits for the
// replicas on the same connection: WAIT counts the replicas that reached
// this connection's last write, so script and WAIT go in one pipeline to
// the primary that owns the job's slot. A re-sent pipeline (a lost reply)
// is harmless: the script recognises its nonce, and WAIT only waits.
//
// along, when not nil, queues the commands that go in the script's round
// trip, after it, whatever it then does (see commitDoc). Not with
// durable: that pipeline goes to the job's primary only.
func (s *Store) runUpdate(ctx context.Context, keys []string, args []any, durable bool, along func(redis.Pipeliner)) (string, int, error) {
	if !durable {
		if along == nil {
			res, err := updateScript.Run(ctx, s.rdb, keys, args...).Text()
			return res, 0, err
		}
		res, err := s.runScriptAlong(ctx, updateScript, keys, args, nil, along).Text()
		return res, 0, err
	}
	var primary redis.Cmdable = s.rdb
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return "", 0, fmt.Errorf("find the primary of %s: %w", keys[0], err)
		}
		primary = node
	}
	pipe := primary.Pipeline()
	script := updateScript.Eval(ctx, pipe, keys, args...)
	wait := pipe.Do(ctx, "WAIT", s.minReplicas, s.replicaTimeout.Milliseconds())
	if _, err := pipe.Exec(ctx); err != nil {
		return "", 0, err
	}
	res, err := script.Text()
	if err != nil {
		return "", 0, err
	}
	n, err := wait.Int()
	if err != nil {
		return "", 0, fmt.Errorf("WAIT: %w", err)
	}
	return res, n, nil
}

// newNonce returns a value unique to one write attempt, by which a script
// re-sent after a lost reply recognises its own earlier run.
// 96 random bits: a collision between two attempts at one job is out of
// reach, and the field costs Redis 24 bytes (a UUID's 36 characters took 48).
func newNonce() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// flag is a script's boolean argument.
func flag(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sliceInt reads element i of a script's array reply as an integer.
func sliceInt(res []any, i int) (int64, bool) {
	if i >= len(res) {
		return 0, false
	}
	n, ok := res[i].(int64)
	return n, ok
}

// ttl is how long a job's keys live from now: a finished job is kept for the
// retention period; an unfinished one until its deadline plus the retention
// period, so that nothing outlives its usefulness even if every worker dies.
func (s *Store) ttl(j Job, now time.Time) time.Duration {
	if j.Status.Final() {
		return s.retention
	}
	until := j.Deadline.Sub(now)
	if until < 0 {
		until = 0
	}
	return until + s.retention
}

// Outbox returns the job's outbox entries not yet acknowledged: the job
// hash's outbox fields, and the entries of the outbox hash where versions
// before outbox fields kept them (legacyOutboxKey), in one round trip.
func (s *Store) Outbox(ctx context.Context, jobID string) ([]OutboxEntry, error) {
	var job, legacy *redis.MapStringStringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		job = p.HGetAll(ctx, s.jobKey(jobID))
		legacy = p.HGetAll(ctx, s.legacyOutboxKey(jobID))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox of job %s: %w", jobID, err)
	}
	var out []OutboxEntry
	for k, v := range job.Val() {
		if id, ok := strings.CutPrefix(k, outboxFieldPrefix); ok {
			out = append(out, OutboxEntry{ID: id, Data: []byte(v)})
		}
	}
	for k, v := range legacy.Val() {
		if !slices.ContainsFunc(out, func(e OutboxEntry) bool { return e.ID == k }) {
			out = append(out, OutboxEntry{ID: k, Data: []byte(v)})
		}
	}
	return out, nil
}

// outboxFieldPrefix begins the name of every outbox field of a job hash,
// which no other field of it does. A job's outbox lives in its own hash:
// the commit that writes the entries writes them in the same HSET as the
// job, and they expire with it, so an outbox costs no commands of its own
// but the acknowledgement.
const outboxFieldPrefix = "o:"

// appendOutboxFields appends entries to a script's arguments as job hash
// fields and their data.
func appendOutboxFields(args []any, entries []OutboxEntry) []any {
	for _, e := range entries {
		args = append(args, outboxFieldPrefix+e.ID, e.Data)
	}
	return args
}

// outboxFields names entries' job hash fields.
func outboxFields(ids []string) []string {
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = outboxFieldPrefix + id
	}
	return fields
}

// indexOutbox scores the job's outbox index entry with the clock, raised
// past its current score (index_outbox.lua): every index write changes the
// score, which is what lets a flush's guarded drop tell a re-index.
func (s *Store) indexOutbox(ctx context.Context, jobID string) error {
	_, err := s.indexOutboxScore(ctx, jobID)
	return err
}

// indexOutboxScore is indexOutbox, and returns the score written.
func (s *Store) indexOutboxScore(ctx context.Context, jobID string) (float64, error) {
	cmd := indexOutboxScript.Run(ctx, s.rdb, []string{s.outboxIndexKey()}, jobID, s.now().UnixMilli())
	score, err := scoreOf(cmd)
	if err != nil {
		return 0, fmt.Errorf("index outbox of job %s: %w", jobID, err)
	}
	return score, nil
}

// indexOutboxIn queues the outbox index write in a pipeline, by the
// script's hash: a Redis that does not hold the script (a restart, a
// failover) answers NOSCRIPT, and the caller then reads the write's score
// with indexedScore, which runs it the plain way.
func (s *Store) indexOutboxIn(ctx context.Context, p redis.Pipeliner, jobID string) *redis.Cmd {
	return indexOutboxScript.EvalSha(ctx, p, []string{s.outboxIndexKey()}, jobID, s.now().UnixMilli())
}

// indexedScore is the score a pipelined indexOutboxIn wrote for jobID; one
// that found no script (NOSCRIPT) is run again the plain way, which loads
// it.
func (s *Store) indexedScore(ctx context.Context, index *redis.Cmd, jobID string) (float64, error) {
	if isNoScript(index.Err()) {
		return s.indexOutboxScore(ctx, jobID)
	}
	return scoreOf(index)
}

// scoreOf reads the score index_outbox.lua answers.
func scoreOf(cmd *redis.Cmd) (float64, error) {
	text, err := cmd.Text()
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(text, 64)
}

// cmdsErr returns the first error of a pipeline's commands, leaving out
// the best-effort ones.
func cmdsErr(cmds []redis.Cmder, bestEffort ...redis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !slices.Contains(bestEffort, c) {
			return err
		}
	}
	return nil
}

// runScriptAlong runs script in one pipeline with the commands before and
// after queue (either may be nil), so that all cost one round trip; on one
// connection they run in that order. A script Redis does not hold
// (NOSCRIPT: a restart, SCRIPT FLUSH) is run again the plain way, which
// loads it, after both; their commands ran either way.
func (s *Store) runScriptAlong(ctx context.Context, script *redis.Script, keys []string, args []any, before, after func(redis.Pipeliner)) *redis.Cmd {
	var cmd *redis.Cmd
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if before != nil {
			before(p)
		}
		cmd = script.EvalSha(ctx, p, keys, args...)
		if after != nil {
			after(p)
		}
		return nil
	})
	if isNoScript(cmd.Err()) {
		cmd = script.Run(ctx, s.rdb, keys, args...)
	}
	return cmd
}

func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// IndexEntry is a job id in one of the cross-job indexes, with its score.
type IndexEntry struct {
	JobID string
	Score float64
}

// StaleOutboxes returns up to limit jobs whose outbox was last written
// before the given time: candidates for a sweeper to flush.
func (s *Store) StaleOutboxes(ctx context.Context, before time.Time, limit int64) ([]IndexEntry, error) {
	return s.rangeIndex(ctx, s.outboxIndexKey(), float64(before.UnixMilli()), limit)
}

// DropOutboxIndex removes a job from the outbox index if its entry was not
// refreshed since it was read (a refresh means a new outbox write). Safe to
// re-run blindly: see zrem_if_score.lua.
func (s *Store) DropOutboxIndex(ctx context.Context, e IndexEntry) error {
	score := strconv.FormatFloat(e.Score, 'f', -1, 64)
	if err := zremIfScoreScript.Run(ctx, s.rdb, []string{s.outboxIndexKey()}, e.JobID, score).Err(); err != nil {
		return fmt.Errorf("drop outbox index of job %s: %w", e.JobID, err)
	}
	return nil
}

// Overdue returns up to limit unfinished jobs whose deadline passed before
// the given time.
func (s *Store) Overdue(ctx context.Context, before time.Time, limit int64) ([]IndexEntry, error) {
	return s.rangeIndex(ctx, s.deadlineIndexKey(), float64(before.Unix()), limit)
}

// DropDeadlineIndex removes a job from the deadline index.
func (s *Store) DropDeadlineIndex(ctx context.Context, jobID string) error {
	if err := s.rdb.ZRem(ctx, s.deadlineIndexKey(), jobID).Err(); err != nil {
		return fmt.Errorf("drop deadline index of job %s: %w", jobID, err)
	}
	return nil
}

func (s *Store) rangeIndex(ctx context.Context, key string, max float64, limit int64) ([]IndexEntry, error) {
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatFloat(max, 'f', -1, 64), Count: limit,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", key, err)
	}
	out := make([]IndexEntry, 0, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		out = append(out, IndexEntry{JobID: id, Score: z.Score})
	}
	return out, nil
}
