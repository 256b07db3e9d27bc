package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/metrics"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// scrape GETs /metrics from h and returns the body.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestScrapesWithinTheCacheWindowDoNoRedisWork: 50 rapid scrapes of a
// real Redis's queues and counters cost the Redis commands of one reading;
// the reading is taken anew once the window has passed. (Before the cache
// every scrape ran the Inspector's and the store's commands again.)
func TestScrapesWithinTheCacheWindowDoNoRedisWork(t *testing.T) {
	r := testutil.NewRedis(t)
	if !r.Real() {
		t.Skip("counts commands on a real Redis")
	}
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	counter := &testutil.CommandCounter{}
	rdb.AddHook(counter)

	// A queue that exists, with a task in it, so the Inspector has work.
	q := tasks.QueuesFor(r.Namespace)
	ac := asynq.NewClientFromRedisClient(rdb)
	if _, err := ac.Enqueue(asynq.NewTask("metrics-test", nil), asynq.Queue(q.Previews)); err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
	m := metrics.New(metrics.Sources{
		Inspector: asynq.NewInspectorFromRedisClient(rdb),
		Queues:    q.All(),
		Webhooks:  q.Deliveries(),
		Store:     store.New(rdb, store.Options{Namespace: r.Namespace, Retention: time.Hour}),
		CacheFor:  5 * time.Second,
		Now:       clock.Now,
	})
	h := m.Handler()

	before := counter.Load()
	first := scrape(t, h)
	perReading := counter.Load() - before
	if perReading == 0 {
		t.Fatal("the first scrape sent no Redis command: nothing to cache")
	}
	if !strings.Contains(first, `previewd_queue_tasks{queue="`+q.Previews+`",state="pending"} 1`) {
		t.Fatalf("the scrape lacks the pending task:\n%s", first)
	}
	for i := 1; i < 50; i++ {
		clock.Advance(50 * time.Millisecond) // 49 scrapes within 2.45s
		if got := scrape(t, h); got == "" {
			t.Fatal("empty scrape")
		}
	}
	if extra := counter.Load() - before - perReading; extra != 0 {
		t.Fatalf("49 scrapes within the cache window sent %d Redis commands (one reading is %d)", extra, perReading)
	}
	t.Logf("one reading: %d Redis commands; 50 scrapes within 5s: %d", perReading, counter.Load()-before)

	clock.Advance(5 * time.Second)
	mid := counter.Load()
	scrape(t, h)
	if counter.Load() == mid {
		t.Fatal("a scrape after the window read nothing anew")
	}
}

// TestRequireToken: with a token, /metrics answers 401 to a scrape without
// it or with another one, and serves the one that brings it.
func TestRequireToken(t *testing.T) {
	const token = "metrics-token-5c1e9a7b3d"
	h := metrics.RequireToken(token, metrics.New(metrics.Sources{}).Handler())
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"none", "", http.StatusUnauthorized},
		{"wrong", "Bearer metrics-token-5c1e9a7b3e", http.StatusUnauthorized},
		{"prefix", "Bearer metrics-token", http.StatusUnauthorized},
		{"not bearer", "Basic " + token, http.StatusUnauthorized},
		{"right", "Bearer " + token, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("%s: %d, want %d", tc.name, rec.Code, tc.want)
			}
			if tc.want == http.StatusUnauthorized && (strings.Contains(rec.Body.String(), "previewd_") || rec.Header().Get("WWW-Authenticate") == "") {
				t.Fatalf("401 leaks metrics or lacks WWW-Authenticate: %q", rec.Body)
			}
		})
	}
	// Without a token the handler is served as it is.
	rec := httptest.NewRecorder()
	metrics.RequireToken("", metrics.New(metrics.Sources{}).Handler()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("no token set: %d, want 200", rec.Code)
	}
}
