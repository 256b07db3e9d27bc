package metrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultStateCacheFor is how long the Redis-backed collectors' last
// reading is served again (Sources.CacheFor): /metrics may be open, and a
// scrape must not cost Redis work at whatever rate anyone can send them.
const DefaultStateCacheFor = 5 * time.Second

// cachedCollector serves the metrics of the collector it wraps from the
// last reading while it is fresh: a scrape within the window does no work
// of the inner collector at all. Scrapes that find the reading stale wait
// for one of them to take the next; they never read in parallel.
type cachedCollector struct {
	inner prometheus.Collector
	ttl   time.Duration
	now   func() time.Time

	mu   sync.Mutex
	at   time.Time
	last []prometheus.Metric
}

func newCachedCollector(inner prometheus.Collector, ttl time.Duration, now func() time.Time) *cachedCollector {
	if ttl <= 0 {
		ttl = DefaultStateCacheFor
	}
	if now == nil {
		now = time.Now
	}
	return &cachedCollector{inner: inner, ttl: ttl, now: now}
}

func (c *cachedCollector) Describe(ch chan<- *prometheus.Desc) { c.inner.Describe(ch) }

func (c *cachedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if now := c.now(); c.last == nil || now.Sub(c.at) >= c.ttl || now.Before(c.at) {
		fresh := make(chan prometheus.Metric, 64)
		go func() {
			c.inner.Collect(fresh)
			close(fresh)
		}()
		last := []prometheus.Metric{}
		for m := range fresh {
			last = append(last, m)
		}
		c.last, c.at = last, now
	}
	last := c.last
	c.mu.Unlock()
	for _, m := range last {
		ch <- m
	}
}

// RequireToken returns h guarded by a bearer token: a request without
// "Authorization: Bearer <token>" gets 401. The comparison is of SHA-256
// digests in constant time, so neither the token's bytes nor its length
// show in response times. An empty token returns h unguarded.
func RequireToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "a metrics token is required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
