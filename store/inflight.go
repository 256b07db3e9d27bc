package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// InFlight is what the status listing of one status not yet final says:
// how many jobs are in it and when the oldest of them was created.
type InFlight struct {
	Status Status
	// Count is the listing's entries less those the read found stale. A
	// listing entry is written after its job's commit, best effort, so an
	// entry whose removal was lost stays until the sweeper trims it by age;
	// the read finds those at the head of the listing, where such entries
	// gather (no job stays in flight past its deadline).
	Count int64
	// Oldest is the creation time of the oldest job that is still in
	// Status (checked against the job's record); zero when the listing
	// holds none. It is when the job was created, not when it entered
	// Status. Should the head hold more stale entries than one read
	// checks (inFlightScan), Oldest is that of the youngest entry checked:
	// later than any stale one, earlier than any live one.
	Oldest time.Time
}

// inFlightPage and inFlightScan bound the work of InFlight: entries of a
// listing's head checked per round trip, and in all.
const (
	inFlightPage = 8
	inFlightScan = 32
)

// InFlightStatuses are the statuses InFlight reports, in order.
func InFlightStatuses() []Status {
	var out []Status
	for _, st := range Statuses {
		if !st.Final() {
			out = append(out, st)
		}
	}
	return out
}

// InFlight reads, for every status not yet final, the size of its listing
// and the oldest job in it. It costs a few single-key commands per status
// whatever the number of jobs (ZCARD, then a ZRANGE of the listing's head
// and an HGET of each head entry's status): no scan, and every command is
// on one key, so a Redis Cluster client splits the pipelines by node.
func (s *Store) InFlight(ctx context.Context) ([]InFlight, error) {
	statuses := InFlightStatuses()
	out := make([]InFlight, len(statuses))
	cards := make([]*redis.IntCmd, len(statuses))
	heads := make([]*redis.ZSliceCmd, len(statuses))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, st := range statuses {
			out[i].Status = st
			cards[i] = p.ZCard(ctx, s.statusIndexKey(st))
			heads[i] = p.ZRangeWithScores(ctx, s.statusIndexKey(st), 0, inFlightPage-1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read status listings: %w", err)
	}
	pages := make([][]redis.Z, len(statuses))
	for i := range statuses {
		out[i].Count = cards[i].Val()
		pages[i] = heads[i].Val()
	}
	for offset := int64(0); ; offset += inFlightPage {
		open, err := s.checkHeads(ctx, out, pages)
		if err != nil {
			return nil, err
		}
		if len(open) == 0 || offset+inFlightPage >= inFlightScan {
			break
		}
		// Heads all stale so far: read the next page of those listings.
		next := make([]*redis.ZSliceCmd, len(statuses))
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range open {
				next[i] = p.ZRangeWithScores(ctx, s.statusIndexKey(statuses[i]), offset+inFlightPage, offset+2*inFlightPage-1)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read status listings: %w", err)
		}
		for i := range pages {
			pages[i] = nil
			if next[i] != nil {
				pages[i] = next[i].Val()
			}
		}
	}
	return out, nil
}

// checkHeads checks each page's entries, oldest first, against their jobs'
// records: the first still in its listing's status gives that listing's
// Oldest; stale ones are taken off its Count. It returns the listings
// whose page was full and stale throughout (those whose next page may
// hold the oldest), after giving them the youngest stale entry's time.
func (s *Store) checkHeads(ctx context.Context, out []InFlight, pages [][]redis.Z) ([]int, error) {
	status := make([][]*redis.StringCmd, len(pages))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, page := range pages {
			for _, z := range page {
				id, _ := z.Member.(string)
				status[i] = append(status[i], p.HGet(ctx, s.jobKey(id), "status"))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read job statuses: %w", err)
	}
	for _, cmds := range status {
		for _, c := range cmds {
			// Pipelined reports the first failure only; a record gone is
			// an answer, any other failure is not.
			if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("read job statuses: %w", err)
			}
		}
	}
	var open []int
	for i, page := range pages {
		found := false
		for k, z := range page {
			if Status(status[i][k].Val()) == out[i].Status {
				out[i].Oldest = time.UnixMilli(int64(z.Score))
				found = true
				break
			}
			// Expired, or moved on since it was indexed (a status never
			// moves back, so the entry will not become true again).
			out[i].Count = max(out[i].Count-1, 0)
		}
		if !found && len(page) == inFlightPage {
			out[i].Oldest = time.UnixMilli(int64(page[len(page)-1].Score))
			open = append(open, i)
		}
	}
	return open, nil
}
