// Package metrics builds Kiln's Prometheus registry and the collectors for its pools.
package metrics

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/version"
)

// NewRegistry returns a registry with the Go and process collectors and kiln_build_info.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	info := version.Get()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kiln_build_info",
		Help: "Always 1; the labels describe the running build.",
	}, []string{"version", "commit", "go_version"})
	build.WithLabelValues(info.Version, info.Commit, info.GoVersion).Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), build)
	return reg
}

// poolCollector exposes a snapshot of pool statistics at scrape time.
type poolCollector struct {
	descs []*prometheus.Desc
	stats func() []float64
	kinds []prometheus.ValueType
}

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for i, v := range c.stats() {
		ch <- prometheus.MustNewConstMetric(c.descs[i], c.kinds[i], v)
	}
}

// NewPgxPoolCollector exposes pgxpool statistics as kiln_db_pool_*.
func NewPgxPoolCollector(pool *pgxpool.Pool) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("kiln_db_pool_"+name, help, nil, nil)
	}
	return poolCollector{
		descs: []*prometheus.Desc{
			d("max_conns", "Maximum size of the pool."),
			d("total_conns", "Connections open."),
			d("acquired_conns", "Connections in use."),
			d("idle_conns", "Idle connections."),
			d("acquire_count_total", "Successful acquires."),
			d("empty_acquire_count_total", "Acquires that waited because the pool was empty."),
			d("canceled_acquire_count_total", "Acquires cancelled by their context."),
			d("acquire_duration_seconds_total", "Time spent acquiring connections."),
		},
		kinds: []prometheus.ValueType{prometheus.GaugeValue, prometheus.GaugeValue, prometheus.GaugeValue, prometheus.GaugeValue,
			prometheus.CounterValue, prometheus.CounterValue, prometheus.CounterValue, prometheus.CounterValue},
		stats: func() []float64 {
			s := pool.Stat()
			return []float64{float64(s.MaxConns()), float64(s.TotalConns()), float64(s.AcquiredConns()), float64(s.IdleConns()),
				float64(s.AcquireCount()), float64(s.EmptyAcquireCount()), float64(s.CanceledAcquireCount()), s.AcquireDuration().Seconds()}
		},
	}
}

// NewRedisPoolCollector exposes go-redis pool statistics as kiln_redis_pool_*.
func NewRedisPoolCollector(c redis.UniversalClient) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("kiln_redis_pool_"+name, help, nil, nil)
	}
	return poolCollector{
		descs: []*prometheus.Desc{
			d("total_conns", "Connections open."),
			d("idle_conns", "Idle connections."),
			d("hits_total", "Times a free connection was found in the pool."),
			d("misses_total", "Times a connection had to be dialled."),
			d("timeouts_total", "Times waiting for a connection timed out."),
		},
		kinds: []prometheus.ValueType{prometheus.GaugeValue, prometheus.GaugeValue, prometheus.CounterValue, prometheus.CounterValue, prometheus.CounterValue},
		stats: func() []float64 {
			s := c.PoolStats()
			return []float64{float64(s.TotalConns), float64(s.IdleConns), float64(s.Hits), float64(s.Misses), float64(s.Timeouts)}
		},
	}
}
