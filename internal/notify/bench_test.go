package notify

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// fill gives user n notifications (all unread) and 20 other users n/4 each (half read),
// in bulk, then vacuums so the planner and the visibility map are as autovacuum leaves them.
func (b *bundle) fill(tb testing.TB, user uuid.UUID, n int) {
	tb.Helper()
	ctx := context.Background()
	others := make([]uuid.UUID, 20)
	for i := range others {
		others[i], _ = b.user(tb, "other"+uuid.NewString()[:8]+"@example.com")
	}
	var rows [][]any
	add := func(u uuid.UUID, count int, halfRead bool) {
		for i := range count {
			var readAt *time.Time
			if halfRead && i%2 == 0 {
				readAt = &b.now
			}
			rows = append(rows, []any{uuid.Must(uuid.NewV7()), u, "jobs", "n", readAt, b.now})
		}
	}
	add(user, n, false)
	for _, o := range others {
		add(o, n/4, true)
	}
	_, err := b.st.Pool.CopyFrom(ctx, pgx.Identifier{"notifications"},
		[]string{"id", "user_id", "category", "title", "read_at", "created_at"}, pgx.CopyFromRows(rows))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := b.st.Pool.Exec(ctx, "VACUUM ANALYZE notifications"); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkUnreadCount counts the unread notifications of a user who has 10,000, all
// unread, among 60,000 rows, with the partial unread index and (the baseline, in the
// same run) without it. It reports the 95th percentile of the calls.
//
//	go test ./internal/notify -run '^$' -bench UnreadCount -benchtime 200x -count 3
func BenchmarkUnreadCount(b *testing.B) {
	for _, tc := range []struct {
		name string
		drop bool
	}{{"PartialIndex", false}, {"WithoutPartialIndex", true}} {
		b.Run(tc.name, func(b *testing.B) {
			bd := setup(b, nil)
			user, _ := bd.user(b, "ada@example.com")
			bd.fill(b, user, 10000)
			ctx := context.Background()
			if tc.drop {
				if _, err := bd.st.Pool.Exec(ctx, "DROP INDEX notifications_unread"); err != nil {
					b.Fatal(err)
				}
			}
			if n, err := bd.c.UnreadCount(ctx, user); err != nil || n != 10000 {
				b.Fatalf("unread = %d (%v), want 10000", n, err)
			}
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if _, err := bd.c.UnreadCount(ctx, user); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)*95/100].Microseconds())/1000, "p95-ms")
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
		})
	}
}
