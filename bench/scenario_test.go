package bench

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/internal/testutil"
)

// TestBacklogShort runs the backlog scenario once with small sizes and
// checks what it counted, not how fast: every running job finished, every
// backlog job was accepted once or is still queued, and the output ends
// with the final line. Detection figures are only checked to be there.
func TestBacklogShort(t *testing.T) {
	testutil.RedisBinaries(t, "redis-server")
	t.Parallel()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunBacklog(ctx, BacklogOptions{
		Base: Options{Short: true, Out: &out}, Running: 5, Backlogs: []int{0, 10, 40},
		GenerationTime: 2 * time.Second, PollInterval: time.Second,
	})
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("RunBacklog: %v", err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; last != res.FinalLine() {
		t.Errorf("the output ends with\n%q\nwant\n%q", last, res.FinalLine())
	}
	if len(res.Rounds) != 3 {
		t.Fatalf("%d rounds, want 3", len(res.Rounds))
	}
	for _, p := range res.Rounds {
		if p.Finished != p.Running || p.Running != 5 {
			t.Errorf("backlog %d: %d of %d running jobs finished, want 5 of 5", p.Backlog, p.Finished, p.Running)
		}
		if p.BacklogLost != 0 || p.BacklogAcceptedAll+p.BacklogLeft != p.Backlog {
			t.Errorf("backlog %d: %d accepted + %d left queued + %d lost: want every job accepted or still queued", p.Backlog, p.BacklogAcceptedAll, p.BacklogLeft, p.BacklogLost)
		}
		if p.BacklogPOSTs != p.BacklogAcceptedAll {
			t.Errorf("backlog %d: %d POSTs accepted for %d jobs", p.Backlog, p.BacklogPOSTs, p.BacklogAcceptedAll)
		}
		if p.DetectionP50ms <= 0 || p.DetectionP99ms < p.DetectionP50ms || p.DetectionMaxms < p.DetectionP99ms {
			t.Errorf("backlog %d: detection p50 %v p99 %v max %v: want 0 < p50 ≤ p99 ≤ max", p.Backlog, p.DetectionP50ms, p.DetectionP99ms, p.DetectionMaxms)
		}
	}
	if first, last := res.compared(); first.Backlog != 10 || last.Backlog != 40 || !near(res.P99Ratio, last.DetectionP99ms/first.DetectionP99ms) {
		t.Errorf("ratio %v compares backlogs %d and %d (p99 %v, %v)", res.P99Ratio, first.Backlog, last.Backlog, first.DetectionP99ms, last.DetectionP99ms)
	}
}

// TestBudgetShort runs the budget scenario once, small and compressed ×300,
// and checks its counts: every job (the fill, the arrivals during the
// burst, the burst) finished with one preview POST, the burst's requests
// were sent, polls came after each POST, and the schedule was judged for
// every job. Whether each came within its schedule is a timing figure: it
// is printed, not asserted.
func TestBudgetShort(t *testing.T) {
	testutil.RedisBinaries(t, "redis-server")
	t.Parallel()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := RunBudget(ctx, BudgetOptions{Base: Options{Short: true, Out: &out}, Jobs: 100, Burst: 50})
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("RunBudget: %v", err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; last != res.FinalLine() {
		t.Errorf("the output ends with\n%q\nwant\n%q", last, res.FinalLine())
	}
	all := res.HD + res.Burst
	switch {
	case res.HD < 100 || res.Burst != 50:
		t.Errorf("%d HD jobs and a burst of %d, want at least 100 and 50", res.HD, res.Burst)
	case res.Finished != all:
		t.Errorf("%d of %d jobs finished", res.Finished, all)
	case res.POSTs != all:
		t.Errorf("%d preview POSTs accepted for %d jobs", res.POSTs, all)
	case res.RequestTurns != 2*int64(all):
		// Each request takes two turns of the requests' share: the session
		// read before its POST (csm.ForRequest) and the POST's own.
		t.Errorf("%d request turns for %d POSTs, want two each (the read before the POST, the POST)", res.RequestTurns, all)
	case res.ActiveAtBurst < 1 || res.ActiveAtBurst > res.HD:
		t.Errorf("%d active at the burst of %d HD jobs", res.ActiveAtBurst, res.HD)
	case res.WithinSchedule < 0 || res.WithinSchedule > all:
		t.Errorf("%d within schedule of %d", res.WithinSchedule, all)
	case res.Surge.POSTsPerSecond <= 0 || res.Fill.POSTsPerSecond <= 0:
		t.Errorf("POSTs/s %v in the fill, %v in the burst: want both positive", res.Fill.POSTsPerSecond, res.Surge.POSTsPerSecond)
	case res.PollsPerHDJob < 1:
		t.Errorf("%.2f polls per HD job, want at least one", res.PollsPerHDJob)
	case res.DetectionP50ms <= 0 || res.DetectionMaxms < res.DetectionP99ms:
		t.Errorf("detection p50 %v p99 %v max %v", res.DetectionP50ms, res.DetectionP99ms, res.DetectionMaxms)
	}
}

// TestScheduleOf: the step waiting at a job's end is the last poll before
// it (or the acceptance) with the wait the schedule gave there.
func TestScheduleOf(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return at.Add(time.Duration(s * float64(time.Second))) }
	const safety, e = 5 * time.Second, 90 * time.Second
	cases := []struct {
		name       string
		end        float64
		gets       []float64
		polls      int
		last       float64
		wait       time.Duration
		detect     float64 // -1: none
		detectNone bool
	}{
		{"ends before the first poll", 3, []float64{-0.01, 5.2}, 1, 0, 5500 * time.Millisecond, 5.2, false},
		{"mid-way: half the time left", 60, []float64{-0.01, 5, 47.5, 68.75}, 3, 47.5, 21250 * time.Millisecond, 68.75, false},
		{"near the end: the safety net", 89, []float64{-0.01, 5, 47.5, 68.75, 79.4, 84.7, 89.7}, 6, 84.7, 5500 * time.Millisecond, 89.7, false},
		{"late: a quarter of the overrun", 130, []float64{-0.01, 5, 100, 125, 131}, 4, 125, 8750 * time.Millisecond, 131, false},
		{"no poll after the end", 60, []float64{-0.01, 5, 47.5}, 2, 47.5, 21250 * time.Millisecond, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var gets []time.Time
			for _, g := range c.gets {
				gets = append(gets, sec(g))
			}
			st := scheduleOf(at, sec(c.end), gets, safety, e)
			if st.polls != c.polls || !st.last.Equal(sec(c.last)) || st.wait != c.wait {
				t.Errorf("polls %d, last +%s, wait %s; want %d, +%s, %s", st.polls, st.last.Sub(at), st.wait, c.polls, sec(c.last).Sub(at), c.wait)
			}
			if c.detectNone != st.detect.IsZero() || (!c.detectNone && !st.detect.Equal(sec(c.detect))) {
				t.Errorf("detecting poll %v, want +%vs (none: %v)", st.detect, c.detect, c.detectNone)
			}
		})
	}
}

// TestCallLog: GETs before a session's first POST are its request's read,
// later ones polls; other paths and methods are not counted.
func TestCallLog(t *testing.T) {
	l := newCallLog()
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	l.record(http.MethodGet, sessionsPath+"A", at)
	l.record(http.MethodPost, previewPath+"A", at.Add(time.Second))
	l.record(http.MethodGet, sessionsPath+"A", at.Add(2*time.Second))
	l.record(http.MethodGet, sessionsPath+"B", at.Add(2*time.Second)) // no POST yet: a read
	l.record(http.MethodPost, sessionsPath+"A", at)                   // not an endpoint
	l.record(http.MethodGet, "/other", at)
	reads, polls, posts := l.count(at, at.Add(time.Minute))
	if reads != 2 || polls != 1 || posts != 1 {
		t.Errorf("reads %d, polls %d, posts %d; want 2, 1, 1", reads, polls, posts)
	}
	if reads, polls, posts := l.count(at.Add(1500*time.Millisecond), at.Add(time.Minute)); reads != 1 || polls != 1 || posts != 0 {
		t.Errorf("from +1.5s: reads %d, polls %d, posts %d; want 1, 1, 0", reads, polls, posts)
	}
	if n := len(l.getsOf("A")); n != 2 {
		t.Errorf("%d GETs of A, want 2", n)
	}
}
