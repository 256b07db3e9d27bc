package bench

import (
	"bytes"
	"context"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/internal/testutil"
)

// finalLine is the shape the run must end with, every figure captured.
var finalLine = regexp.MustCompile(`^bench: ratio ([0-9.]+) \(ours ([0-9.]+) jobs/s, peer ([0-9.]+) jobs/s, bare asynq ([0-9.]+) tasks/s\), ` +
	`([0-9.]+) Redis cmds/job \(peer ([0-9.]+)\), ([0-9]+) bytes/job, ([0-9.]+) CPU-ms/job \(peer ([0-9.]+)\), ` +
	`detection p50 ([0-9]+) ms p99 ([0-9]+) ms$`)

// TestRunTiny runs the whole bench on 20 jobs and checks what it printed
// and returned: the shape of the output, every job of every phase finished
// (counted by the receiver, not by previewd), one preview POST per job, and
// figures that are positive and agree with each other. It asserts no speed.
func TestRunTiny(t *testing.T) {
	testutil.RedisBinaries(t, "redis-server")
	const jobs = 20
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Jobs: jobs, Out: &out})
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	last := lines[len(lines)-1]
	if last != res.FinalLine() {
		t.Errorf("the output ends with\n%q\nwant the final line\n%q", last, res.FinalLine())
	}
	m := finalLine.FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("final line %q does not match %s", last, finalLine)
	}
	for i, v := range m[1:] {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			t.Errorf("figure %d of the final line is %q, want a positive number", i+1, v)
		}
	}
	for _, title := range []string{"phase 1 bare asynq", "phase 2 peer", "phase 3 previewd"} {
		if !strings.Contains(out.String(), "\n"+title) {
			t.Errorf("no block %q in the output", title)
		}
	}

	for _, p := range []Phase{res.Bare, res.Peer, res.Ours} {
		t.Run(p.Name, func(t *testing.T) {
			if p.Jobs != jobs || p.Finished != jobs {
				t.Errorf("jobs %d, finished %d; want %d of %d", p.Jobs, p.Finished, jobs, jobs)
			}
			for name, v := range map[string]float64{
				"seconds": p.Seconds, "jobs/s": p.JobsPerSecond, "cmds/job": p.RedisCommandsPerJob,
				"bytes/job": p.BytesPerJob, "cpu ms/job": p.CPUMillisPerJob,
			} {
				if v <= 0 {
					t.Errorf("%s = %v, want positive", name, v)
				}
			}
			if got := float64(p.Finished) / p.Seconds; !near(got, p.JobsPerSecond) {
				t.Errorf("jobs/s %v, but %d finished in %v s", p.JobsPerSecond, p.Finished, p.Seconds)
			}
			if got := float64(p.RedisCommands) / float64(p.Jobs); !near(got, p.RedisCommandsPerJob) {
				t.Errorf("cmds/job %v, but %d commands for %d jobs", p.RedisCommandsPerJob, p.RedisCommands, p.Jobs)
			}
			// A task's life takes at least its dequeue and its done; each
			// round trip carries at least one command.
			if p.RoundTripsPerJob < 2 || p.RoundTrips > p.RedisCommands || !near(float64(p.RoundTrips)/float64(p.Jobs), p.RoundTripsPerJob) {
				t.Errorf("%v round trips/job (%d round trips, %d commands, %d jobs): want at least 2 a job, and no more than the commands",
					p.RoundTripsPerJob, p.RoundTrips, p.RedisCommands, p.Jobs)
			}
			if got := float64(p.RedisBytes) / float64(p.Jobs); !near(got, p.BytesPerJob) || p.RedisKeys == 0 {
				t.Errorf("bytes/job %v, but %d bytes in %d keys for %d jobs", p.BytesPerJob, p.RedisBytes, p.RedisKeys, p.Jobs)
			}
			if p.Name == "bare" {
				return
			}
			if p.PreviewPOSTs != jobs {
				t.Errorf("%d preview POSTs accepted for %d jobs", p.PreviewPOSTs, jobs)
			}
			// Every job reads its session before the POST and at least once after.
			if p.PollsPerJob < 2 {
				t.Errorf("%.2f GET session per job, want at least 2", p.PollsPerJob)
			}
			if p.DetectionP50ms <= 0 || p.DetectionP99ms < p.DetectionP50ms {
				t.Errorf("detection p50 %v ms, p99 %v ms: want 0 < p50 ≤ p99", p.DetectionP50ms, p.DetectionP99ms)
			}
		})
	}
	if !near(res.Ratio, res.Ours.JobsPerSecond/res.Peer.JobsPerSecond) {
		t.Errorf("ratio %v, but ours %v jobs/s and peer %v jobs/s", res.Ratio, res.Ours.JobsPerSecond, res.Peer.JobsPerSecond)
	}
}

// near reports whether a and b agree but for rounding.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(math.Abs(a), math.Abs(b)) }

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_eval:calls=1,usec=361,usec_per_call=361.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_set:calls=2,usec=31,usec_per_call=15.50,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=7,usec=1\r\n"
	before := parseCommandStats(info)
	if before["eval"] != 1 || before["set"] != 2 || before["info"] != 7 {
		t.Fatalf("parsed %v", before)
	}
	after := commandStats{"eval": 3, "set": 2, "info": 9, "hset": 4}
	d := after.sub(before)
	if d.total() != 6 || d["info"] != 0 || d["set"] != 0 {
		t.Errorf("delta %v, want eval 2 and hset 4 (INFO is the bench's own)", d)
	}
	if got := strings.Join(d.top(1), ","); got != "hset 4" {
		t.Errorf("top(1) = %q", got)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {1, time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}
