package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// freePort returns a loopback port nobody listens on right now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// child is one child process the harness runs and may kill and restart.
// Its output is appended to a log file that survives restarts.
type child struct {
	name string
	path string
	args []string
	env  []string // nil: the harness's own environment
	log  *os.File

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	expect  bool          // the harness signalled it: its exit is no surprise
	started int
}

func newChild(name, path, logPath string, env []string, args ...string) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	return &child{name: name, path: path, args: args, env: env, log: f}, nil
}

// start runs a new process; the previous one must have exited.
func (c *child) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd := exec.Command(c.path, c.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = c.log, c.log
	cmd.SysProcAttr = childAttr()
	c.started++
	fmt.Fprintf(c.log, "--- chaos: start %d of %s at %s\n", c.started, c.name, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.cmd, c.exited, c.expect = cmd, exited, false
	return nil
}

// running reports whether the current process is alive, and whether its
// exit (if it exited) was unexpected.
func (c *child) running() (alive, surprise bool, state string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return false, false, "never started"
	}
	select {
	case <-c.exited:
		return false, !c.expect, c.cmd.ProcessState.String()
	default:
		return true, false, ""
	}
}

// signal sends sig to the running process and reports its pid; false when
// it is not running.
func (c *child) signal(sig syscall.Signal) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0, false
	}
	select {
	case <-c.exited:
		return 0, false
	default:
	}
	c.expect = true
	if err := c.cmd.Process.Signal(sig); err != nil {
		return 0, false
	}
	return c.cmd.Process.Pid, true
}

// wait waits up to d for the process to exit.
func (c *child) wait(d time.Duration) bool {
	c.mu.Lock()
	exited := c.exited
	c.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

// kill ends the process at once and waits for it; the harness's exit path.
func (c *child) kill() {
	c.signal(syscall.SIGKILL)
	c.wait(5 * time.Second)
}

func (c *child) close() {
	c.kill()
	_ = c.log.Close()
}

// redisServer is the harness's own redis-server: append-only with an fsync
// per write, so that a kill -9 loses nothing it acknowledged, restarted on
// the same port and data directory.
type redisServer struct {
	*child
	addr string
}

func startRedis(ctx context.Context, bin, dir string) (*redisServer, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, fmt.Errorf("chaos needs redis-server on PATH: %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "redis")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("redis data dir: %w", err)
	}
	c, err := newChild("redis-server", bin, filepath.Join(dir, "redis.log"), nil,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", data,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no")
	if err != nil {
		return nil, err
	}
	r := &redisServer{child: c, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	if err := r.restart(ctx); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// restart starts redis-server and waits until it answers PING.
func (r *redisServer) restart(ctx context.Context) error {
	if err := r.start(); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if alive, _, state := r.running(); !alive {
			return fmt.Errorf("redis-server exited (%s); see its log", state)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.Join(fmt.Errorf("redis-server at %s does not answer", r.addr), err, ctx.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
