package jobs_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
)

// TestRunningJobWritesNoIndexEntries holds the jobs table's indexes to the rule of
// migration 00029: a job's start, heartbeats and progress are HOT updates (they write no
// index entry), so an index that reads state, attempts, heartbeat_at, started_at,
// updated_at or progress fails it. The relay's claim moves the job out of the outbox
// index, so it is the one update here that is not HOT.
func TestRunningJobWritesNoIndexEntries(t *testing.T) {
	b := setup(t, nil)
	ctx := t.Context()
	tx, err := b.st.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	q := db.New(tx)
	now := time.Now()
	j, err := b.reg.Enqueue(ctx, q, now, jobs.New{Kind: "test.effect", Payload: effect{}})
	if err != nil {
		t.Fatal(err)
	}
	claimed, err := q.ClaimOutbox(ctx, db.ClaimOutboxParams{Now: &now, MaxRows: 10})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %d jobs, %v", len(claimed), err)
	}
	started, err := q.StartJobs(ctx, db.StartJobsParams{Now: &now, Ids: []uuid.UUID{j.ID}, TaskIds: []string{claimed[0].TaskID}})
	if err != nil || len(started) != 1 {
		t.Fatalf("start: %d jobs, %v", len(started), err)
	}
	if err := q.HeartbeatJobs(ctx, db.HeartbeatJobsParams{Now: &now, Ids: []uuid.UUID{j.ID}}); err != nil {
		t.Fatal(err)
	}
	if err := q.SetJobProgress(ctx, db.SetJobProgressParams{ID: j.ID, ProgressDone: 1, ProgressTotal: 2, ProgressMessage: "half", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	var updated, hot int64
	err = tx.QueryRow(ctx, `SELECT pg_stat_get_xact_tuples_updated('jobs'::regclass), pg_stat_get_xact_tuples_hot_updated('jobs'::regclass)`).Scan(&updated, &hot)
	if err != nil {
		t.Fatal(err)
	}
	if updated != 4 || hot != 3 {
		t.Fatalf("claim, start, heartbeat and progress: %d updates of which %d HOT, want 4 of which 3 HOT", updated, hot)
	}
}
