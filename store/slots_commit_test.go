package store_test

import (
	"context"
	"errors"
	"slices"
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
		// fullDomain: another holder has the domain slot's one place;
		// fullJob: the job's own seat.
		fullDomain, fullJob bool
		// meanwhile: another writer changed the job after the read, so the
		// first attempt loses; onFresh is the next attempt's change.
		meanwhile bool
		onFresh   func(j *store.Job, now time.Time) (store.Change, error)
		wantHeld  bool
		wantErr   error
	}{
		{name: "room in every slot", wantHeld: true},
		{name: "a slot full", fullDomain: true},
		{name: "the job's seat full", fullJob: true},
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
			jobSlot := store.JobSlot(job.ID, 1)
			var filled []store.Slot
			if tt.fullDomain {
				filled = append(filled, domain)
			}
			if tt.fullJob {
				filled = append(filled, jobSlot)
			}
			for _, sl := range filled {
				if ok, err := s.AcquireSlots(ctx, "someone-else", time.Minute, []store.Slot{sl}); err != nil || !ok {
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
			// Each slot has one place: another holder gets it only if
			// neither this writer nor the one that filled it holds it.
			for _, sl := range []store.Slot{domain, jobSlot} {
				other, err := s.AcquireSlots(ctx, "probe", time.Minute, []store.Slot{sl})
				if err != nil {
					t.Fatal(err)
				}
				if want := !tt.wantHeld && !slices.Contains(filled, sl); other != want {
					t.Errorf("another holder took %s: %v; want %v (the writer holds it: %v)", sl.Destination, other, want, tt.wantHeld)
				}
				if err := s.ReleaseSlots(ctx, "probe", []string{sl.Destination}); err != nil {
					t.Fatal(err)
				}
			}
			if !tt.wantHeld {
				return
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
