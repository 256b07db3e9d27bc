package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// embeddedRedis is the bench's own redis-server: no persistence, loopback
// only, so that INFO commandstats counts nothing but the bench's phases.
type embeddedRedis struct {
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
	addr   string
}

// startEmbeddedRedis starts redis-server on a free loopback port and waits
// until it answers. It reports exec.ErrNotFound when there is no binary.
func startEmbeddedRedis(ctx context.Context, bin string) (*embeddedRedis, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "previewd-bench-")
	if err != nil {
		return nil, fmt.Errorf("redis data dir: %w", err)
	}
	var lastErr error
	// A port found free can be taken before the server binds it: try others.
	for range 5 {
		port, err := freePort()
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		r := &embeddedRedis{dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		if lastErr = r.start(ctx, bin, port); lastErr == nil {
			return r, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("redis-server would not start: %w", lastErr)
}

func (r *embeddedRedis) start(ctx context.Context, bin string, port int) error {
	r.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--logfile", filepath.Join(r.dir, "redis.log"), "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--daemonize", "no")
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.exited = make(chan struct{})
	go func() {
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer c.Close()
	pid := "process_id:" + strconv.Itoa(r.cmd.Process.Pid) + "\r\n"
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		// Another process may have taken the port first: only ours counts.
		info, err := c.Info(pctx, "server").Result()
		cancel()
		if err == nil && strings.Contains(info, pid) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("another process answers on %s", r.addr)
		}
		select {
		case <-r.exited:
			return fmt.Errorf("redis-server on %s exited at start: %w", r.addr, err)
		case <-ctx.Done():
			r.stop()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return fmt.Errorf("redis-server on %s does not answer: %w", r.addr, err)
		}
	}
}

func (r *embeddedRedis) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
	r.cmd = nil
}

// close stops the server and removes its directory.
func (r *embeddedRedis) close() {
	r.stop()
	_ = os.RemoveAll(r.dir)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// commandStats is INFO commandstats: calls per command. Redis 7 counts the
// commands a script runs (redis.call inside EVAL/EVALSHA) under their own
// names as well as the EVALSHA itself, so the sum is the work Redis did,
// not the round trips.
type commandStats map[string]int64

func readCommandStats(ctx context.Context, rdb redis.UniversalClient) (commandStats, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO commandstats: %w", err)
	}
	return parseCommandStats(info), nil
}

// parseCommandStats reads lines like
// "cmdstat_hset:calls=2,usec=31,usec_per_call=15.50,...".
func parseCommandStats(info string) commandStats {
	out := commandStats{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		name, ok = strings.CutPrefix(name, "cmdstat_")
		if !ok {
			continue
		}
		for field := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(field, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					out[name] = n
				}
			}
		}
	}
	return out
}

// sub returns the calls made since before, without the bench's own INFO.
func (s commandStats) sub(before commandStats) commandStats {
	out := commandStats{}
	for name, n := range s {
		if d := n - before[name]; d > 0 && name != "info" {
			out[name] = d
		}
	}
	return out
}

func (s commandStats) total() int64 {
	var t int64
	for _, n := range s {
		t += n
	}
	return t
}

// top returns the n commands called most, as "name count" strings.
func (s commandStats) top(n int) []string {
	names := make([]string, 0, len(s))
	for name := range s {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		if s[names[i]] != s[names[j]] {
			return s[names[i]] > s[names[j]]
		}
		return names[i] < names[j]
	})
	if len(names) > n {
		names = names[:n]
	}
	out := make([]string, len(names))
	for i, name := range names {
		out[i] = name + " " + strconv.FormatInt(s[name], 10)
	}
	return out
}

// memoryUse is what namespaceMemory found: bytes and keys in all, and
// bytes per kind of key (its name with ids and hash tags masked), which
// tells where a job's bytes go.
type memoryUse struct {
	bytes  int64
	keys   int
	byKind map[string]int64
}

// idPattern matches what varies from job to job in a key name: UUIDs,
// hex ids (hash tags of slots, event ids), session codes and the peer's
// numbered job ids.
var idPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}|BENCH_[A-Za-z0-9_]+|peer-[0-9a-f]{8}-[0-9]+`)

// keyKind is a key's name with what varies per job masked as "*".
func keyKind(key string) string { return idPattern.ReplaceAllString(key, "*") }

// namespaceMemory sums MEMORY USAGE over every key matching the patterns
// and counts them. SCAN is fine here: it runs once after a phase, never on
// a hot path.
func namespaceMemory(ctx context.Context, rdb redis.UniversalClient, patterns ...string) (use memoryUse, err error) {
	use.byKind = map[string]int64{}
	for _, pattern := range patterns {
		iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			n, err := rdb.MemoryUsage(ctx, iter.Val()).Result()
			if errors.Is(err, redis.Nil) {
				continue // expired between SCAN and MEMORY USAGE
			}
			if err != nil {
				return memoryUse{}, fmt.Errorf("MEMORY USAGE %s: %w", iter.Val(), err)
			}
			use.bytes += n
			use.keys++
			use.byKind[keyKind(iter.Val())] += n
		}
		if err := iter.Err(); err != nil {
			return memoryUse{}, fmt.Errorf("SCAN %s: %w", pattern, err)
		}
	}
	return use, nil
}

// deleteKeys removes every key matching the patterns (the bench's cleanup
// on a Redis it was given).
func deleteKeys(ctx context.Context, rdb redis.UniversalClient, patterns ...string) {
	for _, pattern := range patterns {
		iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	}
}
