package exports

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// peakHeap samples the process's heap every 10 ms until stop is called, which returns
// the largest HeapInuse seen.
func peakHeap() (stop func() uint64) {
	var (
		mu   sync.Mutex
		peak uint64
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		mu.Lock()
		peak = max(peak, m.HeapInuse)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		sample()
		return peak
	}
}

// BenchmarkExportOrgLarge builds the archive of a large org (storetest.PrivacyBenchOrg) as the
// privacy.export job does, and reports its time, size and the process's peak heap:
// go test ./internal/exports -run '^$' -bench ExportOrgLarge -benchtime 1x
func BenchmarkExportOrgLarge(b *testing.B) {
	st := storetest.New(b)
	fill := time.Now()
	org := storetest.NewLargeOrg(b, st, storetest.PrivacyBenchOrg)
	b.Logf("filled the org: %d rows in %s", org.Rows, time.Since(fill).Round(time.Millisecond))
	reg := jobs.NewRegistry()
	s := New(Config{LinkTTL: time.Hour, MaxBytes: 4 << 30}, Deps{Store: st, Jobs: reg, Keyring: testKeyring(b, secrets.DevMasterKeys)})
	ctx := b.Context()
	for range b.N {
		b.StopTimer()
		if _, err := st.Pool.Exec(ctx, "DELETE FROM data_exports"); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Request(ctx, audit.Actor{Type: audit.ActorUser, ID: &org.Owner}, Subject{Kind: SubjectOrg, ID: org.ID}, org.ID); err != nil {
			b.Fatal(err)
		}
		var p Payload
		if err := st.Pool.QueryRow(ctx, "SELECT id FROM data_exports").Scan(&p.ExportID); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		stop := peakHeap()
		start := time.Now()
		b.StartTimer()
		out, err := s.build(ctx, &jobs.Run{}, p)
		b.StopTimer()
		took, peak := time.Since(start), stop()
		if err != nil {
			b.Fatal(err)
		}
		res := out.(Result)
		b.ReportMetric(took.Seconds(), "s/export")
		b.ReportMetric(float64(res.Size)/(1<<20), "archive-MiB")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		b.Logf("export of %d rows: %s, %d files, %d bytes, peak heap in use %.1f MiB", org.Rows, took.Round(time.Millisecond), res.Files, res.Size, float64(peak)/(1<<20))
	}
}
