// Package orgkeys stores orgs' own provider API keys ("bring your own key"), sealed with
// the secrets keyring, and looks them up for the gateway with a short cache.
package orgkeys

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/store"
)

// Key is a stored key, without its secret.
type Key struct {
	Provider  string
	Hint      string // the last four characters
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Service stores and looks up org provider keys.
type Service struct {
	store   *store.Store
	keyring *secrets.Keyring
	now     func() time.Time
	// known reports whether a provider is configured and takes an API key.
	known func(provider string) bool
	ttl   time.Duration

	mu    sync.Mutex
	cache map[cacheKey]cached
}

type cacheKey struct {
	org      uuid.UUID
	provider string
}

type cached struct {
	key     string // empty: the org has none
	expires time.Time
}

// maxCached bounds the lookup cache; past it the cache starts over.
const maxCached = 10_000

// New returns the service. known says which provider names may hold org keys.
func New(st *store.Store, keyring *secrets.Keyring, known func(provider string) bool, now func() time.Time) *Service {
	return &Service{store: st, keyring: keyring, known: known, now: now, ttl: 30 * time.Second, cache: map[cacheKey]cached{}}
}

// aad binds a sealed key to its row, so a sealed value copied to another org or
// provider does not open.
func aad(org uuid.UUID, provider string) []byte {
	return []byte("org_provider_key:" + org.String() + ":" + provider)
}

// Set stores the org's key for provider, replacing any earlier one, created by by's user (if
// by is a user) and audited (provider_key.set, with the key's hint only) by by. An unknown
// provider is not_found.
func (s *Service) Set(ctx context.Context, org uuid.UUID, provider, apiKey string, by audit.Actor) (Key, error) {
	if !s.known(provider) {
		return Key{}, errs.E(errs.NotFound, "No configured provider named %q takes an API key.", provider)
	}
	sealed, err := s.keyring.Seal([]byte(apiKey), aad(org, provider))
	if err != nil {
		return Key{}, fmt.Errorf("seal provider key: %w", err)
	}
	var row db.OrgProviderKey
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err = s.store.InTx(ctx, func(q *db.Queries) error {
		row, err = q.UpsertProviderKey(ctx, db.UpsertProviderKeyParams{
			OrgID: org, Provider: provider, KeySealed: sealed, Hint: "…" + apiKey[len(apiKey)-4:], CreatedBy: store.NullUUID(by.UserID()), Now: s.now().UTC(),
		})
		if err != nil {
			return fmt.Errorf("store provider key: %w", store.Translate(err))
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "provider_key.set", TargetType: "provider_key", TargetID: provider,
			Data: map[string]any{"hint": row.Hint}})
	})
	if err != nil {
		return Key{}, err
	}
	s.forget(org, provider)
	return toKey(row), nil
}

// List returns the org's keys by provider name.
func (s *Service) List(ctx context.Context, org uuid.UUID) ([]Key, error) {
	rows, err := s.store.ListProviderKeys(ctx, org)
	if err != nil {
		return nil, fmt.Errorf("list provider keys: %w", err)
	}
	out := make([]Key, len(rows))
	for i, r := range rows {
		out[i] = toKey(r)
	}
	return out, nil
}

// Delete removes the org's key for provider, audited (provider_key.delete) by by;
// not_found when there is none.
func (s *Service) Delete(ctx context.Context, org uuid.UUID, provider string, by audit.Actor) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.store.InTx(ctx, func(q *db.Queries) error {
		n, err := q.DeleteProviderKey(ctx, db.DeleteProviderKeyParams{OrgID: org, Provider: provider})
		if err != nil {
			return fmt.Errorf("delete provider key: %w", err)
		}
		if n == 0 {
			return errs.E(errs.NotFound, "The org has no key for %q.", provider)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "provider_key.delete", TargetType: "provider_key", TargetID: provider})
	})
	s.forget(org, provider)
	return err
}

// Lookup returns the org's key for provider, if it has one; answers are cached 30 s per
// replica.
func (s *Service) Lookup(ctx context.Context, org uuid.UUID, provider string) (string, bool, error) {
	ck := cacheKey{org, provider}
	now := s.now()
	s.mu.Lock()
	c, ok := s.cache[ck]
	s.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.key, c.key != "", nil
	}
	key := ""
	row, err := s.store.GetProviderKey(ctx, db.GetProviderKeyParams{OrgID: org, Provider: provider})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return "", false, fmt.Errorf("look up provider key: %w", err)
	default:
		plain, err := s.keyring.Open(row.KeySealed, aad(org, provider))
		if err != nil {
			return "", false, fmt.Errorf("open provider key of org %s for %s: %w", org, provider, err)
		}
		key = string(plain)
	}
	s.mu.Lock()
	if len(s.cache) >= maxCached {
		s.cache = map[cacheKey]cached{}
	}
	s.cache[ck] = cached{key: key, expires: now.Add(s.ttl)}
	s.mu.Unlock()
	return key, key != "", nil
}

func (s *Service) forget(org uuid.UUID, provider string) {
	s.mu.Lock()
	delete(s.cache, cacheKey{org, provider})
	s.mu.Unlock()
}

// Reseal seals every key still sealed under an older master key with the current one and
// returns how many it re-sealed.
func (s *Service) Reseal(ctx context.Context) (int, error) {
	rows, err := s.store.ListAllProviderKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("list provider keys: %w", err)
	}
	n := 0
	for _, r := range rows {
		if secrets.KeyID(r.KeySealed) == s.keyring.Current() {
			continue
		}
		plain, err := s.keyring.Open(r.KeySealed, aad(r.OrgID, r.Provider))
		if err != nil {
			return n, fmt.Errorf("open provider key of org %s for %s: %w", r.OrgID, r.Provider, err)
		}
		sealed, err := s.keyring.Seal(plain, aad(r.OrgID, r.Provider))
		if err != nil {
			return n, fmt.Errorf("seal provider key: %w", err)
		}
		if err := s.store.ResealProviderKey(ctx, db.ResealProviderKeyParams{OrgID: r.OrgID, Provider: r.Provider, KeySealed: sealed}); err != nil {
			return n, fmt.Errorf("store provider key: %w", err)
		}
		n++
	}
	return n, nil
}

func toKey(r db.OrgProviderKey) Key {
	return Key{Provider: r.Provider, Hint: r.Hint, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}
