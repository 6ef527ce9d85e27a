package chat_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/cache"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/llm/tools"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// BenchmarkCacheHit compares answering a chat from the response cache with a bare Redis
// GET of the same stored entry, in one run: the difference is what the cache path adds
// (key hashing, decoding, building the result).
//
//	go test ./internal/chat -run '^$' -bench CacheHit -benchmem -count 6
func BenchmarkCacheHit(b *testing.B) {
	rdb, ks := storetest.Redis(b)
	g, err := llm.NewGateway(llm.GatewayConfig{
		Providers: map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev"})},
		Aliases:   map[string][]llm.Target{"default": {{Provider: "dev", Model: dev.Model}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	registry, err := tools.NewRegistry(tools.Builtins()...)
	if err != nil {
		b.Fatal(err)
	}
	r := &chat.Runner{Gateway: g, Tools: registry, Cache: cache.New(rdb, ks, time.Hour), MaxSteps: 4, ToolTimeout: time.Second, MaxTokens: 1024, Now: time.Now}
	zero := 0.0
	call := chat.Call{Alias: "default", Org: uuid.Must(uuid.NewV7()), Cache: true, Request: llm.Request{
		Temperature: &zero,
		Messages:    []llm.Message{llm.TextMessage(llm.RoleSystem, "You are terse."), llm.TextMessage(llm.RoleUser, "What is the capital of France? Answer in one word.")},
	}}
	if err := r.Validate(b.Context(), &call); err != nil {
		b.Fatal(err)
	}
	if res, err := r.Run(b.Context(), call, nil); err != nil || res.Cache != chat.CacheMiss {
		b.Fatalf("warm-up: %v, %+v", err, res)
	}
	keys, err := rdb.Keys(b.Context(), ks.Key("cache", 1, "*")).Result()
	if err != nil || len(keys) != 1 {
		b.Fatalf("cache keys %v, %v", keys, err)
	}

	b.Run("redis_get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rdb.Get(b.Context(), keys[0]).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache_hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, err := r.Run(b.Context(), call, nil)
			if err != nil || res.Cache != chat.CacheHit {
				b.Fatalf("%v, %+v", err, res)
			}
		}
	})
}
