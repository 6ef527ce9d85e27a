package jobs

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestTaskStates holds taskStates to Asynq's storage layout: the state it reads for a
// queued job's task is the one Asynq's own inspector reports.
func TestTaskStates(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	s := NewService(Deps{Registry: NewRegistry(), Redis: rdb}, Config{Env: ks.Env})
	queue := s.Queue("default")
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, "asynq:{"+queue+"}:*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.SRem(ctx, "asynq:queues", queue)
	})
	for _, id := range []string{"pending", "archived"} {
		if _, err := s.client.EnqueueContext(t.Context(), asynq.NewTask("test.kind", nil), asynq.TaskID(id), asynq.Queue(queue)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.inspector.ArchiveTask(queue, "archived"); err != nil {
		t.Fatal(err)
	}
	js := []Job{
		{State: Queued, Queue: "default", TaskID: "pending"},
		{State: Queued, Queue: "default", TaskID: "archived"},
		{State: Queued, Queue: "default", TaskID: "lost"},
		{State: Running, Queue: "default", TaskID: "pending"}, // not looked at
	}
	got, err := s.taskStates(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{asynq.TaskStatePending.String(), asynq.TaskStateArchived.String(), "", ""}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("state of task %s (job %s) = %q, want %q", js[i].TaskID, js[i].State, got[i], want[i])
		}
	}
}
