package exports

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/store"
)

// chunkSize is the largest piece of an archive stored in one row.
const chunkSize = 1 << 20

// Page sizes of the sections: rows with large texts (documents of up to
// rag.max_document_bytes, messages, prompts with their versions) come in smaller pages, so
// the job holds little at a time.
const (
	pageRows      = 500
	pageMessages  = 100
	pageDocuments = 4
	pagePrompts   = 50
)

// build is KindExport's handler: it streams the subject's archive into the export's
// chunks and marks it ready. A retry starts over (the chunks of an earlier attempt are
// deleted first); an archive past Config.MaxBytes fails the export for good.
func (s *Service) build(ctx context.Context, run *jobs.Run, p Payload) (any, error) {
	row, err := s.st.GetDataExport(ctx, p.ExportID)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil, jobs.Permanent(fmt.Errorf("export %s: no such export (its org or user was deleted)", p.ExportID))
	}
	if err != nil {
		return nil, fmt.Errorf("read export: %w", err)
	}
	switch row.State {
	case "pending":
	case "ready": // built by an attempt that ended before it could say so
		return s.result(row, 0), nil
	default:
		return nil, jobs.Permanent(fmt.Errorf("export %s is %s", row.ID, row.State))
	}
	if err := s.st.DeleteDataExportChunks(ctx, row.ID); err != nil {
		return nil, fmt.Errorf("delete an earlier attempt's chunks: %w", err)
	}
	w := &chunkWriter{ctx: ctx, st: s.st, id: row.ID, max: s.cfg.MaxBytes, hash: sha256.New()}
	files, err := s.write(ctx, run, row, w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		cleanup := context.WithoutCancel(ctx)
		if derr := s.st.DeleteDataExportChunks(cleanup, row.ID); derr != nil {
			s.log.ErrorContext(ctx, "delete a failed export's chunks", "export_id", row.ID, "error", derr)
		}
		if errors.Is(err, errTooLarge) {
			now := s.now()
			if ferr := s.st.FailDataExport(cleanup, db.FailDataExportParams{ID: row.ID, Now: &now}); ferr != nil {
				s.log.ErrorContext(ctx, "fail an export", "export_id", row.ID, "error", ferr)
			}
			return nil, jobs.Permanent(fmt.Errorf("the archive is larger than privacy.export_max_bytes (%d bytes)", s.cfg.MaxBytes))
		}
		return nil, err
	}
	now := s.now()
	// Whole seconds: the link's token carries its expiry in Unix seconds.
	expires := now.Add(s.cfg.LinkTTL).Truncate(time.Second)
	done, err := s.st.FinishDataExport(ctx, db.FinishDataExportParams{ID: row.ID, Size: w.size, Sha256: w.hash.Sum(nil), ExpiresAt: &expires, Now: &now})
	if err != nil {
		return nil, fmt.Errorf("finish export: %w", err)
	}
	res := s.result(done, files)
	s.tellReady(ctx, done, run.ID, res)
	return res, nil
}

// result is what the job reports: the export it built, never its link (the org's API keys
// may read the org's jobs; the link is the requester's: Get, and the notification).
func (s *Service) result(r db.DataExport, files int) Result {
	res := Result{ExportID: r.ID, Size: r.Size, SHA256: hex.EncodeToString(r.Sha256), Files: files}
	if r.ExpiresAt != nil {
		res.ExpiresAt = r.ExpiresAt.UTC()
	}
	return res
}

// tellReady sends the requester (a user; an API key has no inbox) the download link, in
// the app and by email as their preferences for category privacy say.
func (s *Service) tellReady(ctx context.Context, r db.DataExport, job uuid.UUID, res Result) {
	if s.notify == nil || !r.UserID.Valid || r.ExpiresAt == nil {
		return
	}
	what := "your data"
	if r.Subject == SubjectOrg {
		what = "the org's data"
	}
	_, err := s.notify.Send(ctx, notify.Note{UserID: r.UserID.UUID, OrgID: &r.OrgID, Category: notify.CategoryPrivacy,
		Title: "Your data export is ready", Link: s.link(r.ID, *r.ExpiresAt),
		Body: fmt.Sprintf("The archive of %s (%d bytes) is ready. Its link downloads it once, until %s; "+
			"it is also on GET /v1/exports/%s.", what, res.Size, res.ExpiresAt.Format(time.RFC3339), r.ID),
		Data: map[string]any{"kind": "privacy.export_ready", "export_id": r.ID.String(), "job_id": job.String()}})
	if err != nil {
		s.log.WarnContext(ctx, "notify a ready export", "export_id", r.ID, "error", err)
	}
}

// scope filters the sections: a user export's rows are the user's across orgs, an org
// export's every row of the org.
type scope struct {
	org, user uuid.NullUUID
}

// section is one part of the archive.
type section struct {
	name  string
	write func(a *archive) error
}

// write writes the archive of r through w and returns how many files it holds.
func (s *Service) write(ctx context.Context, run *jobs.Run, r db.DataExport, w io.Writer) (int, error) {
	a := &archive{ctx: ctx, q: s.st.Queries, zw: zip.NewWriter(w), now: s.now().UTC(), sections: map[string]int{}}
	sc := scope{org: uuid.NullUUID{UUID: r.OrgID, Valid: true}}
	subject := r.OrgID
	if r.Subject == SubjectUser {
		sc = scope{user: r.UserID}
		subject = r.UserID.UUID
	}
	sections := userSections(subject, sc)
	if r.Subject == SubjectOrg {
		sections = orgSections(subject, sc)
	}
	for i, sec := range sections {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		a.section = sec.name
		if err := sec.write(a); err != nil {
			return 0, fmt.Errorf("export %s: %w", sec.name, err)
		}
		if err := run.Report(ctx, jobs.Progress{Done: int64(i + 1), Total: int64(len(sections)), Message: sec.name}); err != nil {
			return 0, fmt.Errorf("report progress: %w", err)
		}
	}
	if err := a.manifest(r, subject); err != nil {
		return 0, err
	}
	if err := a.zw.Close(); err != nil {
		return 0, fmt.Errorf("close archive: %w", err)
	}
	return len(a.files), nil
}

func userSections(user uuid.UUID, sc scope) []section {
	return []section{
		{"profile", func(a *archive) error { return a.one("profile.json", a.q.ExportUserProfile, user) }},
		{"sessions", func(a *archive) error {
			return a.ndjson("sessions.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
				rows, err := a.q.ExportSessions(ctx, db.ExportSessionsParams{UserID: user, After: after, MaxRows: n})
				return recs(rows, err, func(r db.ExportSessionsRow) rec { return rec{r.ID, r.Row} })
			})
		}},
		{"identities", func(a *archive) error {
			return a.ndjson("identities.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
				rows, err := a.q.ExportIdentities(ctx, db.ExportIdentitiesParams{UserID: user, After: after, MaxRows: n})
				return recs(rows, err, func(r db.ExportIdentitiesRow) rec { return rec{r.ID, r.Row} })
			})
		}},
		{"memberships", func(a *archive) error {
			return a.ndjson("memberships.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
				rows, err := a.q.ExportUserMemberships(ctx, db.ExportUserMembershipsParams{UserID: user, After: after, MaxRows: n})
				return recs(rows, err, func(r db.ExportUserMembershipsRow) rec { return rec{r.ID, r.Row} })
			})
		}},
		{"api_keys", func(a *archive) error { return a.apiKeys(sc) }},
		{"conversations", func(a *archive) error { return a.conversations(sc) }},
		{"prompts", func(a *archive) error { return a.prompts(sc) }},
		{"knowledge_bases", func(a *archive) error { return a.knowledgeBases(sc) }},
		{"usage", func(a *archive) error { return a.usage(sc) }},
		{"notifications", func(a *archive) error { return a.notifications(sc) }},
		{"audit_events", func(a *archive) error { return a.auditEvents(sc) }},
	}
}

func orgSections(org uuid.UUID, sc scope) []section {
	return []section{
		{"org", func(a *archive) error { return a.one("org.json", a.q.ExportOrgProfile, org) }},
		{"members", func(a *archive) error {
			return a.ndjson("members.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
				rows, err := a.q.ExportOrgMembers(ctx, db.ExportOrgMembersParams{OrgID: org, After: after, MaxRows: n})
				return recs(rows, err, func(r db.ExportOrgMembersRow) rec { return rec{r.ID, r.Row} })
			})
		}},
		{"api_keys", func(a *archive) error { return a.apiKeys(sc) }},
		{"conversations", func(a *archive) error { return a.conversations(sc) }},
		{"prompts", func(a *archive) error { return a.prompts(sc) }},
		{"knowledge_bases", func(a *archive) error { return a.knowledgeBases(sc) }},
		{"usage", func(a *archive) error { return a.usage(sc) }},
		{"notifications", func(a *archive) error { return a.notifications(sc) }},
		{"audit_events", func(a *archive) error { return a.auditEvents(sc) }},
		{"invoices", func(a *archive) error {
			return a.ndjson("invoices.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
				rows, err := a.q.ExportInvoices(ctx, db.ExportInvoicesParams{OrgID: org, After: after, MaxRows: n})
				return recs(rows, err, func(r db.ExportInvoicesRow) rec { return rec{r.ID, r.Row} })
			})
		}},
		{"billing_profile", func(a *archive) error { return a.one("billing_profile.json", a.q.ExportBillingProfile, org) }},
	}
}

// rec is one exported row: its id (the page cursor) and its JSON.
type rec struct {
	ID  uuid.UUID
	Row []byte
}

func recs[R any](rows []R, err error, fn func(R) rec) ([]rec, error) {
	if err != nil {
		return nil, err
	}
	out := make([]rec, len(rows))
	for i, r := range rows {
		out[i] = fn(r)
	}
	return out, nil
}

// pager reads up to n rows after the cursor.
type pager func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error)

// archive writes the files of an export into its ZIP, one at a time.
type archive struct {
	ctx      context.Context
	q        *db.Queries
	zw       *zip.Writer
	now      time.Time
	section  string
	files    []manifestFile
	sections map[string]int // rows per section
}

type manifestFile struct {
	Name string `json:"name"`
	Rows int    `json:"rows"`
}

func (a *archive) create(name string) (io.Writer, error) {
	w, err := a.zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: a.now})
	if err != nil {
		return nil, fmt.Errorf("add %s: %w", name, err)
	}
	return w, nil
}

// one writes a file of one JSON object; a missing row writes no file.
func (a *archive) one(name string, read func(context.Context, uuid.UUID) ([]byte, error), id uuid.UUID) error {
	row, err := read(a.ctx, id)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil
	}
	if err != nil {
		return err
	}
	w, err := a.create(name)
	if err != nil {
		return err
	}
	if _, err := w.Write(row); err != nil {
		return err
	}
	a.files = append(a.files, manifestFile{Name: name, Rows: 1})
	a.sections[a.section]++
	return nil
}

// each calls fn with every row page reads, a page of n at a time.
func (a *archive) each(n int32, page pager, fn func(rec) error) error {
	after := uuid.Nil
	for {
		if err := a.ctx.Err(); err != nil {
			return err
		}
		rows, err := page(a.ctx, after, n)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(rows) < int(n) {
			return nil
		}
		after = rows[len(rows)-1].ID
	}
}

// ndjson writes a file of one JSON object a line.
func (a *archive) ndjson(name string, n int32, page pager) error {
	w, err := a.create(name)
	if err != nil {
		return err
	}
	count := 0
	err = a.each(n, page, func(r rec) error {
		count++
		if _, err := w.Write(r.Row); err != nil {
			return err
		}
		_, err := w.Write([]byte{'\n'})
		return err
	})
	if err != nil {
		return err
	}
	a.files = append(a.files, manifestFile{Name: name, Rows: count})
	a.sections[a.section] += count
	return nil
}

func (a *archive) apiKeys(sc scope) error {
	return a.ndjson("api_keys.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
		rows, err := a.q.ExportAPIKeys(ctx, db.ExportAPIKeysParams{OrgID: sc.org, UserID: sc.user, After: after, MaxRows: n})
		return recs(rows, err, func(r db.ExportAPIKeysRow) rec { return rec{r.ID, r.Row} })
	})
}

func (a *archive) usage(sc scope) error {
	return a.ndjson("usage.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
		rows, err := a.q.ExportUsage(ctx, db.ExportUsageParams{OrgID: sc.org, UserID: sc.user, After: after, MaxRows: n})
		return recs(rows, err, func(r db.ExportUsageRow) rec { return rec{r.ID, r.Row} })
	})
}

func (a *archive) notifications(sc scope) error {
	return a.ndjson("notifications.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
		rows, err := a.q.ExportNotifications(ctx, db.ExportNotificationsParams{OrgID: sc.org, UserID: sc.user, After: after, MaxRows: n})
		return recs(rows, err, func(r db.ExportNotificationsRow) rec { return rec{r.ID, r.Row} })
	})
}

func (a *archive) auditEvents(sc scope) error {
	return a.ndjson("audit_events.ndjson", pageRows, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
		rows, err := a.q.ExportAuditEvents(ctx, db.ExportAuditEventsParams{OrgID: sc.org, UserID: sc.user, After: after, MaxRows: n})
		return recs(rows, err, func(r db.ExportAuditEventsRow) rec { return rec{r.ID, r.Row} })
	})
}

func (a *archive) prompts(sc scope) error {
	return a.ndjson("prompts.ndjson", pagePrompts, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
		rows, err := a.q.ExportPrompts(ctx, db.ExportPromptsParams{OrgID: sc.org, UserID: sc.user, After: after, MaxRows: n})
		return recs(rows, err, func(r db.ExportPromptsRow) rec { return rec{r.ID, r.Row} })
	})
}

// knowledgeBases writes knowledge_bases.ndjson (each with its index metadata), then each
// one's documents in knowledge_bases/<id>/documents.ndjson.
func (a *archive) knowledgeBases(sc scope) error {
	page := func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
		rows, err := a.q.ExportKnowledgeBases(ctx, db.ExportKnowledgeBasesParams{OrgID: sc.org, UserID: sc.user, After: after, MaxRows: n})
		return recs(rows, err, func(r db.ExportKnowledgeBasesRow) rec { return rec{r.ID, r.Row} })
	}
	if err := a.ndjson("knowledge_bases.ndjson", pageRows, page); err != nil {
		return err
	}
	return a.each(pageRows, page, func(kb rec) error {
		var head struct {
			OrgID uuid.UUID `json:"org_id"`
		}
		if err := json.Unmarshal(kb.Row, &head); err != nil {
			return fmt.Errorf("decode knowledge base %s: %w", kb.ID, err)
		}
		return a.ndjson("knowledge_bases/"+kb.ID.String()+"/documents.ndjson", pageDocuments, func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
			rows, err := a.q.ExportDocuments(ctx, db.ExportDocumentsParams{OrgID: head.OrgID, KbID: kb.ID, After: after, MaxRows: n})
			return recs(rows, err, func(r db.ExportDocumentsRow) rec { return rec{r.ID, r.Row} })
		})
	})
}

// conversations writes conversations.ndjson, then each conversation with its messages as
// conversations/<id>.json and as conversations/<id>.md.
func (a *archive) conversations(sc scope) error {
	titles := map[uuid.UUID]string{} // of the current page only
	page := func(ctx context.Context, after uuid.UUID, n int32) ([]rec, error) {
		rows, err := a.q.ExportConversations(ctx, db.ExportConversationsParams{OrgID: sc.org, UserID: sc.user, After: after, MaxRows: n})
		clear(titles)
		return recs(rows, err, func(r db.ExportConversationsRow) rec {
			titles[r.ID] = r.Title.String
			return rec{r.ID, r.Row}
		})
	}
	if err := a.ndjson("conversations.ndjson", pageRows, page); err != nil {
		return err
	}
	return a.each(pageRows, page, func(c rec) error {
		if err := a.conversationJSON(c); err != nil {
			return err
		}
		return a.conversationMarkdown(c.ID, titles[c.ID])
	})
}

func (a *archive) messages(conversation uuid.UUID, fn func(db.ExportMessagesRow) error) error {
	after := uuid.Nil
	for {
		if err := a.ctx.Err(); err != nil {
			return err
		}
		rows, err := a.q.ExportMessages(a.ctx, db.ExportMessagesParams{ConversationID: conversation, After: after, MaxRows: pageMessages})
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(rows) < pageMessages {
			return nil
		}
		after = rows[len(rows)-1].ID
	}
}

func (a *archive) conversationJSON(c rec) error {
	name := "conversations/" + c.ID.String() + ".json"
	w, err := a.create(name)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, `{"conversation":%s,"messages":[`, c.Row); err != nil {
		return err
	}
	count := 0
	err = a.messages(c.ID, func(m db.ExportMessagesRow) error {
		if count > 0 {
			if _, err := w.Write([]byte{','}); err != nil {
				return err
			}
		}
		count++
		_, err := w.Write(m.Row)
		return err
	})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, "]}\n"); err != nil {
		return err
	}
	a.files = append(a.files, manifestFile{Name: name, Rows: count})
	a.sections[a.section] += count
	return nil
}

func (a *archive) conversationMarkdown(id uuid.UUID, title string) error {
	name := "conversations/" + id.String() + ".md"
	w, err := a.create(name)
	if err != nil {
		return err
	}
	if title == "" {
		title = "Untitled conversation"
	}
	if _, err := fmt.Fprintf(w, "# %s\n\nConversation `%s`.\n", oneLine(title), id); err != nil {
		return err
	}
	count := 0
	err = a.messages(id, func(m db.ExportMessagesRow) error {
		count++
		_, err := fmt.Fprintf(w, "\n## %s · %s\n\n%s\n", m.Role, m.CreatedAt.UTC().Format(time.RFC3339), m.Content)
		return err
	})
	if err != nil {
		return err
	}
	a.files = append(a.files, manifestFile{Name: name, Rows: count})
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// manifest writes manifest.json: what the archive is of, when it was made, its files with
// their row counts and the rows of each section.
func (a *archive) manifest(r db.DataExport, subject uuid.UUID) error {
	w, err := a.create("manifest.json")
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{
		"format":      "kiln-export-v1",
		"export_id":   r.ID,
		"subject":     map[string]any{"type": r.Subject, "id": subject},
		"exported_at": a.now,
		"files":       a.files,
		"sections":    a.sections,
	})
}

// chunkWriter stores what is written in chunks of chunkSize rows, hashing and counting
// it; past max it fails with errTooLarge.
type chunkWriter struct {
	ctx  context.Context
	st   *store.Store
	id   uuid.UUID
	max  int64
	buf  []byte
	seq  int32
	size int64
	hash hash.Hash
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if w.size+int64(len(p)) > w.max {
		return 0, errTooLarge
	}
	w.size += int64(len(p))
	w.hash.Write(p)
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, chunkSize)
		}
		k := min(len(p), chunkSize-len(w.buf))
		w.buf, p = append(w.buf, p[:k]...), p[k:]
		if len(w.buf) == chunkSize {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// flush stores the buffered bytes as the next chunk.
func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.st.InsertDataExportChunk(w.ctx, db.InsertDataExportChunkParams{ExportID: w.id, Seq: w.seq, Data: w.buf}); err != nil {
		return fmt.Errorf("store export chunk %d: %w", w.seq, err)
	}
	w.seq++
	w.buf = w.buf[:0]
	return nil
}
