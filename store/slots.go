package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// Delivery slots bound how many deliveries to one destination run at once
// across every worker, so that a receiver that hangs holds a few workers,
// not all of them.

func (s *Store) slotsKey(destination string) string {
	sum := sha256.Sum256([]byte(destination))
	return s.ns + ":slots:{" + hex.EncodeToString(sum[:8]) + "}"
}

// AcquireSlot takes one of limit slots of destination for holder, for at
// most lease (a holder that dies frees its slot when the lease ends). It
// reports false when every slot is taken.
func (s *Store) AcquireSlot(ctx context.Context, destination, holder string, limit int, lease time.Duration) (bool, error) {
	now := s.now()
	ok, err := acquireSlotScript.Run(ctx, s.rdb, []string{s.slotsKey(destination)},
		holder, now.UnixMilli(), now.Add(lease).UnixMilli(), limit).Int()
	if err != nil {
		return false, fmt.Errorf("acquire a delivery slot: %w", err)
	}
	return ok == 1, nil
}

// ReleaseSlot gives a slot back.
func (s *Store) ReleaseSlot(ctx context.Context, destination, holder string) error {
	if err := s.rdb.ZRem(ctx, s.slotsKey(destination), holder).Err(); err != nil {
		return fmt.Errorf("release a delivery slot: %w", err)
	}
	return nil
}
