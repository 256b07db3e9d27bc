package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

// TestSlotsTakenWithTheCommit: the delivery slots a change asks for are
// taken in its commit's round trip. The writer holds them when the commit
// lands and every slot had room; otherwise (a slot full, the first attempt
// lost and the next made no change, fn refused) the update gives back what
// it took, and the slots are free for others.
func TestSlotsTakenWithTheCommit(t *testing.T) {
	t.Parallel()
	errRefused := errors.New("refused on the fresh read")
	tests := []struct {
		name string
		// fullDomain: another holder has the domain slot's one place.
		fullDomain bool
		// meanwhile: another writer changed the job after the read, so the
		// first attempt loses; onFresh is the next attempt's change.
		meanwhile bool
		onFresh   func(j *store.Job, now time.Time) (store.Change, error)
		wantHeld  bool
		wantErr   error
	}{
		{name: "room in every slot", wantHeld: true},
		{name: "a slot full", fullDomain: true},
		{name: "lost, then taken again and committed", meanwhile: true, wantHeld: true},
		{name: "lost, then no change", meanwhile: true, onFresh: func(*store.Job, time.Time) (store.Change, error) {
			return store.Change{}, store.ErrNoChange
		}},
		{name: "lost, then refused", meanwhile: true, wantErr: errRefused, onFresh: func(*store.Job, time.Time) (store.Change, error) {
			return store.Change{}, errRefused
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newStore(t, nil)
			ctx := context.Background()
			job, seen := seenJob(t, s, tt.meanwhile)
			domain := store.Slot{Destination: "domain:example.com", Limit: 1}
			jobSlot := store.Slot{Destination: "job:" + job.ID, Limit: 1}
			if tt.fullDomain {
				if ok, err := s.AcquireSlots(ctx, "someone-else", time.Minute, []store.Slot{domain}); err != nil || !ok {
					t.Fatal(ok, err)
				}
			}
			take := &store.SlotTake{Holder: "inline:msg#1", Lease: time.Minute, Slots: []store.Slot{domain, jobSlot}}
			attempts := 0
			_, _, c, err := s.UpdateFrom(ctx, job.ID, seen, func(j *store.Job, now time.Time) (store.Change, error) {
				attempts++
				if attempts > 1 && tt.onFresh != nil {
					return tt.onFresh(j, now)
				}
				j.Note(now, "with slots")
				return store.Change{Slots: take}, nil
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("UpdateFrom: %v, want %v", err, tt.wantErr)
			}
			if (c.Slots != nil) != tt.wantHeld {
				t.Fatalf("Committed.Slots = %+v, want held %v", c.Slots, tt.wantHeld)
			}
			// The job's slot has one place: another holder gets it only
			// if this writer does not hold it.
			other, err := s.AcquireSlots(ctx, "probe", time.Minute, []store.Slot{jobSlot})
			if err != nil {
				t.Fatal(err)
			}
			if other == tt.wantHeld {
				t.Errorf("another holder took the job's slot: %v; want %v (the writer holds it: %v)", other, !tt.wantHeld, tt.wantHeld)
			}
			if !tt.wantHeld {
				return
			}
			if ok, _ := s.AcquireSlots(ctx, "probe", time.Minute, []store.Slot{domain}); ok {
				t.Error("another holder took the domain slot the writer holds")
			}
			if err := s.ReleaseSlots(ctx, take.Holder, []string{domain.Destination, jobSlot.Destination}); err != nil {
				t.Fatal(err)
			}
			if ok, _ := s.AcquireSlots(ctx, "probe", time.Minute, []store.Slot{jobSlot, domain}); !ok {
				t.Error("the slots are not free once the writer gave them back")
			}
		})
	}
}
