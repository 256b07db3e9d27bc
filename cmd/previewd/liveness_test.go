package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// callLog records when the simulator saw each call, by session code.
type callLog struct {
	mu    sync.Mutex
	calls map[string][]time.Time
}

func (l *callLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.calls[path.Base(r.URL.Path)] = append(l.calls[path.Base(r.URL.Path)], time.Now())
		l.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// firstAfter is the first call for code after t.
func (l *callLog) firstAfter(code string, t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.calls[code] {
		if c.After(t) {
			return c, true
		}
	}
	return time.Time{}, false
}

func (l *callLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, cs := range l.calls {
		n += len(cs)
	}
	return n
}

// TestKilledWorkersJobsMoveAgainWithoutAsynqRecovery SIGKILLs a real worker
// process while it is mid-poll on some jobs, mid-baseline-read on others and
// mid-POST (accepted, answer not yet received) on others, then starts
// another worker. The dead worker's leases are pushed an hour out, so
// asynq's recoverer cannot bring anything back: the jobs can move again
// only through previewd's own liveness. Every job must end done with
// exactly one accepted POST. The time from the kill to each job's next call
// at the simulator is measured and logged (run with -v), not asserted.
// Then asynq's recoverer is let loose on the originals (leases aged): they
// must find nothing to do: no upstream call, nothing archived.
func TestKilledWorkersJobsMoveAgainWithoutAsynqRecovery(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	if !r.Real() {
		t.Skip("needs a real Redis: asynq's lease keys are read and written")
	}
	sim := csmsim.New(csmsim.Options{APIKey: testutil.SimAPIKey})
	calls := &callLog{calls: map[string][]time.Time{}}
	srv := httptest.NewServer(calls.wrap(sim))
	t.Cleanup(func() { sim.Close(); srv.Close() })
	c := newCLI(t, r, srv.URL)
	p := newProducerFor(r)
	ctx := context.Background()
	queues := tasks.QueuesFor(r.Namespace)
	inspector := asynq.NewInspectorFromRedisClient(r.Client)

	type kind struct {
		name string
		cfg  csmsim.SessionConfig
		n    int
	}
	kinds := []kind{
		// Polls take 1.5 s each, so the chain is mostly mid-poll.
		{"POLL", csmsim.SessionConfig{Latency: 1500 * time.Millisecond, GenerationTime: 15 * time.Second}, 3},
		// The baseline read before the POST takes 3 s.
		{"READ", csmsim.SessionConfig{Latency: 3 * time.Second, GenerationTime: 2 * time.Second}, 2},
		// The POST is accepted (billed) and its answer never comes.
		{"POST", csmsim.SessionConfig{GenerationTime: 3 * time.Second,
			Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenHang}}}, 2},
	}
	jobs := map[string]string{} // session code → job id
	enqueue := func(k kind) []string {
		var codes []string
		for i := range k.n {
			code := "SESSION_LIVE_" + k.name + "_" + testutil.RandomHex(3) + "_" + string(rune('A'+i))
			sim.AddSession(code, k.cfg)
			job, err := p.RequestPreview(ctx, tasks.PreviewRequest{SessionCode: code})
			if err != nil {
				t.Fatal(err)
			}
			jobs[code] = job.ID
			codes = append(codes, code)
		}
		return codes
	}

	victim, victimLog := startWorkerProcess(t, c)
	for _, code := range enqueue(kinds[0]) {
		testutil.Eventually(t, 30*time.Second, code+" to be polling", func() bool {
			j, err := p.Job(ctx, jobs[code])
			return err == nil && j.Polls >= 1
		})
	}
	reads, posts := enqueue(kinds[1]), enqueue(kinds[2])
	testutil.Eventually(t, 30*time.Second, "baseline reads in flight and POSTs accepted", func() bool {
		for _, code := range reads {
			if sim.Requests(code, csmsim.EndpointGetSession) < 1 || sim.Requests(code, csmsim.EndpointPreview) > 0 {
				return false
			}
		}
		for _, code := range posts {
			if sim.AcceptedPreviews(code) != 1 {
				return false
			}
		}
		return true
	})

	_ = victim.Process.Signal(syscall.SIGKILL)
	_, _ = victim.Process.Wait()
	killedAt := time.Now()
	// What the dead worker held; asynq must not give any of it back.
	var originals []*asynq.TaskInfo
	for _, q := range []string{queues.Previews, queues.Webhooks} {
		active, err := inspector.ListActiveTasks(q, asynq.PageSize(1000))
		if err != nil && !strings.Contains(err.Error(), "queue not found") {
			t.Fatal(err)
		}
		for _, info := range active {
			setLease(t, r.Client, q, info.ID, time.Now().Add(time.Hour))
			originals = append(originals, info)
		}
	}
	if len(originals) < len(reads)+len(posts) {
		t.Fatalf("the victim held %d tasks at the kill, want at least %d; its log:\n%s", len(originals), len(reads)+len(posts), victimLog.String())
	}

	second, secondLog := startWorkerProcess(t, c)
	defer stopProcess(t, second)
	var moved []time.Duration
	for code, id := range jobs {
		testutil.Eventually(t, 2*time.Minute, "job of "+code+" to finish", func() bool {
			j, err := p.Job(ctx, id)
			return err == nil && j.Status.Final()
		})
		j, err := p.Job(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != store.StatusDone {
			t.Errorf("%s: job ended %s %+v; second worker's log:\n%s", code, j.Status, j.Error, secondLog.String())
		}
		if n := sim.AcceptedPreviews(code); n != 1 {
			t.Errorf("%s: CSM accepted %d preview POSTs for one job", code, n)
		}
		if at, ok := calls.firstAfter(code, killedAt); ok {
			moved = append(moved, at.Sub(killedAt))
		} else {
			t.Errorf("%s: no upstream call after the kill", code)
		}
	}
	sort.Slice(moved, func(i, j int) bool { return moved[i] < moved[j] })
	if len(moved) > 0 {
		t.Logf("liveness: kill -9 → jobs moving again: p50 %.1fs max %.1fs over %d jobs (the victim held %d tasks)",
			moved[len(moved)/2].Seconds(), slices.Max(moved).Seconds(), len(moved), len(originals))
	}

	// asynq's own recovery of the originals, at last: each must find its
	// task superseded and do nothing.
	before := calls.total()
	for _, info := range originals {
		setLease(t, r.Client, info.Queue, info.ID, time.Now().Add(-time.Minute))
	}
	third, _ := startWorkerProcess(t, c) // asynq's recoverer runs at start
	defer stopProcess(t, third)
	for _, info := range originals {
		testutil.Eventually(t, 30*time.Second, "original "+info.ID+" to be recovered and dropped", func() bool {
			got, err := inspector.GetTaskInfo(info.Queue, info.ID)
			if err != nil {
				return true // gone: done
			}
			if got.State == asynq.TaskStateArchived {
				t.Fatalf("original %s archived: %s", info.ID, got.LastErr)
			}
			return false
		})
	}
	if after := calls.total(); after != before {
		t.Errorf("the recovered originals made %d upstream calls, want 0", after-before)
	}
	for code := range jobs {
		if n := sim.AcceptedPreviews(code); n != 1 {
			t.Errorf("%s: %d accepted POSTs after asynq's recovery", code, n)
		}
	}
}

// setLease sets a task's lease expiry in asynq's lease set.
func setLease(t *testing.T, rdb redis.UniversalClient, queue, taskID string, at time.Time) {
	t.Helper()
	key := "asynq:{" + queue + "}:lease"
	if err := rdb.ZAddXX(context.Background(), key, redis.Z{Score: float64(at.Unix()), Member: taskID}).Err(); err != nil {
		t.Fatal(err)
	}
}
