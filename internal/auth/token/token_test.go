package token_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/auth/token"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/logging/logtest"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

const ttl = 15 * time.Minute

var cfg = token.Config{Issuer: "https://kiln.test", Audience: "kiln-api", AccessTTL: ttl}

// bundle is one test's database, Redis key space, master keys and clock; every Service made
// from it plays one replica of the same deployment.
type bundle struct {
	st      *store.Store
	rdb     redis.UniversalClient
	ks      redisclient.Keyspace
	keyring *secrets.Keyring
	clock   *storetest.Clock
}

func setup(t testing.TB) *bundle {
	t.Helper()
	rdb, ks := storetest.Redis(t)
	kr, err := secrets.ParseKeyring(secrets.DevMasterKeys)
	if err != nil {
		t.Fatalf("ParseKeyring: %v", err)
	}
	return &bundle{st: storetest.New(t), rdb: rdb, ks: ks, keyring: kr, clock: storetest.NewClock()}
}

// service returns a new replica whose logs go to the test output.
func (b *bundle) service(t testing.TB) *token.Service {
	t.Helper()
	return b.serviceLogging(slog.New(slog.NewTextHandler(t.Output(), nil)))
}

func (b *bundle) serviceLogging(log *slog.Logger) *token.Service {
	return token.New(b.st, b.keyring, b.rdb, b.ks, cfg, log, b.clock.Now)
}

// ensured returns a new replica with a signing key in the database and its keys loaded.
func (b *bundle) ensured(t testing.TB) *token.Service {
	t.Helper()
	s := b.service(t)
	if err := s.EnsureKey(context.Background()); err != nil {
		t.Fatalf("EnsureKey: %v", err)
	}
	return s
}

// run starts s.Run until the test ends, then checks that it stopped cleanly.
func run(t *testing.T, s *token.Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

// newSession stores an org, a user and a session of theirs and returns the user and session ids.
func newSession(t testing.TB, st *store.Store) (userID, sessionID uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	orgID, userID, sessionID := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"INSERT INTO orgs (id, name, personal) VALUES ($1, 'personal', true)", []any{orgID}},
		{"INSERT INTO users (id, email, personal_org_id) VALUES ($1, $2, $3)", []any{userID, userID.String() + "@example.com", orgID}},
		{"INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, now() + interval '30 days')", []any{sessionID, userID}},
	} {
		if _, err := st.Pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	return userID, sessionID
}

// signingKey reads the key that signs from the database and opens it as the package does.
func (b *bundle) signingKey(t testing.TB) (kid string, private ed25519.PrivateKey) {
	t.Helper()
	var sealed []byte
	err := b.st.Pool.QueryRow(context.Background(),
		"SELECT kid, private_key_enc FROM signing_keys WHERE superseded_at IS NULL AND retired_at IS NULL").Scan(&kid, &sealed)
	if err != nil {
		t.Fatalf("read signing key: %v", err)
	}
	seed, err := b.keyring.Open(sealed, []byte(kid))
	if err != nil {
		t.Fatalf("open signing key %s: %v", kid, err)
	}
	return kid, ed25519.NewKeyFromSeed(seed)
}

// sign makes a token with exactly the given header and claims.
func sign(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header = header
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func header(t testing.TB, tok string) map[string]any {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	return parsed.Header
}

func payload(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("unmarshal payload: %v", err)
	}
	return m
}

func mustIssue(t testing.TB, s *token.Service, userID, sessionID uuid.UUID) string {
	t.Helper()
	tok, _, err := s.Issue(context.Background(), userID, sessionID)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return tok
}

func mustVerify(t testing.TB, s *token.Service, tok string) token.Claims {
	t.Helper()
	c, err := s.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return c
}

// wantRefused checks err is the one answer to every bad token.
func wantRefused(t testing.TB, err error) {
	t.Helper()
	e, ok := errors.AsType[*errs.Error](err)
	if !ok || e.Code != errs.Unauthenticated || e.Message != "invalid credentials" || e.Fields != nil {
		t.Fatalf("Verify error = %v, want unauthenticated: invalid credentials", err)
	}
}

// eventually polls cond every 10 ms for up to a second.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 1 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func jwksKids(t testing.TB, s *token.Service) []string {
	t.Helper()
	doc := jwks(t, s)
	kids := make([]string, len(doc.Keys))
	for i, k := range doc.Keys {
		kids[i] = k["kid"]
	}
	return kids
}

type jwkSet struct {
	Keys []map[string]string `json:"keys"`
}

func jwks(t testing.TB, s *token.Service) jwkSet {
	t.Helper()
	raw, err := s.JWKS(context.Background())
	if err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	var doc jwkSet
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("JWKS is not a key set: %v\n%s", err, raw)
	}
	return doc
}

func TestIssueVerify(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.ensured(t)
	userID, sessionID := newSession(t, b.st)
	now := b.clock.Now()

	tok, expiresAt, err := s.Issue(t.Context(), userID, sessionID)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	kid, _ := b.signingKey(t)
	h := header(t, tok)
	if h["alg"] != "EdDSA" || h["typ"] != "at+jwt" || h["kid"] != kid || len(h) != 3 {
		t.Errorf("header = %v, want alg EdDSA, typ at+jwt, kid %s", h, kid)
	}
	p := payload(t, tok)
	iat := float64(now.Unix())
	for claim, want := range map[string]any{
		"iss": cfg.Issuer, "aud": cfg.Audience, "sub": userID.String(), "sid": sessionID.String(),
		"iat": iat, "nbf": iat, "exp": iat + ttl.Seconds(),
	} {
		if p[claim] != want {
			t.Errorf("claim %s = %v, want %v", claim, p[claim], want)
		}
	}
	jti, err := uuid.Parse(p["jti"].(string))
	if err != nil || jti.Version() != 7 {
		t.Errorf("jti = %v, want a UUIDv7", p["jti"])
	}
	if want := time.Unix(now.Unix(), 0).Add(ttl); !expiresAt.Equal(want) {
		t.Errorf("expiresAt = %s, want %s", expiresAt, want)
	}

	got := mustVerify(t, s, tok)
	want := token.Claims{UserID: userID, SessionID: sessionID, IssuedAt: time.Unix(now.Unix(), 0), ExpiresAt: expiresAt, ID: jti.String()}
	if !got.IssuedAt.Equal(want.IssuedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) ||
		got.UserID != want.UserID || got.SessionID != want.SessionID || got.ID != want.ID {
		t.Errorf("Verify = %+v, want %+v", got, want)
	}
	if again := mustVerify(t, s, tok); again != got {
		t.Errorf("second Verify = %+v, want %+v", again, got)
	}
	if other := mustIssue(t, s, userID, sessionID); other == tok {
		t.Error("two tokens issued in the same second are identical; jti must differ")
	}
}

func TestIssueErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ready := b.ensured(t)
	revoked := uuid.New()
	if err := ready.RevokeSessions(t.Context(), revoked); err != nil {
		t.Fatalf("RevokeSessions: %v", err)
	}
	tests := []struct {
		name      string
		s         *token.Service
		user, ses uuid.UUID
		want      errs.Code
	}{
		{"ErrInvalidNilUser", ready, uuid.Nil, uuid.New(), errs.Invalid},
		{"ErrInvalidNilSession", ready, uuid.New(), uuid.Nil, errs.Invalid},
		{"ErrUnauthenticatedRevokedSession", ready, uuid.New(), revoked, errs.Unauthenticated},
		{"ErrNotReadyWithoutKey", setup(t).service(t), uuid.New(), uuid.New(), errs.NotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, _, err := tt.s.Issue(t.Context(), tt.user, tt.ses)
			if errs.CodeOf(err) != tt.want || tok != "" {
				t.Errorf("Issue = %q, %v; want code %s", tok, err, tt.want)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	logs := &logtest.Buffer{}
	s := b.serviceLogging(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := s.EnsureKey(t.Context()); err != nil {
		t.Fatalf("EnsureKey: %v", err)
	}
	kid, private := b.signingKey(t)
	public := private.Public().(ed25519.PublicKey)
	now := b.clock.Now()
	userID, sessionID := uuid.New(), uuid.New()
	good := mustIssue(t, s, userID, sessionID)

	revokedSession := uuid.New()
	if err := s.RevokeSessions(t.Context(), revokedSession); err != nil {
		t.Fatalf("RevokeSessions: %v", err)
	}
	_, otherPrivate, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	hdr := func(change func(map[string]any)) map[string]any {
		h := map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}
		if change != nil {
			change(h)
		}
		return h
	}
	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{
			"iss": cfg.Issuer, "aud": cfg.Audience, "sub": userID.String(), "sid": sessionID.String(),
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(), "jti": uuid.Must(uuid.NewV7()).String(),
		}
		if change != nil {
			change(c)
		}
		return c
	}
	// edDSA signs with the real key, so that only the changed header or claim is wrong.
	edDSA := func(h func(map[string]any), c func(jwt.MapClaims)) func() string {
		return func() string { return sign(t, jwt.SigningMethodEdDSA, private, hdr(h), claims(c)) }
	}
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	setClaim := func(k string, v any) func(jwt.MapClaims) { return func(m jwt.MapClaims) { m[k] = v } }
	del := func(k string) func(jwt.MapClaims) { return func(m jwt.MapClaims) { delete(m, k) } }
	delHeader := func(k string) func(map[string]any) { return func(m map[string]any) { delete(m, k) } }
	parts := strings.Split(good, ".")

	tests := []struct {
		name  string
		token func() string
		ok    bool
	}{
		{"OK", edDSA(nil, nil), true},
		{"OKIssued", func() string { return good }, true},
		{"OKTypApplicationAtJWT", edDSA(set("typ", "application/AT+JWT"), nil), true},
		{"OKAudienceArray", edDSA(nil, setClaim("aud", []string{"other", cfg.Audience})), true},
		{"OKExpiredWithinLeeway", edDSA(nil, setClaim("exp", now.Add(-29*time.Second).Unix())), true},
		{"OKNotBeforeWithinLeeway", edDSA(nil, setClaim("nbf", now.Add(29*time.Second).Unix())), true},
		{"OKWithoutNotBefore", edDSA(nil, del("nbf")), true},

		{"ErrAlgNone", func() string {
			return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, hdr(set("alg", "none")), claims(nil))
		}, false},
		{"ErrHS256WithPublicKeyAsSecret", func() string {
			return sign(t, jwt.SigningMethodHS256, []byte(public), hdr(set("alg", "HS256")), claims(nil))
		}, false},
		{"ErrHS256WithJWKXAsSecret", func() string {
			x := base64.RawURLEncoding.EncodeToString(public)
			return sign(t, jwt.SigningMethodHS256, []byte(x), hdr(set("alg", "HS256")), claims(nil))
		}, false},
		{"ErrRS256", func() string {
			return sign(t, jwt.SigningMethodRS256, rsaKey, hdr(set("alg", "RS256")), claims(nil))
		}, false},
		{"ErrUnknownKid", func() string {
			return sign(t, jwt.SigningMethodEdDSA, otherPrivate, hdr(set("kid", "not-a-kiln-key")), claims(nil))
		}, false},
		{"ErrRealKidOtherKey", func() string {
			return sign(t, jwt.SigningMethodEdDSA, otherPrivate, hdr(nil), claims(nil))
		}, false},
		{"ErrMissingKid", edDSA(delHeader("kid"), nil), false},
		{"ErrKidNotString", edDSA(set("kid", 1), nil), false},
		{"ErrTypJWT", edDSA(set("typ", "JWT"), nil), false},
		{"ErrMissingTyp", edDSA(delHeader("typ"), nil), false},
		{"ErrCritHeader", edDSA(set("crit", []string{"exp"}), nil), false},
		{"ErrWrongIssuer", edDSA(nil, setClaim("iss", "https://evil.test")), false},
		{"ErrMissingIssuer", edDSA(nil, del("iss")), false},
		{"ErrWrongAudience", edDSA(nil, setClaim("aud", "other-api")), false},
		{"ErrMissingAudience", edDSA(nil, del("aud")), false},
		{"ErrExpired", edDSA(nil, setClaim("exp", now.Add(-31*time.Second).Unix())), false},
		{"ErrMissingExp", edDSA(nil, del("exp")), false},
		{"ErrExpNotNumber", edDSA(nil, setClaim("exp", "tomorrow")), false},
		{"ErrNotYetValid", edDSA(nil, setClaim("nbf", now.Add(31*time.Second).Unix())), false},
		{"ErrIssuedInFuture", edDSA(nil, setClaim("iat", now.Add(31*time.Second).Unix())), false},
		{"ErrMissingIat", edDSA(nil, del("iat")), false},
		{"ErrSubNotUUID", edDSA(nil, setClaim("sub", "admin")), false},
		{"ErrSubNilUUID", edDSA(nil, setClaim("sub", uuid.Nil.String())), false},
		{"ErrSubUUIDNotCanonical", edDSA(nil, setClaim("sub", "urn:uuid:"+userID.String())), false},
		{"ErrMissingSid", edDSA(nil, del("sid")), false},
		{"ErrSidNotUUID", edDSA(nil, setClaim("sid", 42)), false},
		{"ErrMissingJti", edDSA(nil, del("jti")), false},
		{"ErrRevokedSession", edDSA(nil, setClaim("sid", revokedSession.String())), false},
		{"ErrTamperedPayload", func() string {
			p := payload(t, good)
			p["sub"] = uuid.NewString()
			raw, _ := json.Marshal(p)
			return parts[0] + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + parts[2]
		}, false},
		{"ErrTamperedSignature", func() string {
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			sig[10] ^= 1
			return parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
		}, false},
		{"ErrNonCanonicalSignatureEncoding", func() string {
			// The last character of 64 bytes in base64 carries 4 unused bits; setting one
			// decodes to the same signature unless decoding is strict.
			last := parts[2][len(parts[2])-1]
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			i := strings.IndexByte(alphabet, last)
			return parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + string(alphabet[i^1])
		}, false},
		{"ErrSignatureStripped", func() string { return parts[0] + "." + parts[1] + "." }, false},
		{"ErrEmpty", func() string { return "" }, false},
		{"ErrGarbage", func() string { return "garbage" }, false},
		{"ErrGarbageSegments", func() string { return "a.b.c" }, false},
		{"ErrJSONNotObject", func() string {
			enc := base64.RawURLEncoding.EncodeToString
			return enc([]byte(`[]`)) + "." + enc([]byte(`"x"`)) + "." + parts[2]
		}, false},
		{"ErrTooLong", edDSA(nil, setClaim("pad", strings.Repeat("x", 4096))), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tt.token()
			before := strings.Count(logs.String(), "access token refused")
			c, err := s.Verify(t.Context(), tok)
			if tt.ok {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.UserID != userID || c.SessionID != sessionID {
					t.Errorf("Verify = %+v, want user %s session %s", c, userID, sessionID)
				}
				return
			}
			wantRefused(t, err)
			if c != (token.Claims{}) {
				t.Errorf("refused Verify returned claims %+v", c)
			}
			if strings.Count(logs.String(), "access token refused") != before+1 {
				t.Error("the reason was not logged at debug level")
			}
			if len(tok) > 20 && strings.Contains(logs.String(), tok[len(tok)-20:]) {
				t.Error("the log contains the token")
			}
		})
	}
}

func TestVerifyRechecksRememberedToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(t *testing.T, b *bundle, s *token.Service, sessionID uuid.UUID)
	}{
		{"ErrExpired", func(t *testing.T, b *bundle, _ *token.Service, _ uuid.UUID) {
			b.clock.Advance(ttl + 30*time.Second)
		}},
		{"ErrClockBeforeIssue", func(t *testing.T, b *bundle, _ *token.Service, _ uuid.UUID) {
			b.clock.Advance(-time.Minute)
		}},
		{"ErrRevoked", func(t *testing.T, _ *bundle, s *token.Service, sessionID uuid.UUID) {
			if err := s.RevokeSessions(t.Context(), sessionID); err != nil {
				t.Fatalf("RevokeSessions: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			s := b.ensured(t)
			userID, sessionID := newSession(t, b.st)
			tok := mustIssue(t, s, userID, sessionID)
			mustVerify(t, s, tok) // remembered from now on
			tt.change(t, b, s, sessionID)
			_, err := s.Verify(t.Context(), tok)
			wantRefused(t, err)
		})
	}
}

func TestRotate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.ensured(t)
	ctx := t.Context()
	oldKid, oldPrivate := b.signingKey(t)
	userID, sessionID := newSession(t, b.st)
	issuedBefore := mustIssue(t, s, userID, sessionID)
	// Signed with the old key and valid for days, so that only retirement can refuse it.
	now := b.clock.Now()
	longLived := sign(t, jwt.SigningMethodEdDSA, oldPrivate,
		map[string]any{"alg": "EdDSA", "kid": oldKid, "typ": "at+jwt"},
		jwt.MapClaims{"iss": cfg.Issuer, "aud": cfg.Audience, "sub": userID.String(), "sid": sessionID.String(),
			"iat": now.Unix(), "exp": now.Add(72 * time.Hour).Unix(), "jti": uuid.NewString()})

	newKid, err := s.Rotate(ctx)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if newKid == oldKid {
		t.Fatalf("Rotate returned the old kid %s", oldKid)
	}
	issuedAfter := mustIssue(t, s, userID, sessionID)
	if kid := header(t, issuedAfter)["kid"]; kid != newKid {
		t.Errorf("token issued after Rotate has kid %v, want %s", kid, newKid)
	}
	for name, tok := range map[string]string{"issued before": issuedBefore, "issued after": issuedAfter, "long-lived": longLived} {
		if _, err := s.Verify(ctx, tok); err != nil {
			t.Errorf("Verify(token %s rotation): %v", name, err)
		}
	}
	if got, want := jwksKids(t, s), []string{newKid, oldKid}; !slices.Equal(got, want) {
		t.Errorf("JWKS after Rotate = %v, want %v", got, want)
	}

	// The old key verifies for the token lifetime plus two minutes after being superseded.
	b.clock.Advance(ttl + 2*time.Minute - time.Second)
	mustVerify(t, s, longLived)
	if got, want := jwksKids(t, s), []string{newKid, oldKid}; !slices.Equal(got, want) {
		t.Errorf("JWKS just before retirement = %v, want %v", got, want)
	}
	b.clock.Advance(time.Second)
	_, err = s.Verify(ctx, longLived)
	wantRefused(t, err)
	if got, want := jwksKids(t, s), []string{newKid}; !slices.Equal(got, want) {
		t.Errorf("JWKS after retirement = %v, want %v", got, want)
	}
	// A replica loading the keys afresh agrees.
	if _, err := b.service(t).Verify(ctx, longLived); err == nil {
		t.Error("a fresh replica verified a token of the retired key")
	}

	// The next rotation records the retirement.
	thirdKid, err := s.Rotate(ctx)
	if err != nil {
		t.Fatalf("second Rotate: %v", err)
	}
	rows, err := b.st.Pool.Query(ctx, "SELECT kid, superseded_at IS NOT NULL, retired_at IS NOT NULL FROM signing_keys ORDER BY superseded_at DESC NULLS FIRST")
	if err != nil {
		t.Fatal(err)
	}
	type state struct {
		kid                 string
		superseded, retired bool
	}
	var got []state
	for rows.Next() {
		var st state
		if err := rows.Scan(&st.kid, &st.superseded, &st.retired); err != nil {
			t.Fatal(err)
		}
		got = append(got, st)
	}
	want := []state{{thirdKid, false, false}, {newKid, true, false}, {oldKid, true, true}}
	if !slices.Equal(got, want) {
		t.Errorf("signing_keys = %+v, want %+v", got, want)
	}
	if got, want := jwksKids(t, s), []string{thirdKid, newKid}; !slices.Equal(got, want) {
		t.Errorf("JWKS after the second Rotate = %v, want %v", got, want)
	}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.ensured(t)
	tok := mustIssue(t, s, uuid.New(), uuid.New())
	doc := jwks(t, s)
	if len(doc.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(doc.Keys))
	}
	k := doc.Keys[0]
	kid, private := b.signingKey(t)
	x := base64.RawURLEncoding.EncodeToString(private.Public().(ed25519.PublicKey))
	want := map[string]string{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}
	if !maps.Equal(k, want) {
		t.Errorf("JWK = %v, want %v", k, want)
	}
	// The kid is the RFC 7638 thumbprint.
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	if thumb := base64.RawURLEncoding.EncodeToString(sum[:]); kid != thumb {
		t.Errorf("kid = %s, want the thumbprint %s", kid, thumb)
	}
	// A third party holding only the JWKS verifies issued tokens.
	pub, _ := base64.RawURLEncoding.DecodeString(k["x"])
	if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return ed25519.PublicKey(pub), nil },
		jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithAudience(cfg.Audience), jwt.WithIssuer(cfg.Issuer)); err != nil {
		t.Errorf("token does not verify with the JWKS key: %v", err)
	}
	empty := setup(t).service(t)
	if got := jwksKids(t, empty); len(got) != 0 {
		t.Errorf("JWKS without keys = %v, want none", got)
	}
}

func TestPrivateKeyStoredSealed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.ensured(t)
	var kid string
	var sealed, public []byte
	if err := b.st.Pool.QueryRow(t.Context(), "SELECT kid, private_key_enc, public_key FROM signing_keys").Scan(&kid, &sealed, &public); err != nil {
		t.Fatalf("read signing key: %v", err)
	}
	seed, err := b.keyring.Open(sealed, []byte(kid))
	if err != nil {
		t.Fatalf("open with aad = kid: %v", err)
	}
	private := ed25519.NewKeyFromSeed(seed)
	if !bytes.Equal(private.Public().(ed25519.PublicKey), public) {
		t.Error("the sealed private key does not match public_key")
	}
	if bytes.Contains(sealed, seed) || bytes.Contains(sealed, private) {
		t.Error("private_key_enc contains the raw private key")
	}
	if _, err := b.keyring.Open(sealed, []byte("another-kid")); err == nil {
		t.Error("the sealed key opens for another kid; it must be bound to its own")
	}
}

func TestEnsureKey(t *testing.T) {
	t.Parallel()
	t.Run("OKOneKeyFromConcurrentReplicas", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		replicas := make([]*token.Service, 5)
		for i := range replicas {
			replicas[i] = b.service(t)
		}
		start := make(chan struct{})
		errc := make(chan error, len(replicas))
		var wg sync.WaitGroup
		for _, s := range replicas {
			wg.Go(func() {
				<-start
				errc <- s.EnsureKey(t.Context())
			})
		}
		close(start)
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Errorf("EnsureKey: %v", err)
			}
		}
		var n int
		if err := b.st.Pool.QueryRow(t.Context(), "SELECT count(*) FROM signing_keys").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d signing keys, want 1", n)
		}
		tok := mustIssue(t, replicas[0], uuid.New(), uuid.New())
		for _, s := range replicas[1:] {
			mustVerify(t, s, tok)
		}
	})
	t.Run("OKKeepsTheKeyInUse", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.ensured(t)
		kid, _ := b.signingKey(t)
		if err := b.service(t).EnsureKey(t.Context()); err != nil {
			t.Fatalf("second EnsureKey: %v", err)
		}
		if again, _ := b.signingKey(t); again != kid {
			t.Errorf("signing key changed from %s to %s", kid, again)
		}
		mustVerify(t, s, mustIssue(t, s, uuid.New(), uuid.New()))
	})
	t.Run("ErrWrongMasterKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.ensured(t)
		other, err := secrets.ParseKeyring("other:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
		if err != nil {
			t.Fatal(err)
		}
		s := token.New(b.st, other, b.rdb, b.ks, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)), b.clock.Now)
		if err := s.EnsureKey(t.Context()); !errors.Is(err, secrets.ErrUnknownKey) {
			t.Errorf("EnsureKey with another master key = %v, want %v", err, secrets.ErrUnknownKey)
		}
	})
}

func TestReplicas(t *testing.T) {
	t.Parallel()
	t.Run("OKVerifiesKeyRotatedElsewhere", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.ensured(t)
		replica := b.service(t)
		run(t, replica)
		userID, sessionID := newSession(t, b.st)
		eventually(t, "the replica loads the first key", func() bool {
			_, err := replica.Verify(t.Context(), mustIssue(t, a, userID, sessionID))
			return err == nil
		})
		newKid, err := a.Rotate(t.Context())
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		tok := mustIssue(t, a, userID, sessionID)
		if kid := header(t, tok)["kid"]; kid != newKid {
			t.Fatalf("kid = %v, want %s", kid, newKid)
		}
		eventually(t, "the replica verifies a token of the key rotated elsewhere", func() bool {
			_, err := replica.Verify(t.Context(), tok)
			return err == nil
		})
		if kids := jwksKids(t, replica); len(kids) != 2 || kids[0] != newKid {
			t.Errorf("replica's JWKS = %v, want the new key first, then the old", kids)
		}
	})
	t.Run("ErrSessionRevokedElsewhere", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.ensured(t)
		replica := b.ensured(t)
		run(t, replica)
		userID, sessionID := newSession(t, b.st)
		_, otherSession := newSession(t, b.st)
		tok := mustIssue(t, a, userID, sessionID)
		other := mustIssue(t, a, userID, otherSession)
		mustVerify(t, replica, tok) // remembered: revocation must still apply
		if err := a.RevokeSessions(t.Context(), sessionID); err != nil {
			t.Fatalf("RevokeSessions: %v", err)
		}
		_, err := a.Verify(t.Context(), tok)
		wantRefused(t, err)
		eventually(t, "the replica refuses a token of a session revoked elsewhere", func() bool {
			_, err := replica.Verify(t.Context(), tok)
			return err != nil
		})
		_, err = replica.Verify(t.Context(), tok)
		wantRefused(t, err)
		mustVerify(t, replica, other)
		var revokedAt *time.Time
		if err := b.st.Pool.QueryRow(t.Context(), "SELECT revoked_at FROM sessions WHERE id = $1", sessionID).Scan(&revokedAt); err != nil || revokedAt == nil {
			t.Errorf("sessions.revoked_at = %v, %v; want set", revokedAt, err)
		}
	})
	t.Run("ErrNewReplicaLearnsPastRevocations", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.ensured(t)
		userID, sessionID := newSession(t, b.st)
		_, liveSession := newSession(t, b.st)
		tok := mustIssue(t, a, userID, sessionID)
		live := mustIssue(t, a, userID, liveSession)
		if err := a.RevokeSessions(t.Context(), sessionID); err != nil {
			t.Fatalf("RevokeSessions: %v", err)
		}
		fresh := b.service(t)
		run(t, fresh)
		eventually(t, "the new replica loads the keys", func() bool {
			_, err := fresh.Verify(t.Context(), live)
			return err == nil
		})
		eventually(t, "the new replica refuses a token of a session revoked before it started", func() bool {
			_, err := fresh.Verify(t.Context(), tok)
			return err != nil
		})
	})
}

func BenchmarkVerify(b *testing.B) {
	bd := setup(b)
	quiet := slog.New(slog.DiscardHandler)
	s := bd.serviceLogging(quiet)
	if err := s.EnsureKey(context.Background()); err != nil {
		b.Fatal(err)
	}
	tok := mustIssue(b, s, uuid.New(), uuid.New())
	ctx := context.Background()
	b.Run("Remembered", func(b *testing.B) {
		mustVerify(b, s, tok)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("RememberedParallel", func(b *testing.B) {
		mustVerify(b, s, tok)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Verify(ctx, tok); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("SignatureChecked", func(b *testing.B) {
		cold := bd.serviceLogging(quiet)
		token.DisableVerifiedCache(cold)
		if err := cold.EnsureKey(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cold.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkIssue(b *testing.B) {
	bd := setup(b)
	s := bd.serviceLogging(slog.New(slog.DiscardHandler))
	if err := s.EnsureKey(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	userID, sessionID := uuid.New(), uuid.New()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Issue(ctx, userID, sessionID); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzVerify checks that no input panics Verify and that the only token it accepts is the
// one issued: signatures cannot be forged and their encoding is canonical, so any other
// accepted string would be a verification bug.
func FuzzVerify(f *testing.F) {
	b := setup(f)
	s := b.serviceLogging(slog.New(slog.DiscardHandler))
	if err := s.EnsureKey(context.Background()); err != nil {
		f.Fatal(err)
	}
	good := mustIssue(f, s, uuid.New(), uuid.New())
	parts := strings.Split(good, ".")
	for _, seed := range []string{
		good, "", "garbage", "a.b.c", "..", parts[0] + "." + parts[1] + ".",
		parts[0] + "." + parts[1] + "." + parts[2] + "=",
		strings.ToUpper(good),
		"eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + parts[1] + ".",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.Verify(context.Background(), tok)
		if err == nil && tok != good {
			t.Fatalf("accepted a token that was not issued: %q → %+v", tok, c)
		}
		if err != nil {
			wantRefused(t, err)
		}
	})
}

func TestRotateIfOlder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.ensured(t)
	ctx := t.Context()
	firstKid, _ := b.signingKey(t)
	const maxAge = 24 * time.Hour

	if _, err := s.RotateIfOlder(ctx, 0); err == nil {
		t.Error("RotateIfOlder(0) rotated or succeeded; want an error")
	}
	b.clock.Advance(maxAge - time.Second)
	if kid, err := s.RotateIfOlder(ctx, maxAge); err != nil || kid != "" {
		t.Fatalf("RotateIfOlder with a key younger than maxAge = %q, %v; want no rotation", kid, err)
	}
	b.clock.Advance(time.Second)

	// Replicas asking at once rotate once between them.
	kids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range kids {
		wg.Go(func() {
			var err error
			if kids[i], err = b.service(t).RotateIfOlder(ctx, maxAge); err != nil {
				t.Errorf("RotateIfOlder: %v", err)
			}
		})
	}
	wg.Wait()
	var rotated []string
	for _, k := range kids {
		if k != "" {
			rotated = append(rotated, k)
		}
	}
	if len(rotated) != 1 {
		t.Fatalf("8 concurrent RotateIfOlder at the key's age rotated %d times (%v), want 1", len(rotated), rotated)
	}
	secondKid := rotated[0]
	if err := s.EnsureKey(ctx); err != nil { // reload: another replica rotated
		t.Fatal(err)
	}
	if kid, _ := b.signingKey(t); kid != secondKid {
		t.Errorf("signing key after rotation = %s, want %s", kid, secondKid)
	}

	rotatedAt := b.clock.Now()
	keys, err := s.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []token.KeyStatus{
		{Kid: secondKid, State: token.KeySigning, CreatedAt: rotatedAt},
		{Kid: firstKid, State: token.KeyVerifying, CreatedAt: rotatedAt.Add(-maxAge), SupersededAt: &rotatedAt, Until: rotatedAt.Add(ttl + 2*time.Minute)},
	}
	if !keysEqual(keys, want) {
		t.Errorf("Keys after rotation = %+v, want %+v", keys, want)
	}
	b.clock.Advance(ttl + 2*time.Minute)
	keys, err = s.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want[1].State = token.KeyRetired
	if !keysEqual(keys, want) {
		t.Errorf("Keys after the old key's window = %+v, want %+v", keys, want)
	}
}

func keysEqual(got, want []token.KeyStatus) bool {
	return slices.EqualFunc(got, want, func(a, b token.KeyStatus) bool {
		return a.Kid == b.Kid && a.State == b.State && a.CreatedAt.Equal(b.CreatedAt) && a.Until.Equal(b.Until) &&
			(a.SupersededAt == nil) == (b.SupersededAt == nil) && (a.SupersededAt == nil || a.SupersededAt.Equal(*b.SupersededAt))
	})
}
