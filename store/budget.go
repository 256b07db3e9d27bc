package store

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed lua/budget_take.lua
	budgetTakeSource string
	budgetTakeScript = redis.NewScript(budgetTakeSource)
)

// Budget is the spending guard shared by every worker: at most PerHour
// previews in each clock hour and PerDay in each day (UTC), counted per job
// in Redis. A zero limit is no limit.
type Budget struct {
	rdb     redis.UniversalClient
	ns      string
	perHour int
	perDay  int
	now     func() time.Time
}

// NewBudget returns the budget of the namespace ns (as the store's).
func NewBudget(rdb redis.UniversalClient, ns string, perHour, perDay int, now func() time.Time) *Budget {
	if ns == "" {
		ns = "previewd"
	}
	if now == nil {
		now = time.Now
	}
	return &Budget{rdb: rdb, ns: ns, perHour: perHour, perDay: perDay, now: now}
}

// Budget windows, as Take names them.
const (
	WindowHour = "hour"
	WindowDay  = "day"
)

// Take counts jobID's preview in the current hour and day. When either is
// spent it counts nothing and returns how long until that window ends, and
// its name.
func (b *Budget) Take(ctx context.Context, jobID string) (time.Duration, string, error) {
	now := b.now().UTC()
	w := windowsAt(now)
	nextHour, nextDay := w.hour.Add(time.Hour), w.day.AddDate(0, 0, 1)
	keys := b.keys(w)
	// A window's set outlives it a little, so a refund that arrives just
	// after the hour turns still finds it.
	res, err := budgetTakeScript.Run(ctx, b.rdb, keys, jobID, b.perHour, b.perDay,
		(nextHour.Sub(now) + time.Minute).Milliseconds(), (nextDay.Sub(now) + time.Minute).Milliseconds()).Text()
	if err != nil {
		return 0, "", fmt.Errorf("take spending budget for job %s: %w", jobID, err)
	}
	switch res {
	case "ok":
		return 0, "", nil
	case WindowHour:
		return nextHour.Sub(now), WindowHour, nil
	case WindowDay:
		return nextDay.Sub(now), WindowDay, nil
	}
	return 0, "", fmt.Errorf("take spending budget for job %s: unexpected script reply %q", jobID, res)
}

// Refund removes jobID from the current windows: its POST was refused or
// never sent, so it spent nothing. SREM is safe to repeat.
func (b *Budget) Refund(ctx context.Context, jobID string) error {
	keys := b.keys(windowsAt(b.now().UTC()))
	pipe := b.rdb.Pipeline()
	for _, k := range keys {
		pipe.SRem(ctx, k, jobID)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("refund spending budget of job %s: %w", jobID, err)
	}
	return nil
}

// Spent returns how many previews the current hour and day have counted.
func (b *Budget) Spent(ctx context.Context) (hour, day int64, err error) {
	keys := b.keys(windowsAt(b.now().UTC()))
	pipe := b.rdb.Pipeline()
	h := pipe.SCard(ctx, keys[0])
	d := pipe.SCard(ctx, keys[1])
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, 0, fmt.Errorf("read spending budget: %w", err)
	}
	return h.Val(), d.Val(), nil
}

// windows are the starts of the clock hour and the UTC day a time is in.
type windows struct{ hour, day time.Time }

func windowsAt(now time.Time) windows {
	return windows{hour: now.Truncate(time.Hour), day: time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)}
}

// keys names the hour's and the day's sets; every window shares the hash
// tag {budget}, so the take script touches one Cluster slot.
func (b *Budget) keys(w windows) []string {
	prefix := b.ns + ":{budget}:"
	return []string{prefix + "h:" + w.hour.Format("2006010215"), prefix + "d:" + w.day.Format("20060102")}
}
