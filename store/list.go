package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Listing indexes: every job by creation time, and jobs by status. They are
// sorted sets written after the job's own commit (separate, repeatable
// commands), so a listing checks each job it reads and skips entries that
// are stale; the sweeper trims entries older than any job can live.

func (s *Store) createdIndexKey() string { return s.ns + ":index:created" }
func (s *Store) statusIndexKey(st Status) string {
	return s.ns + ":index:status:" + string(st)
}
func (s *Store) statsKey(name string) string { return s.ns + ":stats:" + name }

// indexListingIn queues, in a pipeline, the listing entries of a job now
// in its status, out of the previous one; withCreated adds the creation
// entry, which Create writes before the job exists and whose score never
// changes, so that a status change need not write it again.
func (s *Store) indexListingIn(ctx context.Context, p redis.Pipeliner, j Job, previous Status, withCreated bool) {
	z := redis.Z{Score: float64(j.CreatedAt.UnixMilli()), Member: j.ID}
	if withCreated {
		p.ZAdd(ctx, s.createdIndexKey(), z)
	}
	p.ZAdd(ctx, s.statusIndexKey(j.Status), z)
	if previous != "" && previous != j.Status {
		p.ZRem(ctx, s.statusIndexKey(previous), j.ID)
	}
}

// ListOptions select a page of jobs, newest first.
type ListOptions struct {
	Status Status // "" for every status
	Limit  int    // 1..200; default 50
	Cursor string // from the previous page; "" for the first
	// CreatedBefore, when set, lists only jobs created before it ("older
	// than"): the index is read from there down, not filtered after.
	CreatedBefore time.Time
}

// ErrBadCursor: the cursor was not one List returned.
var ErrBadCursor = errors.New("invalid cursor")

// List returns a page of jobs, newest first, and the cursor of the next
// page ("" when this is the last).
func (s *Store) List(ctx context.Context, opts ListOptions) ([]Job, string, error) {
	if opts.Limit <= 0 {
		opts.Limit = 50
	}
	opts.Limit = min(opts.Limit, 200)
	key := s.createdIndexKey()
	if opts.Status != "" {
		key = s.statusIndexKey(opts.Status)
	}
	max, afterID := "+inf", ""
	if !opts.CreatedBefore.IsZero() {
		max = "(" + strconv.FormatInt(opts.CreatedBefore.UnixMilli(), 10)
	}
	if opts.Cursor != "" {
		score, id, err := decodeCursor(opts.Cursor)
		if err != nil {
			return nil, "", err
		}
		max, afterID = strconv.FormatInt(score, 10), id
	}
	var out []Job
	for len(out) < opts.Limit {
		// Over-fetch: entries sharing the cursor's score come again, and
		// stale entries are skipped.
		batch := int64(opts.Limit - len(out) + 20)
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Max: max, Min: "-inf", Count: batch}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("list jobs: %w", err)
		}
		if len(zs) == 0 {
			return out, "", nil
		}
		cursorScore, _ := strconv.ParseFloat(max, 64)
		var ids []string
		var scores []int64
		for _, z := range zs {
			id, _ := z.Member.(string)
			// Members with equal scores come in reverse lexical order.
			if afterID != "" && z.Score == cursorScore && id >= afterID {
				continue
			}
			ids = append(ids, id)
			scores = append(scores, int64(z.Score))
		}
		if len(ids) == 0 {
			if int64(len(zs)) < batch {
				return out, "", nil
			}
			// A page of entries all sharing the cursor's score: move past it.
			max, afterID = "("+max, ""
			continue
		}
		jobs, err := s.getMany(ctx, ids)
		if err != nil {
			return nil, "", err
		}
		for i, j := range jobs {
			max, afterID = strconv.FormatInt(scores[i], 10), ids[i]
			if j == nil || (opts.Status != "" && j.Status != opts.Status) {
				continue // expired, or moved to another status since indexed
			}
			out = append(out, *j)
			if len(out) == opts.Limit {
				return out, encodeCursor(scores[i], ids[i]), nil
			}
		}
		if int64(len(zs)) < batch {
			return out, "", nil
		}
	}
	return out, "", nil
}

func (s *Store) getMany(ctx context.Context, ids []string) ([]*Job, error) {
	cmds := make([]*redis.StringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGet(ctx, s.jobKey(id), "doc")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read jobs: %w", err)
	}
	out := make([]*Job, len(ids))
	for i, c := range cmds {
		doc, err := c.Result()
		if err != nil {
			continue
		}
		var j Job
		if unmarshalRecord([]byte(doc), &j) == nil {
			out[i] = &j
		}
	}
	return out, nil
}

func encodeCursor(score int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(score, 10) + ":" + id))
}

func decodeCursor(c string) (int64, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", ErrBadCursor
	}
	scoreText, id, ok := strings.Cut(string(raw), ":")
	score, err := strconv.ParseInt(scoreText, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", ErrBadCursor
	}
	return score, id, nil
}

// TrimListing drops listing entries of jobs created before the given time
// (their records have expired). The sweeper calls it.
func (s *Store) TrimListing(ctx context.Context, before time.Time) error {
	max := "(" + strconv.FormatInt(before.UnixMilli(), 10)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, s.createdIndexKey(), "-inf", max)
		for _, st := range Statuses {
			p.ZRemRangeByScore(ctx, s.statusIndexKey(st), "-inf", max)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("trim listing indexes: %w", err)
	}
	return nil
}

// Stats are cluster-wide job counters, kept in Redis so that every process
// reports the same totals.
type Stats struct {
	Created  int64
	Finished map[Status]int64
}

// Stats reads the job counters.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	keys := []string{s.statsKey("jobs_created")}
	var finals []Status
	for _, st := range Statuses {
		if st.Final() {
			finals = append(finals, st)
			keys = append(keys, s.statsKey("jobs_finished:"+string(st)))
		}
	}
	// One GET each: the keys have no common hash tag, and a Redis Cluster
	// refuses a cross-slot MGET.
	cmds := make([]*redis.StringCmd, len(keys))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Stats{}, fmt.Errorf("read job counters: %w", err)
	}
	st := Stats{Finished: map[Status]int64{}}
	st.Created, _ = cmds[0].Int64()
	for i, f := range finals {
		st.Finished[f], _ = cmds[i+1].Int64()
	}
	return st, nil
}
