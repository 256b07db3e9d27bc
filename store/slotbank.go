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
// The bank also knows when its own holders fill a slot: a take then is
// refused without asking Redis, and a delivery may wait (AwaitSlots) for
// the seat one of them gives back, which it gets at once, rather than be
// refused by Redis and tried again seconds later.
//
// The job's own slot (seats in the job's hash) is not banked: it rides the
// commit and the record already.
type slotBank struct {
	reuse, idleFor time.Duration
	prefix         string
	giveBack       func(ctx context.Context, seats []bankedSeat)

	mu   sync.Mutex
	seq  uint64
	idle map[string][]bankedSeat // destination → seats waiting, unused
	lent map[lending]lentSeat
	// lentOf counts the seats lent per destination; back holds, per
	// destination, a channel closed when one of its seats next comes back
	// (see full and lends).
	lentOf map[string]int
	back   map[string]chan struct{}
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
		giveBack: giveBack, idle: map[string][]bankedSeat{}, lent: map[lending]lentSeat{},
		lentOf: map[string]int{}, back: map[string]chan struct{}{}}
}

// lend gives holder a seat of destination for lease from now: a seat
// waiting in the bank whose score covers the lease (fresh false: no
// command to send), else a new member to take (fresh true, with the score
// to take it at). A holder that holds a seat of destination already keeps
// it (fresh while its take is not confirmed: re-sending it is harmless).
// When the bank's own holders hold limit seats already, none waiting, it
// lends none (busy true): Redis would refuse the take.
func (b *slotBank) lend(holder, destination string, now time.Time, lease time.Duration, limit int) (member string, ends time.Time, fresh, busy bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := lending{holder, destination}
	if l, ok := b.lent[k]; ok {
		return l.member, l.ends, !l.confirmed, false
	}
	seats := b.idle[destination]
	if len(seats) == 0 && b.lentOf[destination] >= limit {
		return "", time.Time{}, false, true
	}
	for i := len(seats) - 1; i >= 0; i-- {
		if seat := seats[i]; !seat.ends.Before(now.Add(lease)) {
			b.idle[destination] = append(seats[:i], seats[i+1:]...)
			if len(b.idle[destination]) == 0 {
				delete(b.idle, destination)
			}
			b.lent[k] = lentSeat{bankedSeat: seat, confirmed: true}
			b.lentOf[destination]++
			return seat.member, seat.ends, false, false
		}
	}
	b.seq++
	seat := bankedSeat{destination: destination, member: b.prefix + strconv.FormatUint(b.seq, 10),
		taken: now, ends: now.Add(lease + b.reuse)}
	b.lent[k] = lentSeat{bankedSeat: seat}
	b.lentOf[destination]++
	return seat.member, seat.ends, true, false
}

// full reports whether this bank's own holders hold limit seats of
// destination or more (lent, none waiting), so that another take would be
// refused whatever other processes hold; and then returns a channel closed
// when one of those seats next comes back.
func (b *slotBank) full(destination string, limit int) (<-chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.idle[destination]) > 0 || b.lentOf[destination] < limit {
		return nil, false
	}
	return b.nextBack(destination), true
}

// lends reports whether this bank's holders hold seats of destination,
// and then returns a channel closed when one of them next comes back.
func (b *slotBank) lends(destination string) (<-chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lentOf[destination] == 0 {
		return nil, false
	}
	return b.nextBack(destination), true
}

func (b *slotBank) nextBack(destination string) chan struct{} {
	ch, ok := b.back[destination]
	if !ok {
		ch = make(chan struct{})
		b.back[destination] = ch
	}
	return ch
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
	if b.lentOf[destination]--; b.lentOf[destination] <= 0 {
		delete(b.lentOf, destination)
	}
	if ch, ok := b.back[destination]; ok {
		close(ch) // to Redis or waiting here, it is a seat a waiter can take
		delete(b.back, destination)
	}
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

// AwaitSlots waits, for at most within, while this Store's own deliveries
// hold every seat of one of slots (with Options.SlotReuse; without it, or
// for a job's own slot, it returns at once). free false: one still is, and
// a take would be refused without asking Redis. waited says it waited for
// a seat to come back. A delivery to a receiver this worker keeps busy
// thus takes the next seat one of its own deliveries gives back, within
// milliseconds, rather than being refused and coming back one to three
// seconds later.
func (s *Store) AwaitSlots(ctx context.Context, slots []Slot, within time.Duration) (free, waited bool) {
	if s.bank == nil {
		return true, false
	}
	var timeout <-chan time.Time
	for _, sl := range slots {
		if _, ok := slotJob(sl.Destination); ok {
			continue
		}
		for {
			back, full := s.bank.full(sl.Destination, sl.Limit)
			if !full {
				break
			}
			if timeout == nil {
				t := time.NewTimer(within)
				defer t.Stop()
				timeout = t.C
			}
			waited = true
			select {
			case <-back:
			case <-timeout:
				return false, true
			case <-ctx.Done():
				return false, true
			}
		}
	}
	return true, waited
}

// AwaitSlotBack waits, for at most within, for a seat of one of slots
// that this Store's own deliveries hold to come back. It reports false at
// once when they hold none (with Options.SlotReuse; without it, always):
// a take Redis refused then is busy with other workers' deliveries. A
// take refused while seats of this Store's were on their way back (one
// given back as its take came in) so tries again within milliseconds.
func (s *Store) AwaitSlotBack(ctx context.Context, slots []Slot, within time.Duration) bool {
	if s.bank == nil {
		return false
	}
	var backs []<-chan struct{}
	for _, sl := range slots {
		if back, ok := s.bank.lends(sl.Destination); ok {
			backs = append(backs, back)
		}
	}
	if len(backs) == 0 {
		return false
	}
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-backs[0]: // the first slot the bank lends: one is enough to try again
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
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
