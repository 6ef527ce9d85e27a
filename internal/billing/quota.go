package billing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/group"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

// Quota counts an org's tokens per period in Redis, so every replica sees the same
// count. A call first reserves the most it can cost; the reservation is refused when
// used + reserved + asked would pass the limit (one Lua script: atomic), and settled to
// the real usage after the call. Each reservation lapses at its deadline, so a replica
// that dies mid-call holds the org's tokens for at most that long.
//
// Redis rather than PostgreSQL: the check is on every model call's path, and one script
// round trip costs tens of microseconds where a conditional UPDATE with its commit costs
// a WAL flush; the count is rebuilt from nothing at a new period, and the usage rows in
// PostgreSQL (llm_usage) remain the record of what was spent.
//
// The reservations and settles of concurrent calls go to Redis together, one pipeline a
// batch (group commit): each call still waits for its own script's reply, and under load
// one round trip serves many calls instead of each paying two.
type Quota struct {
	rdb redis.UniversalClient
	ks  redisclient.Keyspace
	ttl time.Duration // how long a reservation holds
	now func() time.Time

	reserves, settles *group.Group[scriptCall, scriptReply]
}

// NewQuota returns a Quota over rdb whose reservations lapse after ttl.
func NewQuota(rdb redis.UniversalClient, ks redisclient.Keyspace, ttl time.Duration, now func() time.Time) *Quota {
	q := &Quota{rdb: rdb, ks: ks, ttl: ttl, now: now}
	q.reserves = group.New(maxBatch, func(ctx context.Context, calls []scriptCall) ([]scriptReply, error) {
		return q.scripts(ctx, reserveScript, calls)
	})
	q.settles = group.New(maxBatch, func(ctx context.Context, calls []scriptCall) ([]scriptReply, error) {
		return q.scripts(ctx, settleScript, calls)
	})
	return q
}

// maxBatch bounds the scripts of one pipeline.
const maxBatch = 64

// scriptCall is one run of a script; scriptReply its reply.
type scriptCall struct {
	keys []string
	args []any
}

type scriptReply struct {
	res []int64
	err error
}

// scripts runs script once per call in one pipeline and returns each call's reply. The
// calls a Redis answered NOSCRIPT (it lost its scripts: a restart, SCRIPT FLUSH) run again
// once the script is loaded; no other call runs twice.
func (q *Quota) scripts(ctx context.Context, script *redis.Script, calls []scriptCall) ([]scriptReply, error) {
	cmds := make([]*redis.Cmd, len(calls))
	run := func(which []int) {
		pipe := q.rdb.Pipeline()
		for _, i := range which {
			cmds[i] = script.EvalSha(ctx, pipe, calls[i].keys, calls[i].args...)
		}
		_, _ = pipe.Exec(ctx) // each command keeps its own error
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	run(all)
	var lost []int
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			lost = append(lost, i)
		}
	}
	if len(lost) > 0 {
		if err := script.Load(ctx, q.rdb).Err(); err != nil {
			return nil, fmt.Errorf("load quota script: %w", err)
		}
		run(lost)
	}
	out := make([]scriptReply, len(calls))
	for i, c := range cmds {
		out[i].res, out[i].err = c.Int64Slice()
	}
	return out, nil
}

// script runs one call through batch.
func script(ctx context.Context, batch *group.Group[scriptCall, scriptReply], keys []string, args ...any) ([]int64, error) {
	r, err := batch.Do(ctx, scriptCall{keys: keys, args: args})
	if err != nil {
		return nil, err
	}
	return r.res, r.err
}

// reserveScript frees lapsed reservations, then holds ARGV[3] tokens unless enforcing
// and the total would pass the limit. It returns {held (0/1), used, reserved}.
// KEYS[1]: the counter hash (used, reserved, r:<id> per reservation); KEYS[2]: the
// reservations' deadlines (a sorted set). ARGV: now ms, id, tokens, limit, enforce
// (1/0), deadline ms, key TTL s.
var reserveScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, h in ipairs(lapsed) do
  local amt = tonumber(redis.call('HGET', KEYS[1], 'r:' .. h) or '0')
  redis.call('HINCRBY', KEYS[1], 'reserved', -amt)
  redis.call('HDEL', KEYS[1], 'r:' .. h)
end
if #lapsed > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount = tonumber(ARGV[3])
if ARGV[5] == '1' and used + reserved + amount > tonumber(ARGV[4]) then
  return {0, used, reserved}
end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('HSET', KEYS[1], 'r:' .. ARGV[2], amount)
redis.call('ZADD', KEYS[2], tonumber(ARGV[6]), ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
return {1, used, reserved + amount}
`)

// settleScript ends reservation ARGV[1] (if it has not lapsed) and adds ARGV[2] used
// tokens; it returns the new used count, then the alert thresholds it claimed. KEYS as
// reserveScript; ARGV[3]: key TTL s, ARGV[4]: now ms, ARGV[5]: claim lease ms, then
// pairs of (threshold percent, tokens). A threshold is claimed when the used count is
// at or past its tokens and its field alert:<percent> is neither "sent" nor a lease
// still running: the claim is a lease, so a replica that dies before it sent the alert
// leaves it to the next settle past the lease.
var settleScript = redis.NewScript(`
local amt = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if amt then
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(amt))
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local used = redis.call('HINCRBY', KEYS[1], 'used', tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local out = {used}
local now = tonumber(ARGV[4])
for i = 6, #ARGV, 2 do
  if used >= tonumber(ARGV[i + 1]) then
    local f = 'alert:' .. ARGV[i]
    local v = redis.call('HGET', KEYS[1], f)
    if v ~= 'sent' and (not v or tonumber(v) <= now) then
      redis.call('HSET', KEYS[1], f, now + tonumber(ARGV[5]))
      table.insert(out, tonumber(ARGV[i]))
    end
  end
end
return out
`)

// Counter is one org's count for one period, or one of its API keys' (Key set).
type Counter struct {
	Org    uuid.UUID
	Period Period
	Key    uuid.UUID // uuid.Nil: the org's own count
}

// keys returns the counter's hash and reservation-set keys, in one Redis Cluster slot (an
// API key's beside its org's).
func (q *Quota) keys(c Counter) []string {
	tag := "{" + c.Org.String() + ":" + strconv.FormatInt(c.Period.Start.Unix(), 10) + "}"
	if c.Key != uuid.Nil {
		tag += ":key:" + c.Key.String()
	}
	return []string{q.ks.Key("quota", 1, tag+":tokens"), q.ks.Key("quota", 1, tag+":holds")}
}

// keyTTL keeps a period's count a week past its end, for the entitlements of late readers.
func (q *Quota) keyTTL(c Counter) int64 {
	return int64(max(c.Period.End.Add(7*24*time.Hour).Sub(q.now()), time.Hour) / time.Second)
}

// Hold is a reservation; Settle ends it.
type Hold struct {
	q       *Quota
	counter Counter
	id      string
	Tokens  int64
	// watch, when set, is told of the alert thresholds a settle claimed.
	watch *watch
}

// Threshold is an alert level of a limit: Percent of it, reached at At (tokens, seats,
// requests, …).
type Threshold struct {
	Percent int
	At      int64
}

// alertLease is how long a claimed alert waits for its sender before another settle may
// claim it again.
const alertLease = time.Minute

// Reserve holds tokens on c. With enforce it refuses (ok false) when used + reserved +
// tokens would pass limit; either way it returns the usage it saw (used, reserved).
func (q *Quota) Reserve(ctx context.Context, c Counter, tokens, limit int64, enforce bool) (h *Hold, ok bool, used, reserved int64, err error) {
	id := uuid.Must(uuid.NewV7()).String()
	now := q.now()
	flag := "0"
	if enforce {
		flag = "1"
	}
	res, err := script(ctx, q.reserves, q.keys(c), now.UnixMilli(), id, tokens, limit, flag, now.Add(q.ttl).UnixMilli(), q.keyTTL(c))
	if err != nil {
		return nil, false, 0, 0, fmt.Errorf("reserve tokens: %w", err)
	}
	if res[0] == 0 {
		return nil, false, res[1], res[2], nil
	}
	return &Hold{q: q, counter: c, id: id, Tokens: tokens}, true, res[1], res[2], nil
}

// Settle ends the hold, counting used tokens as spent. When the hold watches thresholds,
// the ones this settle claimed go to the watch, off the caller's path.
func (h *Hold) Settle(ctx context.Context, used int) error {
	var thresholds []Threshold
	if h.watch != nil {
		thresholds = h.watch.thresholds
	}
	total, claimed, err := h.q.settle(ctx, h, used, thresholds)
	if err != nil {
		return err
	}
	if len(claimed) > 0 {
		h.watch.claimed(ctx, total, claimed)
	}
	return nil
}

// settle runs settleScript for h and returns the used count after it and the thresholds
// (percent) it claimed.
func (q *Quota) settle(ctx context.Context, h *Hold, used int, thresholds []Threshold) (int64, []int, error) {
	args := make([]any, 0, 5+2*len(thresholds))
	args = append(args, h.id, used, q.keyTTL(h.counter), q.now().UnixMilli(), alertLease.Milliseconds())
	for _, t := range thresholds {
		args = append(args, t.Percent, t.At)
	}
	res, err := script(ctx, q.settles, q.keys(h.counter), args...)
	if err != nil {
		return 0, nil, fmt.Errorf("settle tokens: %w", err)
	}
	if len(res) == 0 {
		return 0, nil, errors.New("settle tokens: empty reply")
	}
	var claimed []int
	for _, p := range res[1:] {
		claimed = append(claimed, int(p))
	}
	return res[0], claimed, nil
}

// claimScript claims alert field ARGV[1] of the counter hash KEYS[1] as settleScript does
// (neither "sent" nor a lease still running), for a lease to ARGV[2] + ARGV[3] ms; it
// returns 1 when claimed, 2 when the alert was sent, 0 while another's lease runs.
// ARGV[4]: key TTL s.
var claimScript = redis.NewScript(`
local f = 'alert:' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if v == 'sent' then
  return 2
end
if v and tonumber(v) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], f, tonumber(ARGV[2]) + tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
`)

// alertField names the alert of a limit's threshold (percent) in the hash of c's token
// counter, beside its count: the token limit's as settleScript names them, the other
// limits' with their name.
func alertField(limit string, percent int) string {
	if limit == LimitTokens {
		return strconv.Itoa(percent)
	}
	return limit + ":" + strconv.Itoa(percent)
}

// claimAlert claims the alert field (alertField) of c for one sender, reporting whether
// this caller got it, and whether it was sent already.
func (q *Quota) claimAlert(ctx context.Context, c Counter, field string) (got, sent bool, err error) {
	n, err := claimScript.Run(ctx, q.rdb, q.keys(c)[:1], field, q.now().UnixMilli(), alertLease.Milliseconds(), q.keyTTL(c)).Int()
	if err != nil {
		return false, false, fmt.Errorf("claim quota alert: %w", err)
	}
	return n == 1, n == 2, nil
}

// alertSent marks the alert field of c sent, so nothing claims it again this period.
func (q *Quota) alertSent(ctx context.Context, c Counter, field string) error {
	if err := q.rdb.HSet(ctx, q.keys(c)[0], "alert:"+field, "sent").Err(); err != nil {
		return fmt.Errorf("mark quota alert sent: %w", err)
	}
	return nil
}

// Usage returns c's spent and reserved tokens (lapsed reservations still counted until
// the next reservation frees them).
func (q *Quota) Usage(ctx context.Context, c Counter) (used, reserved int64, err error) {
	vals, err := q.rdb.HMGet(ctx, q.keys(c)[0], "used", "reserved").Result()
	if err != nil {
		return 0, 0, fmt.Errorf("read token usage: %w", err)
	}
	n := func(v any) int64 {
		s, _ := v.(string)
		i, _ := strconv.ParseInt(s, 10, 64)
		return i
	}
	return n(vals[0]), n(vals[1]), nil
}
