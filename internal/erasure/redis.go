package erasure

import (
	"context"
	"fmt"
	"strings"
)

// purgeRedis deletes the subject's Redis keys: every key of Kiln's key space (and of the
// abuse limiter's rate: prefix) whose name holds one of keyTokens (ids, and the hashes
// the abuse limits name emails, users and addresses by), and the idempotent responses
// that mention one of textTokens. Key names carry ids, never values, so it reads one SCAN
// of the key space: a rare job's cost. It returns how many keys it deleted.
func (s *Service) purgeRedis(ctx context.Context, keyTokens, textTokens []string) (int, error) {
	if s.d.Redis == nil {
		return 0, nil
	}
	n := 0
	for _, pattern := range []string{"kiln:" + s.d.Keyspace.Env + ":*", "rate:kiln:" + s.d.Keyspace.Env + ":*"} {
		iter := s.d.Redis.Scan(ctx, 0, pattern, 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			key := iter.Val()
			for _, t := range keyTokens {
				if t != "" && strings.Contains(key, t) {
					batch = append(batch, key)
					break
				}
			}
		}
		if err := iter.Err(); err != nil {
			return n, fmt.Errorf("scan redis keys: %w", err)
		}
		for len(batch) > 0 {
			chunk := batch[:min(len(batch), 500)]
			batch = batch[len(chunk):]
			if err := s.d.Redis.Del(ctx, chunk...).Err(); err != nil {
				return n, fmt.Errorf("delete redis keys: %w", err)
			}
			n += len(chunk)
		}
	}
	if s.d.Idempotency != nil && len(textTokens) > 0 {
		m, err := s.d.Idempotency.EraseMentioning(ctx, textTokens...)
		n += m
		if err != nil {
			return n, fmt.Errorf("erase idempotent responses: %w", err)
		}
	}
	return n, nil
}

// purgeAfter is purgeRedis once the rows are erased: nothing is left to retry it from, so
// a failure is logged; what it misses expires with its TTL (at most a day).
func (s *Service) purgeAfter(ctx context.Context, keyTokens, textTokens []string) int {
	n, err := s.purgeRedis(ctx, keyTokens, textTokens)
	if err != nil {
		s.d.Log.ErrorContext(ctx, "purge redis keys after an erasure", "error", err)
	}
	return n
}
