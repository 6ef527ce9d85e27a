// Package idempotency stores the first response to a request made with an Idempotency-Key,
// so a retry of the same request is answered with it instead of running again. Records live
// in Redis (kiln:<env>:idem:v1:<hash>), shared by every replica: a key is first claimed
// (SET NX with a lock TTL, so a crashed replica's claim expires), then the claim is replaced
// by the response for 24 h, or released when there is no complete response to keep.
package idempotency

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

// Defaults of Config.
const (
	DefaultLockTTL = 10 * time.Minute
	DefaultTTL     = 24 * time.Hour
	DefaultMaxBody = 1 << 20
)

// ErrInProgress is Claim's answer while the first request with the key still runs.
var ErrInProgress = errs.E(errs.IdempotencyInProgress, "A request with this Idempotency-Key is still running; retry shortly.")

// ErrKeyReused is Claim's answer when the key was used with a different request.
var ErrKeyReused = errs.E(errs.IdempotencyKeyReused, "This Idempotency-Key was used with a different request; use a new key for a new request.")

// Config bounds what the store keeps and for how long.
type Config struct {
	// LockTTL is how long a claim holds without being completed. It must outlast the
	// longest request (a streamed reply), or a retry could run while the first still does;
	// it bounds how long a crashed replica's claim blocks retries. Default 10 min.
	LockTTL time.Duration
	// TTL is how long a response is kept. Default 24 h.
	TTL time.Duration
	// MaxBody is the largest response body kept; larger responses are not stored.
	// Default 1 MiB.
	MaxBody int
	// Sealer, when set, encrypts stored responses (they may hold secrets: a new API key
	// is in its create response), bound to their Redis key.
	Sealer Sealer
}

// Sealer encrypts and decrypts with associated data (secrets.Keyring).
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// Store keeps idempotency records in Redis.
type Store struct {
	rdb redis.UniversalClient
	ks  redisclient.Keyspace
	cfg Config
}

// New returns a Store on rdb in the key space ks; zero fields of cfg take the defaults.
func New(rdb redis.UniversalClient, ks redisclient.Keyspace, cfg Config) *Store {
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = DefaultLockTTL
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	return &Store{rdb: rdb, ks: ks, cfg: cfg}
}

// MaxBody is the largest response body Complete keeps.
func (s *Store) MaxBody() int { return s.cfg.MaxBody }

// Fingerprint identifies a request: two requests with the same key and a different
// fingerprint are different requests.
type Fingerprint [sha256.Size]byte

// NewFingerprint hashes what makes a request itself: its method, route template, the org it
// names (Kiln-Org) and its exact body. Each part is length-prefixed, so no two different
// requests hash the same input.
func NewFingerprint(method, route, org string, body []byte) Fingerprint {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(method), []byte(route), []byte(org), body} {
		_ = binary.Write(h, binary.BigEndian, uint64(len(part)))
		h.Write(part)
	}
	var fp Fingerprint
	h.Sum(fp[:0])
	return fp
}

// Response is a stored response: status, the headers worth replaying, and the body; or,
// for a request whose work goes on apart from its connection (a conversation reply), only
// Attached: what a retry re-attaches to.
type Response struct {
	Status   int         `json:"status,omitempty"`
	Header   http.Header `json:"header,omitempty"`
	Body     []byte      `json:"-"`
	Attached string      `json:"attached,omitempty"`
	// Scope is the scope the key was claimed in (the caller), kept inside the sealed
	// record, never in its key name: EraseMentioning finds a person's records by it.
	Scope string `json:"scope,omitempty"`
}

// Entry is what Lookup finds under a key.
type Entry struct {
	Fingerprint Fingerprint
	// Response is nil while the request that claimed the key runs.
	Response *Response
}

// Claim is a key held by the one request allowed to run with it; Complete or Release
// ends it.
type Claim struct {
	key   string // the Redis key
	value string // what Claim wrote; Complete and Release act only while it is still there
	fp    Fingerprint
	scope string
}

// Values, in the key space's v1 format:
//
//	claim:    "C" fingerprint(32) token(16)
//	response: "R" fingerprint(32) len(meta) as uint32 BE, meta (JSON: status, header), body
const (
	kindClaim    = 'C'
	kindResponse = 'R'
)

var (
	// claimScript sets the claim unless the key exists, and returns what is there.
	claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`)
	// completeScript replaces the claim ARGV[1], if it still holds, by ARGV[2].
	completeScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`)
	// releaseScript deletes the claim ARGV[1] if it still holds.
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])`)
)

// errClaimLost means a claim expired (or was released) before it was completed.
var errClaimLost = errors.New("idempotency claim lost: it expired before the request finished")

// Claim claims key within scope for a request with fingerprint fp, atomically across
// replicas. It returns a *Claim when the caller is the one to run the request; the stored
// *Response when the key already completed for the same request; ErrInProgress
// (idempotency_in_progress) when the request that claimed it still runs; ErrKeyReused
// (idempotency_key_reused) when the key was used with another fingerprint. Any other
// error is Redis's.
func (s *Store) Claim(ctx context.Context, scope, key string, fp Fingerprint) (*Claim, *Response, error) {
	c := &Claim{key: s.redisKey(scope, key), value: claimValue(fp), fp: fp, scope: scope}
	existing, err := claimScript.Run(ctx, s.rdb, []string{c.key}, c.value, s.cfg.LockTTL.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return c, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("claim idempotency key: %w", err)
	}
	e, err := s.decode(c.key, []byte(existing))
	if err != nil {
		return nil, nil, fmt.Errorf("claim idempotency key: %w", err)
	}
	switch {
	case e.Fingerprint != fp:
		return nil, nil, ErrKeyReused
	case e.Response == nil:
		return nil, nil, ErrInProgress
	}
	return nil, e.Response, nil
}

// Complete replaces c by res, kept for the TTL. It fails when the claim no longer holds
// (it expired: the request outran the lock TTL) or res.Body is over MaxBody.
func (s *Store) Complete(ctx context.Context, c *Claim, res Response) error {
	if len(res.Body) > s.cfg.MaxBody {
		return fmt.Errorf("complete idempotency key: the response body (%d bytes) exceeds %d bytes", len(res.Body), s.cfg.MaxBody)
	}
	res.Scope = c.scope
	value, err := s.responseValue(c.key, c.fp, res)
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	ok, err := completeScript.Run(ctx, s.rdb, []string{c.key}, c.value, value, s.cfg.TTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	if ok == 0 {
		return errClaimLost
	}
	return nil
}

// Attach replaces c by a reference to the work the request started (ref, opaque here),
// kept for the TTL: from then on every retry gets Response{Attached: ref} from Claim,
// whether the first request is still connected or not.
func (s *Store) Attach(ctx context.Context, c *Claim, ref string) error {
	return s.Complete(ctx, c, Response{Attached: ref})
}

// Release drops c, so a retry with the key runs again. A claim that no longer holds is
// left alone.
func (s *Store) Release(ctx context.Context, c *Claim) error {
	if err := releaseScript.Run(ctx, s.rdb, []string{c.key}, c.value).Err(); err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}

// Lookup returns what is stored for key within scope; ok is false when nothing is.
func (s *Store) Lookup(ctx context.Context, scope, key string) (e Entry, ok bool, err error) {
	raw, err := s.rdb.Get(ctx, s.redisKey(scope, key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("look up idempotency key: %w", err)
	}
	if e, err = s.decode(s.redisKey(scope, key), raw); err != nil {
		return Entry{}, false, fmt.Errorf("look up idempotency key: %w", err)
	}
	return e, true, nil
}

// EraseMentioning deletes every stored record whose scope (the caller), response headers
// or body contains one of tokens, compared case-insensitively: the erasure of a person,
// whose ids and address are in the key names only as hashes. It reads every record (a
// SCAN), so it is for rare work. It returns how many it deleted.
func (s *Store) EraseMentioning(ctx context.Context, tokens ...string) (int, error) {
	n := 0
	iter := s.rdb.Scan(ctx, 0, s.ks.Key("idem", 1, "*"), 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		raw, err := s.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("read idempotency record: %w", err)
		}
		e, err := s.decode(key, raw)
		if err != nil || e.Response == nil {
			continue // a claim holds no response; an unreadable record is no one's
		}
		meta, _ := json.Marshal(e.Response)
		text := strings.ToLower(string(meta) + string(e.Response.Body))
		for _, t := range tokens {
			if t != "" && strings.Contains(text, strings.ToLower(t)) {
				if err := s.rdb.Del(ctx, key).Err(); err != nil {
					return n, fmt.Errorf("delete idempotency record: %w", err)
				}
				n++
				break
			}
		}
	}
	if err := iter.Err(); err != nil {
		return n, fmt.Errorf("scan idempotency records: %w", err)
	}
	return n, nil
}

// redisKey hashes scope and key, so neither a caller's id nor their key is in a key name
// and any key length gives a bounded name.
func (s *Store) redisKey(scope, key string) string {
	h := sha256.New()
	h.Write([]byte(scope))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return s.ks.Key("idem", 1, hex.EncodeToString(h.Sum(nil)))
}

func claimValue(fp Fingerprint) string {
	b := make([]byte, 0, 1+len(fp)+16)
	b = append(append(b, kindClaim), fp[:]...)
	return string(append(b, rand.Text()[:16]...)) // a token: two claims of one request differ
}

func (s *Store) responseValue(key string, fp Fingerprint, res Response) ([]byte, error) {
	meta, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	payload := make([]byte, 0, 4+len(meta)+len(res.Body))
	payload = binary.BigEndian.AppendUint32(payload, uint32(len(meta))) //nolint:gosec // meta is a status and a few headers, far under 4 GiB
	payload = append(append(payload, meta...), res.Body...)
	if s.cfg.Sealer != nil {
		if payload, err = s.cfg.Sealer.Seal(payload, []byte(key)); err != nil {
			return nil, err
		}
	}
	b := make([]byte, 0, 1+len(fp)+len(payload))
	b = append(append(b, kindResponse), fp[:]...)
	return append(b, payload...), nil
}

func (s *Store) decode(key string, raw []byte) (Entry, error) {
	if len(raw) < 1+sha256.Size {
		return Entry{}, errors.New("malformed idempotency record")
	}
	var e Entry
	copy(e.Fingerprint[:], raw[1:1+sha256.Size])
	rest := raw[1+sha256.Size:]
	switch raw[0] {
	case kindClaim:
		return e, nil
	case kindResponse:
		if s.cfg.Sealer != nil {
			opened, err := s.cfg.Sealer.Open(rest, []byte(key))
			if err != nil {
				return Entry{}, fmt.Errorf("open idempotency record: %w", err)
			}
			rest = opened
		}
		if len(rest) < 4 {
			return Entry{}, errors.New("malformed idempotency record")
		}
		n := int(binary.BigEndian.Uint32(rest))
		if len(rest)-4 < n {
			return Entry{}, errors.New("malformed idempotency record")
		}
		res := &Response{}
		if err := json.Unmarshal(rest[4:4+n], res); err != nil {
			return Entry{}, fmt.Errorf("malformed idempotency record: %w", err)
		}
		res.Body = rest[4+n:]
		e.Response = res
		return e, nil
	}
	return Entry{}, fmt.Errorf("malformed idempotency record: kind %q", raw[0])
}
