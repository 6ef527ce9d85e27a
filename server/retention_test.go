package server

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// backdate moves a row's column days into the past, as if that much time had passed.
func (b *bundle) backdate(t *testing.T, table, column string, id uuid.UUID, days int) {
	t.Helper()
	if _, err := b.pool.Exec(t.Context(), "UPDATE "+table+" SET "+column+" = "+column+" - make_interval(days => $2) WHERE id = $1", id, days); err != nil {
		t.Fatal(err)
	}
}

func TestOrgRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.person(t, "owner@example.com")
	member := b.person(t, "member@example.com")
	org := b.org(t, owner, "Acme")
	b.join(t, owner, org, member, "member")

	t.Run("Defaults", func(t *testing.T) {
		var got api.OrgRetention
		wantStatus(t, b.call(t, "GET", orgPath(org, "retention"), owner.token, nil, &got), 200)
		e := got.Effective
		if e.DeletedPromptsDays != 30 || e.DeletedConversationsDays != 7 || e.FinishedJobsDays != 7 || e.FailedJobsDays != 30 ||
			e.UsageDays != nil || got.UpdatedAt != nil || got.Settings.DeletedPromptsDays != nil {
			t.Fatalf("defaults = %+v", got)
		}
	})
	t.Run("SetAudited", func(t *testing.T) {
		var got api.OrgRetention
		body := map[string]any{"deleted_prompts_days": 60, "deleted_conversations_days": nil, "finished_jobs_days": 1,
			"failed_jobs_days": nil, "usage_days": 730}
		wantStatus(t, b.call(t, "PUT", orgPath(org, "retention"), owner.token, body, &got), 200)
		if got.Effective.DeletedPromptsDays != 60 || got.Effective.DeletedConversationsDays != 7 || got.Effective.FinishedJobsDays != 1 ||
			deref(got.Effective.UsageDays) != 730 || deref(got.Settings.FinishedJobsDays) != 1 || got.Settings.FailedJobsDays != nil || got.UpdatedAt == nil {
			t.Fatalf("set = %+v", got)
		}
		if ev := b.auditActions(t, owner, org)["org.retention_update"]; len(ev) != 1 || actorOf(ev[0]) != owner.id {
			t.Fatalf("org.retention_update events: %+v", ev)
		}
	})
	t.Run("ErrOutOfBounds", func(t *testing.T) {
		body := map[string]any{"deleted_prompts_days": 0, "deleted_conversations_days": 366, "finished_jobs_days": nil,
			"failed_jobs_days": nil, "usage_days": 100}
		res := b.call(t, "PUT", orgPath(org, "retention"), owner.token, body, nil)
		if res.StatusCode != 400 {
			t.Fatalf("status %d, want 400", res.StatusCode)
		}
		got := problemPointers(t, res)
		want := []string{"/deleted_conversations_days", "/deleted_prompts_days", "/usage_days"}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Fatalf("pointers %v, want %v", got, want)
		}
	})
	t.Run("ErrNotAdmin", func(t *testing.T) {
		problemIs(t, b.call(t, "GET", orgPath(org, "retention"), member.token, nil, nil), 403, errs.PermissionDenied)
		body := map[string]any{"deleted_prompts_days": 1, "deleted_conversations_days": 1, "finished_jobs_days": 1, "failed_jobs_days": 1, "usage_days": nil}
		problemIs(t, b.call(t, "PUT", orgPath(org, "retention"), member.token, body, nil), 403, errs.PermissionDenied)
	})
}

func TestRestorePrompt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.person(t, "owner@example.com")
	member := b.person(t, "member@example.com")
	org := b.org(t, owner, "Acme")
	b.join(t, owner, org, member, "member")
	in := []string{"Kiln-Org", org.String()}

	var created api.Prompt
	wantStatus(t, b.call(t, "POST", "/v1/prompts", owner.token, promptBody("greeting"), &created, in...), 201)
	wantStatus(t, b.call(t, "DELETE", "/v1/prompts/greeting", owner.token, nil, nil, in...), 204)
	problemIs(t, b.call(t, "GET", "/v1/prompts/greeting", owner.token, nil, nil, in...), 404, errs.NotFound)

	var deleted api.PromptList
	wantStatus(t, b.call(t, "GET", "/v1/prompts?deleted=true", owner.token, nil, &deleted, in...), 200)
	if len(deleted.Data) != 1 || deleted.Data[0].Id != created.Id || deleted.Data[0].DeletedAt == nil {
		t.Fatalf("deleted prompts %+v", deleted.Data)
	}
	var live api.PromptList
	wantStatus(t, b.call(t, "GET", "/v1/prompts", owner.token, nil, &live, in...), 200)
	if len(live.Data) != 0 {
		t.Fatalf("live prompts %+v, want none", live.Data)
	}

	t.Run("ErrNotAdmin", func(t *testing.T) {
		problemIs(t, b.call(t, "POST", "/v1/prompts/greeting/restore", member.token, nil, nil, in...), 403, errs.PermissionDenied)
	})
	t.Run("OK", func(t *testing.T) {
		var got api.Prompt
		wantStatus(t, b.call(t, "POST", "/v1/prompts/greeting/restore", owner.token, nil, &got, in...), 200)
		if got.Id != created.Id || got.DeletedAt != nil || got.LatestVersion != 1 {
			t.Fatalf("restored %+v", got)
		}
		wantStatus(t, b.call(t, "GET", "/v1/prompts/greeting", owner.token, nil, nil, in...), 200)
		acts := b.auditActions(t, owner, org)
		if len(acts["prompt.delete"]) != 1 || len(acts["prompt.restore"]) != 1 {
			t.Fatalf("audit: %d prompt.delete, %d prompt.restore; want 1 each", len(acts["prompt.delete"]), len(acts["prompt.restore"]))
		}
		problemIs(t, b.call(t, "POST", "/v1/prompts/greeting/restore", owner.token, nil, nil, in...), 404, errs.NotFound)
	})
	t.Run("ErrNameTaken", func(t *testing.T) {
		wantStatus(t, b.call(t, "DELETE", "/v1/prompts/greeting", owner.token, nil, nil, in...), 204)
		wantStatus(t, b.call(t, "POST", "/v1/prompts", owner.token, promptBody("greeting"), nil, in...), 201)
		problemIs(t, b.call(t, "POST", "/v1/prompts/greeting/restore?id="+created.Id.String(), owner.token, nil, nil, in...), 409, errs.Conflict)
	})
	t.Run("ErrPastWindow", func(t *testing.T) {
		wantStatus(t, b.call(t, "DELETE", "/v1/prompts/greeting", owner.token, nil, nil, in...), 204)
		b.backdate(t, "prompts", "deleted_at", created.Id, 31)
		path := "/v1/prompts/greeting/restore?id=" + created.Id.String()
		problemIs(t, b.call(t, "POST", path, owner.token, nil, nil, in...), 410, errs.RetentionExpired)
		// A longer retention of the org opens the window again.
		body := map[string]any{"deleted_prompts_days": 60, "deleted_conversations_days": nil, "finished_jobs_days": nil, "failed_jobs_days": nil, "usage_days": nil}
		wantStatus(t, b.call(t, "PUT", orgPath(org, "retention"), owner.token, body, nil), 200)
		wantStatus(t, b.call(t, "POST", path, owner.token, nil, nil, in...), 200)
	})
}

func TestRestoreConversation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.person(t, "owner@example.com")
	other := b.person(t, "other@example.com")
	org := b.org(t, owner, "Acme")
	b.join(t, owner, org, other, "admin")
	in := []string{"Kiln-Org", org.String()}

	var c api.Conversation
	wantStatus(t, b.call(t, "POST", "/v1/conversations", owner.token, map[string]any{"title": "plans"}, &c, in...), 201)
	wantStatus(t, b.call(t, "DELETE", "/v1/conversations/"+c.Id.String(), owner.token, nil, nil, in...), 204)
	problemIs(t, b.call(t, "GET", "/v1/conversations/"+c.Id.String(), owner.token, nil, nil, in...), 404, errs.NotFound)

	var deleted api.ConversationList
	wantStatus(t, b.call(t, "GET", "/v1/conversations?deleted=true", owner.token, nil, &deleted, in...), 200)
	if len(deleted.Data) != 1 || deleted.Data[0].Id != c.Id || deleted.Data[0].DeletedAt == nil {
		t.Fatalf("deleted conversations %+v", deleted.Data)
	}
	var othersDeleted api.ConversationList
	wantStatus(t, b.call(t, "GET", "/v1/conversations?deleted=true", other.token, nil, &othersDeleted, in...), 200)
	if len(othersDeleted.Data) != 0 {
		t.Fatalf("another user sees %+v", othersDeleted.Data)
	}

	path := "/v1/conversations/" + c.Id.String() + "/restore"
	t.Run("ErrAnotherUser", func(t *testing.T) {
		problemIs(t, b.call(t, "POST", path, other.token, nil, nil, in...), 404, errs.NotFound)
	})
	t.Run("OK", func(t *testing.T) {
		var got api.Conversation
		wantStatus(t, b.call(t, "POST", path, owner.token, nil, &got, in...), 200)
		if got.Id != c.Id || got.DeletedAt != nil || deref(got.Title) != "plans" {
			t.Fatalf("restored %+v", got)
		}
		wantStatus(t, b.call(t, "GET", "/v1/conversations/"+c.Id.String(), owner.token, nil, nil, in...), 200)
		if b.auditCount(t, "conversation.delete", c.Id.String()) != 1 || b.auditCount(t, "conversation.restore", c.Id.String()) != 1 {
			t.Fatal("the delete and the restore are not audited once each")
		}
	})
	t.Run("ErrPastWindow", func(t *testing.T) {
		wantStatus(t, b.call(t, "DELETE", "/v1/conversations/"+c.Id.String(), owner.token, nil, nil, in...), 204)
		b.backdate(t, "conversations", "deleted_at", c.Id, 8)
		problemIs(t, b.call(t, "POST", path, owner.token, nil, nil, in...), 410, errs.RetentionExpired)
	})
}

func TestDeleteJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.person(t, "alice@example.com")
	bob := b.person(t, "bob@example.com")
	org := b.org(t, alice, "Acme")
	b.join(t, alice, org, bob, "admin")
	in := []string{"Kiln-Org", org.String()}
	reg := jobs.NewRegistry()
	jobs.Register(reg, jobs.Kind{Name: "test.noop"}, func(_ context.Context, _ *jobs.Run, _ struct{}) (any, error) { return nil, nil })
	job := func(state string) uuid.UUID {
		t.Helper()
		j, err := reg.Enqueue(t.Context(), store.New(b.pool).Queries, time.Now(), jobs.New{Kind: "test.noop", OrgID: &org, CreatedBy: &alice.id, Payload: struct{}{}})
		if err != nil {
			t.Fatal(err)
		}
		if state != "queued" {
			if _, err := b.pool.Exec(t.Context(), "UPDATE jobs SET state = $2, finished_at = CASE WHEN $2 = 'running' THEN NULL ELSE now() END WHERE id = $1", j.ID, state); err != nil {
				t.Fatal(err)
			}
		}
		return j.ID
	}
	running, failed := job("running"), job("failed")

	t.Run("ErrNotEnded", func(t *testing.T) {
		for _, id := range []uuid.UUID{running, job("queued")} {
			problemIs(t, b.call(t, "DELETE", "/v1/jobs/"+id.String(), alice.token, nil, nil, in...), 409, errs.Conflict)
			wantStatus(t, b.call(t, "GET", "/v1/jobs/"+id.String(), alice.token, nil, nil, in...), 200)
		}
	})
	t.Run("DeletedIsHidden", func(t *testing.T) {
		wantStatus(t, b.call(t, "DELETE", "/v1/jobs/"+failed.String(), alice.token, nil, nil, in...), 204)
		problemIs(t, b.call(t, "GET", "/v1/jobs/"+failed.String(), alice.token, nil, nil, in...), 404, errs.NotFound)
		problemIs(t, b.call(t, "POST", "/v1/jobs/"+failed.String()+"/retry", alice.token, nil, nil, in...), 404, errs.NotFound)
		var list api.JobList
		wantStatus(t, b.call(t, "GET", "/v1/jobs", alice.token, nil, &list, in...), 200)
		for _, j := range list.Data {
			if j.Id == failed {
				t.Fatal("the deleted job is listed")
			}
		}
		if b.auditCount(t, "job.delete", failed.String()) != 1 {
			t.Fatal("the delete is not audited")
		}
		// Nor do the platform admins' views list it, or retry it in bulk.
		b.withJobsAdmin(t)
		root, _ := b.signUpAdmin(t, "root@example.com")
		var admins api.AdminJobList
		wantStatus(t, b.call(t, "GET", "/v1/admin/jobs?state=failed", root.AccessToken, nil, &admins), 200)
		for _, j := range admins.Data {
			if j.Id == failed {
				t.Fatal("the deleted job is listed to admins")
			}
		}
		var retried api.AdminJobBulkResult
		wantStatus(t, b.call(t, "POST", "/v1/admin/jobs/retry", root.AccessToken, map[string]any{"all": true}, &retried), 200)
		for _, j := range retried.Data {
			if j.Id == failed {
				t.Fatal("the deleted job was retried in bulk")
			}
		}
	})
	t.Run("ErrAnotherUser", func(t *testing.T) {
		// An org admin with a user token sees only the jobs they created, as for the delete.
		problemIs(t, b.call(t, "POST", "/v1/jobs/"+failed.String()+"/restore", bob.token, nil, nil, in...), 404, errs.NotFound)
	})
	t.Run("Restore", func(t *testing.T) {
		var got api.Job
		wantStatus(t, b.call(t, "POST", "/v1/jobs/"+failed.String()+"/restore", alice.token, nil, &got, in...), 200)
		if got.Id != failed || got.State != api.JobFailed {
			t.Fatalf("restored %+v", got)
		}
		wantStatus(t, b.call(t, "GET", "/v1/jobs/"+failed.String(), alice.token, nil, nil, in...), 200)
		if b.auditCount(t, "job.restore", failed.String()) != 1 {
			t.Fatal("the restore is not audited")
		}
	})
	t.Run("ErrPastWindow", func(t *testing.T) {
		// The window counts from the deletion, not from the job's end.
		b.backdate(t, "jobs", "finished_at", failed, 40)
		wantStatus(t, b.call(t, "DELETE", "/v1/jobs/"+failed.String(), alice.token, nil, nil, in...), 204)
		wantStatus(t, b.call(t, "POST", "/v1/jobs/"+failed.String()+"/restore", alice.token, nil, nil, in...), 200)
		wantStatus(t, b.call(t, "DELETE", "/v1/jobs/"+failed.String(), alice.token, nil, nil, in...), 204)
		b.backdate(t, "jobs", "deleted_at", failed, 31)
		problemIs(t, b.call(t, "POST", "/v1/jobs/"+failed.String()+"/restore", alice.token, nil, nil, in...), 410, errs.RetentionExpired)
	})
}
