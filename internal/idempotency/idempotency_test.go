package idempotency_test

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/idempotency"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func TestStore(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	s := idempotency.New(rdb, ks, idempotency.Config{LockTTL: time.Minute, TTL: time.Hour, MaxBody: 64})
	ctx := t.Context()
	fp := idempotency.NewFingerprint("POST", "POST /v1/api-keys", "", []byte(`{"name":"ci"}`))
	idemKeys := func(t *testing.T) []string {
		t.Helper()
		iter := rdb.Scan(ctx, 0, ks.Key("idem", 1, "*"), 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	// ttlOf returns the TTL of the one idempotency key there is.
	ttlOf := func(t *testing.T) time.Duration {
		t.Helper()
		keys := idemKeys(t)
		if len(keys) != 1 {
			t.Fatalf("keys %v, want one", keys)
		}
		if hash, ok := strings.CutPrefix(keys[0], "kiln:"+ks.Env+":idem:v1:"); !ok || len(hash) != 64 {
			t.Fatalf("key %q, want kiln:<env>:idem:v1:<sha256>", keys[0])
		}
		ttl, err := rdb.PTTL(ctx, keys[0]).Result()
		if err != nil {
			t.Fatal(err)
		}
		return ttl
	}

	t.Run("OKClaimCompleteReplay", func(t *testing.T) {
		claim, stored, err := s.Claim(ctx, "key:1", "k1", fp)
		if err != nil || claim == nil || stored != nil {
			t.Fatalf("claim = %v, %v, %v", claim, stored, err)
		}
		if ttl := ttlOf(t); ttl <= 59*time.Second || ttl > time.Minute {
			t.Errorf("claim TTL %v, want the lock TTL (1 min)", ttl)
		}
		e, ok, err := s.Lookup(ctx, "key:1", "k1")
		if err != nil || !ok || e.Fingerprint != fp || e.Response != nil {
			t.Fatalf("lookup while claimed = %+v, %v, %v", e, ok, err)
		}
		if _, _, err := s.Claim(ctx, "key:1", "k1", fp); !errors.Is(err, idempotency.ErrInProgress) {
			t.Fatalf("second claim while running: %v, want ErrInProgress", err)
		}

		want := idempotency.Response{Status: 201, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte("{\"id\":1}\n\x00\xff")}
		if err := s.Complete(ctx, claim, want); err != nil {
			t.Fatal(err)
		}
		if ttl := ttlOf(t); ttl <= 59*time.Minute || ttl > time.Hour {
			t.Errorf("response TTL %v, want the TTL (1 h)", ttl)
		}
		again, stored, err := s.Claim(ctx, "key:1", "k1", fp)
		if err != nil || again != nil || stored == nil {
			t.Fatalf("claim after complete = %v, %v, %v", again, stored, err)
		}
		if stored.Status != want.Status || !bytes.Equal(stored.Body, want.Body) || stored.Header.Get("Content-Type") != "application/json" {
			t.Errorf("stored %+v, want %+v", stored, want)
		}
		other := idempotency.NewFingerprint("POST", "POST /v1/api-keys", "", []byte(`{"name":"cd"}`))
		if _, _, err := s.Claim(ctx, "key:1", "k1", other); !errors.Is(err, idempotency.ErrKeyReused) {
			t.Fatalf("claim with another fingerprint: %v, want ErrKeyReused", err)
		}
		if err := s.Release(ctx, claim); err != nil { // a completed key is not the claim's any more
			t.Fatal(err)
		}
		if e, ok, _ := s.Lookup(ctx, "key:1", "k1"); !ok || e.Response == nil {
			t.Fatalf("release after complete dropped the response: %+v %v", e, ok)
		}
		for _, k := range idemKeys(t) {
			rdb.Del(ctx, k)
		}
	})

	t.Run("OKRelease", func(t *testing.T) {
		claim, _, err := s.Claim(ctx, "key:2", "k", fp)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, claim); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Lookup(ctx, "key:2", "k"); ok {
			t.Fatal("the key is still there after release")
		}
		again, _, err := s.Claim(ctx, "key:2", "k", fp)
		if err != nil || again == nil {
			t.Fatalf("claim after release = %v, %v", again, err)
		}
		if err := s.Complete(ctx, claim, idempotency.Response{Status: 200}); err == nil {
			t.Fatal("the released claim completed over a newer claim")
		}
		if err := s.Release(ctx, claim); err != nil {
			t.Fatal(err)
		}
		if e, ok, _ := s.Lookup(ctx, "key:2", "k"); !ok || e.Response != nil {
			t.Fatal("the released claim dropped a newer claim")
		}
		_ = s.Release(ctx, again)
	})

	t.Run("OKScopes", func(t *testing.T) {
		a, _, errA := s.Claim(ctx, "key:3", "same", fp)
		b, _, errB := s.Claim(ctx, "key:4", "same", fp)
		if errA != nil || errB != nil || a == nil || b == nil {
			t.Fatalf("claims of one key in two scopes: %v, %v", errA, errB)
		}
		_, _ = s.Release(ctx, a), s.Release(ctx, b)
	})

	t.Run("ErrBodyTooLarge", func(t *testing.T) {
		claim, _, err := s.Claim(ctx, "key:5", "k", fp)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, claim, idempotency.Response{Status: 200, Body: []byte(strings.Repeat("x", 65))}); err == nil {
			t.Fatal("a body over MaxBody was stored")
		}
		_ = s.Release(ctx, claim)
	})
}

func TestClaimExpires(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	s := idempotency.New(rdb, ks, idempotency.Config{LockTTL: 50 * time.Millisecond})
	fp := idempotency.NewFingerprint("POST", "POST /v1/orgs", "", nil)
	first, _, err := s.Claim(t.Context(), "user:1", "k", fp)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the replica holding it crashed
	// The next replica's claim lasts long enough that a busy machine cannot expire it too.
	next := idempotency.New(rdb, ks, idempotency.Config{LockTTL: time.Minute})
	second, _, err := next.Claim(t.Context(), "user:1", "k", fp)
	if err != nil || second == nil {
		t.Fatalf("claim after the lock TTL = %v, %v", second, err)
	}
	if err := s.Complete(t.Context(), first, idempotency.Response{Status: 201}); err == nil {
		t.Fatal("an expired claim completed over the new one")
	}
	if err := next.Complete(t.Context(), second, idempotency.Response{Status: 201}); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentClaims(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	s := idempotency.New(rdb, ks, idempotency.Config{})
	fp := idempotency.NewFingerprint("POST", "POST /v1/chat/completions", "", []byte(`{}`))
	var won, inProgress atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 50 {
		wg.Go(func() {
			<-start
			claim, _, err := s.Claim(t.Context(), "key:1", "race", fp)
			switch {
			case err == nil && claim != nil:
				won.Add(1)
			case errors.Is(err, idempotency.ErrInProgress):
				inProgress.Add(1)
			default:
				t.Errorf("claim: %v, %v", claim, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 || inProgress.Load() != 49 {
		t.Fatalf("%d claims won, %d in progress; want 1 and 49", won.Load(), inProgress.Load())
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	base := idempotency.NewFingerprint("POST", "POST /v1/orgs", "org", []byte("body"))
	for name, fp := range map[string]idempotency.Fingerprint{
		"method": idempotency.NewFingerprint("PUT", "POST /v1/orgs", "org", []byte("body")),
		"route":  idempotency.NewFingerprint("POST", "POST /v1/orgs/x", "org", []byte("body")),
		"org":    idempotency.NewFingerprint("POST", "POST /v1/orgs", "", []byte("body")),
		"body":   idempotency.NewFingerprint("POST", "POST /v1/orgs", "org", []byte("body ")),
		"shift":  idempotency.NewFingerprint("POST", "POST /v1/orgs", "orgb", []byte("ody")),
	} {
		if fp == base {
			t.Errorf("a different %s hashes the same", name)
		}
	}
	if base != idempotency.NewFingerprint("POST", "POST /v1/orgs", "org", []byte("body")) {
		t.Error("the same request hashes differently")
	}
}

// TestSealed keeps stored responses unreadable in Redis (a create-API-key response holds
// the new secret) and readable through the store.
func TestSealed(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	keyring, err := secrets.ParseKeyring(secrets.DevMasterKeys)
	if err != nil {
		t.Fatal(err)
	}
	s := idempotency.New(rdb, ks, idempotency.Config{Sealer: keyring})
	fp := idempotency.NewFingerprint("POST", "POST /v1/api-keys", "", []byte(`{"name":"ci"}`))
	c, _, err := s.Claim(t.Context(), "scope", "k1", fp)
	if err != nil || c == nil {
		t.Fatalf("claim: %v", err)
	}
	secret := []byte(`{"key":"kiln_dev_s3cr3t_0000"}`)
	if err := s.Complete(t.Context(), c, idempotency.Response{Status: 201, Body: secret}); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(t.Context(), ks.Key("idem", 1, "*")).Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v, %v", keys, err)
	}
	raw, err := rdb.Get(t.Context(), keys[0]).Bytes()
	if err != nil || bytes.Contains(raw, []byte("s3cr3t")) {
		t.Fatalf("stored in clear (%v): %q", err, raw)
	}
	e, ok, err := s.Lookup(t.Context(), "scope", "k1")
	if err != nil || !ok || e.Response == nil || !bytes.Equal(e.Response.Body, secret) || e.Response.Status != 201 {
		t.Fatalf("lookup %+v, %v, %v", e, ok, err)
	}
}

func TestAttach(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	s := idempotency.New(rdb, ks, idempotency.Config{LockTTL: time.Minute, TTL: time.Hour})
	ctx := t.Context()
	fp := idempotency.NewFingerprint("POST", "POST /v1/conversations/{id}/messages", "", []byte(`{"content":"hi"}`))
	claim, _, err := s.Claim(ctx, "key:1", "k1", fp)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Attach(ctx, claim, "conv/reply/input"); err != nil {
		t.Fatal(err)
	}
	again, stored, err := s.Claim(ctx, "key:1", "k1", fp)
	if err != nil || again != nil || stored == nil || stored.Attached != "conv/reply/input" || stored.Status != 0 {
		t.Fatalf("retry = %v, %+v, %v", again, stored, err)
	}
	other := idempotency.NewFingerprint("POST", "POST /v1/conversations/{id}/messages", "", []byte(`{"content":"other"}`))
	if _, _, err := s.Claim(ctx, "key:1", "k1", other); !errors.Is(err, idempotency.ErrKeyReused) {
		t.Errorf("another request with the key: %v", err)
	}
	// Attached, the claim is no longer the request's to complete or release.
	if err := s.Release(ctx, claim); err != nil {
		t.Fatal(err)
	}
	if _, stored, _ := s.Claim(ctx, "key:1", "k1", fp); stored == nil || stored.Attached == "" {
		t.Errorf("released an attached key: %+v", stored)
	}
}
