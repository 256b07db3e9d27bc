package bench

import (
	"context"
	"fmt"
	"sort"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/internal/roundtrips"
)

// cpuTime is the process's user+system CPU so far (getrusage RUSAGE_SELF).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meter takes the figures at the start and the end of a phase's measured
// window: wall time, process CPU, Redis's command counts and the client's
// round trips.
type meter struct {
	rdb   redis.UniversalClient
	trips *roundtrips.Counter
	start time.Time
	cpu   time.Duration
	cmds  commandStats
	sent  int64
}

// startMeter starts a window on the rig's Redis.
func (r *rig) startMeter(ctx context.Context) (*meter, error) {
	cmds, err := readCommandStats(ctx, r.rdb)
	if err != nil {
		return nil, err
	}
	return &meter{rdb: r.rdb, trips: r.trips, start: time.Now(), cpu: cpuTime(), cmds: cmds, sent: r.trips.Count()}, nil
}

// window is what a meter saw.
type window struct {
	elapsed time.Duration
	cpu     time.Duration
	cmds    commandStats
	trips   int64
}

func (m *meter) stop(ctx context.Context) (window, error) {
	elapsed, cpu, trips := time.Since(m.start), cpuTime()-m.cpu, m.trips.Count()-m.sent
	after, err := readCommandStats(ctx, m.rdb)
	if err != nil {
		return window{}, err
	}
	return window{elapsed: elapsed, cpu: cpu, cmds: after.sub(m.cmds), trips: trips}, nil
}

// percentile returns the p-th percentile (0 < p ≤ 100) of ds by the
// nearest-rank method; 0 for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// waitFor checks cond every 10 ms until it holds, ctx ends or limit passes;
// progress says how far it got, for the error.
func waitFor(ctx context.Context, limit time.Duration, what string, cond func() bool, progress func() string) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s waiting for %s: %s", limit, what, progress())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (%s)", what, ctx.Err(), progress())
		case <-tick.C:
		}
	}
}
