package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The session index finds the live jobs of a CSM session, for CSM's own
// (account) webhooks, which name a session, not a job. It is a set per
// session, `<ns>:session:{<code>}`, a key of its own outside every job's
// hash tag: each command on it touches that one key, so it is Cluster-safe,
// and each is safe to repeat (go-redis re-sends after network errors).
// Entries may go stale (a finished job whose removal was lost): readers
// check each job, and the set expires a while after the last deadline of
// the jobs added to it.

// sessionIndexSlack keeps a session's set past the deadline of its last
// job, so that a push arriving right at the deadline still finds it.
const sessionIndexSlack = time.Hour

// pushMarkTTL bounds the life of a job's push counter: it only has to
// outlive one poll (a poll task runs for at most a few minutes).
const pushMarkTTL = 15 * time.Minute

func (s *Store) sessionKey(code string) string { return s.ns + ":session:{" + code + "}" }
func (s *Store) pushesKey(id string) string    { return s.ns + ":{" + id + "}:pushes" }

// IndexSession records that job jobID, due to end by deadline, belongs to
// session code. Safe to repeat: SADD adds once, and the set's expiry only
// ever moves later (NX sets the first one, GT extends it).
func (s *Store) IndexSession(ctx context.Context, code, jobID string, deadline time.Time) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		s.indexSessionIn(ctx, p, code, jobID, deadline)
		return nil
	})
	if err != nil {
		return fmt.Errorf("index job %s under session %s: %w", jobID, code, err)
	}
	return nil
}

// indexSessionIn queues IndexSession's commands in a pipeline and returns
// them.
func (s *Store) indexSessionIn(ctx context.Context, p redis.Pipeliner, code, jobID string, deadline time.Time) []redis.Cmder {
	key := s.sessionKey(code)
	// Never zero or less: EXPIRE with that would delete the set.
	ttl := max(deadline.Add(sessionIndexSlack).Sub(s.now()), sessionIndexSlack)
	return []redis.Cmder{p.SAdd(ctx, key, jobID), p.ExpireNX(ctx, key, ttl), p.ExpireGT(ctx, key, ttl)}
}

// maxSessionJobs bounds what one push reads: a session has a handful of
// jobs (one per preview requested on it).
const maxSessionJobs = 100

// SessionJobs returns the ids of the jobs indexed under session code (at
// most maxSessionJobs of them; possibly stale).
func (s *Store) SessionJobs(ctx context.Context, code string) ([]string, error) {
	ids, err := s.rdb.SRandMemberN(ctx, s.sessionKey(code), maxSessionJobs).Result()
	if err != nil {
		return nil, fmt.Errorf("read jobs of session %s: %w", code, err)
	}
	return ids, nil
}

// UnindexSession removes job jobID from session code's set. Safe to repeat.
func (s *Store) UnindexSession(ctx context.Context, code, jobID string) error {
	if err := s.rdb.SRem(ctx, s.sessionKey(code), jobID).Err(); err != nil {
		return fmt.Errorf("unindex job %s from session %s: %w", jobID, code, err)
	}
	return nil
}

// NotePush counts a push (a CSM webhook) for job jobID. A poll compares the
// count before its session read with the count after its commit: a change
// means a push arrived while it polled, so the next poll runs at once. A
// re-sent INCR only counts one push twice, which reads the same way.
func (s *Store) NotePush(ctx context.Context, jobID string) error {
	key := s.pushesKey(jobID)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, key)
		p.PExpire(ctx, key, pushMarkTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("note push for job %s: %w", jobID, err)
	}
	return nil
}

// Pushes returns the push count of job jobID (0 when none is recorded).
func (s *Store) Pushes(ctx context.Context, jobID string) (int64, error) {
	v, err := s.rdb.Get(ctx, s.pushesKey(jobID)).Result()
	if err == redis.Nil {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read pushes of job %s: %w", jobID, err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read pushes of job %s: %w", jobID, err)
	}
	return n, nil
}
