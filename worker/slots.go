package worker

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

// Delivery slots bound the deliveries in flight, across every worker, by
// what one party controls, so that a receiver that hangs holds a few
// webhook workers and the others keep delivering:
//   - the job, for deliveries to its own webhook_url: its caller chose
//     that URL and made the events (an endpoint is the operator's, and
//     one that hangs must not hold back a job's other deliveries);
//   - the receiver's registrable domain ("evil.example" for every
//     "*.evil.example"): wildcard DNS mints names for free;
//   - the address and port dialled: many names, one receiver. Several
//     receivers on one machine's ports stay apart. (So one party with one
//     address and many ports, written as IP literals, gets a share per
//     port: a known gap, kept so that such receivers stay apart.)
//
// Counting by the URL's host as written would give "localhost",
// "LOCALHOST." and "127.0.0.1" a share each (see webhook.NormalizeHost).
//
// Each slot is a sorted set of its own (slot keys are cross-job, so never
// one multi-key command); taking one is idempotent per holder, so a command
// re-sent after a network error is harmless. A delivery holds all its slots
// or none: it takes those it knows of in one pipeline and, when one is busy
// or the pipeline failed, gives them all back in another.

// slotSet is the slots one delivery holds, released together.
type slotSet struct {
	h      *Handlers
	holder string
	lease  time.Duration
	held   []string
}

// slot is one limit a delivery counts against.
type slot struct {
	key   string
	limit int
}

// storeSlot is the slot as the store takes it.
func (sl slot) storeSlot() store.Slot { return store.Slot{Destination: sl.key, Limit: sl.limit} }

// jobSlot, domainSlot and addrSlot are the slots of a delivery.
func (h *Handlers) jobSlot(jobID string) slot {
	sl := store.JobSlot(jobID, h.webhooks.PerJob) // kept in the job's own hash
	return slot{key: sl.Destination, limit: sl.Limit}
}

// An IP literal has no domain: its domain slot is its address and port,
// the addr slot again, so that receivers on one machine's ports stay apart.
func (h *Handlers) domainSlot(t webhook.Target) slot {
	if _, err := netip.ParseAddr(t.Host); err == nil {
		return slot{key: "addr:" + net.JoinHostPort(t.Host, t.Port), limit: h.webhooks.PerDestination}
	}
	return slot{key: "domain:" + t.Domain, limit: h.webhooks.PerDestination}
}

func (h *Handlers) addrSlot(t webhook.Target) slot {
	return slot{key: "addr:" + net.JoinHostPort(t.Addr.String(), t.Port), limit: h.webhooks.PerDestination}
}

// newSlotSet starts an empty set for holder.
func (h *Handlers) newSlotSet(holder string) *slotSet {
	return &slotSet{h: h, holder: holder, lease: h.slotLease()}
}

// heldSlots is the set of the slots a commit took (store.Change.Slots).
func (h *Handlers) heldSlots(t *store.SlotTake) *slotSet {
	s := &slotSet{h: h, holder: t.Holder, lease: t.Lease}
	for _, sl := range t.Slots {
		s.held = append(s.held, sl.Destination)
	}
	return s
}

// slotLease covers a name lookup and an attempt, each bounded by
// AttemptTimeout, so a holder that dies frees its slots soon after it
// could have finished.
func (h *Handlers) slotLease() time.Duration { return 2*h.webhooks.AttemptTimeout + 10*time.Second }

// firstSlots are the slots a delivery to target takes before its name
// lookup: the domain's, and the job's for the job's own webhook_url.
func (h *Handlers) firstSlots(target webhook.Target, jobID, destID string) []slot {
	first := []slot{h.domainSlot(target)}
	if destID == tasks.DestinationJob {
		first = append(first, h.jobSlot(jobID))
	}
	return first
}

// seatWait bounds how long a delivery waits for a seat of a receiver that
// this worker's own deliveries keep busy (store.AwaitSlots) before it is
// busy: long enough for a healthy receiver's attempt to end and give its
// seat back, short enough that a poll whose final webhook would wait
// behind a hanging receiver hands it to its delivery task soon (and such a
// receiver's failures stop inline attempts to it, see inlineGate).
const seatWait = 250 * time.Millisecond

// take acquires slots, those this set does not hold yet, in one round
// trip, having waited up to seatWait while this worker's own deliveries
// hold every seat of one of them. It reports false when one is busy and
// returns the store's error when it failed; either way every slot this
// call asked for is given back, in one more round trip (AcquireSlots's,
// when one is busy; this one's after a failure: a slot whose acquire
// failed may still have been taken, the reply lost, and ZREM of a
// non-member is harmless).
func (s *slotSet) take(ctx context.Context, log *zap.Logger, slots ...slot) (bool, error) {
	n := len(s.held)
	var want []store.Slot
	for _, sl := range slots {
		if slices.Contains(s.held, sl.key) || slices.ContainsFunc(want, func(w store.Slot) bool { return w.Destination == sl.key }) {
			continue // one key counts once (an IP literal's domain slot is its address's)
		}
		want = append(want, sl.storeSlot())
	}
	hold := func() {
		for _, sl := range want {
			s.held = append(s.held, sl.Destination)
		}
	}
	deadline := time.Now().Add(seatWait)
	for {
		if free, _ := s.h.store.AwaitSlots(ctx, want, time.Until(deadline)); !free {
			return false, nil // this worker's own deliveries hold a slot's every seat
		}
		ok, err := s.h.store.AcquireSlots(ctx, s.holder, s.lease, want)
		switch {
		case err != nil:
			hold()
			s.releaseFrom(ctx, log, n)
			return false, err
		case ok:
			hold()
			return true, nil
		}
		// Refused, and given back: another of this worker's deliveries took
		// the seat that came back first, or its give-back had not reached
		// Redis yet. Wait for the next of this worker's seats; with none of
		// them out, other workers hold the slot: busy.
		if !s.h.store.AwaitSlotBack(ctx, want, time.Until(deadline)) {
			return false, nil
		}
	}
}

// release gives every slot back.
func (s *slotSet) release(ctx context.Context, log *zap.Logger) { s.releaseFrom(ctx, log, 0) }

// releaseSaving gives every slot back and saves msg, the delivery record
// of the attempt the slots were held for, in one round trip, even when
// ctx has ended; it acknowledges the outbox entries acks with the save
// (store.SaveMessageReleasing). It returns the save's error; a release
// that failed is logged, as release does.
func (s *slotSet) releaseSaving(ctx context.Context, log *zap.Logger, jobID string, msg store.Message, acks []string) error {
	keys := s.held
	s.held = nil
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	saveErr, releaseErr := s.h.store.SaveMessageReleasing(bctx, jobID, msg, acks, s.holder, keys)
	if releaseErr != nil {
		log.Warn("delivery slots not released; their leases free them", zap.Strings("slots", keys), zap.Error(releaseErr))
	}
	return saveErr
}

// releaseFrom gives back the slots held from index from on, in one round
// trip, even when ctx has ended (a holder that timed out still frees its
// slots now rather than when its lease ends).
func (s *slotSet) releaseFrom(ctx context.Context, log *zap.Logger, from int) {
	keys := s.held[from:]
	s.held = s.held[:from]
	if len(keys) == 0 {
		return
	}
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	if err := s.h.store.ReleaseSlots(bctx, s.holder, keys); err != nil {
		log.Warn("delivery slots not released; their leases free them", zap.Strings("slots", keys), zap.Error(err))
	}
}
