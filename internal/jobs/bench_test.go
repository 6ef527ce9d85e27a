package jobs_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
)

const (
	benchJobs        = 5000
	benchProducers   = 16
	benchConcurrency = 50
)

// BenchmarkThroughput runs no-op jobs end to end (each created in a transaction of its
// own, then relayed, run and ended) and, in the same run, bare Asynq tasks (enqueued,
// processed by a no-op handler), reporting both rates and their ratio, the rate at which
// the jobs' creating transactions committed, and the CPU each job and each task cost
// (this process, the PostgreSQL backends, Redis). Run with -benchtime=1x: each
// iteration moves benchJobs of each.
func BenchmarkThroughput(b *testing.B) {
	for range b.N {
		j := benchJobsEndToEnd(b)
		a := benchBareAsynq(b)
		b.ReportMetric(j.rate, "jobs/s")
		b.ReportMetric(j.created, "created/s")
		b.ReportMetric(a.rate, "asynq/s")
		b.ReportMetric(100*j.rate/a.rate, "%asynq")
		b.ReportMetric(perJob(j.self), "go-µs/job")
		b.ReportMetric(perJob(j.pg), "pg-µs/job")
		b.ReportMetric(perJob(j.redis), "redis-µs/job")
		b.ReportMetric(perJob(a.self), "go-µs/task")
		b.ReportMetric(perJob(a.redis), "redis-µs/task")
	}
}

// throughput is one side of BenchmarkThroughput.
type throughput struct {
	rate, created   float64 // per second: run to the end; created (jobs only)
	self, pg, redis time.Duration
}

func perJob(d time.Duration) float64 { return float64(d.Microseconds()) / benchJobs }

func benchJobsEndToEnd(b *testing.B) throughput {
	b.Helper()
	var done atomic.Int64
	all := make(chan struct{})
	bd := setup(b, func(bd *bundle) {
		jobs.Register(bd.reg, jobs.Kind{Name: "bench.noop"}, func(context.Context, *jobs.Run, struct{}) (any, error) {
			if done.Add(1) == benchJobs {
				close(all)
			}
			return nil, nil
		})
	})
	// The production intervals: the tests' (a sweep every 100 ms) would measure the
	// reconciliation re-reading the queue's backlog ten times a second.
	run(b, bd.replica(b, jobs.Config{Env: bd.ks.Env, Concurrency: benchConcurrency}, nil))
	cpu := startCPU(b, bd.rdb)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range benchProducers {
		wg.Go(func() {
			for next.Add(1) <= benchJobs {
				err := bd.st.InTx(context.Background(), func(q *db.Queries) error {
					_, err := bd.reg.Enqueue(context.Background(), q, time.Now(), jobs.New{Kind: "bench.noop", Payload: struct{}{}})
					return err
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	created := time.Since(start)
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		b.Fatalf("%d of %d jobs ran", done.Load(), benchJobs)
	}
	elapsed := time.Since(start)
	t := throughput{rate: benchJobs / elapsed.Seconds(), created: benchJobs / created.Seconds()}
	t.self, t.pg, t.redis = cpu.stop(b, bd.st.Pool, bd.rdb)
	return t
}

func benchBareAsynq(b *testing.B) throughput {
	b.Helper()
	bd := setup(b, nil)
	queue := bd.ks.Env + ".bare"
	var done atomic.Int64
	all := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(bd.rdb, asynq.Config{Concurrency: benchConcurrency, Queues: map[string]int{queue: 1},
		TaskCheckInterval: 100 * time.Millisecond, Logger: quietAsynq{}})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		if done.Add(1) == benchJobs {
			close(all)
		}
		return nil
	})); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	client := asynq.NewClientFromRedisClient(bd.rdb)
	cpu := startCPU(b, bd.rdb)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range benchProducers {
		wg.Go(func() {
			for i := next.Add(1); i <= benchJobs; i = next.Add(1) {
				payload, _ := json.Marshal(map[string]string{"job": uuid.NewString()})
				if _, err := client.Enqueue(asynq.NewTask("bench.noop", payload), asynq.Queue(queue), asynq.TaskID(strconv.FormatInt(i, 10))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		b.Fatalf("%d of %d tasks ran", done.Load(), benchJobs)
	}
	t := throughput{rate: benchJobs / time.Since(start).Seconds()}
	t.self, _, t.redis = cpu.stop(b, bd.st.Pool, bd.rdb)
	return t
}

// BenchmarkProgressLatency measures a Report in a handler to the event reaching a
// follower on another replica (Follow, what the SSE endpoint writes from): p50 and p99.
func BenchmarkProgressLatency(b *testing.B) {
	const reports = 200
	for range b.N {
		go1 := make(chan struct{})
		bd := setup(b, func(bd *bundle) {
			jobs.Register(bd.reg, jobs.Kind{Name: "bench.progress"}, func(ctx context.Context, run *jobs.Run, _ struct{}) (any, error) {
				<-go1
				for i := range reports {
					if err := run.Report(ctx, jobs.Progress{Done: int64(i), Message: strconv.FormatInt(time.Now().UnixNano(), 10)}); err != nil {
						return nil, err
					}
					time.Sleep(2 * time.Millisecond)
				}
				return nil, nil
			})
		})
		run(b, bd.replica(b, bd.config(4), nil))
		follower := bd.replica(b, bd.config(0), nil)
		org := bd.org(b)
		j := bd.enqueue(b, jobs.New{Kind: "bench.progress", OrgID: &org, Payload: struct{}{}})
		var lat []time.Duration
		followed := make(chan error, 1)
		go func() {
			followed <- follower.Follow(context.Background(), jobs.Owner{Org: org}, j.ID, 0, func(ev jobs.Event) error {
				if ev.Type != jobs.EventProgress {
					return nil
				}
				var p jobs.ProgressEvent
				if err := json.Unmarshal(ev.Data, &p); err != nil {
					return err
				}
				sent, _ := strconv.ParseInt(p.Message, 10, 64)
				lat = append(lat, time.Since(time.Unix(0, sent)))
				return nil
			})
		}()
		time.Sleep(100 * time.Millisecond) // the follower waits on the stream
		close(go1)
		if err := <-followed; err != nil {
			b.Fatal(err)
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkCancelLatency measures a Cancel on one replica to the handler's context ending
// on another: p50 and p99 over 50 jobs.
func BenchmarkCancelLatency(b *testing.B) {
	const runs = 50
	for range b.N {
		started := make(chan uuid.UUID)
		var mu sync.Mutex
		ended := map[uuid.UUID]time.Time{}
		endedCh := make(chan struct{}, runs)
		bd := setup(b, func(bd *bundle) {
			jobs.Register(bd.reg, jobs.Kind{Name: "bench.block"}, func(ctx context.Context, run *jobs.Run, _ struct{}) (any, error) {
				started <- run.ID
				<-ctx.Done()
				mu.Lock()
				ended[run.ID] = time.Now()
				mu.Unlock()
				endedCh <- struct{}{}
				return nil, ctx.Err()
			})
		})
		run(b, bd.replica(b, bd.config(4), nil))
		api := bd.replica(b, bd.config(0), nil)
		org := bd.org(b)
		var lat []time.Duration
		for range runs {
			j := bd.enqueue(b, jobs.New{Kind: "bench.block", OrgID: &org, Payload: struct{}{}})
			<-started
			at := time.Now()
			if _, err := api.Cancel(context.Background(), jobs.Owner{Org: org}, j.ID); err != nil {
				b.Fatal(err)
			}
			<-endedCh
			mu.Lock()
			lat = append(lat, ended[j.ID].Sub(at))
			mu.Unlock()
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

type quietAsynq struct{}

func (quietAsynq) Debug(...any) {}
func (quietAsynq) Info(...any)  {}
func (quietAsynq) Warn(...any)  {}
func (quietAsynq) Error(...any) {}
func (quietAsynq) Fatal(...any) {}
