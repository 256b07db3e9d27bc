package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// TestWorkerWaitsForRedis starts a worker while its Redis is down (as after
// a restart of both): it says so once and waits, rather than exiting for a
// supervisor to crash-loop it, and runs jobs once Redis is back.
func TestWorkerWaitsForRedis(t *testing.T) {
	t.Parallel()
	testutil.RedisBinaries(t, "redis-server")
	rs := testutil.StartRedisServer(t)
	rs.Kill9()
	r := &testutil.Redis{Client: rs.Client(), URL: rs.URL(), Namespace: "t" + testutil.RandomHex(6)}
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	c := newCLI(t, r, simURL)
	cmd, log := startWorkerProcess(t, c)
	testutil.Eventually(t, 15*time.Second, "the worker to say Redis is unreachable", func() bool {
		return strings.Contains(log.String(), "redis unreachable; waiting for it")
	})
	time.Sleep(2 * time.Second) // several connection attempts
	if cmd.ProcessState != nil {
		t.Fatalf("the worker exited while Redis was down: %s", log.String())
	}
	if n := strings.Count(log.String(), "redis unreachable"); n != 1 {
		t.Fatalf("the outage was logged %d times, want once:\n%s", n, log.String())
	}
	rs.Restart()
	code := "SESSION_AWAIT_" + testutil.RandomHex(4)
	sim.AddSession(code, csmsim.SessionConfig{GenerationTime: time.Second})
	stdout, stderr, exit := c.run("enqueue", "--session", code)
	if exit != 0 {
		t.Fatalf("enqueue: exit %d: %s", exit, stderr)
	}
	var job store.Job
	if err := json.Unmarshal([]byte(stdout), &job); err != nil {
		t.Fatalf("enqueue output is not a job: %v: %q", err, stdout)
	}
	id := job.ID
	st := store.New(r.Client, store.Options{Namespace: r.Namespace})
	testutil.Eventually(t, 30*time.Second, "the job to finish", func() bool {
		j, err := st.Get(context.Background(), id)
		return err == nil && j.Status.Final()
	})
	if j, _ := st.Get(context.Background(), id); j.Status != store.StatusDone {
		t.Fatalf("status %s %+v", j.Status, j.Error)
	}
	stopProcess(t, cmd)
}
