package store

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delivery slots bound how many deliveries to one destination run at once
// across every worker, so that a receiver that hangs holds a few workers,
// not all of them.
//
// Each destination's slots are a sorted set of its own: its holders, each
// scored by when its lease ends, so that a holder that died frees its slot.
// The keys are cross-job, so a delivery's slots are taken with single-key
// commands, never a multi-key one, but all in one pipeline (a Cluster client
// splits it per node, keeping each key's commands in order), so that taking
// and giving back a delivery's slots costs a round trip each, not one per
// slot, and the taking none when a commit takes them (Change.Slots). Taking
// one is plain commands, no script: a holder adds itself first and counts
// the live holders after, itself included.
//
// With Options.SlotReuse a Store keeps the seats it took between its
// deliveries (slotBank): a delivery to a destination it holds an unused
// seat of takes that one, with no command, and the members of the set are
// then the Store's seats, not the holders.
//
// A job's own slot (JobSlot: deliveries to its webhook_url) is the
// exception: its holders are a field of the job's hash (lua/seats.lua),
// so that the commit that makes an event takes its inline attempt's seat
// in the HMGET and HSET it runs anyway (Change.Slots), and the record that
// attempt saves gives it back in its own script (SaveMessageReleasing):
// no commands of its own. Elsewhere it is taken and given back by a script
// on the job's hash, in the same pipelines as the other slots.

var (
	//go:embed lua/seats.lua
	seatsSource string
	//go:embed lua/take_seat.lua
	takeSeatSource string
	//go:embed lua/release_seat.lua
	releaseSeatSource string

	takeSeatScript    = redis.NewScript(seatsSource + takeSeatSource)
	releaseSeatScript = redis.NewScript(seatsSource + releaseSeatSource)
)

// jobSlotPrefix begins the destination of a job's own slot.
const jobSlotPrefix = "job:"

// JobSlot is the slot of deliveries to job jobID's own webhook_url: limit
// at once, across every worker.
func JobSlot(jobID string, limit int) Slot {
	return Slot{Destination: jobSlotDestination(jobID), Limit: limit}
}

func jobSlotDestination(jobID string) string { return jobSlotPrefix + jobID }

// seatArgs are take_seat.lua's arguments, and update.lua's last ones: a
// seat for holder, from now for lease, one of limit.
func seatArgs(holder string, now time.Time, lease time.Duration, limit int) []any {
	return []any{holder, now.Add(lease).UnixMilli(), now.UnixMilli(), limit}
}

// slotJob is the job whose own slot destination is (JobSlot), if it is one.
func slotJob(destination string) (string, bool) {
	return strings.CutPrefix(destination, jobSlotPrefix)
}

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
// is full, having given every one back (and swept the full ones' sets of
// the holders whose lease ended) in one more round trip. It returns an
// error when the store failed: the holder may then hold some of slots (one
// whose reply was lost), and the caller gives them all back with
// ReleaseSlots. Taking a slot again is harmless: a holder that already
// holds it only moves its lease.
//
// Per slot the pipeline adds the holder (ZADD: a member already there only
// gets its new lease), moves the set's expiry to this lease's end, the
// newest (PEXPIREAT, not GT: GT leaves a set that ZADD just created without
// any expiry; a plain one moves it sooner only from a worker whose lease
// is shorter or whose clock is behind, and workers' leases are alike) and counts
// the holders whose lease has not ended (ZCOUNT from now, so the dead never
// count), this one included; over Limit, the slot is busy. Two holders that
// race for the last slot may both see the other and both back off (busy is
// retried later), but never are both admitted beyond the limit: whichever
// added itself last counts the other. Expired holders are swept only on the
// busy path: a set with room needs no sweep to admit one more, and the
// set's expiry, the newest lease's end, removes the rest.
func (s *Store) AcquireSlots(ctx context.Context, holder string, lease time.Duration, slots []Slot) (bool, error) {
	if len(slots) == 0 {
		return true, nil
	}
	var taking *slotTaking
	cmds, _ := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		taking = s.takeSlotsIn(ctx, p, holder, lease, slots)
		return nil
	})
	// A seat's reply is settleSlots's to read: a NOSCRIPT is run again
	// there, any other error reported.
	var seats []redis.Cmder
	for _, c := range taking.seats {
		if c != nil {
			seats = append(seats, c)
		}
	}
	if err := cmdsErr(cmds, seats...); err != nil {
		return false, fmt.Errorf("acquire %d delivery slots: %w", len(slots), err)
	}
	return s.settleSlots(ctx, taking)
}

// slotTaking is a take of slots queued in a pipeline (takeSlotsIn), whose
// replies settleSlots reads.
type slotTaking struct {
	holder string
	slots  []Slot
	keys   []string
	live   []*redis.IntCmd
	// seats holds, at a job slot's index, its take_seat.lua (nil elsewhere).
	seats []*redis.Cmd
	// busyHere marks the slots the bank found full of its own seats.
	busyHere []bool
	now      time.Time
	lease    time.Duration
}

// seatArgs are take_seat.lua's arguments for slot i, for a plain re-run
// after NOSCRIPT as for the first.
func (t *slotTaking) seatArgs(i int) []any {
	return seatArgs(t.holder, t.now, t.lease, t.slots[i].Limit)
}

// takeSlotsIn queues AcquireSlots's commands in a pipeline.
func (s *Store) takeSlotsIn(ctx context.Context, p redis.Pipeliner, holder string, lease time.Duration, slots []Slot) *slotTaking {
	now := s.now()
	ends := now.Add(lease)
	t := &slotTaking{holder: holder, slots: slots, keys: make([]string, len(slots)), live: make([]*redis.IntCmd, len(slots)),
		seats: make([]*redis.Cmd, len(slots)), busyHere: make([]bool, len(slots)), now: now, lease: lease}
	nowMS := strconv.FormatInt(now.UnixMilli(), 10)
	for i, sl := range slots {
		if jobID, ok := slotJob(sl.Destination); ok {
			t.keys[i] = s.jobKey(jobID)
			t.seats[i] = takeSeatScript.EvalSha(ctx, p, []string{t.keys[i]}, t.seatArgs(i)...)
			continue
		}
		key := s.slotsKey(sl.Destination)
		t.keys[i] = key
		member, seatEnds := holder, ends
		if s.bank != nil {
			var fresh, busy bool
			member, seatEnds, fresh, busy = s.bank.lend(holder, sl.Destination, now, lease, sl.Limit)
			if busy {
				t.busyHere[i] = true // this Store's own holders fill it: nothing to send
				continue
			}
			if !fresh {
				continue // a seat this Store holds already: nothing to send
			}
		}
		p.ZAdd(ctx, key, redis.Z{Score: float64(seatEnds.UnixMilli()), Member: member})
		p.PExpireAt(ctx, key, seatEnds)
		t.live[i] = p.ZCount(ctx, key, "("+nowMS, "+inf")
	}
	return t
}

// settleSlots reads a take's replies once its pipeline ran: true when
// every slot was taken; false when one was full, having given them all
// back (and swept the full ones' sets) in one more round trip, as
// AcquireSlots says.
func (s *Store) settleSlots(ctx context.Context, t *slotTaking) (bool, error) {
	busy := make([]bool, len(t.live))
	full := false
	for i, n := range t.live {
		if seat := t.seats[i]; seat != nil {
			if isNoScript(seat.Err()) {
				seat = takeSeatScript.Run(ctx, s.rdb, []string{t.keys[i]}, t.seatArgs(i)...)
			}
			taken, err := seat.Int()
			if err != nil {
				return false, fmt.Errorf("acquire delivery slot %s: %w", t.slots[i].Destination, err)
			}
			busy[i] = taken == 0
			full = full || busy[i]
			continue
		}
		if n == nil {
			busy[i] = t.busyHere[i]
			full = full || busy[i]
			continue // lent by the bank, or full of its seats (see takeSlotsIn)
		}
		if n.Err() != nil {
			return false, fmt.Errorf("acquire delivery slot %s: %w", t.slots[i].Destination, n.Err())
		}
		busy[i] = n.Val() > int64(t.slots[i].Limit)
		full = full || busy[i]
	}
	if !full {
		if s.bank != nil {
			for i, n := range t.live {
				if n != nil {
					s.bank.confirm(t.holder, t.slots[i].Destination)
				}
			}
		}
		return true, nil
	}
	var back []string // a busy seat holds nothing to give back
	for i, sl := range t.slots {
		if (!busy[i] || t.seats[i] == nil) && !t.busyHere[i] {
			back = append(back, sl.Destination)
		}
	}
	if len(back) == 0 {
		return false, nil // refused here, before Redis: nothing to give back or sweep
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		s.releaseSlotsIn(ctx, p, t.holder, back)
		for i, key := range t.keys {
			if busy[i] && t.seats[i] == nil && !t.busyHere[i] {
				p.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(t.now.UnixMilli(), 10))
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("give back %d delivery slots, one full: %w", len(t.keys), err)
	}
	return false, nil
}

// ReleaseSlots gives holder's slots of destinations back, in one round
// trip. Giving back a slot not held is harmless.
func (s *Store) ReleaseSlots(ctx context.Context, holder string, destinations []string) error {
	if len(destinations) == 0 {
		return nil
	}
	var releases []redis.Cmder
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		releases = s.releaseSlotsIn(ctx, p, holder, destinations)
		return nil
	})
	if err == nil {
		return nil
	}
	if rerr := slotReleaseErr(destinations, releases); rerr != nil {
		return rerr // which slots were not given back
	}
	return fmt.Errorf("release delivery slots: %w", err)
}

// releaseSlotsIn queues the release of holder's slots of destinations in a
// pipeline; slotReleaseErr reads the replies. A job's seat is given back
// by its script sent whole (EVAL, never NOSCRIPT): the usual release of a
// seat rides a record's save instead (SaveMessageReleasing).
func (s *Store) releaseSlotsIn(ctx context.Context, p redis.Pipeliner, holder string, destinations []string) []redis.Cmder {
	releases := make([]redis.Cmder, len(destinations))
	for i, d := range destinations {
		if jobID, ok := slotJob(d); ok {
			releases[i] = releaseSeatScript.Eval(ctx, p, []string{s.jobKey(jobID)}, holder)
			continue
		}
		member := holder
		if s.bank != nil {
			var toRedis bool
			if member, toRedis = s.bank.takeBack(holder, d, s.now()); !toRedis {
				continue // kept for the next delivery (see slotBank)
			}
		}
		releases[i] = p.ZRem(ctx, s.slotsKey(d), member)
	}
	return releases
}

// slotReleaseErr is the error of the releases releaseSlotsIn queued, naming
// each destination whose slot was not given back; nil when all were.
func slotReleaseErr(destinations []string, releases []redis.Cmder) error {
	var errs []error
	for i, r := range releases {
		if r != nil && r.Err() != nil {
			errs = append(errs, fmt.Errorf("%s: %w", destinations[i], r.Err()))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("release delivery slots: %w", errors.Join(errs...))
}
