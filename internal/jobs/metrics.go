package jobs

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/gen/db"
)

// collectTimeout bounds the queries of one scrape.
const collectTimeout = 5 * time.Second

// Collector exposes the jobs as kiln_jobs_* metrics, read at scrape time and cached for a
// short while so that several scrapers (or a fast scrape interval) cost one query:
//
//   - kiln_jobs{queue,kind,state}: queued, running and failed (not discarded) jobs, from
//     PostgreSQL (each state through its partial index);
//   - kiln_jobs_queue_latency_seconds{queue}: how long the oldest due queued job has
//     waited, from PostgreSQL;
//   - kiln_jobs_stale_running{queue,kind}: running jobs whose heartbeat stopped;
//   - kiln_jobs_processed_total{queue}, kiln_jobs_failed_total{queue}: attempts Asynq
//     processed and failed since the queue's first task (counters kept in Redis).
//
// Every replica reports the same cluster-wide numbers: aggregate with max, not sum.
type Collector struct {
	svc *Service
	ttl time.Duration

	jobs, latency, stale, processed, failed *prometheus.Desc

	mu      sync.Mutex
	at      time.Time
	metrics []prometheus.Metric
}

// NewCollector returns the collector of svc's jobs; ttl is how long a scrape's figures
// are served again (0: 5 s).
func NewCollector(svc *Service, ttl time.Duration) *Collector {
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	return &Collector{
		svc: svc, ttl: ttl,
		jobs:      prometheus.NewDesc("kiln_jobs", "Jobs queued, running and failed (not discarded), by queue, kind and state.", []string{"queue", "kind", "state"}, nil),
		latency:   prometheus.NewDesc("kiln_jobs_queue_latency_seconds", "How long the oldest due queued job of a queue has waited.", []string{"queue"}, nil),
		stale:     prometheus.NewDesc("kiln_jobs_stale_running", "Running jobs whose heartbeat stopped, by queue and kind.", []string{"queue", "kind"}, nil),
		processed: prometheus.NewDesc("kiln_jobs_processed_total", "Job attempts processed (succeeded or failed), by queue.", []string{"queue"}, nil),
		failed:    prometheus.NewDesc("kiln_jobs_failed_total", "Job attempts that failed, by queue.", []string{"queue"}, nil),
	}
}

// Describe sends the descriptors of every metric.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.jobs, c.latency, c.stale, c.processed, c.failed} {
		ch <- d
	}
}

// Collect sends the metrics, read again when the cached ones are older than the ttl.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.metrics == nil || time.Since(c.at) >= c.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
		metrics, err := c.read(ctx)
		cancel()
		if err != nil {
			c.svc.Log.Warn("read job metrics", "error", err)
		} else {
			c.metrics, c.at = metrics, time.Now()
		}
	}
	for _, m := range c.metrics {
		ch <- m
	}
}

func (c *Collector) read(ctx context.Context) ([]prometheus.Metric, error) {
	now := c.svc.Now().UTC()
	rows, err := c.svc.Store.CountLiveJobs(ctx, db.CountLiveJobsParams{Now: now, StaleBefore: now.Add(-c.svc.StaleAfter())})
	if err != nil {
		return nil, err
	}
	type queueKind struct{ queue, kind string }
	stale, latency := map[queueKind]int64{}, map[string]float64{}
	counts := map[queueKind]map[State]int64{}
	for _, name := range c.svc.Registry.Names() { // every kind shows, at 0 when idle
		k, _ := c.svc.Registry.Kind(name)
		counts[queueKind{k.Queue, name}] = map[State]int64{Queued: 0, Running: 0, Failed: 0}
		latency[k.Queue] = max(latency[k.Queue], 0)
	}
	for _, r := range rows {
		qk := queueKind{r.Queue, r.Kind}
		if counts[qk] == nil {
			counts[qk] = map[State]int64{Queued: 0, Running: 0, Failed: 0}
		}
		counts[qk][State(r.State)] += r.Jobs
		stale[qk] += r.StaleRunning
		latency[r.Queue] = max(latency[r.Queue], r.OldestPendingSeconds)
	}
	var out []prometheus.Metric
	for qk, states := range counts {
		for st, n := range states {
			out = append(out, prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(n), qk.queue, qk.kind, string(st)))
		}
		out = append(out, prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, float64(stale[qk]), qk.queue, qk.kind))
	}
	for q, s := range latency {
		out = append(out, prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, s, q))
		info, err := c.svc.inspector.GetQueueInfo(c.svc.Queue(q))
		if err != nil {
			continue // Asynq has not seen a task of this queue yet
		}
		out = append(out,
			prometheus.MustNewConstMetric(c.processed, prometheus.CounterValue, float64(info.ProcessedTotal), q),
			prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(info.FailedTotal), q))
	}
	return out, nil
}
