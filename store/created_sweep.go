package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A new job is created without an outbox: its creator enqueues its request
// task right after the creation, and a creator that dies in between leaves
// the job queued with no task. The sweeper finds such jobs by reading the
// creation listing forward from a cursor, once per job, well behind the
// creators (its grace): an entry read is a job either still queued, whose
// request task it enqueues again (a task asynq still holds makes that a
// no-op), or one that moved on. The creation entry is written before the
// job (Create), so no job exists that the cursor cannot meet, unless its
// creator stalled longer than the grace between stamping CreatedAt and
// that write and then died before enqueueing: such a job is timed out at
// its deadline, with its final webhook, and a client's repeat of the
// request (same idempotency key) enqueues its task at once.

func (s *Store) createdSweepKey() string { return s.ns + ":sweep:created" }

// CreatedCursor is how far the sweep of new jobs has read the creation
// listing: every entry scored below MS, and the first Skip entries scored
// MS (entries of one millisecond are ordered by job id, and a batch may end
// among them).
type CreatedCursor struct {
	MS   int64
	Skip int64
}

// CreatedSweepCursor returns the cursor the last sweep saved; ok is false
// when there is none (a first sweep, or one after the key expired).
func (s *Store) CreatedSweepCursor(ctx context.Context) (c CreatedCursor, ok bool, err error) {
	v, err := s.rdb.Get(ctx, s.createdSweepKey()).Result()
	if errors.Is(err, redis.Nil) {
		return CreatedCursor{}, false, nil
	}
	if err != nil {
		return CreatedCursor{}, false, fmt.Errorf("read the sweep's creation cursor: %w", err)
	}
	ms, skip, found := strings.Cut(v, ":")
	c.MS, err = strconv.ParseInt(ms, 10, 64)
	if err == nil && found {
		c.Skip, err = strconv.ParseInt(skip, 10, 64)
	}
	if err != nil || !found || c.Skip < 0 {
		// Only this code writes the key: a value it cannot read is
		// treated as no cursor (the sweep starts over, which is harmless).
		return CreatedCursor{}, false, nil
	}
	return c, true, nil
}

// SaveCreatedSweepCursor saves c for the next sweep, for ttl. Several
// sweepers may save cursors in any order: one that saves an older cursor
// only makes the next sweep read some entries again, which is harmless.
func (s *Store) SaveCreatedSweepCursor(ctx context.Context, c CreatedCursor, ttl time.Duration) error {
	v := strconv.FormatInt(c.MS, 10) + ":" + strconv.FormatInt(c.Skip, 10)
	if err := s.rdb.Set(ctx, s.createdSweepKey(), v, ttl).Err(); err != nil {
		return fmt.Errorf("save the sweep's creation cursor: %w", err)
	}
	return nil
}

// CreatedAfter reads up to limit entries of the creation listing after c,
// scored at most upTo, and returns the ids of those jobs still queued, the
// cursor after the entries read, and how many it read (fewer than limit:
// the listing has no more up to upTo). Jobs that no longer exist are
// skipped. Two round trips: the range, and the statuses in one pipeline.
func (s *Store) CreatedAfter(ctx context.Context, c CreatedCursor, upTo time.Time, limit int64) (queued []string, next CreatedCursor, n int, err error) {
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, s.createdIndexKey(), &redis.ZRangeBy{
		Min: strconv.FormatInt(c.MS, 10), Max: strconv.FormatInt(upTo.UnixMilli(), 10),
		Offset: c.Skip, Count: limit,
	}).Result()
	if err != nil {
		return nil, c, 0, fmt.Errorf("read the creation listing: %w", err)
	}
	if len(zs) == 0 {
		return nil, c, 0, nil
	}
	statuses := make([]*redis.StringCmd, len(zs))
	cmds, _ := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			id, _ := z.Member.(string)
			statuses[i] = p.HGet(ctx, s.jobKey(id), "status")
		}
		return nil
	})
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) { // Nil: the job is gone
			return nil, c, 0, fmt.Errorf("read the status of %d new jobs: %w", len(zs), err)
		}
	}
	next = c
	for i, z := range zs {
		if ms := int64(z.Score); ms == next.MS {
			next.Skip++
		} else {
			next = CreatedCursor{MS: ms, Skip: 1}
		}
		if st, err := statuses[i].Result(); err == nil && Status(st) == StatusQueued {
			id, _ := z.Member.(string)
			queued = append(queued, id)
		}
	}
	return queued, next, len(zs), nil
}
