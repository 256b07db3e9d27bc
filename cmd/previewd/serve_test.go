package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

func TestServeRefusesAnOpenNetworkListener(t *testing.T) {
	t.Parallel()
	c := cli{t: t, env: map[string]string{}}
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:8080"} {
		_, errOut, code := c.run("serve", "--http", addr)
		if code != exitUsage || !strings.Contains(errOut, "PREVIEWD_API_TOKENS") {
			t.Errorf("serve --http %s without tokens: exit %d, %q", addr, code, errOut)
		}
	}
}

// startServe runs `previewd serve --http addr --worker` in-process until
// the test ends (or stop is called) and waits until it is ready. It
// returns an authenticated caller of its API and a stop function that
// returns the exit code.
func startServe(t *testing.T, c cli, addr, token string, log *syncBuffer) (call func(method, path string, body any) (int, []byte), stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--http", addr, "--worker"}, log, log, func(k string) string { return c.env[k] })
	}()
	var once sync.Once
	code := 0
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(20 * time.Second):
				t.Error("serve did not stop")
				code = -1
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	base := "http://" + addr
	testutil.Eventually(t, 15*time.Second, "the server to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	call = func(method, path string, body any) (int, []byte) {
		var rd io.Reader
		if body != nil {
			raw, _ := json.Marshal(body)
			rd = bytes.NewReader(raw)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	return call, stop
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestServeWithWorker runs `previewd serve --worker` as one process, drives
// jobs through its HTTP API to done, then scrapes /metrics and checks the
// numbers; then SIGTERM-like cancellation drains it (503 on /readyz first).
func TestServeWithWorker(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	rcv := testutil.NewReceiver(t)
	c := newCLI(t, r, simURL)
	const apiToken = "serve-token-4b1d"
	addr := freeAddr(t)
	c.env["PREVIEWD_API_TOKENS"] = apiToken
	c.env["PREVIEWD_DRAIN_DELAY"] = "1s"
	c.env["PREVIEWD_LOG_LEVEL"] = "info"

	var log syncBuffer
	call, stop := startServe(t, c, addr, apiToken, &log)
	base := "http://" + addr
	const jobs = 4
	var ids []string
	var responses []string
	for i := range jobs {
		code := fmt.Sprintf("SESSION_SERVE_%d_%s", i, testutil.RandomHex(3))
		sim.AddSession(code, csmsim.SessionConfig{GenerationTime: time.Second})
		status, body := call("POST", "/v1/previews", map[string]any{"session_code": code, "webhook_url": rcv.URL})
		if status != 201 {
			t.Fatalf("POST /v1/previews: %d %s", status, body)
		}
		var j store.Job
		_ = json.Unmarshal(body, &j)
		ids = append(ids, j.ID)
		responses = append(responses, string(body))
	}
	for _, id := range ids {
		testutil.Eventually(t, 30*time.Second, "job "+id+" done", func() bool {
			_, body := call("GET", "/v1/previews/"+id, nil)
			var j store.Job
			_ = json.Unmarshal(body, &j)
			return j.Status == store.StatusDone
		})
		_, body := call("GET", "/v1/previews/"+id+"/webhooks", nil)
		responses = append(responses, string(body))
	}
	// The job view is mounted behind the same tokens, on the real job
	// (whose attempts are recorded a moment after each delivery).
	testutil.Eventually(t, 10*time.Second, "the job view of a done job with its attempts", func() bool {
		status, page := call("GET", "/ui/jobs/"+ids[0], nil)
		return status == 200 && bytes.Contains(page, []byte(`id="status">done<`)) && bytes.Contains(page, []byte(`class="attempt"`))
	})
	// Every final webhook delivered, so the delivery counters settled.
	testutil.Eventually(t, 10*time.Second, "final webhooks", func() bool {
		n := 0
		for _, d := range rcv.Deliveries() {
			if bytes.Contains(d.Body, []byte(`"type":"preview.done"`)) {
				n++
			}
		}
		return n == jobs
	})

	// The receiver records a delivery as it arrives; the worker counts it
	// once the attempt is recorded, a moment later, and an accepted or
	// progress webhook may still be on its way (final ones go first).
	var scrape map[string]float64
	testutil.Eventually(t, 10*time.Second, "delivery counter settled", func() bool {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		scrape = parseMetrics(t, resp.Body)
		resp.Body.Close()
		return scrape[`previewd_webhook_deliveries_total{outcome="delivered"}`] == float64(len(rcv.Deliveries()))
	})
	want := map[string]float64{
		`previewd_jobs_created_total`:                                               jobs,
		`previewd_jobs_finished_total{status="done"}`:                               jobs,
		`previewd_upstream_requests_total{endpoint="request_preview",outcome="ok"}`: jobs,
		`previewd_http_requests_total{code="201",route="POST /v1/previews"}`:        jobs,
		`previewd_webhook_deliveries_total{outcome="delivered"}`:                    float64(len(rcv.Deliveries())),
		`previewd_job_duration_seconds_count{status="done"}`:                        jobs,
		`previewd_job_polls_count`:                                                  jobs,
		`previewd_detection_delay_seconds_count`:                                    jobs,
	}
	for name, v := range want {
		if got, ok := scrape[name]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, v)
		}
	}
	for _, name := range []string{
		`previewd_queue_tasks{queue="` + r.Namespace + `:previews",state="pending"}`,
		`previewd_webhook_backlog`,
		`previewd_upstream_request_duration_seconds_count{endpoint="get_session"}`,
		`previewd_jobs_in_flight{status="generating"}`,
		`previewd_job_oldest_in_flight_seconds{status="queued"}`,
	} {
		if _, ok := scrape[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// Secrets appear in no API response and no log line.
	for _, s := range []string{testutil.SimAPIKey, c.env["PREVIEWD_WEBHOOK_SECRET"], apiToken} {
		for _, out := range append(responses, log.String()) {
			if strings.Contains(out, s) {
				t.Fatalf("a secret appears in an API response or the log")
			}
		}
	}

	exit := make(chan int, 1)
	go func() { exit <- stop() }()
	testutil.Eventually(t, 20*time.Second, "/readyz to report draining", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if code := <-exit; code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, log.String())
	}
}

// parseMetrics reads the Prometheus text format into name{labels} → value.
func parseMetrics(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}
