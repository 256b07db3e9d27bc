package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestMeasureQueuesOnCluster runs the same burst of jobs (request, polls,
// accepted and done webhooks each) through one worker on a single Redis and
// on a three-master Redis Cluster, and reports jobs/s and each node's share
// of Redis CPU and commands, with the masters that hold the asynq queues.
// asynq keeps a queue in one slot: if the queue's master were the
// bottleneck, its share would dwarf the others'. A measurement, not a test:
// set PREVIEWD_MEASURE_CLUSTER=1 (and PREVIEWD_MEASURE_JOBS, default 300).
func TestMeasureQueuesOnCluster(t *testing.T) {
	if os.Getenv("PREVIEWD_MEASURE_CLUSTER") == "" {
		t.Skip("a measurement: set PREVIEWD_MEASURE_CLUSTER=1")
	}
	jobs := 300
	if n, err := strconv.Atoi(os.Getenv("PREVIEWD_MEASURE_JOBS")); err == nil && n > 0 {
		jobs = n
	}
	t.Run("single", func(t *testing.T) {
		node := testutil.StartRedisServer(t)
		measureQueues(t, node.Client(), []string{node.Addr()}, jobs)
	})
	t.Run("cluster", func(t *testing.T) {
		addrs := startMeasureCluster(t)
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		t.Cleanup(func() { _ = rdb.Close() })
		measureQueues(t, rdb, addrs, jobs)
	})
}

func measureQueues(t *testing.T, rdb redis.UniversalClient, nodes []string, n int) {
	ns := "m" + testutil.RandomHex(4)
	h := newHarness(t, withDeadline(time.Hour), func(h *harness) {
		h.redis = &testutil.Redis{Client: rdb, Namespace: ns}
		h.inspector = asynq.NewInspectorFromRedisClient(rdb)
		h.queues = tasks.QueuesFor(ns)
		h.opts.Queues = h.queues
	})
	h.opts.Concurrency, h.opts.WebhookConcurrency = 20, 20
	h.log = zap.NewNop()
	h.opts.Logger = h.log
	prefix := "SESSION_CLUSTER_M_" + testutil.RandomHex(4) + "_"
	ids := make([]string, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				ids[i] = h.request(fmt.Sprintf("%s%d", prefix, i), csmsim.SessionConfig{GenerationTime: time.Millisecond}).ID
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()

	before := nodeStats(t, nodes)
	start := time.Now()
	h.start()
	h.rcv.WaitFor(t, 30*time.Minute, "every final webhook", func(ds []testutil.Delivery) bool {
		final := 0
		for _, d := range ds {
			var ev store.EventBody
			if json.Unmarshal(d.Body, &ev) == nil && ev.Type != store.EventAccepted && ev.Type != store.EventProgress {
				final++
			}
		}
		return final >= n
	})
	took := time.Since(start)
	after := nodeStats(t, nodes)
	t.Logf("%d jobs (each: request, polls, accepted and done webhooks) in %.1fs: %.0f jobs/s", n, took.Seconds(), float64(n)/took.Seconds())
	owners := queueOwners(t, nodes, h.queues.All())
	var cpu, calls float64
	for _, a := range nodes {
		cpu += after[a].cpu - before[a].cpu
		calls += after[a].calls - before[a].calls
	}
	for _, a := range nodes {
		c, k := after[a].cpu-before[a].cpu, after[a].calls-before[a].calls
		t.Logf("node %s: %.2fs Redis CPU (%.0f%%, %.0f µs/job), %.0f commands (%.0f%%, %.1f/job), memory %.1f MiB; queues %v",
			a, c, 100*c/cpu, 1e6*c/float64(n), k, 100*k/calls, k/float64(n), after[a].mem/(1<<20), owners[a])
	}
}

type nodeStat struct{ cpu, calls, mem float64 }

// nodeStats reads each node's CPU seconds, commands processed and memory.
func nodeStats(t *testing.T, nodes []string) map[string]nodeStat {
	out := map[string]nodeStat{}
	for _, a := range nodes {
		c := redis.NewClient(&redis.Options{Addr: a})
		info, err := c.Info(context.Background(), "cpu", "stats", "memory").Result()
		_ = c.Close()
		if err != nil {
			t.Fatal(err)
		}
		var s nodeStat
		for line := range strings.SplitSeq(info, "\r\n") {
			k, v, _ := strings.Cut(line, ":")
			f, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "used_cpu_sys", "used_cpu_user":
				s.cpu += f
			case "total_commands_processed":
				s.calls = f
			case "used_memory":
				s.mem = f
			}
		}
		out[a] = s
	}
	return out
}

// queueOwners maps each node to the queues whose slot it serves.
func queueOwners(t *testing.T, nodes []string, queues []string) map[string][]string {
	out := map[string][]string{}
	if len(nodes) == 1 {
		out[nodes[0]] = queues
		return out
	}
	c := redis.NewClient(&redis.Options{Addr: nodes[0]})
	defer c.Close()
	//lint:ignore SA1019 CLUSTER SLOTS still answers on Redis 7 and gives the slot ranges in the shape this needs
	slots, err := c.ClusterSlots(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		slot, err := c.ClusterKeySlot(context.Background(), "asynq:{"+q+"}:pending").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) {
				out[s.Nodes[0].Addr] = append(out[s.Nodes[0].Addr], q)
			}
		}
	}
	return out
}

// startMeasureCluster starts three masters with no replicas and waits until
// every node sees the cluster.
func startMeasureCluster(t *testing.T) []string {
	cli := testutil.RedisBinaries(t, "redis-server", "redis-cli")[1]
	var addrs []string
	for range 3 {
		node := testutil.StartRedisServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		addrs = append(addrs, node.Addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range addrs {
		node := redis.NewClient(&redis.Options{Addr: addr})
		testutil.Eventually(t, 20*time.Second, "node "+addr+" to see the cluster", func() bool {
			info, err := node.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3")
		})
		_ = node.Close()
	}
	return addrs
}
