package testutil

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisBinaries returns the paths of the named programs (redis-server,
// redis-cli). When one is missing the test is skipped, or fails under
// CI=true, where every test must run.
func RedisBinaries(t testing.TB, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	for i, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true and no %s on PATH: %v", name, err)
			}
			t.Skipf("no %s on PATH", name)
		}
		paths[i] = p
	}
	return paths
}

// RedisServer is a redis-server process of one test, on a loopback port,
// with its own data directory: it can be killed (SIGKILL) and restarted on
// the same port and data, and is killed when the test ends.
type RedisServer struct {
	Port int
	Dir  string

	t      testing.TB
	bin    string
	conf   string   // config file given first (sentinels need one they can rewrite)
	args   []string // --name value directives after the defaults
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartRedisServer starts a redis-server with the given directives (like
// "--appendonly", "yes"; they override the defaults: no persistence,
// loopback only) on a port whose cluster bus port (+10000) is free too,
// and waits until it answers PING.
func StartRedisServer(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	return startRedisProcess(t, "", args)
}

// SentinelOptions tunes a sentinel. Zero values give timeouts short enough
// for a failover of a few seconds in a test.
type SentinelOptions struct {
	Quorum          int           // default 2
	DownAfter       time.Duration // default 1s
	FailoverTimeout time.Duration // default 3s
	// AuthPass is the password of the primary and its replicas, if any.
	AuthPass string
	// RequirePass is the sentinels' own password, if any (they use it
	// with each other too).
	RequirePass string
}

// StartSentinel starts `redis-server <conf> --sentinel` monitoring the
// primary at primaryAddr under the name master.
func StartSentinel(t testing.TB, master, primaryAddr string, opts SentinelOptions) *RedisServer {
	t.Helper()
	if opts.Quorum == 0 {
		opts.Quorum = 2
	}
	if opts.DownAfter == 0 {
		opts.DownAfter = time.Second
	}
	if opts.FailoverTimeout == 0 {
		opts.FailoverTimeout = 3 * time.Second
	}
	host, port, err := net.SplitHostPort(primaryAddr)
	if err != nil {
		t.Fatalf("primary address %q: %v", primaryAddr, err)
	}
	conf := fmt.Sprintf("sentinel monitor %s %s %s %d\nsentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s %d\n",
		master, host, port, opts.Quorum, master, opts.DownAfter.Milliseconds(), master, opts.FailoverTimeout.Milliseconds())
	if opts.AuthPass != "" {
		conf += fmt.Sprintf("sentinel auth-pass %s %s\n", master, opts.AuthPass)
	}
	var args []string
	if opts.RequirePass != "" {
		conf += fmt.Sprintf("sentinel sentinel-pass %s\n", opts.RequirePass)
		args = []string{"--requirepass", opts.RequirePass}
	}
	return startRedisProcess(t, conf, args)
}

func startRedisProcess(t testing.TB, conf string, args []string) *RedisServer {
	t.Helper()
	bin := RedisBinaries(t, "redis-server")[0]
	var lastErr error
	// A port found free can be taken before the server binds it: try others.
	for range 5 {
		r := &RedisServer{Port: freePortPair(t), Dir: t.TempDir(), t: t, bin: bin, args: args}
		if conf != "" {
			r.conf = filepath.Join(r.Dir, "sentinel.conf")
			if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(r.stop)
			return r
		}
	}
	t.Fatalf("redis-server would not start: %v", lastErr)
	return nil
}

// freePortPair returns a loopback port that is free, as is port+10000.
func freePortPair(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(10000)
		if portFree(port) && portFree(port+10000) {
			return port
		}
	}
	t.Fatal("no free loopback port pair in 20000-39999")
	return 0
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

// start runs the process and waits until it answers PING.
func (r *RedisServer) start() error {
	var argv []string
	if r.conf != "" {
		argv = append(argv, r.conf, "--sentinel")
	}
	argv = append(argv, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--dir", r.Dir,
		"--logfile", filepath.Join(r.Dir, "redis.log"), "--protected-mode", "no", "--daemonize", "no")
	if r.conf == "" {
		argv = append(argv, "--save", "", "--appendonly", "no")
	}
	argv = append(argv, r.args...)
	cmd := exec.Command(r.bin, argv...)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	r.cmd, r.exited = cmd, exited
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, Password: r.password()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		// Another test's server may have taken the port first: only ours counts.
		info, err := c.Info(ctx, "server").Result()
		cancel()
		if err == nil && strings.Contains(info, "process_id:"+strconv.Itoa(cmd.Process.Pid)+"\r\n") {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("another process answers on port %d", r.Port)
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited at start; its log:\n%s", r.Port, r.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return fmt.Errorf("redis-server on port %d does not answer: %v", r.Port, err)
		}
	}
}

func (r *RedisServer) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
	r.cmd = nil
}

// Addr is the server's host:port.
func (r *RedisServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)) }

// URL is the server's redis:// URL (DB 0).
func (r *RedisServer) URL() string { return "redis://" + r.Addr() + "/0" }

// password is the --requirepass among the server's directives.
func (r *RedisServer) password() string {
	for i, a := range r.args {
		if a == "--requirepass" && i+1 < len(r.args) {
			return r.args[i+1]
		}
	}
	return ""
}

// Client returns a client of the server (with its --requirepass), closed
// when the test ends.
func (r *RedisServer) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.password()})
	r.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill9 kills the server with SIGKILL, as a crash would, and waits for it
// to be gone.
func (r *RedisServer) Kill9() { r.stop() }

// Restart starts the server again on its port and data directory.
func (r *RedisServer) Restart() {
	r.t.Helper()
	if r.cmd != nil {
		r.t.Fatalf("redis-server on port %d is still running", r.Port)
	}
	if err := r.start(); err != nil {
		r.t.Fatal(err)
	}
}

// Log returns what the server logged so far.
func (r *RedisServer) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
	return string(b)
}
