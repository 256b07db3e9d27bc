package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delivery slots bound how many deliveries to one destination run at once
// across every worker, so that a receiver that hangs holds a few workers,
// not all of them.
//
// Each destination's slots are a sorted set of its own, and the keys are
// cross-job: a delivery's slots are taken by one script run per key, never
// one multi-key script, but all in one pipeline (a Cluster client splits it
// per node), so that taking and giving back a delivery's slots costs a
// round trip each, not one per slot.

func (s *Store) slotsKey(destination string) string {
	sum := sha256.Sum256([]byte(destination))
	return s.ns + ":slots:{" + hex.EncodeToString(sum[:8]) + "}"
}

// Slot is one limit a delivery counts against: Limit holders at once of
// Destination's slots.
type Slot struct {
	Destination string
	Limit       int
}

// AcquireSlots takes one of each slot's Limit for holder, for at most lease
// (a holder that dies frees its slots when the lease ends), in one round
// trip. It reports true when it took every one. It reports false when one
// is full, and returns an error when the store failed; either way the
// holder may hold some of slots (the free ones, or one whose reply was
// lost), and the caller gives them all back with ReleaseSlots. Taking a
// slot again is harmless: a holder that already holds it only moves its
// lease.
func (s *Store) AcquireSlots(ctx context.Context, holder string, lease time.Duration, slots []Slot) (bool, error) {
	if len(slots) == 0 {
		return true, nil
	}
	now := s.now()
	args := func(sl Slot) ([]string, []any) {
		return []string{s.slotsKey(sl.Destination)}, []any{holder, now.UnixMilli(), now.Add(lease).UnixMilli(), sl.Limit}
	}
	cmds := make([]*redis.Cmd, len(slots))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sl := range slots {
			keys, argv := args(sl)
			cmds[i] = acquireSlotScript.EvalSha(ctx, p, keys, argv...)
		}
		return nil
	})
	if err != nil && !isNoScript(err) {
		return false, fmt.Errorf("acquire %d delivery slots: %w", len(slots), err)
	}
	all := true
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			// The pipeline's EVALSHA found no script (a restarted Redis):
			// take this slot the plain way, which loads it.
			keys, argv := args(slots[i])
			cmd = acquireSlotScript.Run(ctx, s.rdb, keys, argv...)
		}
		ok, err := cmd.Int()
		if err != nil {
			return false, fmt.Errorf("acquire delivery slot %d of %d: %w", i+1, len(slots), err)
		}
		all = all && ok == 1
	}
	return all, nil
}

// ReleaseSlots gives holder's slots of destinations back, in one round
// trip. Giving back a slot not held is harmless.
func (s *Store) ReleaseSlots(ctx context.Context, holder string, destinations []string) error {
	if len(destinations) == 0 {
		return nil
	}
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range destinations {
			p.ZRem(ctx, s.slotsKey(d), holder)
		}
		return nil
	})
	if err != nil {
		var errs []error
		for i, cmd := range cmds {
			if cmd.Err() != nil {
				errs = append(errs, fmt.Errorf("%s: %w", destinations[i], cmd.Err()))
			}
		}
		if len(errs) == 0 {
			errs = append(errs, err)
		}
		return fmt.Errorf("release delivery slots: %w", errors.Join(errs...))
	}
	return nil
}
