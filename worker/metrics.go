package worker

import (
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// queueCollector exposes Asynq queue sizes as kiln_worker_queue_size{queue,state}.
type queueCollector struct {
	inspector *asynq.Inspector
	queue     string
	desc      *prometheus.Desc
}

// NewQueueCollector reads the deployment's queue sizes at scrape time.
func NewQueueCollector(rdb redis.UniversalClient, env string) prometheus.Collector {
	return queueCollector{
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		queue:     Queue(env),
		desc:      prometheus.NewDesc("kiln_worker_queue_size", "Tasks in a worker queue by state.", []string{"queue", "state"}, nil),
	}
}

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	info, err := c.inspector.GetQueueInfo(c.queue)
	if err != nil {
		return // the queue does not exist until its first task
	}
	for state, n := range map[string]int{
		"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
		"retry": info.Retry, "archived": info.Archived,
	} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), c.queue, state)
	}
}
