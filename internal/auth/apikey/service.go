package apikey

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

const (
	// DefaultCacheTTL is Config.CacheTTL when zero.
	DefaultCacheTTL = time.Minute
	// DefaultLastUsedFlushInterval is Config.LastUsedFlushInterval when zero.
	DefaultLastUsedFlushInterval = 10 * time.Second
	// MaxListLimit is the largest page List returns: a guard on the query, not the API's
	// page size, which the HTTP layer sets (and may ask one more row than to find a next page).
	MaxListLimit = 1000

	maxNameLen = 100
	// publishTimeout bounds an invalidation publish, which outlives the request that wrote.
	publishTimeout = 2 * time.Second
)

// Config tunes a Service.
type Config struct {
	// Env is the env segment of the keys this deployment issues and accepts, e.g. "live";
	// it must match ^[a-z0-9]{1,8}$.
	Env string
	// CacheTTL bounds how long a looked-up key is trusted without a fresh read; it only
	// matters when an invalidation is lost (Redis down). Zero means DefaultCacheTTL.
	CacheTTL time.Duration
	// LastUsedFlushInterval is how often Run writes last_used_at. Zero means
	// DefaultLastUsedFlushInterval.
	LastUsedFlushInterval time.Duration
}

// Service manages an organisation's API keys and authenticates requests that carry one.
// It is safe for concurrent use; run one per process, with [Service.Run] running.
type Service struct {
	st      *store.Store
	rdb     redis.UniversalClient
	channel string
	cfg     Config
	log     *slog.Logger
	now     func() time.Time

	// mu guards the cache: hits holds every key read from the database (active or not),
	// misses the hashes that matched no row, until the time stored.
	mu     sync.RWMutex
	hits   map[[32]byte]*entry
	misses map[[32]byte]time.Time
	// gen counts evictions; a lookup that started at an older generation is not cached,
	// since an eviction may have overtaken it.
	gen uint64

	// usedMu guards used, the keys authenticated since the last flush.
	usedMu sync.Mutex
	used   map[uuid.UUID]*entry
}

// New returns a Service over st that publishes and listens for invalidations on rdb in key
// space ks; now is the clock, time.Now in production. It panics when cfg.Env is not a valid
// key env or a duration is negative: both are configuration errors caught at start.
func New(st *store.Store, rdb redis.UniversalClient, ks redisclient.Keyspace, cfg Config, log *slog.Logger, now func() time.Time) *Service {
	if !validEnv(cfg.Env) {
		panic(fmt.Sprintf("apikey.New: env must match ^[a-z0-9]{1,8}$, got %q", cfg.Env))
	}
	if cfg.CacheTTL < 0 || cfg.LastUsedFlushInterval < 0 {
		panic(fmt.Sprintf("apikey.New: negative duration in %+v", cfg))
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.LastUsedFlushInterval == 0 {
		cfg.LastUsedFlushInterval = DefaultLastUsedFlushInterval
	}
	return &Service{
		st:      st,
		rdb:     rdb,
		channel: ks.Key("apikeys", 1, "invalidate"),
		cfg:     cfg,
		log:     log,
		now:     now,
		hits:    make(map[[32]byte]*entry),
		misses:  make(map[[32]byte]time.Time),
		used:    make(map[uuid.UUID]*entry),
	}
}

// Create issues a key for orgID and returns it with its secret, which is not stored and
// cannot be shown again. The key is created by by's user, if by is a user (the key has no
// creator when made by another key or the system), and its creation audited
// (api_key.create) by by; a nil expiresAt never expires, a nil tokenBudget sets no token
// budget of the key's own. It returns invalid_request, naming each bad field, when name is
// blank, longer than 100 characters or holds control characters, when scopes fails
// [ValidateScopes], when expiresAt is not in the future, or when tokenBudget is below 1.
func (s *Service) Create(ctx context.Context, orgID uuid.UUID, by audit.Actor, name string, scopes []string, expiresAt *time.Time, tokenBudget *int64) (Key, string, error) {
	now := s.now()
	fields := nameFields(name)
	fields = append(fields, scopeFields(scopes)...)
	if expiresAt != nil && !expiresAt.After(now) {
		fields = append(fields, errs.FieldError{Pointer: "/expires_at", Message: "must be in the future"})
	}
	if tokenBudget != nil && *tokenBudget < 1 {
		fields = append(fields, errs.FieldError{Pointer: "/token_budget", Message: "must be at least 1"})
	}
	if err := errs.InvalidFields("invalid api key", fields); err != nil {
		return Key{}, "", err
	}
	params, secret, err := s.newKey(orgID, by.UserID(), name, scopes, expiresAt, tokenBudget, now)
	if err != nil {
		return Key{}, "", err
	}
	var row db.ApiKey
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		if row, err = q.CreateAPIKey(ctx, params); err != nil {
			return fmt.Errorf("create api key: %w", store.Translate(err))
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "api_key.create", TargetType: "api_key",
			TargetID: row.ID.String(), Data: map[string]any{"name": row.Name, "scopes": row.Scopes, "token_budget": tokenBudget}})
	})
	if err != nil {
		return Key{}, "", err
	}
	s.changed(ctx, row.SecretHash)
	return toKey(row), secret, nil
}

// newKey draws an id and a secret and returns the row to insert.
func (s *Service) newKey(orgID uuid.UUID, createdBy *uuid.UUID, name string, scopes []string, expiresAt *time.Time, tokenBudget *int64, now time.Time) (db.CreateAPIKeyParams, string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return db.CreateAPIKeyParams{}, "", fmt.Errorf("new api key id: %w", err)
	}
	secret, err := Generate(s.cfg.Env)
	if err != nil {
		return db.CreateAPIKeyParams{}, "", err
	}
	var budget pgtype.Int8
	if tokenBudget != nil {
		budget = pgtype.Int8{Int64: *tokenBudget, Valid: true}
	}
	return db.CreateAPIKeyParams{
		ID:          id,
		OrgID:       orgID,
		Name:        name,
		Display:     Display(secret),
		SecretHash:  Hash(secret),
		Scopes:      slices.Clone(scopes),
		CreatedBy:   store.NullUUID(createdBy),
		CreatedAt:   now,
		ExpiresAt:   expiresAt,
		TokenBudget: budget,
	}, secret, nil
}

func nameFields(name string) []errs.FieldError {
	msg := ""
	switch n := utf8.RuneCountInString(name); {
	case strings.TrimSpace(name) == "":
		msg = "must not be blank"
	case n > maxNameLen:
		msg = fmt.Sprintf("must be at most %d characters, got %d", maxNameLen, n)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl):
		msg = "must be valid UTF-8 without control characters"
	default:
		return nil
	}
	return []errs.FieldError{{Pointer: "/name", Message: msg}}
}

// List returns up to limit (1 to MaxListLimit) of orgID's keys, newest first, starting
// after the key with id after when it is set: pass the last id of a page to get the next.
// It returns invalid_request for a limit out of range.
func (s *Service) List(ctx context.Context, orgID uuid.UUID, limit int, after *uuid.UUID) ([]Key, error) {
	if limit < 1 || limit > MaxListLimit {
		return nil, errs.InvalidFields("invalid page", []errs.FieldError{{Pointer: "/limit", Message: fmt.Sprintf("must be between 1 and %d, got %d", MaxListLimit, limit)}})
	}
	rows, err := s.st.ListAPIKeys(ctx, db.ListAPIKeysParams{OrgID: orgID, After: store.NullUUID(after), MaxRows: int32(limit)}) //nolint:gosec // checked to 1..MaxListLimit
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", store.Translate(err))
	}
	return toKeys(rows), nil
}

// Get returns orgID's key id; not_found when there is none in that org.
func (s *Service) Get(ctx context.Context, orgID, id uuid.UUID) (Key, error) {
	row, err := s.st.GetAPIKey(ctx, db.GetAPIKeyParams{OrgID: orgID, ID: id})
	if err != nil {
		return Key{}, notFound("get", id, err)
	}
	return toKey(row), nil
}

// Revoke stops orgID's key id from authenticating, on every replica. Revoking a revoked
// key changes nothing (the first revocation time stays) and succeeds. It returns not_found
// when there is no such key in that org. The revocation is audited (api_key.revoke) by by.
func (s *Service) Revoke(ctx context.Context, orgID, id uuid.UUID, by audit.Actor) error {
	var row db.ApiKey
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		if row, err = q.RevokeAPIKey(ctx, db.RevokeAPIKeyParams{OrgID: orgID, ID: id, RevokedAt: s.now()}); err != nil {
			return notFound("revoke", id, err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "api_key.revoke", TargetType: "api_key", TargetID: id.String()})
	})
	if err != nil {
		return err
	}
	s.changed(ctx, row.SecretHash)
	return nil
}

// Rotate replaces orgID's key id with a new key of the same name, scopes and expiry,
// created by by's user (if by is a user), and returns the new key with its secret. The old key keeps working for
// grace (never past its own expiry) so that clients can switch over; a zero grace revokes it
// at once. Both changes and their audit event (api_key.rotate, by by) are one
// transaction. It returns invalid_request for a negative
// grace, not_found when there is no such key in that org, and conflict when the key is
// revoked, expired or already rotated.
func (s *Service) Rotate(ctx context.Context, orgID, id uuid.UUID, grace time.Duration, by audit.Actor) (Key, string, error) {
	if grace < 0 {
		return Key{}, "", errs.InvalidFields("invalid rotation", []errs.FieldError{{Pointer: "/grace_seconds", Message: "must not be negative"}})
	}
	now := s.now()
	var next, old db.ApiKey
	var secret string
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		cur, err := q.GetAPIKeyForUpdate(ctx, db.GetAPIKeyForUpdateParams{OrgID: orgID, ID: id})
		if err != nil {
			return notFound("rotate", id, err)
		}
		if k := toKey(cur); !k.Active(now) || k.RotatedTo != nil {
			return errs.E(errs.Conflict, "api key %s is revoked, expired or already rotated", id)
		}
		params, sec, err := s.newKey(orgID, by.UserID(), cur.Name, cur.Scopes, cur.ExpiresAt, toKey(cur).TokenBudget, now)
		if err != nil {
			return err
		}
		if next, err = q.CreateAPIKey(ctx, params); err != nil {
			return fmt.Errorf("rotate api key %s: create: %w", id, store.Translate(err))
		}
		upd := db.SetAPIKeyRotatedParams{OrgID: orgID, ID: id, RotatedTo: uuid.NullUUID{UUID: next.ID, Valid: true}, ExpiresAt: cur.ExpiresAt}
		if end := now.Add(grace); grace == 0 {
			upd.RevokedAt = &now
		} else if cur.ExpiresAt == nil || end.Before(*cur.ExpiresAt) {
			upd.ExpiresAt = &end
		}
		if old, err = q.SetAPIKeyRotated(ctx, upd); err != nil {
			return fmt.Errorf("rotate api key %s: %w", id, store.Translate(err))
		}
		secret = sec
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "api_key.rotate", TargetType: "api_key",
			TargetID: id.String(), Data: map[string]any{"new_key": next.ID.String(), "grace_seconds": int(grace.Seconds())}})
	})
	if err != nil {
		return Key{}, "", err
	}
	s.changed(ctx, old.SecretHash)
	s.changed(ctx, next.SecretHash)
	return toKey(next), secret, nil
}

// notFound turns a missing row into not_found and wraps anything else with op.
func notFound(op string, id uuid.UUID, err error) error {
	if err = store.Translate(err); errs.CodeOf(err) == errs.NotFound {
		return errs.E(errs.NotFound, "api key %s not found", id)
	}
	return fmt.Errorf("%s api key %s: %w", op, id, err)
}

// changed evicts the key with hash locally and tells the other replicas. A failed publish
// is logged, not returned: the write is committed, and other replicas drop the key within
// the cache TTL. The publish outlives a cancelled request for the same reason.
func (s *Service) changed(ctx context.Context, hash []byte) {
	var h [32]byte
	copy(h[:], hash)
	s.evict(h)
	s.publish(ctx, hex.EncodeToString(hash))
}

// publish sends an invalidation to every replica, this one included.
func (s *Service) publish(ctx context.Context, payload string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := s.rdb.Publish(ctx, s.channel, payload).Err(); err != nil {
		s.log.WarnContext(ctx, "publish api key invalidation; other replicas will catch up within the cache TTL", "err", err, "ttl", s.cfg.CacheTTL)
	}
}
