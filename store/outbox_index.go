package store

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The outbox index (<ns>:index:outbox) holds one entry per job whose outbox
// may hold entries, scored by the ms of the last index write. Its life:
//   - a commit (Create, Update) indexes the job BEFORE it writes outbox
//     entries, so a crash between the two leaves an entry pointing at
//     nothing rather than an outbox nobody will flush;
//   - a flush (tasks.Enqueuer) reads the entry's score BEFORE it reads the
//     outbox, enqueues, acknowledges, and drops the entry when the outbox
//     is then empty, only if the score is unchanged (zrem_if_score.lua);
//     index_outbox.lua makes every index write change the score, so an
//     entry re-indexed by a commit after the flush read it survives;
//   - a flush that leaves entries behind (an enqueue failed, or a commit
//     added some) re-indexes the job: the entry moves to the back, and the
//     sweeper retries it after its grace instead of meeting it first again;
//   - the sweeper flushes entries older than its grace: outboxes whose
//     writer died between its commit and its own flush.
//
// The one window left: a commit that indexed the job before a concurrent
// flush read the score, and whose outbox write lands only after that flush
// found the outbox empty, has its entry dropped. Its writer then flushes
// what it committed itself, as every writer does after a commit; only if it
// also dies between its commit and that flush is the outbox left unindexed
// (until the job's keys expire). It needs two writers on one job at once, a
// commit stalled between its two round trips for the whole of the other's
// flush, and a crash in the next few milliseconds.

var (
	//go:embed lua/index_outbox.lua
	indexOutboxSource string
	indexOutboxScript = redis.NewScript(indexOutboxSource)
)

// OutboxIndexEntry returns the job's entry in the outbox index, if any. A
// flush reads it before it reads the outbox and passes it to
// DropOutboxIndex once the outbox is empty.
func (s *Store) OutboxIndexEntry(ctx context.Context, jobID string) (IndexEntry, bool, error) {
	score, err := s.rdb.ZScore(ctx, s.outboxIndexKey(), jobID).Result()
	if errors.Is(err, redis.Nil) {
		return IndexEntry{JobID: jobID}, false, nil
	}
	if err != nil {
		return IndexEntry{}, false, fmt.Errorf("read outbox index of job %s: %w", jobID, err)
	}
	return IndexEntry{JobID: jobID, Score: score}, true, nil
}

// TouchOutboxIndex (re-)indexes the job's outbox as written now: a flush
// that leaves entries behind calls it so that they stay findable and go to
// the back of the sweeper's queue.
func (s *Store) TouchOutboxIndex(ctx context.Context, jobID string) error {
	return s.indexOutbox(ctx, jobID)
}

// AckOutboxLeft removes entries that have been enqueued and returns how
// many entries the outbox still holds, in one pipeline on the job's slot:
// the removal from the job hash's outbox fields and from the outbox hash
// of earlier versions (see Outbox), then the count of both, so the count
// is read after the removal; no MULTI is needed, since a write landing
// between the two is one that could as well have landed just after the
// count. A blind re-run (a lost reply) deletes nothing more and counts
// again.
func (s *Store) AckOutboxLeft(ctx context.Context, jobID string, ids ...string) (int64, error) {
	var fields *redis.StringSliceCmd
	var legacy *redis.IntCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(ids) > 0 {
			p.HDel(ctx, s.jobKey(jobID), outboxFields(ids)...)
			p.HDel(ctx, s.legacyOutboxKey(jobID), ids...)
		}
		fields = p.HKeys(ctx, s.jobKey(jobID))
		legacy = p.HLen(ctx, s.legacyOutboxKey(jobID))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ack outbox of job %s: %w", jobID, err)
	}
	left := legacy.Val()
	for _, f := range fields.Val() {
		if strings.HasPrefix(f, outboxFieldPrefix) {
			left++
		}
	}
	return left, nil
}

// AckOutbox removes entries that have been enqueued, for a writer that
// wrote no index entry (Change.Redone): it needs no count of what is left.
// The entries are the writer's own commit's, so they are job hash fields;
// an entry of the same task an earlier version left in its outbox hash
// stays for a Flush (which reads both) or its expiry. A blind re-run
// deletes nothing more.
func (s *Store) AckOutbox(ctx context.Context, jobID string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := s.rdb.HDel(ctx, s.jobKey(jobID), outboxFields(ids)...).Err(); err != nil {
		return fmt.Errorf("ack outbox of job %s: %w", jobID, err)
	}
	return nil
}

// fixDeadlineIndexIn queues, in a pipeline, the deadline index entry of a job Create found or
// made (after Create's ZADD NX, which keeps whatever entry was there): a new
// job gets its own deadline (an earlier attempt that died before creating
// the job may have left the NX entry with its deadline); a repeat leaves
// the stored job's deadline, which a repeat's later one must not push back
// (XX: a job that finished meanwhile keeps no entry); a final job needs no
// entry. Each command is safe to re-run blindly; one that lands after a
// concurrent finish leaves a stale entry the sweeper drops.
func (s *Store) fixDeadlineIndexIn(ctx context.Context, p redis.Pipeliner, j Job, created bool) {
	z := redis.Z{Score: float64(j.Deadline.Unix()), Member: j.ID}
	switch {
	case created:
		p.ZAdd(ctx, s.deadlineIndexKey(), z)
	case j.Status.Final():
		p.ZRem(ctx, s.deadlineIndexKey(), j.ID)
	default:
		p.ZAddXX(ctx, s.deadlineIndexKey(), z)
	}
}
