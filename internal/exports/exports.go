// Package exports builds privacy exports: a ZIP archive of everything Kiln holds about a
// user (across their orgs) or an org, built by a job, stored in PostgreSQL so any replica
// serves it, and downloaded once through an expiring signed link.
package exports

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/store"
)

// KindExport builds one export's archive.
var KindExport = jobs.Kind{Name: "privacy.export", MaxAttempts: 3, Timeout: time.Hour,
	Backoff: jobs.Backoff{Base: 30 * time.Second, Max: 10 * time.Minute}}

// The subjects of an export.
const (
	SubjectUser = "user"
	SubjectOrg  = "org"
)

// Subject is what an export is of: a user (everything of theirs across orgs) or an org
// (every row of it).
type Subject struct {
	Kind string // SubjectUser or SubjectOrg
	ID   uuid.UUID
}

// Config bounds the exports.
type Config struct {
	// LinkTTL is how long a download link works once the archive is built.
	LinkTTL time.Duration
	// MaxBytes is the largest archive an export builds; past it the job fails.
	MaxBytes int64
	// PublicURL prefixes the download links (the API's public base URL); empty: paths.
	PublicURL string
}

// Notifier tells the requester that their export is ready (notify.Center).
type Notifier interface {
	Send(ctx context.Context, n notify.Note) (notify.Sent, error)
}

// Deps are the service's dependencies.
type Deps struct {
	Store   *store.Store
	Jobs    *jobs.Registry
	Keyring Keyring
	// Notify, when set, tells the requester their export is ready.
	Notify Notifier
	Log    *slog.Logger
	Now    func() time.Time
}

// Service asks for, builds and serves exports.
type Service struct {
	st     *store.Store
	jobs   *jobs.Registry
	keys   Keyring
	notify Notifier
	log    *slog.Logger
	now    func() time.Time
	cfg    Config
}

// New returns the service and registers KindExport on d.Jobs.
func New(cfg Config, d Deps) *Service {
	s := &Service{st: d.Store, jobs: d.Jobs, keys: d.Keyring, notify: d.Notify, log: d.Log, now: d.Now, cfg: cfg}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	jobs.Register(d.Jobs, KindExport, s.build)
	d.Jobs.OnFinished(KindExport.Name, s.jobEnded)
	return s
}

// jobEnded is KindExport's end hook: the export of a job that failed for good or was
// cancelled fails in the transaction that ends the job, so it is never left pending.
func (s *Service) jobEnded(ctx context.Context, q *db.Queries, j jobs.Job) error {
	if j.State != jobs.Failed && j.State != jobs.Cancelled {
		return nil
	}
	var p Payload
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		return nil //nolint:nilerr // an undecodable payload never named an export
	}
	now := s.now()
	if err := q.FailDataExport(ctx, db.FailDataExportParams{ID: p.ExportID, Now: &now}); err != nil {
		return fmt.Errorf("fail export %s: %w", p.ExportID, err)
	}
	return nil
}

// Payload is the payload of KindExport.
type Payload struct {
	ExportID uuid.UUID `json:"export_id"`
}

// Result is what a succeeded export job reports: the export it built (Get returns its
// link to the requester).
type Result struct {
	ExportID  uuid.UUID `json:"export_id"`
	ExpiresAt time.Time `json:"expires_at"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	Files     int       `json:"files"`
}

// Export is an export as its requester sees it.
type Export struct {
	ID      uuid.UUID
	Subject string
	OrgID   uuid.UUID
	JobID   *uuid.UUID
	State   string
	Size    int64
	SHA256  string // hex; "" until ready
	// DownloadURL is the signed link while the export is ready; "" otherwise.
	DownloadURL  string
	ExpiresAt    *time.Time
	CreatedAt    time.Time
	FinishedAt   *time.Time
	DownloadedAt *time.Time
}

// Get returns export id to the user userID: a user's export to that user only, an org's to
// the org's owners and admins only. Errors: not_found for anyone else, or no such export.
func (s *Service) Get(ctx context.Context, userID, id uuid.UUID) (Export, error) {
	missing := errs.E(errs.NotFound, "No export %s.", id)
	r, err := s.st.GetDataExport(ctx, id)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return Export{}, missing
	}
	if err != nil {
		return Export{}, fmt.Errorf("read export: %w", err)
	}
	switch r.Subject {
	case SubjectUser:
		if r.UserID.UUID != userID || !r.UserID.Valid {
			return Export{}, missing
		}
	default:
		role, err := s.st.GetOrgMemberRole(ctx, db.GetOrgMemberRoleParams{OrgID: r.OrgID, UserID: userID})
		if errs.CodeOf(store.Translate(err)) == errs.NotFound || (err == nil && role != "owner" && role != "admin") {
			return Export{}, missing
		}
		if err != nil {
			return Export{}, fmt.Errorf("read role: %w", err)
		}
	}
	out := Export{ID: r.ID, Subject: r.Subject, OrgID: r.OrgID, JobID: store.UUIDPtr(r.JobID), State: r.State, Size: r.Size,
		ExpiresAt: store.UTC(r.ExpiresAt), CreatedAt: r.CreatedAt.UTC(), FinishedAt: store.UTC(r.FinishedAt), DownloadedAt: store.UTC(r.DownloadedAt)}
	if len(r.Sha256) > 0 {
		out.SHA256 = hex.EncodeToString(r.Sha256)
	}
	if r.State == "ready" && r.ExpiresAt != nil && s.now().Before(*r.ExpiresAt) {
		out.DownloadURL = s.link(r.ID, *r.ExpiresAt)
	}
	return out, nil
}

// Request starts an export of subject asked by by; the job is created in org (the org
// exported, or the user's personal org). While an export of the subject is queued or
// running it returns that export's job instead of starting another. The request is
// audited (privacy.export_requested) in its transaction.
func (s *Service) Request(ctx context.Context, by audit.Actor, subject Subject, org uuid.UUID) (jobs.Job, error) {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	now := s.now()
	var job jobs.Job
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		key := db.LockDataExportSubjectParams{Subject: subject.Kind, SubjectID: subject.ID}
		if err := q.LockDataExportSubject(ctx, key); err != nil {
			return fmt.Errorf("lock export subject: %w", err)
		}
		if err := q.FailDeadDataExports(ctx, db.FailDeadDataExportsParams{Subject: subject.Kind, SubjectID: subject.ID, Now: &now}); err != nil {
			return fmt.Errorf("fail dead exports: %w", err)
		}
		running, err := q.PendingDataExport(ctx, db.PendingDataExportParams{Subject: subject.Kind, SubjectID: subject.ID})
		if err == nil && running.JobID.Valid {
			job, err = jobs.Load(ctx, q, running.JobID.UUID)
			return err
		}
		if err != nil && errs.CodeOf(store.Translate(err)) != errs.NotFound {
			return fmt.Errorf("find running export: %w", err)
		}
		id := uuid.Must(uuid.NewV7())
		job, err = s.jobs.Enqueue(ctx, q, now, jobs.New{Kind: KindExport.Name, OrgID: &org, CreatedBy: by.UserID(), APIKeyID: apiKeyOf(by),
			Payload: Payload{ExportID: id}})
		if err != nil {
			return err
		}
		user := by.UserID()
		if subject.Kind == SubjectUser {
			user = &subject.ID
		}
		_, err = q.CreateDataExport(ctx, db.CreateDataExportParams{ID: id, Subject: subject.Kind, OrgID: org, UserID: store.NullUUID(user),
			ApiKeyID: store.NullUUID(apiKeyOf(by)), JobID: uuid.NullUUID{UUID: job.ID, Valid: true}, CreatedAt: now})
		if err != nil {
			return fmt.Errorf("create export: %w", store.Translate(err))
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "privacy.export_requested", TargetType: subject.Kind, TargetID: subject.ID.String(),
			Data: map[string]any{"export_id": id.String(), "job_id": job.ID.String()}})
	})
	return job, err
}

func apiKeyOf(by audit.Actor) *uuid.UUID {
	if by.Type == audit.ActorAPIKey {
		return by.ID
	}
	return nil
}

// Archive is an export's archive being downloaded: read it, then Close it, which deletes
// its bytes.
type Archive struct {
	io.ReadCloser
	ID       uuid.UUID
	Size     int64
	Filename string
}

// Download claims export id's archive for its one download with the link's token, and
// records privacy.export_downloaded by by in the claiming transaction. Errors: not_found
// for a token not signed for the export (or an export that has none); export_link_expired
// past the link's expiry; export_downloaded when it was downloaded already.
func (s *Service) Download(ctx context.Context, by audit.Actor, id uuid.UUID, token string) (*Archive, error) {
	expires, err := verify(s.keys, id, token)
	if err != nil {
		return nil, errs.E(errs.NotFound, "No export %s for this link.", id)
	}
	now := s.now()
	if !now.Before(expires) {
		return nil, errs.E(errs.ExportLinkExpired, "This export's link expired at %s; ask for a new export.", expires.Format(time.RFC3339))
	}
	actx, cancel := audit.Detach(ctx)
	defer cancel()
	var claimed db.DataExport
	err = s.st.InTx(actx, func(q *db.Queries) error {
		claimed, err = q.ClaimDataExport(actx, db.ClaimDataExportParams{ID: id, Now: &now})
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return s.unclaimable(actx, q, id, now)
		}
		if err != nil {
			return fmt.Errorf("claim export: %w", err)
		}
		return audit.Write(actx, q, by, audit.Event{OrgID: &claimed.OrgID, Action: "privacy.export_downloaded", TargetType: claimed.Subject,
			TargetID: subjectID(claimed).String(), Data: map[string]any{"export_id": id.String(), "size": claimed.Size}})
	})
	if err != nil {
		return nil, err
	}
	return &Archive{ReadCloser: &chunkReader{ctx: ctx, s: s, id: id}, ID: id, Size: claimed.Size,
		Filename: "kiln-export-" + id.String() + ".zip"}, nil
}

// unclaimable says why export id cannot be claimed.
func (s *Service) unclaimable(ctx context.Context, q *db.Queries, id uuid.UUID, now time.Time) error {
	row, err := q.GetDataExport(ctx, id)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return errs.E(errs.NotFound, "No export %s for this link.", id)
	}
	if err != nil {
		return fmt.Errorf("read export: %w", err)
	}
	switch {
	case row.DownloadedAt != nil:
		return errs.E(errs.ExportDownloaded, "Export %s was downloaded at %s; a link works once. Ask for a new export.", id, row.DownloadedAt.UTC().Format(time.RFC3339))
	case row.State == "expired" || (row.ExpiresAt != nil && !now.Before(*row.ExpiresAt)):
		return errs.E(errs.ExportLinkExpired, "This export's link expired; ask for a new export.")
	default:
		return errs.E(errs.NotFound, "No export %s for this link.", id)
	}
}

func subjectID(r db.DataExport) uuid.UUID {
	if r.Subject == SubjectUser && r.UserID.Valid {
		return r.UserID.UUID
	}
	return r.OrgID
}

// chunkReader reads an archive's chunks in order, one at a time; Close deletes them (the
// download is the only one).
type chunkReader struct {
	ctx  context.Context
	s    *Service
	id   uuid.UUID
	seq  int32
	buf  []byte
	done bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		data, err := r.s.st.GetDataExportChunk(r.ctx, db.GetDataExportChunkParams{ExportID: r.id, Seq: r.seq})
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			r.done = true
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read export chunk %d: %w", r.seq, err)
		}
		r.buf, r.seq = data, r.seq+1
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *chunkReader) Close() error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), time.Minute)
	defer cancel()
	if err := r.s.st.DeleteDataExportChunks(ctx, r.id); err != nil {
		return fmt.Errorf("delete downloaded export %s: %w", r.id, err)
	}
	return nil
}

// PurgeExpired marks the exports whose link expired and deletes the bytes of every
// archive that can no longer be downloaded (a housekeeping purger). It returns the chunks
// deleted.
func (s *Service) PurgeExpired(ctx context.Context) (int64, error) {
	now := s.now()
	if _, err := s.st.ExpireDataExports(ctx, &now); err != nil {
		return 0, fmt.Errorf("expire exports: %w", err)
	}
	// A download still streaming past an hour is cut; a link works once either way.
	before := now.Add(-time.Hour)
	n, err := s.st.PurgeDataExportChunks(ctx, &before)
	if err != nil {
		return 0, fmt.Errorf("purge export archives: %w", err)
	}
	return n, nil
}

// link returns the download URL of export id expiring at expires.
func (s *Service) link(id uuid.UUID, expires time.Time) string {
	path := "/v1/exports/" + id.String() + "/download?token=" + url.QueryEscape(sign(s.keys, id, expires))
	if s.cfg.PublicURL == "" {
		return path
	}
	return trimSlash(s.cfg.PublicURL) + path
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// errTooLarge fails an export whose archive passed Config.MaxBytes.
var errTooLarge = errors.New("export archive too large")
