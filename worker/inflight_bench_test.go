package worker_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/tasks"
)

// BenchmarkTenThousandInFlight puts 10,000 jobs in flight on one worker and
// samples its resident memory and goroutines while it works through them
// (sessions that never finish: every job stays in flight). A job in flight
// is state in Redis (its record, its request or next poll task), not in the
// process, so both must stay flat however many jobs there are: the figures
// are the first sample after a warm-up and the highest and last samples of
// the 30 s that follow, with how many jobs reached polling by then.
//
//	go test -run '^$' -bench TenThousandInFlight -benchtime 1x ./worker/
//
// The simulator and the producer share the process (their memory is in the
// figures, and flat too); no job has a webhook URL, so the receiver plays no
// part. PREVIEWD_BENCH_JOBS overrides the 10,000 for a quick look.
func BenchmarkTenThousandInFlight(b *testing.B) {
	jobs := 10_000
	if v := os.Getenv("PREVIEWD_BENCH_JOBS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("PREVIEWD_BENCH_JOBS=%q: want a positive integer", v)
		}
		jobs = n
	}
	const (
		warmUp = 5 * time.Second  // the worker's servers, pools and first tasks
		window = 30 * time.Second // sampled after the warm-up
	)
	for b.Loop() {
		h := newHarness(b, withDeadline(time.Hour))
		b.Cleanup(func() { unlinkNamespace(b, h) })
		// Polls every 2 s, 20 tasks at once: the worker always has more
		// work than it can do, so what stays flat is not for want of load.
		h.opts.Polling.Interval, h.opts.Polling.MaxInterval = 2*time.Second, 2*time.Second
		h.opts.Concurrency = 20
		codes := enqueue(b, h, jobs)
		h.start()
		time.Sleep(warmUp)

		base := sample()
		peak, last := base, base
		posts0, reads0 := h.sim.TotalAcceptedPreviews(), sessionReads(h, codes)
		for end := time.Now().Add(window); time.Now().Before(end); {
			time.Sleep(time.Second)
			last = sample()
			peak.rssKB = max(peak.rssKB, last.rssKB)
			peak.goroutines = max(peak.goroutines, last.goroutines)
		}
		posts := h.sim.TotalAcceptedPreviews()
		if posts > jobs {
			b.Fatalf("accepted preview POSTs = %d for %d jobs", posts, jobs)
		}
		b.ReportMetric(float64(jobs), "jobs")
		b.ReportMetric(float64(posts), "jobs_polling")
		b.ReportMetric(float64(base.rssKB)/1024, "rss_start_MB")
		b.ReportMetric(float64(peak.rssKB)/1024, "rss_peak_MB")
		b.ReportMetric(float64(last.rssKB)/1024, "rss_end_MB")
		b.ReportMetric(float64(base.goroutines), "goroutines_start")
		b.ReportMetric(float64(peak.goroutines), "goroutines_peak")
		b.ReportMetric(float64(last.goroutines), "goroutines_end")
		b.ReportMetric(float64(posts-posts0)/window.Seconds(), "posts/s")
		b.ReportMetric(float64(sessionReads(h, codes)-reads0)/window.Seconds(), "reads/s")
	}
}

// enqueue creates n jobs on stuck sessions, 32 producers at once, and
// returns their session codes.
func enqueue(b *testing.B, h *harness, n int) []string {
	b.Helper()
	codes := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				code := "SESSION_FLIGHT_" + strconv.Itoa(i) + "_" + testutil.RandomHex(3)
				codes[i] = code
				h.sim.AddSession(code, csmsim.SessionConfig{Stuck: true})
				if _, err := h.producer.RequestPreview(context.Background(), tasks.PreviewRequest{SessionCode: code}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return codes
}

// sessionReads counts the session reads the simulator has served.
func sessionReads(h *harness, codes []string) int {
	n := 0
	for _, c := range codes {
		n += h.sim.Requests(c, csmsim.EndpointGetSession)
	}
	return n
}

// unlinkNamespace deletes the keys of 10,000 jobs in batches, without the
// deadline of testutil's own clean-up (registered earlier, so it runs after
// this one and finds nothing left).
func unlinkNamespace(b *testing.B, h *harness) {
	ctx := context.Background()
	ns := h.redis.Namespace
	for _, pattern := range []string{ns + ":*", "asynq:{" + ns + ":*", "rate:" + ns + ":*"} {
		iter := h.redis.Client.Scan(ctx, 0, pattern, 1000).Iterator()
		batch := make([]string, 0, 1000)
		flush := func() {
			if len(batch) > 0 {
				if err := h.redis.Client.Unlink(ctx, batch...).Err(); err != nil {
					b.Errorf("unlink: %v", err)
				}
				batch = batch[:0]
			}
		}
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) == cap(batch) {
				flush()
			}
		}
		flush()
		if err := iter.Err(); err != nil {
			b.Errorf("scan %s: %v", pattern, err)
		}
	}
}

type usage struct {
	rssKB      int64
	goroutines int
}

// sample reads VmRSS from /proc/self/status and the goroutine count.
func sample() usage {
	u := usage{goroutines: runtime.NumGoroutine()}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return u
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				u.rssKB, _ = strconv.ParseInt(string(f[0]), 10, 64)
			}
		}
	}
	return u
}
