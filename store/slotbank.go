package store

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// DefaultSlotReuse is the Options.SlotReuse a worker runs with.
const DefaultSlotReuse = time.Second

// slotIdleDivisor sets how long a seat waits in the bank unused before it
// is given back: a fifth of the reuse window (200 ms by default), so that
// another process waiting for the destination (its retry comes 1–3 s
// later) finds it free.
const slotIdleDivisor = 5

// slotBank keeps the seats of cross-job slots (a destination's sorted
// set, see AcquireSlots) that one Store took, so that its next deliveries
// to the same destination reuse them instead of taking and giving back a
// seat each: taking a seat costs four commands (ZADD, PEXPIREAT, ZCOUNT,
// and the ZREM that gives it back), reusing one none.
//
// A seat is a member of its own, "<bank>:<n>", scored by when its lease
// ends: the lease of the delivery that took it plus the reuse window. A
// delivery given a seat from the bank is therefore inside a lease Redis
// already counts, and the limit holds across workers exactly as before: a
// seat is counted while it is lent and while it waits. A seat given back
// within the reuse window of its take waits in the bank, unused, for at
// most the idle time, then goes back to Redis (one pipeline for all that
// are due). A seat given back after the window, or one whose take is not
// known to have landed (a lost reply, a commit that lost its
// compare-and-set, a busy slot), goes back to Redis at once, as without a
// bank. So a busy destination turns its seats over every reuse window, and
// a process that dies holds its seats until their leases end, as before.
//
// The job's own slot (seats in the job's hash) is not banked: it rides the
// commit and the record already.
type slotBank struct {
	reuse, idleFor time.Duration
	prefix         string
	giveBack       func(ctx context.Context, seats []bankedSeat)

	mu     sync.Mutex
	seq    uint64
	idle   map[string][]bankedSeat // destination → seats waiting, unused
	lent   map[lending]lentSeat
	timer  *time.Timer
	closed bool // drained: every seat given back goes back to Redis
}

// bankedSeat is one seat of destination's slot this bank holds.
type bankedSeat struct {
	destination, member string
	taken, ends         time.Time
	idleSince           time.Time
}

// lending names a seat lent: holder's seat of destination.
type lending struct{ holder, destination string }

// lentSeat is a seat lent to a holder; confirmed once its take is known to
// have landed.
type lentSeat struct {
	bankedSeat
	confirmed bool
}

func newSlotBank(reuse time.Duration, giveBack func(context.Context, []bankedSeat)) *slotBank {
	return &slotBank{reuse: reuse, idleFor: reuse / slotIdleDivisor, prefix: "bank:" + uuid.NewString() + ":",
		giveBack: giveBack, idle: map[string][]bankedSeat{}, lent: map[lending]lentSeat{}}
}

// lend gives holder a seat of destination for lease from now: a seat
// waiting in the bank whose score covers the lease (fresh false: no
// command to send), else a new member to take (fresh true, with the score
// to take it at). A holder that holds a seat of destination already keeps
// it (fresh while its take is not confirmed: re-sending it is harmless).
func (b *slotBank) lend(holder, destination string, now time.Time, lease time.Duration) (member string, ends time.Time, fresh bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := lending{holder, destination}
	if l, ok := b.lent[k]; ok {
		return l.member, l.ends, !l.confirmed
	}
	seats := b.idle[destination]
	for i := len(seats) - 1; i >= 0; i-- {
		if seat := seats[i]; !seat.ends.Before(now.Add(lease)) {
			b.idle[destination] = append(seats[:i], seats[i+1:]...)
			if len(b.idle[destination]) == 0 {
				delete(b.idle, destination)
			}
			b.lent[k] = lentSeat{bankedSeat: seat, confirmed: true}
			return seat.member, seat.ends, false
		}
	}
	b.seq++
	seat := bankedSeat{destination: destination, member: b.prefix + strconv.FormatUint(b.seq, 10),
		taken: now, ends: now.Add(lease + b.reuse)}
	b.lent[k] = lentSeat{bankedSeat: seat}
	return seat.member, seat.ends, true
}

// confirm records that holder's take of destination's seat landed.
func (b *slotBank) confirm(holder, destination string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := lending{holder, destination}
	if l, ok := b.lent[k]; ok {
		l.confirmed = true
		b.lent[k] = l
	}
}

// takeBack takes holder's seat of destination back: into the bank when it
// is confirmed and within its reuse window (toRedis false: no command),
// else it returns the member to remove from the slot's set (holder itself
// when it was never lent one: a seat taken without the bank).
func (b *slotBank) takeBack(holder, destination string, now time.Time) (member string, toRedis bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := lending{holder, destination}
	l, ok := b.lent[k]
	if !ok {
		return holder, true
	}
	delete(b.lent, k)
	if b.closed || !l.confirmed || !now.Before(l.taken.Add(b.reuse)) {
		return l.member, true
	}
	seat := l.bankedSeat
	seat.idleSince = time.Now() // idle time is local: not the store's clock
	b.idle[destination] = append(b.idle[destination], seat)
	if b.timer == nil {
		b.timer = time.AfterFunc(b.idleFor, b.sweep)
	}
	return "", false
}

// sweep gives back to Redis the seats that waited unused for the idle
// time, and waits again while others wait.
func (b *slotBank) sweep() {
	now := time.Now()
	b.mu.Lock()
	var due []bankedSeat
	next := time.Duration(-1)
	for d, seats := range b.idle {
		kept := seats[:0]
		for _, seat := range seats {
			if wait := seat.idleSince.Add(b.idleFor).Sub(now); wait > 0 {
				kept = append(kept, seat)
				if next < 0 || wait < next {
					next = wait
				}
				continue
			}
			due = append(due, seat)
		}
		if len(kept) == 0 {
			delete(b.idle, d)
		} else {
			b.idle[d] = kept
		}
	}
	b.timer = nil
	if next >= 0 {
		b.timer = time.AfterFunc(next, b.sweep)
	}
	b.mu.Unlock()
	if len(due) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.giveBack(ctx, due)
	}
}

// drain takes every waiting seat out of the bank, and keeps the seats
// given back from now on out of it.
func (b *slotBank) drain() []bankedSeat {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	var all []bankedSeat
	for _, seats := range b.idle {
		all = append(all, seats...)
	}
	clear(b.idle)
	return all
}

// ReleaseKeptSlots gives back, in one round trip, the delivery-slot seats
// this Store keeps for reuse (Options.SlotReuse), and keeps none from now
// on: a worker that stops calls it once its deliveries ended, so that the
// other workers find those seats free at once rather than when their
// leases end.
func (s *Store) ReleaseKeptSlots(ctx context.Context) {
	if s.bank == nil {
		return
	}
	if seats := s.bank.drain(); len(seats) > 0 {
		s.giveBackBanked(ctx, seats)
	}
}

// giveBackBanked removes seats the bank gave up from their slots' sets,
// in one round trip. Best effort: a seat not removed ends with its lease.
func (s *Store) giveBackBanked(ctx context.Context, seats []bankedSeat) {
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, seat := range seats {
			p.ZRem(ctx, s.slotsKey(seat.destination), seat.member)
		}
		return nil
	})
}
