// Package ratelimit applies GCRA (generic cell rate algorithm) limits in Redis, so every
// replica shares the counts: several limits per request, checked and spent atomically in
// one round trip.
package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limit allows Rate requests per Period on average, and up to Burst at once.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// Result is one limit's answer.
type Result struct {
	// Allowed is false for the limits that refused the request.
	Allowed bool
	// Remaining is how many more requests the limit allows now.
	Remaining int
	// ResetAfter is when the limit is whole again (its full burst available).
	ResetAfter time.Duration
	// RetryAfter is, for a refusal, when the next request would be allowed.
	RetryAfter time.Duration
}

// Limiter checks limits in Redis.
type Limiter struct {
	rdb redis.UniversalClient
}

// New returns a Limiter over rdb.
func New(rdb redis.UniversalClient) *Limiter { return &Limiter{rdb: rdb} }

// gcraScript keeps, per key, the theoretical arrival time (TAT, µs of Redis's clock) of
// the next request. A request is allowed by a limit when TAT + interval - tolerance is not
// in the future; it is spent only when every limit allows it, so a refusal by one limit
// costs the others nothing. KEYS: one per limit. ARGV: per limit, its emission interval
// and its tolerance (interval × burst), in µs. It returns per limit: allowed (0/1),
// remaining, reset after (µs), retry after (µs).
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, tats, denied = {}, {}, false
for i = 1, #KEYS do
  local interval, tolerance = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now)
  local allow_at = tat + interval - tolerance
  tats[i] = tat
  if allow_at > now then
    denied = true
    out[4*i-3], out[4*i-2], out[4*i-1], out[4*i] = 0, 0, tat - now, allow_at - now
  end
end
for i = 1, #KEYS do
  local interval, tolerance = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  local tat = tats[i]
  if out[4*i-3] == nil then
    if not denied then
      tat = tat + interval
      redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
    end
    out[4*i-3], out[4*i-2], out[4*i-1], out[4*i] = 1, math.floor((now + tolerance - tat) / interval), tat - now, 0
  end
end
return out
`)

// Allow checks the request against limits[i] on keys[i] and spends it on all of them
// when all allow it; ok is false when any refused it. Keys must share a Redis Cluster
// slot (one hash tag).
func (l *Limiter) Allow(ctx context.Context, keys []string, limits []Limit) (res []Result, ok bool, err error) {
	args := make([]any, 0, 2*len(limits))
	for _, lim := range limits {
		interval := lim.Period.Microseconds() / int64(lim.Rate)
		args = append(args, interval, interval*int64(lim.Burst))
	}
	raw, err := gcraScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return nil, false, fmt.Errorf("rate limit: %w", err)
	}
	if len(raw) != 4*len(keys) {
		return nil, false, fmt.Errorf("rate limit: %d values for %d keys", len(raw), len(keys))
	}
	res, ok = make([]Result, len(keys)), true
	for i := range res {
		v := raw[4*i : 4*i+4]
		res[i] = Result{Allowed: v[0] == 1, Remaining: int(v[1]), ResetAfter: time.Duration(v[2]) * time.Microsecond, RetryAfter: time.Duration(v[3]) * time.Microsecond}
		ok = ok && res[i].Allowed
	}
	return res, ok, nil
}
