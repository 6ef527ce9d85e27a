package erasure

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
)

// Result is what an erase job reports: counts only, never who.
type Result struct {
	Subject    Subject `json:"subject"`
	Erased     bool    `json:"erased"` // false: restored meanwhile, or erased by an earlier attempt
	OrgsErased int     `json:"orgs_erased"`
	JobsErased int     `json:"jobs_erased"`
	AuditRows  int     `json:"audit_events_pseudonymised"`
	RedisKeys  int     `json:"redis_keys_deleted"`
}

// erase is KindErase's handler.
func (s *Service) erase(ctx context.Context, run *jobs.Run, p ErasePayload) (any, error) {
	switch p.Subject {
	case SubjectUser:
		return s.eraseUser(ctx, run.ID, p.Pseudonym)
	case SubjectOrg:
		return s.eraseOrg(ctx, run.ID, p.Pseudonym)
	case "":
		return Result{}, nil // a payload emptied by hand: nothing names a subject
	}
	return nil, jobs.Permanent(fmt.Errorf("unknown erasure subject %q", p.Subject))
}

// subjectUser is what identifies the person being erased, read before the erasure: the
// values no row or key may hold afterwards.
type subjectUser struct {
	row    db.User
	emails []string // the account's address and those of its external identities
	ips    []string
	agents []string
	orgs   []uuid.UUID // erased with the user
}

// tokens are the values searched for in stored texts (jobs, idempotent responses).
func (u subjectUser) tokens() []string {
	return append([]string{u.row.ID.String()}, u.emails...)
}

// keyTokens are the substrings of the Redis key names that belong to the subject: their
// ids and the hashes the abuse limits name emails, users and addresses by.
func (u subjectUser) keyTokens() []string {
	out := []string{u.row.ID.String()}
	for _, o := range u.orgs {
		out = append(out, o.String())
	}
	subjects := append([]string{"user:" + u.row.ID.String()}, u.emails...)
	subjects = append(subjects, u.ips...)
	for _, sub := range subjects {
		sum := sha256.Sum256([]byte(sub))
		out = append(out, hex.EncodeToString(sum[:16]))
	}
	return out
}

// eraseUser erases the user whose erase job is jobID: Redis first (so that a failure is
// retried while the rows still tell what to look for), then every row in one transaction,
// then Redis again for the keys written meanwhile and the buffers of the rows deleted.
func (s *Service) eraseUser(ctx context.Context, jobID, pseudonym uuid.UUID) (Result, error) {
	res := Result{Subject: SubjectUser}
	u, err := s.readUser(ctx, s.d.Store.Queries, jobID, false)
	if errs.CodeOf(err) == errs.NotFound {
		return res, nil
	}
	if err != nil {
		return res, err
	}
	if err := s.cancelSubscriptions(ctx, u.orgs); err != nil {
		return res, err
	}
	if n, err := s.purgeRedis(ctx, u.keyTokens(), u.tokens()); err != nil {
		return res, err
	} else {
		res.RedisKeys += n
	}
	var (
		gone     []string // ids of deleted rows whose buffers live in Redis
		sessions []uuid.UUID
	)
	err = s.d.Store.InTx(ctx, func(q *db.Queries) error {
		u, err = s.readUser(ctx, q, jobID, true)
		if err != nil {
			return err
		}
		if sessions, err = q.RevokeUserSessions(ctx, db.RevokeUserSessionsParams{UserID: u.row.ID, Now: s.d.Now().UTC()}); err != nil {
			return fmt.Errorf("revoke sessions: %w", err)
		}
		if err := q.AllowErasure(ctx); err != nil {
			return fmt.Errorf("allow erasure: %w", err)
		}
		now := s.d.Now().UTC()
		subject := uuid.NullUUID{UUID: u.row.ID, Valid: true}
		personal := uuid.NullUUID{UUID: pseudonym, Valid: true}
		for _, org := range u.orgs {
			ids, err := s.eraseOrgRows(ctx, q, org, jobID, now, pseudonymText(pseudonym, org), subject, personal)
			if err != nil {
				return err
			}
			gone = append(gone, ids...)
			res.OrgsErased++
		}
		ids, err := q.EraseUserRows(ctx, db.EraseUserRowsParams{UserID: u.row.ID, Pseudonym: personal, Email: u.row.Email})
		if err != nil {
			return fmt.Errorf("erase user rows: %w", err)
		}
		gone = appendIDs(gone, ids)
		for _, t := range u.tokens() {
			ids, err := q.EraseJobsNaming(ctx, db.EraseJobsNamingParams{KeepID: jobID, UserID: subject, Token: strings.ToLower(t)})
			if err != nil {
				return fmt.Errorf("erase jobs: %w", err)
			}
			gone = appendIDs(gone, ids)
			res.JobsErased += len(ids)
		}
		if res.AuditRows, err = pseudonymiseAudit(ctx, q, u, pseudonym); err != nil {
			return err
		}
		if err := q.DeleteErasedUser(ctx, u.row.ID); err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		personalOrg := u.row.PersonalOrgID
		return audit.Write(ctx, q, audit.Actor{Type: audit.ActorSystem}, audit.Event{OrgID: &personalOrg, Action: "privacy.user_erased",
			TargetType: "user", TargetID: pseudonym.String(), Data: map[string]any{
				"orgs_erased": res.OrgsErased, "jobs_erased": res.JobsErased, "audit_events_pseudonymised": res.AuditRows}})
	})
	if errs.CodeOf(err) == errs.NotFound {
		return res, nil // restored meanwhile
	}
	if err != nil {
		return res, fmt.Errorf("erase user: %w", err)
	}
	res.Erased = true
	s.announce(ctx, sessions, false)
	res.RedisKeys += s.purgeAfter(ctx, append(u.keyTokens(), gone...), u.tokens())
	return res, nil
}

// readUser reads the subject of jobID and what identifies them; not_found when there is
// none (restored, or erased already). A subject not due yet is an error: the job retries.
func (s *Service) readUser(ctx context.Context, q *db.Queries, jobID uuid.UUID, lock bool) (subjectUser, error) {
	row, err := q.UserErasedBy(ctx, uuid.NullUUID{UUID: jobID, Valid: true})
	if err != nil {
		return subjectUser{}, notFound("user", err)
	}
	if row.EraseAt == nil || s.d.Now().Before(*row.EraseAt) {
		return subjectUser{}, fmt.Errorf("%w: user's erasure is due at %v", errNotDue, row.EraseAt)
	}
	u := subjectUser{row: row, emails: []string{row.Email}}
	if lock {
		if sole, err := q.SoleOwnedSharedOrgs(ctx, row.ID); err != nil {
			return u, fmt.Errorf("sole-owned orgs: %w", err)
		} else if len(sole) > 0 {
			// Another owner left during the grace period: erasing now would leave an org
			// without an owner. An operator must settle it (the job fails visibly).
			return u, jobs.Permanent(fmt.Errorf("user is now the only owner of %d shared orgs", len(sole)))
		}
	}
	more, err := q.UserIdentityEmails(ctx, row.ID)
	if err != nil {
		return u, fmt.Errorf("identity emails: %w", err)
	}
	for _, e := range more {
		if e.Valid && !slices.Contains(u.emails, strings.ToLower(e.String)) {
			u.emails = append(u.emails, strings.ToLower(e.String))
		}
	}
	addrs, err := q.UserSessionAddresses(ctx, row.ID)
	if err != nil {
		return u, fmt.Errorf("session addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Ip != "" && !slices.Contains(u.ips, a.Ip) {
			u.ips = append(u.ips, a.Ip)
		}
		if a.UserAgent != "" && !slices.Contains(u.agents, a.UserAgent) {
			u.agents = append(u.agents, a.UserAgent)
		}
	}
	if u.orgs, err = q.OrgsGoingWithUser(ctx, row.ID); err != nil {
		return u, fmt.Errorf("orgs going with the user: %w", err)
	}
	return u, nil
}

// eraseOrgRows deletes what org holds and pseudonymises what is kept; subject's usage
// rows there keep their figures under subjectPseudonym (others' lose their user). It
// returns the ids of the rows whose buffers live in Redis.
func (s *Service) eraseOrgRows(ctx context.Context, q *db.Queries, org, jobID uuid.UUID, now time.Time, name string,
	subject, subjectPseudonym uuid.NullUUID,
) ([]string, error) {
	streams, err := q.OrgStreamIDs(ctx, org)
	if err != nil {
		return nil, fmt.Errorf("org stream ids: %w", err)
	}
	ids := appendIDs(nil, streams)
	jobIDs, err := q.EraseOrgJobs(ctx, db.EraseOrgJobsParams{OrgID: uuid.NullUUID{UUID: org, Valid: true}, KeepID: jobID})
	if err != nil {
		return nil, fmt.Errorf("erase org jobs: %w", err)
	}
	ids = appendIDs(ids, jobIDs)
	if err := q.EraseOrgRows(ctx, org); err != nil {
		return nil, fmt.Errorf("erase org rows: %w", err)
	}
	if err := q.PseudonymiseOrgLedger(ctx, db.PseudonymiseOrgLedgerParams{Pseudonym: name, Now: &now, OrgID: org,
		Subject: subject, SubjectPseudonym: subjectPseudonym}); err != nil {
		return nil, fmt.Errorf("pseudonymise org ledger: %w", err)
	}
	return ids, nil
}

// eraseOrg erases the org whose erase job is jobID. Its members stay; its rows go, but for
// the ledger, kept under the org's pseudonym.
func (s *Service) eraseOrg(ctx context.Context, jobID, pseudonym uuid.UUID) (Result, error) {
	res := Result{Subject: SubjectOrg}
	read := func(q *db.Queries) (db.Org, error) {
		org, err := q.OrgErasedBy(ctx, uuid.NullUUID{UUID: jobID, Valid: true})
		if err != nil {
			return org, notFound("org", err)
		}
		if org.EraseAt == nil || s.d.Now().Before(*org.EraseAt) {
			return org, fmt.Errorf("%w: org's erasure is due at %v", errNotDue, org.EraseAt)
		}
		return org, nil
	}
	org, err := read(s.d.Store.Queries)
	if errs.CodeOf(err) == errs.NotFound {
		return res, nil
	}
	if err != nil {
		return res, err
	}
	if err := s.cancelSubscriptions(ctx, []uuid.UUID{org.ID}); err != nil {
		return res, err
	}
	keys := []string{org.ID.String()}
	if res.RedisKeys, err = s.purgeRedis(ctx, keys, nil); err != nil {
		return res, err
	}
	var gone []string
	err = s.d.Store.InTx(ctx, func(q *db.Queries) error {
		if org, err = read(q); err != nil {
			return err
		}
		if err := q.AllowErasure(ctx); err != nil {
			return fmt.Errorf("allow erasure: %w", err)
		}
		now := s.d.Now().UTC()
		if gone, err = s.eraseOrgRows(ctx, q, org.ID, jobID, now, pseudonymText(pseudonym, uuid.Nil), uuid.NullUUID{}, uuid.NullUUID{}); err != nil {
			return err
		}
		res.OrgsErased = 1
		return audit.Write(ctx, q, audit.Actor{Type: audit.ActorSystem}, audit.Event{OrgID: &org.ID, Action: "privacy.org_erased",
			TargetType: "org", TargetID: org.ID.String()})
	})
	if errs.CodeOf(err) == errs.NotFound {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("erase org: %w", err)
	}
	res.Erased = true
	res.RedisKeys += s.purgeAfter(ctx, append(keys, gone...), nil)
	return res, nil
}

func appendIDs(out []string, ids []uuid.UUID) []string {
	for _, id := range ids {
		out = append(out, id.String())
	}
	return out
}

// pseudonymiseAudit rewrites the personal fields of the audit events about u: the user's
// id becomes the pseudonym, their addresses and agents go from the events they made (or
// that were made in the orgs erased with them, or against their account), and every
// mention of their id, addresses, name, IPs and agents in event data becomes the text
// pseudonym. It returns how many events changed.
func pseudonymiseAudit(ctx context.Context, q *db.Queries, u subjectUser, pseudonym uuid.UUID) (int, error) {
	events, err := q.AuditEventsNaming(ctx, db.AuditEventsNamingParams{Subject: uuid.NullUUID{UUID: u.row.ID, Valid: true},
		SubjectText: u.row.ID.String(), OrgIds: u.orgs, Email: u.row.Email})
	if err != nil {
		return 0, fmt.Errorf("audit events of the user: %w", err)
	}
	text := pseudonymText(pseudonym, uuid.Nil)
	replace := append(u.tokens(), u.ips...)
	replace = append(replace, u.agents...)
	if len([]rune(u.row.Name)) >= 3 { // shorter names would match inside unrelated words
		replace = append(replace, u.row.Name)
	}
	changed := 0
	for _, e := range events {
		p := db.PseudonymiseAuditEventParams{ID: e.ID, ActorID: e.ActorID, TargetID: e.TargetID, Ip: e.Ip, UserAgent: e.UserAgent, Data: e.Data}
		theirs := e.OrgID.Valid && slices.Contains(u.orgs, e.OrgID.UUID)
		if e.ActorID.Valid && e.ActorID.UUID == u.row.ID {
			p.ActorID.UUID, theirs = pseudonym, true
		}
		if slices.ContainsFunc(u.tokens(), func(t string) bool { return strings.EqualFold(t, e.TargetID) }) {
			p.TargetID, theirs = text, true
		}
		if theirs || slices.Contains(u.ips, e.Ip) || slices.Contains(u.agents, e.UserAgent) {
			p.Ip, p.UserAgent = "", ""
		}
		var data any
		if err := json.Unmarshal(e.Data, &data); err != nil {
			return changed, fmt.Errorf("decode audit data of %s: %w", e.ID, err)
		}
		if p.Data, err = json.Marshal(scrub(data, replace, text)); err != nil {
			return changed, fmt.Errorf("encode audit data: %w", err)
		}
		if p.ActorID == e.ActorID && p.TargetID == e.TargetID && p.Ip == e.Ip && p.UserAgent == e.UserAgent && string(p.Data) == string(e.Data) {
			continue
		}
		if err := q.PseudonymiseAuditEvent(ctx, p); err != nil {
			return changed, fmt.Errorf("pseudonymise audit event: %w", err)
		}
		changed++
	}
	return changed, nil
}

// scrub replaces, in every string of a decoded JSON value, each occurrence of one of
// tokens (case-insensitively) by with.
func scrub(v any, tokens []string, with string) any {
	switch t := v.(type) {
	case string:
		return replaceFold(t, tokens, with)
	case []any:
		for i := range t {
			t[i] = scrub(t[i], tokens, with)
		}
	case map[string]any:
		for k, x := range t {
			t[k] = scrub(x, tokens, with)
		}
	}
	return v
}

// replaceFold replaces every occurrence in s of one of tokens, compared case-insensitively,
// by with, in one pass from the left (the longest token first where several match), so
// that with itself is never searched again.
func replaceFold(s string, tokens []string, with string) string {
	lower := strings.ToLower(s)
	fold := len(lower) == len(s)
	if !fold { // folding moved byte offsets: match as written
		lower = s
	}
	var lowered []string
	for _, t := range tokens {
		if t == "" {
			continue
		}
		if fold {
			t = strings.ToLower(t)
		}
		lowered = append(lowered, t)
	}
	slices.SortFunc(lowered, func(a, b string) int { return len(b) - len(a) })
	var b strings.Builder
	last := 0
	for i := 0; i < len(lower); {
		n := 0
		for _, t := range lowered {
			if strings.HasPrefix(lower[i:], t) {
				n = len(t)
				break
			}
		}
		if n == 0 {
			i++
			continue
		}
		b.WriteString(s[last:i])
		b.WriteString(with)
		i += n
		last = i
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}
