package chaos

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"
)

// Kind is one kind of injected fault.
type Kind int

const (
	// KillWorker sends SIGKILL to a worker process, then restarts it.
	KillWorker Kind = iota + 1
	// TermWorker sends SIGTERM to a worker process (a rolling deploy), waits
	// for it to drain, then restarts it.
	TermWorker
	// KillRedis sends SIGKILL to redis-server and restarts it on the same
	// port and data directory after Duration.
	KillRedis
	// RedisResetPeer resets, for Duration, a share (Toxicity) of the Redis
	// connections when a reply comes back: the command ran, its reply is lost.
	RedisResetPeer
	// RedisLatency adds Latency to every Redis reply for Duration.
	RedisLatency
	// CSMResetPeer resets, for Duration, a share of the CSM connections when
	// CSM's reply comes back: CSM acted (and billed), the worker never hears.
	CSMResetPeer
	// CSMLatency adds Latency to every CSM reply for Duration.
	CSMLatency
	// ReceiverOutage closes the receiver's port for Duration: webhook
	// deliveries are refused and must be retried.
	ReceiverOutage
)

var kindNames = map[Kind]string{
	KillWorker: "sigkill-worker", TermWorker: "sigterm-worker", KillRedis: "kill-9-redis",
	RedisResetPeer: "redis-reset-peer", RedisLatency: "redis-latency",
	CSMResetPeer: "csm-reset-peer", CSMLatency: "csm-latency", ReceiverOutage: "receiver-outage",
}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Event is one scheduled fault.
type Event struct {
	At       time.Duration // since the start of the run
	Kind     Kind
	Worker   int           // KillWorker, TermWorker: the worker slot
	Duration time.Duration // how long the fault lasts (for kills: down time before the restart)
	Toxicity float64       // reset-peer windows: share of connections hit
	Latency  time.Duration // latency windows
}

// String is the log form of an event, stable for a given seed.
func (e Event) String() string {
	return fmt.Sprintf("+%5.1fs %s", e.At.Seconds(), e.describe())
}

// describe is the event without its time.
func (e Event) describe() string {
	s := e.Kind.String()
	switch e.Kind {
	case KillWorker, TermWorker:
		s += fmt.Sprintf(" worker-%d, restart after %s", e.Worker, e.Duration)
	case KillRedis:
		s += fmt.Sprintf(", down %s", e.Duration)
	case RedisResetPeer, CSMResetPeer:
		s += fmt.Sprintf(" %.0f%% of connections for %s", e.Toxicity*100, e.Duration)
	case RedisLatency, CSMLatency:
		s += fmt.Sprintf(" %s for %s", e.Latency, e.Duration)
	case ReceiverOutage:
		s += fmt.Sprintf(" for %s", e.Duration)
	}
	return s
}

// Plan says how many faults of each kind to place, and where.
type Plan struct {
	Workers int
	// Faults are placed in [Start, End) of the run.
	Start, End time.Duration
	Counts     map[Kind]int
}

// PlanFor returns the plan of a run whose faults fill window after start:
// per stretch of the window, one SIGKILL of a worker every 15 s and one
// SIGTERM every 30 s, a Redis kill every 35 s, a reset-peer window on each
// link every 30 s, a latency window every 40 s, a receiver outage a minute;
// at least one of each.
func PlanFor(workers int, start, window time.Duration) Plan {
	per := func(every time.Duration) int { return max(1, int(window/every)) }
	return Plan{
		Workers: workers,
		Start:   start,
		End:     start + window,
		Counts: map[Kind]int{
			KillWorker:     per(15 * time.Second),
			TermWorker:     per(30 * time.Second),
			KillRedis:      per(35 * time.Second),
			RedisResetPeer: per(30 * time.Second),
			RedisLatency:   per(40 * time.Second),
			CSMResetPeer:   per(30 * time.Second),
			CSMLatency:     per(40 * time.Second),
			ReceiverOutage: per(60 * time.Second),
		},
	}
}

// Schedule draws the events of plan from seed: the same seed and plan give
// the same schedule, sorted by time.
func Schedule(seed uint64, plan Plan) []Event {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	span := plan.End - plan.Start
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	// Kinds in a fixed order: ranging over the map would make the draws, and
	// so the schedule, differ between runs of the same seed.
	kinds := []Kind{KillWorker, TermWorker, KillRedis, RedisResetPeer, RedisLatency, CSMResetPeer, CSMLatency, ReceiverOutage}
	var out []Event
	for _, k := range kinds {
		for range plan.Counts[k] {
			e := Event{At: plan.Start + time.Duration(rng.Int64N(int64(span))), Kind: k}
			switch k {
			case KillWorker, TermWorker:
				e.Worker = rng.IntN(max(plan.Workers, 1))
				e.Duration = between(500*time.Millisecond, 3*time.Second).Round(100 * time.Millisecond)
			case KillRedis:
				e.Duration = between(time.Second, 4*time.Second).Round(100 * time.Millisecond)
			case RedisResetPeer, CSMResetPeer:
				e.Duration = between(time.Second, 3*time.Second).Round(100 * time.Millisecond)
				e.Toxicity = float64(30+rng.IntN(41)) / 100 // 30-70 %
			case RedisLatency, CSMLatency:
				e.Duration = between(3*time.Second, 8*time.Second).Round(100 * time.Millisecond)
				e.Latency = between(50*time.Millisecond, 800*time.Millisecond).Round(10 * time.Millisecond)
			case ReceiverOutage:
				e.Duration = between(5*time.Second, 12*time.Second).Round(100 * time.Millisecond)
			}
			e.At = e.At.Round(100 * time.Millisecond)
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}
