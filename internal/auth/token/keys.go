package token

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// signingKey is a row of signing_keys with its public key checked; the private key stays
// sealed until it is needed.
type signingKey struct {
	kid          string
	public       ed25519.PublicKey
	sealed       []byte
	createdAt    time.Time
	supersededAt *time.Time
}

// toSigningKey converts a row, refusing one this package cannot have written.
func toSigningKey(r db.SigningKey) (signingKey, error) {
	if r.Algorithm != algorithm {
		return signingKey{}, fmt.Errorf("signing key %s: algorithm %q is not %s", r.Kid, r.Algorithm, algorithm)
	}
	if len(r.PublicKey) != ed25519.PublicKeySize {
		return signingKey{}, fmt.Errorf("signing key %s: public key of %d bytes", r.Kid, len(r.PublicKey))
	}
	return signingKey{
		kid:          r.Kid,
		public:       ed25519.PublicKey(r.PublicKey),
		sealed:       r.PrivateKeyEnc,
		createdAt:    r.CreatedAt,
		supersededAt: r.SupersededAt,
	}, nil
}

// keySet is an immutable view of the unretired keys; it is replaced, never changed.
type keySet struct {
	verifiers map[string]verifier
	// ordered holds the kids for the JWKS: the signer, then the most recently superseded.
	ordered []string
	// signer is nil when no key signs, or its private key could not be opened.
	signer *signer
}

type verifier struct {
	public ed25519.PublicKey
	// retireAt is when a superseded key stops verifying; zero for the key that signs.
	retireAt time.Time
}

// live reports whether the key still verifies at now.
func (v verifier) live(now time.Time) bool { return v.retireAt.IsZero() || now.Before(v.retireAt) }

type signer struct {
	kid     string
	private ed25519.PrivateKey
}

// loadKeys replaces the key set with the unretired keys in the database. When the signing
// key cannot be opened (its master key is not configured here) the set is still replaced,
// without a signer, so that verification follows the database and issuing fails loudly.
func (s *Service) loadKeys(ctx context.Context) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	rows, err := s.st.ListUnretiredSigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("load signing keys: %w", store.Translate(err))
	}
	set := &keySet{verifiers: make(map[string]verifier, len(rows))}
	var openErr error
	for _, r := range rows {
		k, err := toSigningKey(r)
		if err != nil {
			s.log.ErrorContext(ctx, "skipping unusable signing key", "err", err)
			continue
		}
		v := verifier{public: k.public}
		switch {
		case k.supersededAt != nil:
			v.retireAt = k.supersededAt.Add(s.retireAfter)
		case set.signer == nil && openErr == nil: // the signer comes first
			set.signer, openErr = s.openSigner(k)
		}
		set.verifiers[k.kid] = v
		set.ordered = append(set.ordered, k.kid)
	}
	s.keys.Store(set)
	return openErr
}

// openSigner unseals a key's private half.
func (s *Service) openSigner(k signingKey) (*signer, error) {
	seed, err := s.keyring.Open(k.sealed, []byte(k.kid))
	if err != nil {
		return nil, fmt.Errorf("open signing key %s: %w", k.kid, err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("open signing key %s: seed of %d bytes", k.kid, len(seed))
	}
	private := ed25519.NewKeyFromSeed(seed)
	if !k.public.Equal(private.Public()) {
		return nil, fmt.Errorf("open signing key %s: private key does not match the public key", k.kid)
	}
	return &signer{kid: k.kid, private: private}, nil
}

// newKey generates a key pair and seals its private half, bound to its kid.
func (s *Service) newKey(now time.Time) (db.InsertSigningKeyParams, error) {
	public, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return db.InsertSigningKeyParams{}, fmt.Errorf("generate signing key: %w", err)
	}
	kid := thumbprint(public)
	sealed, err := s.keyring.Seal(private.Seed(), []byte(kid))
	if err != nil {
		return db.InsertSigningKeyParams{}, fmt.Errorf("seal signing key: %w", err)
	}
	return db.InsertSigningKeyParams{Kid: kid, Algorithm: algorithm, PrivateKeyEnc: sealed, PublicKey: public, Now: now}, nil
}

// thumbprint is the RFC 7638 JWK thumbprint of an Ed25519 public key (members crv, kty, x
// in lexicographic order, RFC 8037 §2), base64url without padding.
func thumbprint(public ed25519.PublicKey) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(public) + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// EnsureKey creates a signing key when none signs, then loads the keys. Replicas calling it
// at once create one key between them: creation runs under a transaction-scoped advisory
// lock. It also retires keys superseded long enough ago. It returns an error when the
// database fails or the signing key cannot be opened with the configured master keys.
func (s *Service) EnsureKey(ctx context.Context) error {
	now := s.now()
	var created string
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		if err := q.LockSigningKeys(ctx); err != nil {
			return err
		}
		if _, err := q.RetireSigningKeys(ctx, db.RetireSigningKeysParams{Now: now, SupersededBefore: now.Add(-s.retireAfter)}); err != nil {
			return err
		}
		inUse, err := q.SigningKeyInUse(ctx)
		if err != nil || inUse {
			return err
		}
		k, err := s.newKey(now)
		if err != nil {
			return err
		}
		if err := q.InsertSigningKey(ctx, k); err != nil {
			return err
		}
		created = k.Kid
		return nil
	})
	if err != nil {
		return fmt.Errorf("ensure signing key: %w", store.Translate(err))
	}
	if created != "" {
		s.log.InfoContext(ctx, "created signing key", "kid", created)
		s.publish(ctx, s.keysChannel, created)
	}
	if err := s.loadKeys(ctx); err != nil {
		return fmt.Errorf("ensure signing key: %w", err)
	}
	return nil
}

// Rotate makes a new key the signer and returns its kid. The previous signer is superseded
// now and keeps verifying for the access token lifetime plus two minutes; keys superseded
// longer ago are retired and stop verifying. Every replica is told to reload. It returns an
// error when the database fails.
func (s *Service) Rotate(ctx context.Context) (kid string, err error) {
	return s.rotate(ctx, 0)
}

// RotateIfOlder rotates as [Service.Rotate] does when the key that signs is at least maxAge
// old (or none signs), and returns the new kid; otherwise it changes nothing and returns "".
// Replicas calling it at once rotate once between them: the age is read under the same lock.
func (s *Service) RotateIfOlder(ctx context.Context, maxAge time.Duration) (kid string, err error) {
	if maxAge <= 0 {
		return "", fmt.Errorf("rotate signing key: maximum age %s is not positive", maxAge)
	}
	return s.rotate(ctx, maxAge)
}

// rotate makes a new signer, unconditionally when maxAge is 0, or only when the signer is
// at least maxAge old; it returns "" when it did not rotate.
func (s *Service) rotate(ctx context.Context, maxAge time.Duration) (string, error) {
	now := s.now()
	k, err := s.newKey(now)
	if err != nil {
		return "", fmt.Errorf("rotate signing key: %w", err)
	}
	due := true
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		if err := q.LockSigningKeys(ctx); err != nil {
			return err
		}
		if maxAge > 0 {
			created, err := q.SigningKeyCreatedAt(ctx)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return err
			default:
				due = !now.Before(created.Add(maxAge))
			}
			if !due {
				return nil
			}
		}
		if _, err := q.SupersedeSigningKeys(ctx, now); err != nil {
			return err
		}
		if err := q.InsertSigningKey(ctx, k); err != nil {
			return err
		}
		_, err := q.RetireSigningKeys(ctx, db.RetireSigningKeysParams{Now: now, SupersededBefore: now.Add(-s.retireAfter)})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("rotate signing key: %w", store.Translate(err))
	}
	if !due {
		return "", nil
	}
	s.log.InfoContext(ctx, "rotated signing key", "kid", k.Kid)
	s.publish(ctx, s.keysChannel, k.Kid)
	if err := s.loadKeys(ctx); err != nil {
		return "", fmt.Errorf("rotate signing key: %w", err)
	}
	return k.Kid, nil
}

// KeyState is where a signing key is in its life.
type KeyState string

// The states of a signing key: it signs new tokens; it no longer signs but still verifies
// the tokens it signed until they expire; it verifies nothing.
const (
	KeySigning   KeyState = "signing"
	KeyVerifying KeyState = "verifying"
	KeyRetired   KeyState = "retired"
)

// KeyStatus describes one signing key for operators; it holds no key material.
type KeyStatus struct {
	Kid          string
	State        KeyState
	CreatedAt    time.Time
	SupersededAt *time.Time
	// Until is when a superseded key stops (or stopped) verifying; zero for the key that
	// signs.
	Until time.Time
}

// Keys lists every signing key, retired ones too: the key that signs first, then the most
// recently superseded. A key past its verifying window is retired, whether or not a
// rotation has marked it so yet, as verification treats it.
func (s *Service) Keys(ctx context.Context) ([]KeyStatus, error) {
	rows, err := s.st.ListSigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", store.Translate(err))
	}
	now := s.now()
	out := make([]KeyStatus, 0, len(rows))
	for _, r := range rows {
		k := KeyStatus{Kid: r.Kid, State: KeySigning, CreatedAt: r.CreatedAt, SupersededAt: r.SupersededAt}
		if r.SupersededAt != nil {
			k.State, k.Until = KeyVerifying, r.SupersededAt.Add(s.retireAfter)
			if r.RetiredAt != nil || !now.Before(k.Until) {
				k.State = KeyRetired
			}
		}
		out = append(out, k)
	}
	return out, nil
}

// jwk is an RFC 7517 / RFC 8037 public key.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS returns the RFC 7517 JSON Web Key Set of every key that still verifies, the signing
// key first and then the most recently superseded, loading the keys when none are loaded yet. It returns an error only when that load
// fails.
func (s *Service) JWKS(ctx context.Context) ([]byte, error) {
	set := s.keys.Load()
	if set == nil {
		if err := s.loadKeys(ctx); err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		set = s.keys.Load()
	}
	now := s.now()
	doc := struct {
		Keys []jwk `json:"keys"`
	}{Keys: make([]jwk, 0, len(set.ordered))}
	for _, kid := range set.ordered {
		v := set.verifiers[kid]
		if !v.live(now) {
			continue
		}
		doc.Keys = append(doc.Keys, jwk{
			Kty: "OKP",
			Crv: "Ed25519",
			X:   base64.RawURLEncoding.EncodeToString(v.public),
			Kid: kid,
			Alg: algorithm,
			Use: "sig",
		})
	}
	return json.Marshal(doc)
}

// publish tells every replica about a change. A failed publish is logged, not returned: the
// change is committed, and other replicas catch up at their next periodic reload.
func (s *Service) publish(ctx context.Context, channel, payload string) {
	if err := s.rdb.Publish(ctx, channel, payload).Err(); err != nil {
		s.log.WarnContext(ctx, "publish token change; other replicas will catch up at their next reload", "channel", channel, "err", err, "reload_interval", reloadInterval)
	}
}
