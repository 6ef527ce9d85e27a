package metrics_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/platform/metrics"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func TestRegistry(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	rdb, _ := storetest.Redis(t)
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry()
	reg.MustRegister(metrics.NewPgxPoolCollector(st.Pool), metrics.NewRedisPoolCollector(rdb))

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				got[f.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				got[f.GetName()] = m.GetCounter().GetValue()
			default:
				got[f.GetName()] = 1
			}
		}
	}
	for name, want := range map[string]float64{
		"kiln_build_info":                  1,
		"kiln_db_pool_max_conns":           8, // storetest opens pools of 8
		"kiln_redis_pool_hits_total":       -1,
		"kiln_redis_pool_total_conns":      -1,
		"kiln_db_pool_acquire_count_total": -1,
		"go_goroutines":                    -1,
		"process_resident_memory_bytes":    -1,
	} {
		v, ok := got[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if want >= 0 && v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if got["kiln_redis_pool_total_conns"] < 1 {
		t.Error("the redis pool reports no connection after a PING")
	}
	if got["kiln_db_pool_acquire_count_total"] < 1 {
		t.Error("the database pool reports no acquire after migrations and a ping")
	}
	// A second registry must not collide with the first (one per server in tests).
	if err := prometheus.NewRegistry().Register(metrics.NewPgxPoolCollector(st.Pool)); err != nil {
		t.Error(err)
	}
}
