// Package metrics exposes previewd's Prometheus metrics: what the worker
// observes (upstream calls, finished jobs, webhook deliveries), the HTTP
// API's requests, cluster-wide job counters and jobs in flight kept in
// Redis, and queue sizes read from asynq's Inspector, all read at most once
// per few seconds however often /metrics is scraped.
package metrics

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/previewd/previewd/internal/buildinfo"
	"github.com/previewd/previewd/store"
)

const namespace = "previewd"

// Metrics implements worker.Observer and serves /metrics.
type Metrics struct {
	reg *prometheus.Registry

	jobDuration      *prometheus.HistogramVec
	pollsPerJob      prometheus.Histogram
	detectionDelay   prometheus.Histogram
	upstreamRequests *prometheus.CounterVec
	upstreamLatency  *prometheus.HistogramVec
	upstreamLimited  prometheus.Counter
	rateTurns        *prometheus.HistogramVec
	upstreamAuth     prometheus.Counter
	budgetExhausted  *prometheus.CounterVec
	webhookAttempts  *prometheus.CounterVec
	webhookLatency   prometheus.Histogram
	httpRequests     *prometheus.CounterVec
	httpLatency      *prometheus.HistogramVec
}

// Sources are what the scrape-time collectors read.
type Sources struct {
	Inspector *asynq.Inspector
	Queues    []string // the asynq queues to report
	Webhooks  []string // the webhook queues, whose waiting work is the backlog
	Store     *store.Store
	Logger    *zap.Logger
	// CacheFor is how long a reading of Redis (queue sizes, job counters)
	// is served again before the next scrape reads anew; default
	// DefaultStateCacheFor. Now is the clock that window is measured on.
	CacheFor time.Duration
	Now      func() time.Time
}

// New registers every metric on a fresh registry.
func New(src Sources) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "job_duration_seconds",
			Help:    "Time from a job's creation to its final status, by final status.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 10800},
		}, []string{"status"}),
		pollsPerJob: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "job_polls",
			Help:    "Session reads a job needed before its final status.",
			Buckets: []float64{1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233},
		}),
		detectionDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "detection_delay_seconds",
			Help:    "Time from the poll that saw a job's final status to the delivery of its final webhook.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_requests_total",
			Help: "Calls to CSM by endpoint and outcome (ok, or the kind of failure).",
		}, []string{"endpoint", "outcome"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_request_duration_seconds",
			Help:    "Latency of calls to CSM by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}, []string{"endpoint"}),
		rateTurns: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "csm_rate_wait_seconds",
			Help:    "Turns of the shared CSM rate limit by class (poll, request) and how long each waited: the count is the budget used, the wait its pressure.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 9),
		}, []string{"class"}),
		upstreamLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_rate_limited_total",
			Help: "CSM answers that asked us to slow down (429, or a 400 worded as a rate limit).",
		}),
		upstreamAuth: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_auth_faults_total",
			Help: "CSM refusing our API key (401/403): a configuration fault.",
		}),
		budgetExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "budget_exhausted_total",
			Help: "Preview requests held back by the spending guard (PREVIEWD_MAX_PREVIEWS_PER_HOUR/_PER_DAY), by window.",
		}, []string{"window"}),
		webhookAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome (delivered, http_error, transport_error, gone, blocked).",
		}, []string{"outcome"}),
		webhookLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "webhook_delivery_duration_seconds",
			Help:    "Latency of webhook delivery attempts.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 13),
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP API requests by route and status code.",
		}, []string{"route", "code"}),
		httpLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "HTTP API latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"route"}),
	}
	reg.MustRegister(m.own()...)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(buildInfoGauge(buildinfo.Read()))
	if src.Inspector != nil || src.Store != nil {
		if src.Logger == nil {
			src.Logger = zap.NewNop()
		}
		reg.MustRegister(newCachedCollector(&stateCollector{src: src}, src.CacheFor, src.Now))
		if src.Store != nil {
			reg.MustRegister(newCachedCollector(&inFlightCollector{src: src}, src.CacheFor, src.Now))
		}
	}
	return m
}

// buildInfoGauge is previewd_build_info, 1, labelled with what
// `previewd version` prints, so that a dashboard shows which build each
// process runs (and a rollout in progress).
func buildInfoGauge(info buildinfo.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "The running build: version, commit, Go and asynq versions (always 1).",
		ConstLabels: prometheus.Labels{
			"version": info.Version, "commit": info.Commit, "goversion": info.GoVersion, "asynq": info.Asynq,
		},
	})
	g.Set(1)
	return g
}

// own returns previewd's own process-local collectors.
func (m *Metrics) own() []prometheus.Collector {
	return []prometheus.Collector{m.jobDuration, m.pollsPerJob, m.detectionDelay, m.upstreamRequests, m.upstreamLatency,
		m.rateTurns, m.upstreamLimited, m.upstreamAuth, m.budgetExhausted, m.webhookAttempts, m.webhookLatency, m.httpRequests, m.httpLatency}
}

// Names lists the names of every metric previewd exports (histograms
// without their _bucket, _sum and _count suffixes), for checking that
// dashboards and alert rules refer to real metrics.
func Names() []string {
	m := New(Sources{})
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range append(m.own(), &stateCollector{}, &inFlightCollector{}) {
			c.Describe(ch)
		}
		close(ch)
	}()
	var names []string
	for d := range ch {
		// Desc has no accessor for its name; its String form carries it.
		s := d.String()
		if i := strings.Index(s, `fqName: "`); i >= 0 {
			rest := s[i+len(`fqName: "`):]
			names = append(names, rest[:strings.IndexByte(rest, '"')])
		}
	}
	return names
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// UpstreamCall implements worker.Observer.
func (m *Metrics) UpstreamCall(endpoint, outcome string, latency time.Duration) {
	m.upstreamRequests.WithLabelValues(endpoint, outcome).Inc()
	m.upstreamLatency.WithLabelValues(endpoint).Observe(latency.Seconds())
}

// CSMRateTurn records one turn of the shared CSM rate limit (csm.RedisLimiter.OnTurn).
func (m *Metrics) CSMRateTurn(class string, waited time.Duration) {
	m.rateTurns.WithLabelValues(class).Observe(waited.Seconds())
}

// UpstreamRateLimited implements worker.Observer.
func (m *Metrics) UpstreamRateLimited() { m.upstreamLimited.Inc() }

// BudgetExhausted implements worker.Observer.
func (m *Metrics) BudgetExhausted(window string) { m.budgetExhausted.WithLabelValues(window).Inc() }

// UpstreamAuthFault implements worker.Observer.
func (m *Metrics) UpstreamAuthFault() { m.upstreamAuth.Inc() }

// JobFinished implements worker.Observer.
func (m *Metrics) JobFinished(j store.Job) {
	end := j.UpdatedAt
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	m.jobDuration.WithLabelValues(string(j.Status)).Observe(end.Sub(j.CreatedAt).Seconds())
	m.pollsPerJob.Observe(float64(j.Polls))
}

// WebhookAttempt implements worker.Observer.
func (m *Metrics) WebhookAttempt(outcome string, latency time.Duration) {
	m.webhookAttempts.WithLabelValues(outcome).Inc()
	m.webhookLatency.Observe(latency.Seconds())
}

// FinalWebhookDelivered implements worker.Observer.
func (m *Metrics) FinalWebhookDelivered(delay time.Duration) {
	m.detectionDelay.Observe(delay.Seconds())
}

// HTTPRequest records one API request.
func (m *Metrics) HTTPRequest(route string, code int, latency time.Duration) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.httpLatency.WithLabelValues(route).Observe(latency.Seconds())
}

// stateCollector reads, at scrape time, what lives in Redis: queue sizes
// from asynq's Inspector and the cluster-wide job counters.
type stateCollector struct{ src Sources }

var (
	queueTasksDesc = prometheus.NewDesc(namespace+"_queue_tasks", "Tasks in an asynq queue by state.", []string{"queue", "state"}, nil)
	backlogDesc    = prometheus.NewDesc(namespace+"_webhook_backlog", "Webhook tasks waiting: pending, scheduled or retrying.", nil, nil)
	createdDesc    = prometheus.NewDesc(namespace+"_jobs_created_total", "Jobs created, by every producer (cluster-wide, from Redis).", nil, nil)
	finishedDesc   = prometheus.NewDesc(namespace+"_jobs_finished_total", "Jobs finished by final status (cluster-wide, from Redis).", []string{"status"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueTasksDesc
	ch <- backlogDesc
	ch <- createdDesc
	ch <- finishedDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Inspector != nil {
		var backlog int
		for _, q := range c.src.Queues {
			info, err := c.src.Inspector.GetQueueInfo(q)
			if err != nil {
				// A queue nobody has used yet does not exist in asynq.
				c.src.Logger.Debug("queue info unavailable", zap.String("queue", q), zap.Error(err))
				continue
			}
			for state, n := range map[string]int{
				"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
				"retry": info.Retry, "archived": info.Archived, "completed": info.Completed,
			} {
				ch <- prometheus.MustNewConstMetric(queueTasksDesc, prometheus.GaugeValue, float64(n), q, state)
			}
			if slices.Contains(c.src.Webhooks, q) {
				backlog += info.Pending + info.Scheduled + info.Retry
			}
		}
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(backlog))
	}
	if c.src.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		stats, err := c.src.Store.Stats(ctx)
		if err != nil {
			c.src.Logger.Warn("job counters unavailable", zap.Error(err))
			return
		}
		ch <- prometheus.MustNewConstMetric(createdDesc, prometheus.CounterValue, float64(stats.Created))
		for status, n := range stats.Finished {
			ch <- prometheus.MustNewConstMetric(finishedDesc, prometheus.CounterValue, float64(n), string(status))
		}
	}
}
