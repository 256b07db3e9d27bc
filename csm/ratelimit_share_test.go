package csm_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
)

// TestRedisLimiterReservesPolls: with half of the rate kept for polls, new
// requests (WaitRequest) run out of turns while polls (Wait) still have
// theirs, and polls may use what requests left; every turn is reported by
// class (the budget-use metric). Without the reserve a backlog of requests
// takes every turn.
func TestRedisLimiterReservesPolls(t *testing.T) {
	r := testutil.NewRedis(t)
	var mu sync.Mutex
	turns := map[string]int{}
	// One call a second with a burst of four; requests get half: a burst of two.
	l := csm.NewRedisLimiter(r.Client, r.Namespace+":ratelimit:csm", 1, 4).ReservePolls(0.5)
	l.OnTurn = func(class string, _ time.Duration) { mu.Lock(); turns[class]++; mu.Unlock() }

	start := time.Now()
	for i := range 2 {
		if err := l.WaitRequest(shortCtx(t, 500*time.Millisecond)); err != nil {
			t.Fatalf("request %d within its share: %v", i+1, err)
		}
	}
	if err := l.WaitRequest(shortCtx(t, 100*time.Millisecond)); !heldBack(err, start) {
		t.Fatalf("third request = %v, want it held back (context.DeadlineExceeded): its share is spent", err)
	}
	for i := range 2 {
		if err := l.Wait(shortCtx(t, 500*time.Millisecond)); err != nil {
			t.Fatalf("poll %d within the reserve: %v", i+1, err)
		}
	}
	if err := l.Wait(shortCtx(t, 100*time.Millisecond)); !heldBack(err, start) {
		t.Fatalf("fifth call = %v, want it to wait: the whole rate is spent", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if turns["request"] != 2 || turns["poll"] < 2 {
		t.Fatalf("turns by class = %v, want 2 requests and 2 polls", turns)
	}

	t.Run("without a reserve requests take every turn", func(t *testing.T) {
		l := csm.NewRedisLimiter(r.Client, r.Namespace+":ratelimit:open", 1, 4)
		for i := range 4 {
			if err := l.WaitRequest(shortCtx(t, 500*time.Millisecond)); err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		}
		if err := l.Wait(shortCtx(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("poll after four requests = %v, want it to wait", err)
		}
	})
	t.Run("a session read for a request is a request's turn", func(t *testing.T) {
		var mu sync.Mutex
		classes := map[string]int{}
		l := csm.NewRedisLimiter(r.Client, r.Namespace+":ratelimit:read", 1, 4).ReservePolls(0.5)
		l.OnTurn = func(class string, _ time.Duration) { mu.Lock(); classes[class]++; mu.Unlock() }
		sim, simURL := testutil.NewSim(t, csmsim.Options{})
		sim.AddSession("SESSION_SHARE_READ", csmsim.SessionConfig{})
		c, err := csm.New(csm.Options{BaseURL: simURL, APIKey: testutil.SimAPIKey, Timeout: 2 * time.Second, Limiter: l})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetSession(csm.ForRequest(t.Context()), "SESSION_SHARE_READ"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetSession(t.Context(), "SESSION_SHARE_READ"); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if classes["request"] != 1 || classes["poll"] != 1 {
			t.Fatalf("turns by class = %v, want the read for a request on the requests' share and the plain read a poll's", classes)
		}
	})
	t.Run("the client's AwaitTurn is a request's turn", func(t *testing.T) {
		l := csm.NewRedisLimiter(r.Client, r.Namespace+":ratelimit:client", 1, 4).ReservePolls(0.5)
		c, err := csm.New(csm.Options{BaseURL: "http://127.0.0.1:1", APIKey: testutil.SimAPIKey, Timeout: 100 * time.Millisecond, Limiter: l})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for i := range 2 {
			if err := c.AwaitTurn(t.Context()); err != nil {
				t.Fatalf("AwaitTurn %d: %v", i+1, err)
			}
		}
		if err := c.AwaitTurn(t.Context()); err == nil && time.Since(start) < 900*time.Millisecond {
			t.Fatal("third AwaitTurn passed within a second: requests must be held to their share")
		}
		if err := l.Wait(shortCtx(t, 500*time.Millisecond)); err != nil {
			t.Fatalf("a poll after the requests' share was spent: %v", err)
		}
	})
}

// heldBack reports whether a turn asked for after start was refused for
// now. On a machine so loaded that a second passed since start, the bucket
// has refilled and a granted turn proves nothing either way: that counts.
func heldBack(err error, start time.Time) bool {
	return errors.Is(err, context.DeadlineExceeded) || (err == nil && time.Since(start) >= 900*time.Millisecond)
}
