package erasure

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// BenchmarkEraseOrgLarge erases a large org (the export benchmark's) as the privacy.erase
// job does once its grace period is over, and reports its time and the rows it deleted
// and kept (pseudonymised usage and audit events, the org's tombstone):
// go test ./internal/erasure -run '^$' -bench EraseOrgLarge -benchtime 1x
func BenchmarkEraseOrgLarge(b *testing.B) {
	st := storetest.New(b)
	rdb, ks := storetest.Redis(b)
	ctx := b.Context()
	for range b.N {
		b.StopTimer()
		org := storetest.NewLargeOrg(b, st, storetest.PrivacyBenchOrg)
		now := time.Now()
		s := New(Config{Grace: time.Hour}, Deps{Store: st, Jobs: jobs.NewRegistry(), Redis: rdb, Keyspace: ks, Now: func() time.Time { return now }})
		if _, err := s.DeleteOrg(ctx, org.ID, org.Owner, audit.Actor{Type: audit.ActorUser, ID: &org.Owner}); err != nil {
			b.Fatal(err)
		}
		var (
			job     uuid.UUID
			payload []byte
		)
		if err := st.Pool.QueryRow(ctx, "SELECT erase_job_id FROM orgs WHERE id = $1", org.ID).Scan(&job); err != nil {
			b.Fatal(err)
		}
		if err := st.Pool.QueryRow(ctx, "SELECT payload FROM jobs WHERE id = $1", job).Scan(&payload); err != nil {
			b.Fatal(err)
		}
		var p ErasePayload
		if err := json.Unmarshal(payload, &p); err != nil {
			b.Fatal(err)
		}
		before := storetest.OrgRows(b, st, org.ID)
		now = now.Add(2 * time.Hour)
		start := time.Now()
		b.StartTimer()
		res, err := s.eraseOrg(ctx, job, p.Pseudonym)
		b.StopTimer()
		took := time.Since(start)
		if err != nil || !res.Erased {
			b.Fatalf("erase: %+v, %v", res, err)
		}
		after := storetest.OrgRows(b, st, org.ID)
		b.ReportMetric(took.Seconds(), "s/erase")
		b.ReportMetric(float64(before-after), "rows-deleted")
		b.ReportMetric(float64(after), "rows-kept")
		b.Logf("erase of an org of %d rows: %s, %d rows deleted, %d kept (the ledger, usage, audit events, the tombstone), %d Redis keys", before, took.Round(time.Millisecond),
			before-after, after, res.RedisKeys)
	}
}
