package server

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
)

// exportFixture is a user with data in every section of an export, and another user
// with the same kinds of data, who must not appear in it.
type exportFixture struct {
	b        *bundle
	ada, bob person
	team     uuid.UUID // bob's org, where ada is a member
	adaKey   api.APIKeyWithSecret
}

// seedPerson gives p data in every section, each marked with tag, in org.
func (f *exportFixture) seed(t *testing.T, p person, org uuid.UUID, tag string) {
	t.Helper()
	b, hdr := f.b, []string{"Kiln-Org", org.String()}
	var c api.Conversation
	wantStatus(t, b.call(t, "POST", "/v1/conversations", p.token, map[string]any{"title": "conv-" + tag}, &c, hdr...), 201)
	wantStatus(t, b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", p.token, map[string]any{"content": "message-" + tag}, nil, hdr...), 200)
	wantStatus(t, b.call(t, "POST", "/v1/prompts", p.token, promptBody("prompt-"+tag), nil, hdr...), 201)
	var kb api.KnowledgeBase
	wantStatus(t, b.call(t, "POST", "/v1/knowledge-bases", p.token, map[string]any{"name": "kb-" + tag}, &kb, hdr...), 201)
	wantStatus(t, b.call(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/documents", p.token,
		map[string]any{"title": "doc-" + tag, "text": "document text " + tag}, nil, hdr...), 202)
	b.notifyUser(t, p.id, "note-"+tag)
	if _, err := b.pool.Exec(t.Context(), `INSERT INTO identities (id, user_id, provider, subject) VALUES ($1, $2, 'github', $3)`,
		uuid.Must(uuid.NewV7()), p.id, "subject-"+tag); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(t.Context(), `INSERT INTO llm_usage (id, org_id, user_id, request_id, endpoint, alias, provider, model,
		status, error_code, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, cached, attempts, created_at)
		VALUES ($1, $2, $3, $4, 'chat', 'default', 'dev', 'dev-echo', 'ok', '', 1, 2, 0, 0, 5, false, 1, now())`,
		uuid.Must(uuid.NewV7()), org, p.id, "usage-"+tag); err != nil {
		t.Fatal(err)
	}
}

func newExportFixture(t *testing.T) *exportFixture {
	t.Helper()
	b := setup(t)
	f := &exportFixture{b: b, ada: b.person(t, "ada@example.com"), bob: b.person(t, "bob@example.com")}
	f.team = b.org(t, f.bob, "Team")
	b.join(t, f.bob, f.team, f.ada, "admin")
	f.seed(t, f.ada, f.ada.personalOrg, "ada-personal")
	f.seed(t, f.ada, f.team, "ada-team")
	f.seed(t, f.bob, f.team, "bob-team")
	f.seed(t, f.bob, f.bob.personalOrg, "bob-personal")
	f.adaKey = b.createKey(t, f.ada.token, []string{"chat"})
	// The replies' usage is recorded in the background: wait for it (one per reply, and
	// the row seed inserted, for each of the four seeds) so the export sees all of it.
	waitFor(t, "the replies' usage", func() bool {
		var n int
		return b.pool.QueryRow(t.Context(), "SELECT count(*) FROM llm_usage").Scan(&n) == nil && n == 8
	})
	return f
}

// waitJob follows a job through the jobs API until it ends, and returns it.
func (b *bundle) waitJob(t *testing.T, token string, id uuid.UUID, header ...string) api.Job {
	t.Helper()
	var j api.Job
	waitFor(t, "job "+id.String()+" to end", func() bool {
		wantStatus(t, b.call(t, "GET", "/v1/jobs/"+id.String(), token, nil, &j, header...), 200)
		return j.State == api.JobSucceeded || j.State == api.JobFailed || j.State == api.JobCancelled
	})
	return j
}

// exportLink returns the download link of a succeeded export job, checking its progress:
// read as token from the export (GET /v1/exports/{id}), which the job's result names
// without its link.
func (b *bundle) exportLink(t *testing.T, token string, j api.Job) string {
	t.Helper()
	if j.State != api.JobSucceeded || j.Result == nil {
		t.Fatalf("export job %+v", j)
	}
	if j.Progress.Total == 0 || j.Progress.Done != j.Progress.Total {
		t.Errorf("progress %+v, want done = total > 0", j.Progress)
	}
	if raw, _ := json.Marshal(*j.Result); strings.Contains(string(raw), "token=") || strings.Contains(string(raw), "download") {
		t.Errorf("the job's result holds the link: %s", raw)
	}
	id, _ := (*j.Result)["export_id"].(string)
	e := b.export(t, token, id, 200)
	if e.State != api.DataExportReady || e.DownloadUrl == nil || !strings.HasPrefix(*e.DownloadUrl, "/v1/exports/"+id+"/download?token=") ||
		e.ExpiresAt == nil || e.Sha256 == nil || e.Size == 0 {
		t.Fatalf("export %+v", e)
	}
	return *e.DownloadUrl
}

// export reads export id as token, wanting status.
func (b *bundle) export(t *testing.T, token, id string, status int) api.DataExport {
	t.Helper()
	var e api.DataExport
	wantStatus(t, b.call(t, "GET", "/v1/exports/"+id, token, nil, &e), status)
	return e
}

// download gets link without credentials.
func (b *bundle) download(t *testing.T, link string) *http.Response {
	t.Helper()
	return b.do(t, httptest.NewRequest("GET", link, nil))
}

// unzip reads every file of an archive.
func unzip(t *testing.T, res *http.Response) map[string]string {
	t.Helper()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/zip" ||
		!strings.HasPrefix(res.Header.Get("Content-Disposition"), `attachment; filename="kiln-export-`) {
		t.Fatalf("download: %d %v %s", res.StatusCode, res.Header, readAll(res))
	}
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		files[zf.Name] = string(body)
	}
	return files
}

// ndjsonRows decodes a file of one JSON object a line.
func ndjsonRows(t *testing.T, body string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	for line := range strings.Lines(body) {
		var row map[string]any
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		rows = append(rows, row)
	}
	return rows
}

// TestExportMe: a user with data in two orgs asks for their export (with an
// Idempotency-Key, replayed; a second request while it is queued returns the same job),
// the job reaches its total, and the link downloads, without credentials, an archive of
// exactly their data: every section, nothing of the other user's (who shares an org with
// them), no secrets. The link works once; a forged token is a 404; both are audited.
func TestExportMe(t *testing.T) {
	t.Parallel()
	f := newExportFixture(t)
	b := f.b

	var job, replay, again api.Job
	res := b.call(t, "POST", "/v1/me/export", f.ada.token, nil, &job, "Idempotency-Key", "export-1")
	wantStatus(t, res, 202)
	if job.Kind != "privacy.export" || job.State != api.JobQueued {
		t.Fatalf("job %+v", job)
	}
	res = b.call(t, "POST", "/v1/me/export", f.ada.token, nil, &replay, "Idempotency-Key", "export-1")
	if wantStatus(t, res, 202); res.Header.Get("Idempotent-Replayed") != "true" || replay.Id != job.Id {
		t.Fatalf("replay: %v %+v", res.Header, replay)
	}
	if wantStatus(t, b.call(t, "POST", "/v1/me/export", f.ada.token, nil, &again), 202); again.Id != job.Id {
		t.Fatalf("a second export while one is queued: job %s, want %s", again.Id, job.Id)
	}
	problemIs(t, b.call(t, "POST", "/v1/me/export", f.adaKey.Key, nil, nil), 403, errs.PermissionDenied)
	// More usage rows than a page: the section pages through all of them.
	if _, err := b.pool.Exec(t.Context(), `INSERT INTO llm_usage (id, org_id, user_id, request_id, endpoint, alias, provider, model,
		status, error_code, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, cached, attempts, created_at)
		SELECT gen_random_uuid(), $1, $2, 'paged-' || g, 'chat', 'default', 'dev', 'dev-echo', 'ok', '', 1, 1, 0, 0, 1, false, 1, now()
		FROM generate_series(1, 1100) g`, f.ada.personalOrg, f.ada.id); err != nil {
		t.Fatal(err)
	}

	b.runJobs(t)
	link := b.exportLink(t, f.ada.token, b.waitJob(t, f.ada.token, job.Id))
	exportID := strings.Split(link, "/")[3]
	problemIs(t, b.call(t, "GET", "/v1/exports/"+exportID, f.bob.token, nil, nil), 404, errs.NotFound)
	problemIs(t, b.call(t, "GET", "/v1/exports/"+exportID, f.adaKey.Key, nil, nil), 403, errs.PermissionDenied)
	files := unzip(t, b.download(t, link))
	if e := b.export(t, f.ada.token, exportID, 200); e.State != api.DataExportDownloaded || e.DownloadUrl != nil || e.DownloadedAt == nil {
		t.Errorf("downloaded export %+v", e)
	}

	var manifest struct {
		Subject struct {
			Type string    `json:"type"`
			ID   uuid.UUID `json:"id"`
		} `json:"subject"`
		ExportedAt time.Time `json:"exported_at"`
		Files      []struct {
			Name string `json:"name"`
			Rows int    `json:"rows"`
		} `json:"files"`
	}
	if err := json.Unmarshal([]byte(files["manifest.json"]), &manifest); err != nil {
		t.Fatalf("manifest: %v\n%s", err, files["manifest.json"])
	}
	if manifest.Subject.Type != "user" || manifest.Subject.ID != f.ada.id || manifest.ExportedAt.IsZero() || len(manifest.Files) != len(files)-1 {
		t.Errorf("manifest %+v for %d files", manifest, len(files))
	}
	for _, mf := range manifest.Files {
		if _, ok := files[mf.Name]; !ok {
			t.Errorf("the manifest lists %s, not in the archive", mf.Name)
		}
	}

	// Every section holds ada's rows, from both her orgs.
	for name, want := range map[string][]string{
		"profile.json":           {f.ada.id.String(), "ada@example.com"},
		"sessions.ndjson":        {f.ada.id.String()},
		"identities.ndjson":      {"subject-ada-personal", "subject-ada-team"},
		"memberships.ndjson":     {f.ada.personalOrg.String(), f.team.String(), `"admin"`},
		"api_keys.ndjson":        {f.adaKey.Id.String()},
		"conversations.ndjson":   {"conv-ada-personal", "conv-ada-team"},
		"prompts.ndjson":         {"prompt-ada-personal", "prompt-ada-team", `"versions"`},
		"knowledge_bases.ndjson": {"kb-ada-personal", "kb-ada-team", `"embedding_model"`, `"dimensions"`, `"chunk_count"`},
		"usage.ndjson":           {"usage-ada-personal", "usage-ada-team"},
		"notifications.ndjson":   {"note-ada-personal", "note-ada-team"},
		"audit_events.ndjson":    {"api_key.create", "privacy.export_requested"},
	} {
		body, ok := files[name]
		if !ok {
			t.Errorf("no %s in the archive", name)
			continue
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q:\n%s", name, w, body)
			}
		}
	}
	if n := len(ndjsonRows(t, files["conversations.ndjson"])); n != 2 {
		t.Errorf("%d conversations, want 2", n)
	}
	var usageRows int // those inserted and those of her conversations' replies
	if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM llm_usage WHERE user_id = $1", f.ada.id).Scan(&usageRows); err != nil || usageRows < 1102 {
		t.Fatalf("%d usage rows of ada's, %v", usageRows, err)
	}
	if n := len(ndjsonRows(t, files["usage.ndjson"])); n != usageRows {
		t.Errorf("%d usage rows, want %d", n, usageRows)
	}
	for _, mf := range manifest.Files {
		if mf.Name == "usage.ndjson" && mf.Rows != usageRows {
			t.Errorf("the manifest counts %d usage rows, want %d", mf.Rows, usageRows)
		}
	}
	var markdown, documents int
	for name, body := range files {
		switch {
		case strings.HasSuffix(name, ".md"):
			markdown++
			if !strings.Contains(body, "# conv-ada-") || !strings.Contains(body, "## user") || !strings.Contains(body, "message-ada-") {
				t.Errorf("%s:\n%s", name, body)
			}
		case strings.HasPrefix(name, "conversations/") && strings.HasSuffix(name, ".json"):
			var conv struct {
				Conversation map[string]any   `json:"conversation"`
				Messages     []map[string]any `json:"messages"`
			}
			if err := json.Unmarshal([]byte(body), &conv); err != nil || len(conv.Messages) != 2 || conv.Conversation["title"] == nil ||
				!strings.HasPrefix(conv.Messages[0]["content"].(string), "message-ada-") {
				t.Errorf("%s: %v\n%s", name, err, body)
			}
		case strings.HasSuffix(name, "/documents.ndjson"):
			documents++
			rows := ndjsonRows(t, body)
			if len(rows) != 1 || !strings.HasPrefix(rows[0]["content"].(string), "document text ada-") || rows[0]["status"] == nil {
				t.Errorf("%s: %+v", name, rows)
			}
		}
	}
	if markdown != 2 || documents != 2 {
		t.Errorf("%d conversations in Markdown and %d document files, want 2 and 2", markdown, documents)
	}
	// Nothing of bob's (his id only as who invited her, in her member.join event), and no
	// secret.
	for name, body := range files {
		for _, leak := range []string{"bob", f.bob.id.String(), "password_hash", "secret_hash", "content_hash", f.adaKey.Key, "$argon2"} {
			if name == "audit_events.ndjson" && leak == f.bob.id.String() {
				body = strings.ReplaceAll(body, `"invited_by": "`+leak+`"`, "")
			}
			if strings.Contains(body, leak) {
				t.Errorf("%s holds %q:\n%s", name, leak, body)
			}
		}
	}

	// Once only, and the bytes are gone.
	problemIs(t, b.download(t, link), 410, errs.ExportDownloaded)
	var chunks int
	if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM data_export_chunks WHERE export_id = $1", exportID).Scan(&chunks); err != nil || chunks != 0 {
		t.Errorf("%d chunks left after the download (%v)", chunks, err)
	}
	u, _ := url.Parse(link)
	token := u.Query().Get("token")
	forged := token[:len(token)-2] + map[bool]string{true: "AA", false: "AB"}[strings.HasSuffix(token, "AB")]
	problemIs(t, b.download(t, u.Path+"?token="+url.QueryEscape(forged)), 404, errs.NotFound)
	problemIs(t, b.download(t, "/v1/exports/"+uuid.Must(uuid.NewV7()).String()+"/download?token="+url.QueryEscape(token)), 404, errs.NotFound)
	problemIs(t, b.download(t, u.Path+"?token=nonsense"), 404, errs.NotFound)
	if b.auditCount(t, "privacy.export_requested", f.ada.id.String()) != 1 || b.auditCount(t, "privacy.export_downloaded", f.ada.id.String()) != 1 {
		t.Errorf("audit: %d requested, %d downloaded, want 1 and 1",
			b.auditCount(t, "privacy.export_requested", f.ada.id.String()), b.auditCount(t, "privacy.export_downloaded", f.ada.id.String()))
	}
	var notes api.NotificationList
	wantStatus(t, b.call(t, "GET", "/v1/notifications", f.ada.token, nil, &notes), 200)
	if len(notes.Data) == 0 || notes.Data[0].Title != "Your data export is ready" || notes.Data[0].Category != api.NotificationCategoryPrivacy ||
		notes.Data[0].Link == nil || *notes.Data[0].Link != link {
		t.Errorf("notifications %+v", notes.Data)
	}
	// And by email (category privacy sends one unless turned off), with the link.
	var mailed int
	for _, m := range b.mail.To("ada@example.com") {
		if m.Subject == "Your data export is ready" && strings.Contains(m.Text, link) {
			mailed++
		}
	}
	if mailed != 1 {
		t.Errorf("%d emails with the link, want 1: %+v", mailed, b.mail.To("ada@example.com"))
	}

	// A new export after the first ended is a new job.
	var next api.Job
	if wantStatus(t, b.call(t, "POST", "/v1/me/export", f.ada.token, nil, &next), 202); next.Id == job.Id {
		t.Errorf("an export after the first ended returned the first's job")
	}
}

// TestExportOrg: an org's export is for its owners and admins (a plain member gets 403,
// another user 404, a key needs admin) and holds every row of the org, whoever made it, and
// nothing of its members' other orgs.
func TestExportOrg(t *testing.T) {
	t.Parallel()
	f := newExportFixture(t)
	b := f.b
	path := fmt.Sprintf("/v1/orgs/%s/export", f.team)
	carol, dave := b.person(t, "carol@example.com"), b.person(t, "dave@example.com")
	b.join(t, f.bob, f.team, carol, "member")
	problemIs(t, b.call(t, "POST", path, carol.token, nil, nil), 403, errs.PermissionDenied)
	problemIs(t, b.call(t, "POST", path, dave.token, nil, nil), 404, errs.NotFound)
	chatKey := b.createKey(t, f.bob.token, []string{"chat"}, "Kiln-Org", f.team.String())
	problemIs(t, b.call(t, "POST", path, chatKey.Key, nil, nil), 403, errs.PermissionDenied)
	wantStatus(t, b.call(t, "PUT", fmt.Sprintf("/v1/orgs/%s/billing-profile", f.team), f.bob.token,
		map[string]any{"legal_name": "Team Ltd", "address": "1 Loop St", "tax_id": "GB42"}, nil), 200)

	var job, byKey api.Job
	wantStatus(t, b.call(t, "POST", path, f.bob.token, nil, &job), 202)
	adminKey := b.createKey(t, f.bob.token, []string{"admin"}, "Kiln-Org", f.team.String())
	if wantStatus(t, b.call(t, "POST", path, adminKey.Key, nil, &byKey), 202); byKey.Id != job.Id {
		t.Errorf("a second org export while one is queued: %s, want %s", byKey.Id, job.Id)
	}
	b.runJobs(t)
	ended := b.waitJob(t, f.bob.token, job.Id, "Kiln-Org", f.team.String())
	// The org's keys read its jobs, not the link; its members who are not owners or admins
	// do not see the export.
	var seen api.Job
	wantStatus(t, b.call(t, "GET", "/v1/jobs/"+job.Id.String(), adminKey.Key, nil, &seen), 200)
	exportID, _ := (*seen.Result)["export_id"].(string)
	if _, leaked := (*seen.Result)["download_url"]; leaked || exportID == "" {
		t.Errorf("job result as the admin key reads it: %+v", *seen.Result)
	}
	problemIs(t, b.call(t, "GET", "/v1/exports/"+exportID, adminKey.Key, nil, nil), 403, errs.PermissionDenied)
	problemIs(t, b.call(t, "GET", "/v1/exports/"+exportID, carol.token, nil, nil), 404, errs.NotFound)
	problemIs(t, b.call(t, "GET", "/v1/exports/"+exportID, dave.token, nil, nil), 404, errs.NotFound)
	if e := b.export(t, f.ada.token, exportID, 200); e.DownloadUrl == nil || e.Subject != api.DataExportSubjectOrg { // an admin of the org
		t.Errorf("export as an admin %+v", e)
	}
	files := unzip(t, b.download(t, b.exportLink(t, f.bob.token, ended)))
	for name, want := range map[string][]string{
		"org.json":               {f.team.String(), "Team"},
		"members.ndjson":         {"ada@example.com", "bob@example.com", "carol@example.com"},
		"api_keys.ndjson":        {chatKey.Id.String(), adminKey.Id.String()},
		"conversations.ndjson":   {"conv-ada-team", "conv-bob-team"},
		"prompts.ndjson":         {"prompt-ada-team", "prompt-bob-team"},
		"knowledge_bases.ndjson": {"kb-ada-team", "kb-bob-team"},
		"usage.ndjson":           {"usage-ada-team", "usage-bob-team"},
		"audit_events.ndjson":    {"privacy.export_requested"},
		"invoices.ndjson":        {},
		"billing_profile.json":   {"Team Ltd"},
	} {
		body, ok := files[name]
		if !ok {
			t.Errorf("no %s in the archive", name)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q:\n%s", name, w, body)
			}
		}
	}
	for name, body := range files {
		for _, leak := range []string{"-personal", f.ada.personalOrg.String(), f.bob.personalOrg.String(), "secret_hash", chatKey.Key} {
			if strings.Contains(body, leak) {
				t.Errorf("%s holds %q:\n%s", name, leak, body)
			}
		}
	}
}

// TestExportLinkExpires: past privacy.export_link_ttl the link is a 410, and housekeeping
// deletes the archive.
func TestExportLinkExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.person(t, "ada@example.com")
	var job api.Job
	wantStatus(t, b.call(t, "POST", "/v1/me/export", ada.token, nil, &job), 202)
	b.runJobs(t)
	link := b.exportLink(t, ada.token, b.waitJob(t, ada.token, job.Id))
	b.clock.Advance(time.Hour)
	problemIs(t, b.download(t, link), 410, errs.ExportLinkExpired)
	chunks := func() (n int) {
		if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM data_export_chunks").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if chunks() == 0 {
		t.Fatal("no archive stored")
	}
	if n, err := b.srv.exports.PurgeExpired(context.Background()); err != nil || n == 0 || chunks() != 0 {
		t.Fatalf("purge: %d, %v; %d chunks left", n, err, chunks())
	}
	var state string
	if err := b.pool.QueryRow(t.Context(), "SELECT state FROM data_exports").Scan(&state); err != nil || state != "expired" {
		t.Errorf("state %q, %v", state, err)
	}
}

// TestExportFailsWithItsJob: an export whose job fails on its last attempt is failed when
// the job ends (its kind's end hook), not left pending until the next request; so is one
// whose job is cancelled.
func TestExportFailsWithItsJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada, bob := b.person(t, "ada@example.com"), b.person(t, "bob@example.com")
	// One attempt, which times out at once: a failure that is not permanent.
	if err := b.srv.jobs.Registry.Override("privacy.export", jobs.Kind{MaxAttempts: 1, Timeout: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	var cancelled api.Job
	wantStatus(t, b.call(t, "POST", "/v1/me/export", bob.token, nil, &cancelled), 202)
	wantStatus(t, b.call(t, "POST", "/v1/jobs/"+cancelled.Id.String()+"/cancel", bob.token, nil, nil), 200)
	var job api.Job
	wantStatus(t, b.call(t, "POST", "/v1/me/export", ada.token, nil, &job), 202)
	b.runJobs(t)
	if j := b.waitJob(t, ada.token, job.Id); j.State != api.JobFailed || j.Attempts != 1 {
		t.Fatalf("job %+v, want failed after its one attempt", j)
	}
	for _, who := range []person{ada, bob} {
		var id, state string
		if err := b.pool.QueryRow(t.Context(), "SELECT id, state FROM data_exports WHERE user_id = $1", who.id).Scan(&id, &state); err != nil || state != "failed" {
			t.Errorf("%s's export is %q (%v), want failed", who.email, state, err)
		}
		if e := b.export(t, who.token, id, 200); e.State != api.DataExportFailed || e.DownloadUrl != nil {
			t.Errorf("%s's export %+v", who.email, e)
		}
	}
}
