package token

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// revokeBatch bounds the session ids in one pub/sub message.
const revokeBatch = 1000

// revocations is the set of sessions revoked recently enough that a token of theirs may
// still be unexpired. Reads are lock-free; writes copy the map, which stays small since
// entries leave it one token lifetime (plus margin) after the revocation.
type revocations struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[uuid.UUID]time.Time]
	// keep is how long an entry matters: a token issued before the revocation has expired
	// by then.
	keep time.Duration
}

func (r *revocations) init(keep time.Duration) {
	r.keep = keep
	r.m.Store(&map[uuid.UUID]time.Time{})
}

// has reports whether session id was revoked within keep of now.
func (r *revocations) has(id uuid.UUID, now time.Time) bool {
	at, ok := (*r.m.Load())[id]
	return ok && now.Before(at.Add(r.keep))
}

// add records revocations, dropping the entries that no longer matter at now.
func (r *revocations) add(revoked map[uuid.UUID]time.Time, now time.Time) {
	if len(revoked) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.m.Load()
	next := make(map[uuid.UUID]time.Time, len(old)+len(revoked))
	for id, at := range old {
		if now.Before(at.Add(r.keep)) {
			next[id] = at
		}
	}
	for id, at := range revoked {
		if prev, ok := next[id]; !ok || at.After(prev) {
			next[id] = at
		}
	}
	r.m.Store(&next)
}

// sweep drops the entries that no longer matter at now.
func (r *revocations) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.m.Load()
	next := make(map[uuid.UUID]time.Time, len(old))
	for id, at := range old {
		if now.Before(at.Add(r.keep)) {
			next[id] = at
		}
	}
	if len(next) < len(old) {
		r.m.Store(&next)
	}
}

// RevokeSessions makes every replica refuse the access tokens of the given sessions, this
// one at once and the others within about a second. It sets sessions.revoked_at where it is
// not set yet, so that replicas starting later learn it too, then publishes the ids. Call it
// after the transaction that revokes the sessions commits: it updates the same rows. Ids of
// sessions not in the database are refused all the same, but only by replicas running now.
// It returns an error when the database update fails; the revocation still takes effect in
// memory and is published.
func (s *Service) RevokeSessions(ctx context.Context, ids ...uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	now := s.now()
	revoked := make(map[uuid.UUID]time.Time, len(ids))
	for _, id := range ids {
		revoked[id] = now
	}
	s.revoked.add(revoked, now)
	_, dbErr := s.st.MarkSessionsRevoked(ctx, db.MarkSessionsRevokedParams{Now: now, Ids: ids})
	for start := 0; start < len(ids); start += revokeBatch {
		batch := ids[start:min(start+revokeBatch, len(ids))]
		parts := make([]string, len(batch))
		for i, id := range batch {
			parts[i] = id.String()
		}
		s.publish(ctx, s.revokedChannel, strings.Join(parts, ","))
	}
	if dbErr != nil {
		return fmt.Errorf("revoke sessions: %w", store.Translate(dbErr))
	}
	return nil
}

// loadRevocations adds the sessions revoked within the last token lifetime (plus margin),
// as the database records them; it is how a replica learns what it missed.
func (s *Service) loadRevocations(ctx context.Context) error {
	now := s.now()
	rows, err := s.st.ListSessionsRevokedSince(ctx, now.Add(-s.revoked.keep))
	if err != nil {
		return fmt.Errorf("load session revocations: %w", store.Translate(err))
	}
	s.revoked.add(toRevocations(rows), now)
	return nil
}

// toRevocations converts rows of revoked sessions to session id → revocation time.
func toRevocations(rows []db.ListSessionsRevokedSinceRow) map[uuid.UUID]time.Time {
	out := make(map[uuid.UUID]time.Time, len(rows))
	for _, r := range rows {
		if r.RevokedAt != nil {
			out[r.ID] = *r.RevokedAt
		}
	}
	return out
}

// applyRevocationMessage records the session ids another replica published, as revoked now.
func (s *Service) applyRevocationMessage(ctx context.Context, payload string) {
	now := s.now()
	revoked := map[uuid.UUID]time.Time{}
	for part := range strings.SplitSeq(payload, ",") {
		id, err := uuid.Parse(part)
		if err != nil {
			s.log.WarnContext(ctx, "ignoring malformed session id in a revocation message", "err", err)
			continue
		}
		revoked[id] = now
	}
	s.revoked.add(revoked, now)
}
