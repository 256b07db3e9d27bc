package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
)

// openSockets counts the sockets a process holds open.
func openSockets(t *testing.T, pid int) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// idleConn connects to addr, sends one keep-alive request and reads its
// answer, then holds the connection open and idle until the server closes
// it or the test ends. answered is counted once the answer is in.
func idleConn(t *testing.T, addr string, answered *atomic.Int64, wg *sync.WaitGroup) {
	defer wg.Done()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("dial: %v", err)
		return
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		t.Errorf("write: %v", err)
		return
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Errorf("read: %v", err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	answered.Add(1)
	// Idle from here on: the server's idle timeout is what ends it.
}

// TestIdleConnectionsCannotExhaustTheServer runs `previewd serve` as a
// process of its own with a small connection cap and idle timeout, opens
// many more keep-alive connections than the cap and leaves them idle: the
// server never holds more sockets than the cap (plus its own few), every
// connection is served in turn as idle ones are reaped, and /readyz still
// answers. Before the cap every connection was accepted and held, 21,000 of
// them in the field, until the process ran out of descriptors. The same
// server refuses /metrics without PREVIEWD_METRICS_TOKEN.
func TestIdleConnectionsCannotExhaustTheServer(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	_, simURL := testutil.NewSim(t, csmsim.Options{})
	c := newCLI(t, r, simURL)
	const capConns, extra = 8, 24
	const metricsToken = "metrics-token-7e2a91c4d0"
	c.env["PREVIEWD_HTTP_MAX_CONNECTIONS"] = strconv.Itoa(capConns)
	c.env["PREVIEWD_HTTP_IDLE_TIMEOUT"] = "2s"
	c.env["PREVIEWD_METRICS_TOKEN"] = metricsToken
	addr := freeAddr(t)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PREVIEWD_TEST_MAIN_ARGS=serve --http "+addr)
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	fresh := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := fresh.Do(req)
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	testutil.Eventually(t, 15*time.Second, "serve to be ready", func() bool { return get("/readyz", "") == http.StatusOK })
	if code := get("/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d, want 401", code)
	}
	if code := get("/metrics", metricsToken); code != http.StatusOK {
		t.Errorf("/metrics with the token: %d, want 200", code)
	}

	baseline := openSockets(t, cmd.Process.Pid)
	var answered atomic.Int64
	var wg sync.WaitGroup
	for range capConns + extra {
		wg.Add(1)
		go idleConn(t, addr, &answered, &wg)
	}
	// Sample the server's sockets until every connection has been served.
	peak := 0
	testutil.Eventually(t, 90*time.Second, "every idle connection to be served in turn", func() bool {
		peak = max(peak, openSockets(t, cmd.Process.Pid))
		return answered.Load() == capConns+extra
	})
	wg.Wait()
	// A few sockets of slack for the Redis pool (the readiness checks).
	if grown := peak - baseline; grown > capConns+3 {
		t.Errorf("the server held %d more sockets under %d idle connections; the cap is %d\n%s", grown, capConns+extra, capConns, log)
	}
	t.Logf("sockets: %d before, at most %d under %d idle connections (cap %d)", baseline, peak, capConns+extra, capConns)
	if code := get("/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz after the idle flood: %d\n%s", code, log)
	}
}
