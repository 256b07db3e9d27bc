package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// startCluster starts a three-node Redis Cluster on loopback from the
// machine's redis-server and returns its previewd URL.
func startCluster(t *testing.T) string {
	t.Helper()
	cli := testutil.RedisBinaries(t, "redis-server", "redis-cli")[1]
	var addrs []string
	for range 3 {
		// Each node has its own directory, where its nodes.conf goes.
		node := testutil.StartRedisServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		addrs = append(addrs, node.Addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	url := "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]
	// Every node must see the whole cluster, not just the first: the
	// configuration spreads by gossip, and a node that has not caught up
	// yet answers CLUSTERDOWN.
	for _, addr := range addrs {
		node := redis.NewClient(&redis.Options{Addr: addr})
		testutil.Eventually(t, 20*time.Second, "node "+addr+" to see the cluster ok", func() bool {
			info, err := node.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3")
		})
		_ = node.Close()
	}
	return url
}

// TestOnRedisCluster runs previewd on a real three-node Redis Cluster:
// jobs through faults to done, signed webhooks, endpoints, listings,
// cancel and metrics, all of which would fail with CROSSSLOT if a script
// or transaction touched keys of more than one slot.
func TestOnRedisCluster(t *testing.T) {
	t.Parallel()
	url := startCluster(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	rcv := testutil.NewReceiver(t)
	r := &testutil.Redis{URL: url, Namespace: "cluster"}
	c := newCLI(t, r, simURL)
	c.env["PREVIEWD_REDIS_CLUSTER"] = "true"
	const apiToken = "cluster-token-1-5e0c"
	c.env["PREVIEWD_API_TOKENS"] = apiToken
	c.env["PREVIEWD_DRAIN_DELAY"] = "0s"
	addr := freeAddr(t)

	var log syncBuffer
	call, stop := startServe(t, c, addr, apiToken, &log)
	defer func() {
		if code := stop(); code != 0 {
			t.Errorf("serve exited %d:\n%s", code, log.String())
		}
	}()
	base := "http://" + addr
	if status, body := call("POST", "/v1/endpoints", map[string]any{"url": rcv.URL}); status != 201 {
		t.Fatalf("create endpoint: %d %s\nserve log:\n%s", status, body, log.String())
	}
	faults := [][]csmsim.Fault{
		nil,
		{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault429, RetryAfter: time.Second}},
		{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThen502}},
	}
	var ids []string
	for i, f := range faults {
		code := fmt.Sprintf("SESSION_CLUSTER_%d", i)
		sim.AddSession(code, csmsim.SessionConfig{GenerationTime: time.Second, Faults: f})
		status, body := call("POST", "/v1/previews", map[string]any{"session_code": code, "webhook_url": rcv.URL})
		if status != 201 {
			t.Fatalf("create: %d %s", status, body)
		}
		var j store.Job
		_ = json.Unmarshal(body, &j)
		ids = append(ids, j.ID)
	}
	stuck := "SESSION_CLUSTER_STUCK"
	sim.AddSession(stuck, csmsim.SessionConfig{Stuck: true})
	_, body := call("POST", "/v1/previews", map[string]any{"session_code": stuck})
	var stuckJob store.Job
	_ = json.Unmarshal(body, &stuckJob)

	for i, id := range ids {
		testutil.Eventually(t, 30*time.Second, "job "+id+" done", func() bool {
			_, body := call("GET", "/v1/previews/"+id, nil)
			var j store.Job
			_ = json.Unmarshal(body, &j)
			return j.Status == store.StatusDone
		})
		if n := sim.AcceptedPreviews(fmt.Sprintf("SESSION_CLUSTER_%d", i)); n != 1 {
			t.Errorf("session %d: %d accepted POSTs", i, n)
		}
	}
	if status, body := call("POST", "/v1/previews/"+stuckJob.ID+"/cancel", nil); status != 200 {
		t.Fatalf("cancel: %d %s", status, body)
	}
	// Each done job's final webhook reaches both destinations (its URL and the endpoint).
	testutil.Eventually(t, 15*time.Second, "final webhooks at both destinations", func() bool {
		n := 0
		for _, d := range rcv.Deliveries() {
			if bytes.Contains(d.Body, []byte(`"type":"preview.done"`)) {
				n++
			}
		}
		return n == 2*len(ids)
	})
	status, body := call("GET", "/v1/previews?status=done", nil)
	var list struct{ Items []store.Job }
	_ = json.Unmarshal(body, &list)
	if status != 200 || len(list.Items) != len(ids) {
		t.Fatalf("list done: %d, %d items", status, len(list.Items))
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape := parseMetrics(t, resp.Body)
	resp.Body.Close()
	if scrape[`previewd_jobs_finished_total{status="done"}`] != float64(len(ids)) || scrape[`previewd_jobs_finished_total{status="canceled"}`] != 1 {
		t.Errorf("cluster-wide counters: done %v, canceled %v", scrape[`previewd_jobs_finished_total{status="done"}`], scrape[`previewd_jobs_finished_total{status="canceled"}`])
	}
	if strings.Contains(log.String(), "CROSSSLOT") {
		t.Fatalf("a command touched keys of several slots:\n%s", log.String())
	}
}
