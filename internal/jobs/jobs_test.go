package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

type echo struct {
	Text string `json:"text"`
}

func registry() *jobs.Registry {
	r := jobs.NewRegistry()
	jobs.Register(r, jobs.Kind{Name: "test.echo", Unique: time.Hour},
		func(_ context.Context, _ *jobs.Run, p echo) (any, error) { return p, nil })
	return r
}

func TestEnqueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

	t.Run("RolledBackLeavesNoJob", func(t *testing.T) {
		t.Parallel()
		st, r := storetest.New(t), registry()
		errRollback := errors.New("rollback")
		var created jobs.Job
		err := st.InTx(ctx, func(q *db.Queries) error {
			var err error
			if created, err = r.Enqueue(ctx, q, now, jobs.New{Kind: "test.echo", Payload: echo{"hi"}}); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("InTx: %v", err)
		}
		if _, err := st.GetJob(ctx, created.ID); err == nil {
			t.Fatal("a rolled-back job exists")
		}
	})

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		st, r := storetest.New(t), registry()
		var j jobs.Job
		err := st.InTx(ctx, func(q *db.Queries) error {
			var err error
			j, err = r.Enqueue(ctx, q, now, jobs.New{Kind: "test.echo", Payload: echo{"hi"}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if j.State != jobs.Queued || j.MaxAttempts != 5 || j.Queue != "default" || string(j.Payload) != `{"text": "hi"}` || !j.RunAt.Equal(now) {
			t.Fatalf("job = %+v", j)
		}
	})

	t.Run("UniqueKeyInsideWindowIsTheSameJob", func(t *testing.T) {
		t.Parallel()
		st, r := storetest.New(t), registry()
		enqueue := func(at time.Time) jobs.Job {
			t.Helper()
			j, err := r.Enqueue(ctx, st.Queries, at, jobs.New{Kind: "test.echo", Payload: echo{"x"}, UniqueKey: "k"})
			if err != nil {
				t.Fatal(err)
			}
			return j
		}
		first := enqueue(now)
		if again := enqueue(now.Add(59 * time.Minute)); again.ID != first.ID {
			t.Fatalf("inside the window: a new job %s, want %s", again.ID, first.ID)
		}
		if later := enqueue(now.Add(61 * time.Minute)); later.ID == first.ID {
			t.Fatal("past the window: the old job was returned")
		}
	})

	t.Run("ErrUnknownKind", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		_, err := registry().Enqueue(ctx, st.Queries, now, jobs.New{Kind: "test.nope"})
		if errs.CodeOf(err) != errs.Invalid {
			t.Fatalf("err = %v, want invalid_request", err)
		}
	})
}

func TestRegistryOverride(t *testing.T) {
	r := registry()
	if err := r.Override("test.echo", jobs.Kind{MaxAttempts: 9, Queue: "low"}); err != nil {
		t.Fatal(err)
	}
	k, _ := r.Kind("test.echo")
	if k.MaxAttempts != 9 || k.Queue != "low" || k.Timeout != 10*time.Minute {
		t.Fatalf("kind = %+v", k)
	}
	if err := r.Override("test.nope", jobs.Kind{}); err == nil {
		t.Fatal("override of an unknown kind: no error")
	}
}
