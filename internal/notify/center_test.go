package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// bundle is a Center on a database and Redis key space of the test's own.
type bundle struct {
	st     *store.Store
	reg    *jobs.Registry
	c      *Center
	now    time.Time
	mailer Mailer
}

// setup builds a center sending with mailer (nil: into a discarded log).
func setup(t testing.TB, mailer Mailer) *bundle {
	t.Helper()
	st := storetest.New(t)
	rdb, ks := storetest.Redis(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if mailer == nil {
		mailer = LogMailer{Log: log}
	}
	b := &bundle{st: st, reg: jobs.NewRegistry(), now: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), mailer: mailer}
	b.c = New(Config{LongJob: 30 * time.Second}, Deps{
		Store: st, Jobs: b.reg, Mailer: mailer, Redis: rdb, Keyspace: ks, Log: log,
		Now: func() time.Time { return b.now },
	})
	t.Cleanup(func() { _ = b.c.Close() })
	return b
}

// user creates a user (with a personal org) and returns its id and org.
func (b *bundle) user(t testing.TB, email string) (uuid.UUID, uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	org, err := b.st.CreateOrg(ctx, db.CreateOrgParams{ID: uuid.Must(uuid.NewV7()), Name: email, Personal: true, Now: b.now})
	if err != nil {
		t.Fatalf("create org: %v", err)
	}
	u, err := b.st.CreateUser(ctx, db.CreateUserParams{ID: uuid.Must(uuid.NewV7()), Email: email, PersonalOrgID: org.ID, Now: b.now})
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	return u.ID, org.ID
}

// jobsOf lists the jobs of kind.
func (b *bundle) jobsOf(t testing.TB, kind string) []db.Job {
	t.Helper()
	rows, err := b.st.Pool.Query(context.Background(), "SELECT id FROM jobs WHERE kind = $1 ORDER BY id", kind)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []db.Job
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		j, err := b.st.GetJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	return out
}

func TestNotify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		user, org := b.user(t, "ada@example.com")
		// jobs: in-app by default, no email.
		sent, err := b.c.Send(ctx, Note{UserID: user, OrgID: &org, Category: CategoryJobs, Title: "Export ready", Link: "https://app.example/x", Data: map[string]any{"n": 3}})
		if err != nil {
			t.Fatal(err)
		}
		if sent.Notification == nil || sent.Email != nil {
			t.Fatalf("sent = %+v, want in-app only", sent)
		}
		n := sent.Notification
		if n.Title != "Export ready" || n.Link != "https://app.example/x" || n.Data["n"] != float64(3) || *n.OrgID != org || n.ReadAt != nil {
			t.Errorf("notification = %+v", n)
		}
		if got, _ := b.c.UnreadCount(ctx, user); got != 1 {
			t.Errorf("unread = %d, want 1", got)
		}
		if len(b.jobsOf(t, KindEmail)) != 0 {
			t.Error("an email job for a category whose email is off")
		}
	})

	t.Run("EmailInTheSameTransaction", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		user, org := b.user(t, "ada@example.com")
		errRollback := errors.New("rollback")
		err := b.st.InTx(ctx, func(q *db.Queries) error {
			if _, err := b.c.Notify(ctx, q, b.now, Note{UserID: user, OrgID: &org, Category: CategorySecurity, Title: "New sign-in"}); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatal(err)
		}
		if n, _ := b.c.UnreadCount(ctx, user); n != 0 || len(b.jobsOf(t, KindEmail)) != 0 {
			t.Fatalf("a rolled-back notification left %d notifications and %d email jobs", n, len(b.jobsOf(t, KindEmail)))
		}

		var sent Sent
		err = b.st.InTx(ctx, func(q *db.Queries) error {
			sent, err = b.c.Notify(ctx, q, b.now, Note{UserID: user, OrgID: &org, Category: CategorySecurity, Title: "New sign-in"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if sent.Notification == nil || sent.Email == nil {
			t.Fatalf("sent = %+v, want both channels", sent)
		}
		js := b.jobsOf(t, KindEmail)
		if len(js) != 1 {
			t.Fatalf("%d email jobs, want 1", len(js))
		}
		var p EmailPayload
		if err := json.Unmarshal(js[0].Payload, &p); err != nil || p.DeliveryID != *sent.Email || js[0].MaxAttempts != 18 {
			t.Fatalf("job %+v payload %s", js[0], js[0].Payload)
		}
		d, err := b.c.GetDelivery(ctx, *sent.Email)
		if err != nil || d.Status != StatusQueued || d.To != "ada@example.com" || d.Template != TemplateNotification {
			t.Fatalf("delivery = %+v (%v)", d, err)
		}
	})

	t.Run("PreferencesTurnChannelsOff", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		user, _ := b.user(t, "ada@example.com")
		if _, err := b.c.SetPreferences(ctx, user, PreferencesUpdate{Categories: []CategoryUpdate{{Category: "org", InApp: new(false), Email: new(false)}}}); err != nil {
			t.Fatal(err)
		}
		sent, err := b.c.Send(ctx, Note{UserID: user, Category: CategoryOrg, Title: "Invited"})
		if err != nil || sent.Notification != nil || sent.Email != nil {
			t.Fatalf("sent = %+v (%v), want nothing", sent, err)
		}
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		user, _ := b.user(t, "ada@example.com")
		for name, n := range map[string]Note{
			"category": {UserID: user, Category: "weather", Title: "x"},
			"title":    {UserID: user, Category: CategoryJobs, Title: " "},
			"nul":      {UserID: user, Category: CategoryJobs, Title: "a\x00b"},
			"long":     {UserID: user, Category: CategoryJobs, Title: "x", Body: strings.Repeat("é", MaxBody+1)},
		} {
			if _, err := b.c.Send(ctx, n); errs.CodeOf(err) != errs.Invalid {
				t.Errorf("%s: err = %v, want invalid_request", name, err)
			}
		}
		if _, err := b.c.Send(ctx, Note{UserID: uuid.New(), Category: CategoryJobs, Title: "x"}); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("unknown user: err = %v, want not_found", err)
		}
	})
}

func TestListAndRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, nil)
	ada, _ := b.user(t, "ada@example.com")
	bob, _ := b.user(t, "bob@example.com")
	var ids []uuid.UUID
	for i := range 5 {
		sent, err := b.c.Send(ctx, Note{UserID: ada, Category: CategoryJobs, Title: "n" + string(rune('0'+i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sent.Notification.ID)
	}
	bobs, err := b.c.Send(ctx, Note{UserID: bob, Category: CategoryJobs, Title: "bob's"})
	if err != nil {
		t.Fatal(err)
	}

	page1, err := b.c.List(ctx, ada, ListParams{Limit: 3})
	if err != nil || len(page1) != 3 || page1[0].ID != ids[4] || page1[2].ID != ids[2] {
		t.Fatalf("page 1 = %v (%v)", page1, err)
	}
	page2, _ := b.c.List(ctx, ada, ListParams{Limit: 3, After: &page1[2].ID})
	if len(page2) != 2 || page2[0].ID != ids[1] {
		t.Fatalf("page 2 = %v", page2)
	}

	b.now = b.now.Add(time.Minute)
	read, err := b.c.MarkRead(ctx, ada, ids[1])
	if err != nil || read.ReadAt == nil || !read.ReadAt.Equal(b.now) {
		t.Fatalf("MarkRead = %+v (%v)", read, err)
	}
	b.now = b.now.Add(time.Minute)
	again, _ := b.c.MarkRead(ctx, ada, ids[1])
	if !again.ReadAt.Equal(read.ReadAt.UTC()) {
		t.Errorf("read again: read_at moved from %v to %v", read.ReadAt, again.ReadAt)
	}
	if _, err := b.c.MarkRead(ctx, ada, bobs.Notification.ID); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("another user's notification: err = %v, want not_found", err)
	}
	unread, _ := b.c.List(ctx, ada, ListParams{Limit: 10, Unread: true})
	if len(unread) != 4 {
		t.Errorf("%d unread listed, want 4", len(unread))
	}
	if n, _ := b.c.UnreadCount(ctx, ada); n != 4 {
		t.Errorf("unread = %d, want 4", n)
	}
	if n, err := b.c.MarkAllRead(ctx, ada); err != nil || n != 4 {
		t.Errorf("MarkAllRead = %d (%v), want 4", n, err)
	}
	if n, _ := b.c.UnreadCount(ctx, ada); n != 0 {
		t.Errorf("unread after read-all = %d", n)
	}
	if n, _ := b.c.UnreadCount(ctx, bob); n != 1 {
		t.Errorf("bob's unread = %d, want 1 (read-all is per user)", n)
	}
}

func TestSetPreferences(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, nil)
	user, _ := b.user(t, "ada@example.com")

	p, err := b.c.Preferences(ctx, user)
	if err != nil || p.Locale != nil || len(p.Categories) != len(categories) {
		t.Fatalf("defaults = %+v (%v)", p, err)
	}
	for _, cp := range p.Categories {
		if cp.Category == CategorySecurity && (!cp.Locked || !cp.InApp || !cp.Email) {
			t.Errorf("security = %+v, want locked and on", cp)
		}
		if cp.Category == CategoryJobs && (!cp.InApp || cp.Email) {
			t.Errorf("jobs = %+v, want in-app only", cp)
		}
	}

	t.Run("OK", func(t *testing.T) {
		p, err := b.c.SetPreferences(ctx, user, PreferencesUpdate{Locale: new("zh-CN"), Categories: []CategoryUpdate{
			{Category: "jobs", Email: new(true)}, {Category: "security", InApp: new(true)},
		}})
		if err != nil || p.Locale == nil || *p.Locale != SimplifiedChinese {
			t.Fatalf("SetPreferences = %+v (%v)", p, err)
		}
		for _, cp := range p.Categories {
			if cp.Category == CategoryJobs && (!cp.InApp || !cp.Email) {
				t.Errorf("jobs = %+v, want both", cp)
			}
		}
	})
	t.Run("ErrSecurityCannotBeTurnedOff", func(t *testing.T) {
		_, err := b.c.SetPreferences(ctx, user, PreferencesUpdate{Categories: []CategoryUpdate{
			{Category: "jobs", InApp: new(false)}, {Category: "security", Email: new(false)},
		}})
		e, ok := errors.AsType[*errs.Error](err)
		if !ok || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Pointer != "/categories/1/email" ||
			!strings.Contains(e.Fields[0].Message, "cannot be turned off") {
			t.Fatalf("err = %#v, want invalid_request naming /categories/1/email", err)
		}
		p, _ := b.c.Preferences(ctx, user)
		for _, cp := range p.Categories {
			if cp.Category == CategoryJobs && !cp.InApp {
				t.Error("a refused update changed jobs")
			}
		}
	})
	t.Run("ErrUnknown", func(t *testing.T) {
		_, err := b.c.SetPreferences(ctx, user, PreferencesUpdate{Locale: new("fr"), Categories: []CategoryUpdate{{Category: "weather"}}})
		e, ok := errors.AsType[*errs.Error](err)
		if !ok || len(e.Fields) != 2 || e.Fields[0].Pointer != "/categories/0/category" || e.Fields[1].Pointer != "/locale" {
			t.Fatalf("err = %#v", err)
		}
	})
}

func TestRender(t *testing.T) {
	t.Parallel()
	data := map[string]map[string]string{
		TemplateVerification:    {"email": "ada@example.com", "link": "https://app.example/verify-email?token=a&b=c"},
		TemplatePasswordReset:   {"email": "ada@example.com", "link": "https://app.example/reset-password?token=t"},
		TemplatePasswordChanged: {"email": "ada@example.com", "link": "https://app.example/reset-password"},
		TemplateInvitation:      {"inviter": "Bob", "org": "Acme", "role": "admin", "link": "https://app.example/accept-invitation?token=t"},
		TemplateNotification:    {"title": "Export ready", "body": "Your export finished.", "link": "https://app.example/jobs/1"},
	}
	if len(data) != len(templateFields) {
		t.Fatalf("the test covers %d templates of %d", len(data), len(templateFields))
	}
	for name, d := range data {
		for _, l := range Locales {
			r, err := Render(name, l, d)
			if err != nil {
				t.Fatalf("%s/%s: %v", name, l, err)
			}
			if r.Subject == "" || strings.ContainsAny(r.Subject, "\r\n") || !strings.Contains(r.Text, d["link"]) ||
				!strings.Contains(r.HTML, `lang="`+string(l)+`"`) {
				t.Errorf("%s/%s: %+v", name, l, r)
			}
			if l == SimplifiedChinese && name != TemplateNotification && !strings.ContainsAny(r.Text, "你请的") {
				t.Errorf("%s/zh-CN is not in Chinese: %q", name, r.Text)
			}
		}
	}

	t.Run("HTMLEscapes", func(t *testing.T) {
		r, err := Render(TemplateNotification, English, map[string]string{"title": "<script>alert(1)</script>\nSubject: x", "link": "javascript:alert(1)"})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(r.HTML, "<script>") || strings.Contains(r.HTML, "javascript:") {
			t.Errorf("HTML not escaped:\n%s", r.HTML)
		}
		if strings.Contains(r.Subject, "\n") {
			t.Errorf("subject %q spans lines", r.Subject)
		}
	})
	t.Run("UnsupportedLocaleIsEnglish", func(t *testing.T) {
		r, err := Render(TemplateVerification, "fr", data[TemplateVerification])
		if err != nil || r.Subject != "Verify your email address" {
			t.Fatalf("%+v (%v)", r, err)
		}
	})
	t.Run("ErrMissingData", func(t *testing.T) {
		_, err := Render(TemplateInvitation, English, map[string]string{"org": "Acme"})
		e, ok := errors.AsType[*errs.Error](err)
		if !ok || len(e.Fields) != 3 || e.Fields[0].Pointer != "/data/inviter" {
			t.Fatalf("err = %#v", err)
		}
		if _, err := Render("nope", English, nil); errs.CodeOf(err) != errs.Invalid {
			t.Fatalf("unknown template: %v", err)
		}
	})
}

func TestJobFinished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, nil)
	user, org := b.user(t, "ada@example.com")
	finished := func(j jobs.Job) {
		t.Helper()
		if err := b.st.InTx(ctx, func(q *db.Queries) error { return b.c.JobFinished(ctx, q, j) }); err != nil {
			t.Fatal(err)
		}
	}
	created := b.now.Add(-time.Minute)
	end := b.now
	finished(jobs.Job{ID: uuid.New(), Kind: "rag.ingest", OrgID: &org, CreatedBy: &user, State: jobs.Succeeded, CreatedAt: end.Add(-10 * time.Second), FinishedAt: &end})
	finished(jobs.Job{ID: uuid.New(), Kind: "rag.ingest", OrgID: &org, State: jobs.Failed, CreatedAt: created, FinishedAt: &end})
	finished(jobs.Job{ID: uuid.New(), Kind: "rag.ingest", OrgID: &org, CreatedBy: &user, State: jobs.Cancelled, CreatedAt: created, FinishedAt: &end})
	if n, _ := b.c.UnreadCount(ctx, user); n != 0 {
		t.Fatalf("a short, a system and a cancelled job made %d notifications", n)
	}

	id := uuid.New()
	finished(jobs.Job{ID: id, Kind: "rag.ingest", OrgID: &org, CreatedBy: &user, State: jobs.Failed, Attempts: 3, LastError: "bad pdf", CreatedAt: created, FinishedAt: &end})
	list, _ := b.c.List(ctx, user, ListParams{Limit: 10})
	if len(list) != 1 || list[0].Category != CategoryJobs || list[0].Title != "Job rag.ingest failed" ||
		!strings.Contains(list[0].Body, "bad pdf") || list[0].Data["job_id"] != id.String() {
		t.Fatalf("notifications = %+v", list)
	}
	pub := b.jobsOf(t, KindPublish)
	if len(pub) != 1 || !strings.Contains(string(pub[0].Payload), list[0].ID.String()) {
		t.Fatalf("publish jobs = %+v", pub)
	}

	t.Run("EmailJobFailedForGood", func(t *testing.T) {
		var delivery uuid.UUID
		err := b.st.InTx(ctx, func(q *db.Queries) error {
			var err error
			delivery, err = b.c.QueueEmail(ctx, q, b.now, EmailRequest{To: "ada@example.com", Template: TemplateNotification, Data: map[string]string{"title": "x"}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(EmailPayload{DeliveryID: delivery})
		finished(jobs.Job{ID: uuid.New(), Kind: KindEmail, State: jobs.Failed, LastError: "dial tcp: refused", Payload: payload, CreatedAt: created, FinishedAt: &end})
		d, _ := b.c.GetDelivery(ctx, delivery)
		if d.Status != StatusFailed || d.LastError != "dial tcp: refused" {
			t.Fatalf("delivery = %+v, want failed", d)
		}
	})
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t, nil)
	ada, _ := b.user(t, "ada@example.com")
	bob, _ := b.user(t, "bob@example.com")
	subA, err := b.c.Subscribe(ctx, ada)
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close()
	subA2, err := b.c.Subscribe(ctx, ada) // a second device of the same user
	if err != nil {
		t.Fatal(err)
	}
	subB, err := b.c.Subscribe(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()

	sent, err := b.c.Send(ctx, Note{UserID: ada, Category: CategoryJobs, Title: "live"})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []*Subscription{subA, subA2} {
		select {
		case n := <-s.C:
			if n.ID != sent.Notification.ID || n.Title != "live" {
				t.Errorf("subscriber %d got %+v", i, n)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber %d got nothing", i)
		}
	}
	subA2.Close()
	if _, err := b.c.Send(ctx, Note{UserID: ada, Category: CategoryJobs, Title: "second"}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-subA.C:
		if n.Title != "second" {
			t.Errorf("got %+v", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the remaining subscriber got nothing after another closed")
	}
	select {
	case n := <-subB.C:
		t.Fatalf("bob got ada's notification %+v", n)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestUserLocaleColumn checks the migration's locale check: only supported locales.
func TestUserLocaleColumn(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	user, _ := b.user(t, "ada@example.com")
	err := b.st.SetUserLocale(context.Background(), db.SetUserLocaleParams{ID: user, Locale: pgtype.Text{String: "fr", Valid: true}, Now: b.now})
	if errs.CodeOf(store.Translate(err)) != errs.Invalid {
		t.Fatalf("locale fr stored: %v", err)
	}
}
