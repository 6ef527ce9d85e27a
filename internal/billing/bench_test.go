package billing_test

import (
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// BenchmarkQuotaOverhead measures a blocking gateway call on the offline dev provider
// without a meter and with the billing service as its meter (a cached subscription, one
// reserve and one settle script on the real Redis), reporting each one's p50; the
// difference is the quota check's overhead. "with_alerts" is "with" watching the quota
// alert thresholds (the settle script checks them; none is crossed). See
// docs/performance.md.
func BenchmarkQuotaOverhead(b *testing.B) {
	st := storetest.New(b)
	rdb, ks := storetest.Redis(b)
	plans := billing.NewCatalog([]billing.Plan{{ID: "free", Name: "Free", Limits: map[string]billing.Limit{
		billing.LimitTokens: {Value: 1 << 40, Overage: billing.Block},
	}}}, "free")
	svc := billing.New(st, plans, billing.NewQuota(rdb, ks, time.Minute, time.Now), time.Minute, time.Hour, time.Now)
	alerting := billing.New(st, plans, billing.NewQuota(rdb, ks, time.Minute, time.Now), time.Minute, time.Hour, time.Now)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	center := notify.New(notify.Config{LongJob: time.Minute}, notify.Deps{
		Store: st, Jobs: jobs.NewRegistry(), Mailer: notify.LogMailer{Log: log}, Redis: rdb, Keyspace: ks, Log: log, Now: time.Now,
	})
	b.Cleanup(func() { _ = center.Close() })
	alerting.EnableAlerts(center, log)
	org := storetest.Org(b, st)
	for _, tc := range []struct {
		name  string
		meter llm.Meter
	}{{"without", nil}, {"with", svc}, {"with_alerts", alerting}} {
		g, err := llm.NewGateway(llm.GatewayConfig{
			Providers:        map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev"})},
			Aliases:          map[string][]llm.Target{"default": {{Provider: "dev", Model: dev.Model}}},
			Meter:            tc.meter,
			DefaultMaxTokens: 64,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			ctx := llm.WithOrg(b.Context(), org)
			req := request("hello, how much does this cost?", 64)
			times := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				if _, _, err := g.Chat(ctx, "default", req); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(times[len(times)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(times[len(times)*99/100].Microseconds()), "p99-µs")
		})
	}
}
