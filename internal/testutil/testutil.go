// Package testutil gives tests real parts in one call: an isolated namespace
// on the Redis at PREVIEWD_REDIS_URL (in-process miniredis only outside CI
// when no Redis answers), a CSM simulator on a loopback port, and a webhook
// receiver that records every request.
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csmsim"
)

// DefaultRedisURL is used when PREVIEWD_REDIS_URL is unset.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// Redis is an isolated slice of a Redis server for one test.
type Redis struct {
	Client    redis.UniversalClient
	URL       string
	Namespace string
	// Mini is the in-process server when the test fell back to miniredis.
	Mini *miniredis.Miniredis
}

// Real reports whether the test runs against a real Redis server.
func (r *Redis) Real() bool { return r.Mini == nil }

var fallbackOnce sync.Once

// NewRedis connects to PREVIEWD_REDIS_URL (default redis://127.0.0.1:6379/0)
// and gives the test a fresh namespace whose keys (and asynq queues) are
// deleted when it ends. When no Redis answers: under CI=true the test fails;
// elsewhere it falls back to miniredis and says so.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	url := os.Getenv("PREVIEWD_REDIS_URL")
	if url == "" {
		url = DefaultRedisURL
	}
	ns := "t" + RandomHex(6)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("PREVIEWD_REDIS_URL %q: %v", url, err)
	}
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no Redis answers at %s: %v", url, err)
		}
		fallbackOnce.Do(func() {
			fmt.Fprintf(os.Stderr, "testutil: no Redis at %s (%v); falling back to in-process miniredis\n", url, err)
		})
		t.Logf("no Redis at %s; using in-process miniredis", url)
		mini := miniredis.RunT(t)
		mini.ClockTTL(true)
		client = redis.NewClient(&redis.Options{Addr: mini.Addr()})
		t.Cleanup(func() { _ = client.Close() })
		return &Redis{Client: client, URL: "redis://" + mini.Addr() + "/0", Namespace: ns, Mini: mini}
	}
	r := &Redis{Client: client, URL: url, Namespace: ns}
	t.Cleanup(func() {
		r.cleanup(t)
		_ = client.Close()
	})
	return r
}

// NewPrivateRedis gives the test a redis-server of its own, for tests of
// tools that read every queue of a Redis (asynqmon lists them all, and
// fails a listing when another test's cleanup removes a queue between its
// reads). It cleans up by stopping the server.
func NewPrivateRedis(t testing.TB) *Redis {
	t.Helper()
	srv := StartRedisServer(t)
	return &Redis{Client: srv.Client(), URL: srv.URL(), Namespace: "t" + RandomHex(6)}
}

// cleanup deletes the namespace's keys: previewd's, asynq's queues and the
// rate limiter's. SCAN is fine here: a test's teardown, not a hot path.
func (r *Redis) cleanup(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pattern := range []string{r.Namespace + ":*", "asynq:{" + r.Namespace + ":*", "rate:" + r.Namespace + ":*"} {
		iter := r.Client.Scan(ctx, 0, pattern, 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Logf("cleanup scan %s: %v", pattern, err)
			continue
		}
		for _, k := range keys {
			r.Client.Del(ctx, k)
		}
	}
	r.Client.SRem(ctx, "asynq:queues", r.Namespace+":polls", r.Namespace+":previews", r.Namespace+":webhooks:final", r.Namespace+":webhooks")
}

// Keys lists the namespace's previewd keys (tests only).
func (r *Redis) Keys(t testing.TB) []string {
	t.Helper()
	keys, err := r.Client.Keys(context.Background(), r.Namespace+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// RandomHex returns n random bytes as hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// SimAPIKey is the API key NewSim's simulator expects.
const SimAPIKey = "sim-test-key-3f9a1c"

// NewSim starts a CSM simulator on a loopback port and returns it with its
// base URL.
func NewSim(t testing.TB, opts csmsim.Options) (*csmsim.Server, string) {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = SimAPIKey
	}
	sim := csmsim.New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(func() {
		sim.Close()
		srv.Close()
	})
	return sim, srv.URL
}

// Delivery is one request a Receiver got.
type Delivery struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

// Receiver is a webhook endpoint on a loopback port that records every
// request and answers with Status (200 by default).
type Receiver struct {
	URL string

	mu         sync.Mutex
	deliveries []Delivery
	status     int
	delay      time.Duration
	notify     chan struct{}
}

// NewReceiver starts a Receiver.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	rc := &Receiver{status: http.StatusOK, notify: make(chan struct{}, 1)}
	srv := httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(srv.Close)
	rc.URL = srv.URL + "/hooks"
	return rc
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rc.mu.Lock()
	rc.deliveries = append(rc.deliveries, Delivery{Header: r.Header.Clone(), Body: body, At: time.Now()})
	status, delay := rc.status, rc.delay
	rc.mu.Unlock()
	time.Sleep(delay)
	select {
	case rc.notify <- struct{}{}:
	default:
	}
	w.WriteHeader(status)
}

// SetDelay makes the receiver take d over each delivery from now on.
func (rc *Receiver) SetDelay(d time.Duration) {
	rc.mu.Lock()
	rc.delay = d
	rc.mu.Unlock()
}

// SetStatus sets the status code answered from now on.
func (rc *Receiver) SetStatus(code int) {
	rc.mu.Lock()
	rc.status = code
	rc.mu.Unlock()
}

// Deliveries returns a copy of what was received so far.
func (rc *Receiver) Deliveries() []Delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Delivery(nil), rc.deliveries...)
}

// WaitFor waits until cond holds for the deliveries received, or fails the
// test after timeout.
func (rc *Receiver) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Delivery) bool) []Delivery {
	t.Helper()
	deadline := time.After(timeout)
	for {
		d := rc.Deliveries()
		if cond(d) {
			return d
		}
		select {
		case <-rc.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s; got %d deliveries", timeout, what, len(d))
		}
	}
}

// Eventually polls cond every 20 ms until it holds or fails the test.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Clock is a fake clock for code that takes a func() time.Time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
