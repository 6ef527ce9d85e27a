package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func TestPurgeFinished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, r := storetest.New(t), registry()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour

	// Each job: its state, how long ago it ended (0: it has not) and was deleted (0: it was
	// not); a deleted job's window counts from its deletion.
	cases := map[string]struct {
		state   jobs.State
		ended   time.Duration
		kept    bool
		deleted time.Duration
	}{
		"DeletedRecentlyEndedLongAgo": {jobs.Succeeded, 20 * day, true, 6 * day},
		"DeletedPastRetention":        {jobs.Succeeded, 20 * day, false, 8 * day},
		"FailedDeletedRecently":       {jobs.Failed, 40 * day, true, 29 * day},
		"SucceededPastRetention":      {jobs.Succeeded, 8 * day, false, 0},
		"SucceededRecently":           {jobs.Succeeded, 6 * day, true, 0},
		"CancelledPastRetention":      {jobs.Cancelled, 8 * day, false, 0},
		"FailedAWeekAgo":              {jobs.Failed, 8 * day, true, 0},
		"FailedPastRetention":         {jobs.Failed, 31 * day, false, 0},
		"QueuedLongAgo":               {jobs.Queued, 0, true, 0},
		"RunningLongAgo":              {jobs.Running, 0, true, 0},
	}
	ids := map[string]uuid.UUID{}
	for name, c := range cases {
		j, err := r.Enqueue(ctx, st.Queries, now.Add(-60*day), jobs.New{Kind: "test.echo", Payload: echo{name}})
		if err != nil {
			t.Fatal(err)
		}
		var finished *time.Time
		if c.ended > 0 {
			at := now.Add(-c.ended)
			finished = &at
		}
		var deleted *time.Time
		if c.deleted > 0 {
			at := now.Add(-c.deleted)
			deleted = &at
		}
		if _, err := st.Pool.Exec(ctx, "UPDATE jobs SET state = $2, finished_at = $3, deleted_at = $4 WHERE id = $1", j.ID, string(c.state), finished, deleted); err != nil {
			t.Fatal(err)
		}
		ids[name] = j.ID
	}

	n, err := jobs.PurgeFinished(ctx, st, now, retention.Builtin)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for name, c := range cases {
		if !c.kept {
			want++
		}
		_, err := st.GetJob(ctx, ids[name])
		if kept := err == nil; kept != c.kept {
			t.Errorf("%s: kept = %t, want %t", name, kept, c.kept)
		}
	}
	if n != int64(want) {
		t.Errorf("purged %d jobs, want %d", n, want)
	}
}
