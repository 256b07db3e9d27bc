package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

var (
	inFlightDesc = prometheus.NewDesc(namespace+"_jobs_in_flight",
		"Jobs not yet final, by status (cluster-wide, from the status listings in Redis).", []string{"status"}, nil)
	oldestInFlightDesc = prometheus.NewDesc(namespace+"_job_oldest_in_flight_seconds",
		"Age since creation (not since entering the status) of the oldest job in each status not yet final; 0 when none (cluster-wide, from Redis).", []string{"status"}, nil)
)

// inFlightCollector reads, at scrape time, how many jobs each status not
// yet final holds and how old the oldest is: stuck jobs show before their
// deadline ends them. One reading is a few commands per status, whatever
// the number of jobs (store.InFlight).
type inFlightCollector struct{ src Sources }

func (c *inFlightCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inFlightDesc
	ch <- oldestInFlightDesc
}

func (c *inFlightCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	flights, err := c.src.Store.InFlight(ctx)
	if err != nil {
		c.src.Logger.Warn("jobs in flight unavailable", zap.Error(err))
		return
	}
	now := time.Now
	if c.src.Now != nil {
		now = c.src.Now
	}
	at := now()
	for _, f := range flights {
		var age float64
		if !f.Oldest.IsZero() {
			age = max(at.Sub(f.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(f.Count), string(f.Status))
		ch <- prometheus.MustNewConstMetric(oldestInFlightDesc, prometheus.GaugeValue, age, string(f.Status))
	}
}
