// Package token issues and verifies the access tokens of user sessions: short-lived JWTs in
// the RFC 9068 profile (header typ "at+jwt"), signed with Ed25519 (alg "EdDSA").
//
// Signing keys live in the signing_keys table, their private halves sealed with the master
// keyring (AES-GCM, additional data = the key id). One key signs at a time; [Service.Rotate]
// makes a new one the signer and supersedes the old, which keeps verifying for the access
// token lifetime plus a margin and is then retired: it no longer verifies and leaves the
// JWKS. Key ids are RFC 7638 thumbprints.
//
// [Service.Verify] does no I/O. It reads an in-memory key set and an in-memory set of
// sessions revoked within the last access token lifetime, both swapped atomically. Every
// replica keeps them current in [Service.Run]: rotations publish on the Redis channel
// kiln:<env>:tokens:v1:keys and revocations on kiln:<env>:tokens:v1:revoked, and both are
// reloaded from the database on every (re)subscription and every minute.
//
// An Ed25519 signature check costs tens of microseconds, so a token that verified is
// remembered, by its exact bytes, until it expires; later calls with the same token skip
// parsing and the signature but still check expiry, key retirement and session revocation.
package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/store"
)

const (
	// algorithm is the only JWS algorithm issued and accepted.
	algorithm = "EdDSA"
	// leeway absorbs clock skew between replicas and clients on exp, nbf and iat.
	leeway = 30 * time.Second
	// retireMargin is how much longer than the access token lifetime a superseded key keeps
	// verifying: the leeway, plus a replica that missed the rotation signing with the old key
	// until its next periodic reload, plus clock drift.
	retireMargin = 2 * time.Minute
	// reloadInterval is the safety net for missed pub/sub messages.
	reloadInterval = time.Minute
	// maxTokenLen bounds the bytes parsed before the signature is checked; issued tokens
	// are about 400 bytes.
	maxTokenLen = 4096
	// verifiedCacheSize bounds the remembered verified tokens (a few hundred bytes each).
	verifiedCacheSize = 1 << 15
)

// Config sets the claims and lifetime of issued tokens.
type Config struct {
	// Issuer is the iss claim issued and required.
	Issuer string
	// Audience is the aud claim issued and required.
	Audience string
	// AccessTTL is the lifetime of an access token.
	AccessTTL time.Duration
}

// Claims is what a verified access token says.
type Claims struct {
	// UserID is the sub claim.
	UserID uuid.UUID
	// SessionID is the sid claim: the session the token was issued for.
	SessionID uuid.UUID
	// IssuedAt is the iat claim.
	IssuedAt time.Time
	// ExpiresAt is the exp claim.
	ExpiresAt time.Time
	// ID is the jti claim, a UUIDv7.
	ID string
}

// Service issues and verifies access tokens, manages their signing keys and session
// revocations, and tells every replica about changes. It is safe for concurrent use.
type Service struct {
	st             *store.Store
	keyring        *secrets.Keyring
	rdb            redis.UniversalClient
	keysChannel    string
	revokedChannel string
	cfg            Config
	// retireAfter is how long after being superseded a key stops verifying.
	retireAfter time.Duration
	log         *slog.Logger
	now         func() time.Time
	parser      *jwt.Parser

	keys   atomic.Pointer[keySet]
	loadMu sync.Mutex // serialises key loads so that a slower, older load never wins
	// missingKey asks Run for an early key reload when a token names an unknown key, in case
	// a rotation message was missed.
	missingKey chan struct{}

	revoked  revocations
	verified *verifiedCache // nil: every call checks the signature
}

// New returns a Service over st that seals private keys with keyring and publishes and
// listens for changes on rdb in key space ks; now is the clock, time.Now in production. It
// panics when cfg has an empty issuer or audience or a non-positive AccessTTL. Call
// [Service.EnsureKey] before issuing and run [Service.Run] to follow other replicas.
func New(st *store.Store, keyring *secrets.Keyring, rdb redis.UniversalClient, ks redisclient.Keyspace, cfg Config, log *slog.Logger, now func() time.Time) *Service {
	if cfg.Issuer == "" || cfg.Audience == "" || cfg.AccessTTL <= 0 {
		panic(fmt.Sprintf("token.New: need an issuer, an audience and a positive AccessTTL, got %+v", cfg))
	}
	s := &Service{
		st:             st,
		keyring:        keyring,
		rdb:            rdb,
		keysChannel:    ks.Key("tokens", 1, "keys"),
		revokedChannel: ks.Key("tokens", 1, "revoked"),
		cfg:            cfg,
		retireAfter:    cfg.AccessTTL + retireMargin,
		log:            log,
		now:            now,
		missingKey:     make(chan struct{}, 1),
		verified:       newVerifiedCache(verifiedCacheSize),
	}
	s.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{algorithm}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(now),
	)
	s.revoked.init(cfg.AccessTTL + retireMargin)
	return s
}

// issuedClaims is the JWT payload written by Issue.
type issuedClaims struct {
	jwt.RegisteredClaims
	// Audience shadows the embedded one so that aud is written as a string, as in RFC
	// 9068's examples, rather than golang-jwt's one-element array; both verify.
	Audience  string `json:"aud"`
	SessionID string `json:"sid"`
}

// parsedClaims is the JWT payload read by Verify; aud may be a string or an array.
type parsedClaims struct {
	jwt.RegisteredClaims
	SessionID string `json:"sid"`
}

// Issue signs an access token for a user's session with the current key and returns it with
// its expiry. It returns invalid_request for a nil user or session id, unauthenticated when
// the session is known to be revoked, and not_ready when no signing key exists (see
// [Service.EnsureKey]).
func (s *Service) Issue(ctx context.Context, userID, sessionID uuid.UUID) (token string, expiresAt time.Time, err error) {
	if userID == uuid.Nil || sessionID == uuid.Nil {
		return "", time.Time{}, errs.E(errs.Invalid, "issue access token: user and session ids must not be nil")
	}
	set := s.keys.Load()
	if set == nil || set.signer == nil {
		if err := s.loadKeys(ctx); err != nil {
			return "", time.Time{}, fmt.Errorf("issue access token: %w", err)
		}
		set = s.keys.Load()
	}
	if set.signer == nil {
		return "", time.Time{}, errs.E(errs.NotReady, "issue access token: no signing key; run EnsureKey")
	}
	now := s.now()
	if s.revoked.has(sessionID, now) {
		return "", time.Time{}, errs.E(errs.Unauthenticated, "session %s is revoked", sessionID)
	}
	jti, err := uuid.NewV7()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue access token: %w", err)
	}
	iat := jwt.NewNumericDate(now) // whole seconds, so expiresAt equals the exp claim
	exp := jwt.NewNumericDate(iat.Add(s.cfg.AccessTTL))
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, issuedClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.cfg.Issuer,
			Subject:   userID.String(),
			ExpiresAt: exp,
			NotBefore: iat,
			IssuedAt:  iat,
			ID:        jti.String(),
		},
		Audience:  s.cfg.Audience,
		SessionID: sessionID.String(),
	})
	t.Header["kid"] = set.signer.kid
	t.Header["typ"] = "at+jwt"
	signed, err := t.SignedString(set.signer.private)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue access token: %w", err)
	}
	return signed, exp.Time, nil
}

// Verify checks an access token and returns its claims. Every failure returns the same
// unauthenticated error, whatever the reason, which is logged at debug level: a malformed
// token; an algorithm other than EdDSA; a key id unknown or retired; a typ other than
// at+jwt; a crit header; a wrong iss or aud; exp missing or past, nbf or iat in the future
// (each with 30 s of leeway); sub, sid or jti malformed; a revoked session.
func (s *Service) Verify(ctx context.Context, token string) (Claims, error) {
	c, err := s.verify(token, s.now())
	if err != nil {
		s.log.DebugContext(ctx, "access token refused", "reason", err.Error())
		return Claims{}, &errs.Error{Code: errs.Unauthenticated, Message: "invalid credentials"}
	}
	return c, nil
}

// verified is what one successful signature check established about a token.
type verified struct {
	claims    Claims
	kid       string
	notBefore time.Time // zero when the token has no nbf
}

func (s *Service) verify(raw string, now time.Time) (Claims, error) {
	set := s.keys.Load()
	if set == nil {
		s.askForKeys()
		return Claims{}, errors.New("no verification keys loaded yet")
	}
	if s.verified != nil {
		if v, ok := s.verified.get(raw); ok {
			return v.claims, s.check(set, v, now)
		}
	}
	if len(raw) > maxTokenLen {
		return Claims{}, fmt.Errorf("token of %d bytes is longer than %d", len(raw), maxTokenLen)
	}
	var pc parsedClaims
	var kid string
	_, err := s.parser.ParseWithClaims(raw, &pc, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodEdDSA { // WithValidMethods checked already; belt and braces
			return nil, fmt.Errorf("algorithm %s is not %s", t.Method.Alg(), algorithm)
		}
		if typ, _ := t.Header["typ"].(string); !isAccessTokenType(typ) {
			return nil, fmt.Errorf("typ %.32q is not at+jwt", typ)
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("crit header present; no extensions are understood")
		}
		kid, _ = t.Header["kid"].(string)
		k, ok := set.verifiers[kid]
		if !ok {
			s.askForKeys()
			return nil, fmt.Errorf("unknown key id %.64q", kid)
		}
		if !k.live(now) {
			return nil, fmt.Errorf("key %s retired", kid)
		}
		return k.public, nil
	})
	if err != nil {
		return Claims{}, err
	}
	v, err := toVerified(pc, kid)
	if err != nil {
		return Claims{}, err
	}
	if err := s.check(set, v, now); err != nil {
		return Claims{}, err
	}
	if s.verified != nil {
		s.verified.put(raw, v, now)
	}
	return v.claims, nil
}

// check is what must hold at now for a token whose signature and claims verified: its key
// is still live, it is within its validity window and its session is not revoked.
func (s *Service) check(set *keySet, v verified, now time.Time) error {
	if k, ok := set.verifiers[v.kid]; !ok || !k.live(now) {
		return fmt.Errorf("key %s unknown or retired", v.kid)
	}
	switch {
	case !now.Before(v.claims.ExpiresAt.Add(leeway)):
		return errors.New("token expired")
	case now.Before(v.claims.IssuedAt.Add(-leeway)):
		return errors.New("token issued in the future")
	case !v.notBefore.IsZero() && now.Before(v.notBefore.Add(-leeway)):
		return errors.New("token not valid yet")
	}
	if s.revoked.has(v.claims.SessionID, now) {
		return fmt.Errorf("session %s revoked", v.claims.SessionID)
	}
	return nil
}

// toVerified converts parsed claims whose signature, iss, aud and times verified into what
// Verify returns, requiring iat, a UUID sub and sid and a jti.
func toVerified(pc parsedClaims, kid string) (verified, error) {
	userID, err := parseUUID(pc.Subject)
	if err != nil {
		return verified{}, fmt.Errorf("sub: %w", err)
	}
	sessionID, err := parseUUID(pc.SessionID)
	if err != nil {
		return verified{}, fmt.Errorf("sid: %w", err)
	}
	if pc.ID == "" || len(pc.ID) > 64 {
		return verified{}, errors.New("jti missing or too long")
	}
	if pc.IssuedAt == nil {
		return verified{}, errors.New("iat missing")
	}
	v := verified{
		claims: Claims{
			UserID:    userID,
			SessionID: sessionID,
			IssuedAt:  pc.IssuedAt.Time,
			ExpiresAt: pc.ExpiresAt.Time, // required by the parser
			ID:        pc.ID,
		},
		kid: kid,
	}
	if pc.NotBefore != nil {
		v.notBefore = pc.NotBefore.Time
	}
	return v, nil
}

// parseUUID accepts only the canonical 36-character form, never the nil UUID.
func parseUUID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, errors.New("not a canonical UUID")
	}
	id, err := uuid.Parse(s)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, errors.New("not a canonical, non-nil UUID")
	}
	return id, nil
}

// isAccessTokenType accepts the typ values RFC 9068 §4 allows, case-insensitively as media
// types are.
func isAccessTokenType(typ string) bool {
	return strings.EqualFold(typ, "at+jwt") || strings.EqualFold(typ, "application/at+jwt")
}

// askForKeys wakes Run for an early key reload without blocking; Run rate-limits reloads.
func (s *Service) askForKeys() {
	select {
	case s.missingKey <- struct{}{}:
	default:
	}
}
