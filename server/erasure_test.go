package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/notify"
)

// The subject of the erasure tests: values distinctive enough that finding one anywhere
// means it was left behind.
const (
	subjectEmail = "zelda.quartermaine@erase.example.com"
	subjectName  = "Zelda Quartermaine"
	subjectIP    = "203.0.113.77"
	subjectUA    = "ZeldaBrowser/9.1 (erasure-probe)"
)

// callAs is call from the subject's own address and browser.
func (b *bundle) callAs(t testing.TB, method, path, credential string, body any, out any, header ...string) *http.Response {
	t.Helper()
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(raw))
	req.RemoteAddr = subjectIP + ":40001"
	req.Header.Set("User-Agent", subjectUA)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if credential != "" {
		req.Header.Set("Authorization", "Bearer "+credential)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res := b.do(t, req)
	if out != nil && res.StatusCode < 300 {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return res
}

// runErasure moves the erasure's clock past the grace period, makes the pending erase jobs
// due, and waits until none is queued or running.
func (b *bundle) runErasure(t *testing.T) {
	t.Helper()
	b.eraseClock.Advance(14*24*time.Hour + time.Minute)
	if _, err := b.pool.Exec(t.Context(), "UPDATE jobs SET run_at = now() WHERE kind = 'privacy.erase' AND state = 'queued'"); err != nil {
		t.Fatal(err)
	}
	waitLong(t, "the erase jobs", func() bool {
		var open, attempts int
		var last string
		if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE state IN ('queued', 'running')), coalesce(max(attempts) FILTER (WHERE state IN ('queued', 'running')), 0),
			coalesce(max(last_error) FILTER (WHERE state IN ('queued', 'running')), '') FROM jobs WHERE kind = 'privacy.erase'`).Scan(&open, &attempts, &last); err != nil {
			t.Fatal(err)
		}
		if attempts > 0 && last != "" {
			t.Fatalf("an erase job failed: %s", last)
		}
		return open == 0
	})
	var failed int
	if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM jobs WHERE kind = 'privacy.erase' AND state NOT IN ('succeeded', 'cancelled')").Scan(&failed); err != nil || failed != 0 {
		var last string
		_ = b.pool.QueryRow(t.Context(), "SELECT coalesce(last_error, '') FROM jobs WHERE kind = 'privacy.erase' ORDER BY updated_at DESC LIMIT 1").Scan(&last)
		t.Fatalf("%d erase jobs did not succeed (%v): %s", failed, err, last)
	}
}

func waitLong(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEraseLeavesNoPersonalData: a user with data in every area of Kiln deletes their
// account; once the erase job has run, no column of any table of the public schema (walked
// through information_schema, so a table added later is walked too) and no Redis key or
// value holds their id, address, name, IP or user agent. What the law keeps (the invoice,
// the payment, the usage figures, the audit events) is still there, pseudonymised, and a
// colleague's org and data are intact.
func TestEraseLeavesNoPersonalData(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t)
	ctx := t.Context()

	// The subject signs up and in from their own address and browser.
	var pair api.TokenPair
	if res := b.callAs(t, "POST", "/v1/auth/signup", "", map[string]string{"email": subjectEmail, "password": testPassword, "name": subjectName}, &pair); res.StatusCode != 201 {
		t.Fatalf("signup: %d %s", res.StatusCode, readAll(res))
	}
	var second api.TokenPair
	if res := b.callAs(t, "POST", "/v1/auth/login", "", map[string]string{"email": subjectEmail, "password": testPassword}, &second); res.StatusCode != 200 {
		t.Fatalf("login: %d", res.StatusCode)
	}
	tok := pair.AccessToken
	var me api.Me
	if res := b.callAs(t, "GET", "/v1/me", tok, nil, &me); res.StatusCode != 200 {
		t.Fatalf("me: %d", res.StatusCode)
	}
	subject := me.Id
	if _, err := b.pool.Exec(ctx, "UPDATE users SET email_verified_at = now() WHERE id = $1", subject); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `INSERT INTO identities (id, user_id, provider, subject, email, created_at, last_login_at)
		VALUES ($1, $2, 'github', 'gh-zelda-42', $3, now(), now())`, uuid.Must(uuid.NewV7()), subject, subjectEmail); err != nil {
		t.Fatal(err)
	}

	// A colleague's org that the subject joins as a member, with data of both.
	colleague := b.person(t, "colleague@example.com")
	shared := b.org(t, colleague, "Shared Workshop")
	sp := person{id: subject, email: subjectEmail, token: tok, personalOrg: me.PersonalOrgId}
	b.join(t, colleague, shared, sp, "member")
	inShared := []string{"Kiln-Org", shared.String()}

	// Conversations with messages (a stream buffer, a cache entry and usage), in both orgs.
	for _, h := range [][]string{nil, inShared} {
		var c api.Conversation
		if res := b.callAs(t, "POST", "/v1/conversations", tok, map[string]any{"title": "Notes of " + subjectName, "metadata": map[string]any{"email": subjectEmail}}, &c, h...); res.StatusCode != 201 {
			t.Fatalf("create conversation: %d %s", res.StatusCode, readAll(res))
		}
		var reply api.ConversationReply
		if res := b.callAs(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", tok, map[string]any{"content": "I am " + subjectName + ", write to " + subjectEmail}, &reply, h...); res.StatusCode != 200 {
			t.Fatalf("send message: %d %s", res.StatusCode, readAll(res))
		}
		if res := b.callAs(t, "POST", "/v1/messages/"+reply.Messages[len(reply.Messages)-1].Id.String()+"/feedback", tok, map[string]any{"rating": "up", "comment": "thanks, " + subjectName}, nil, h...); res.StatusCode != 200 {
			t.Fatalf("feedback: %d %s", res.StatusCode, readAll(res))
		}
	}
	var colleagueConv api.Conversation
	if res := b.call(t, "POST", "/v1/conversations", colleague.token, map[string]any{"title": "Colleague's own"}, &colleagueConv, inShared...); res.StatusCode != 201 {
		t.Fatalf("colleague's conversation: %d", res.StatusCode)
	}
	// A model call through the chat API, with an Idempotency-Key (a stored response).
	if res := b.callAs(t, "POST", "/v1/chat/completions", tok, map[string]any{"model": "default",
		"messages": []map[string]any{{"role": "user", "content": "Hello, I am " + subjectName}}}, nil, "Idempotency-Key", "zelda-chat-1"); res.StatusCode != 200 {
		t.Fatalf("chat: %d %s", res.StatusCode, readAll(res))
	}
	// A prompt, a knowledge base with a document (chunks, an ingestion job), an API key.
	if res := b.callAs(t, "POST", "/v1/prompts", tok, map[string]any{"name": "zelda-helper", "description": "for " + subjectName,
		"version": map[string]any{"messages": []map[string]any{{"role": "system", "content": "Assist " + subjectName + "."}}}}, nil); res.StatusCode != 201 {
		t.Fatalf("prompt: %d %s", res.StatusCode, readAll(res))
	}
	var kb api.KnowledgeBase
	if res := b.callAs(t, "POST", "/v1/knowledge-bases", tok, map[string]any{"name": "Diary of " + subjectName}, &kb); res.StatusCode != 201 {
		t.Fatalf("kb: %d %s", res.StatusCode, readAll(res))
	}
	if res := b.callAs(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/documents", tok, map[string]any{"title": subjectName + "'s diary",
		"text": "Dear diary, this is " + subjectName + " (" + subjectEmail + ") writing from " + subjectIP + "."}, nil); res.StatusCode != 202 {
		t.Fatalf("document: %d %s", res.StatusCode, readAll(res))
	}
	waitLong(t, "the document's chunks", func() bool {
		var n int
		_ = b.pool.QueryRow(ctx, "SELECT count(*) FROM kb_chunks WHERE kb_id = $1", kb.Id).Scan(&n)
		return n > 0
	})
	key := b.createKey(t, tok, []string{"chat"})
	if res := b.callAs(t, "POST", "/v1/chat/completions", key.Key, map[string]any{"model": "default",
		"messages": []map[string]any{{"role": "user", "content": "Key call"}}}, nil); res.StatusCode != 200 {
		t.Fatalf("chat with key: %d %s", res.StatusCode, readAll(res))
	}
	// A notification (in-app and email), a billing profile and an invoice with a payment.
	if _, err := b.srv.notify.Send(ctx, notify.Note{UserID: subject, Category: notify.CategoryProduct,
		Title: "Welcome " + subjectName, Body: "Hello " + subjectEmail}); err != nil {
		t.Fatal(err)
	}
	org := me.PersonalOrgId
	if res := b.callAs(t, "PUT", fmt.Sprintf("/v1/orgs/%s/billing-profile", org), tok,
		map[string]any{"legal_name": subjectName, "address": "1 Erasure Lane, " + subjectEmail, "tax_id": "ZQ-1"}, nil); res.StatusCode != 200 {
		t.Fatalf("billing profile: %d %s", res.StatusCode, readAll(res))
	}
	if _, err := b.pool.Exec(ctx, `INSERT INTO payment_orders (id, org_id, provider, purpose, amount_minor, currency, status, created_by, paid_at, created_at, updated_at)
		VALUES ($1, $2, 'alipay', 'topup', 5000, 'CNY', 'paid', $3, now(), now(), now())`, uuid.Must(uuid.NewV7()), org, subject); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `INSERT INTO payment_events (id, org_id, provider, provider_event_id, type, amount_minor, currency, payload, occurred_at, received_at)
		VALUES ($1, $2, 'alipay', 'evt-zelda', 'payment.succeeded', 5000, 'CNY', $3, now(), now())`, uuid.Must(uuid.NewV7()), org,
		fmt.Sprintf(`{"buyer_email": %q, "buyer_name": %q}`, subjectEmail, subjectName)); err != nil {
		t.Fatal(err)
	}
	sub, err := b.srv.llm.Billing.Subscription(ctx, org)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := b.srv.invoices.Invoicer.Issue(ctx, org, sub.Period)
	if err != nil || len(issued) != 1 {
		t.Fatalf("issue invoice: %d, %v", len(issued), err)
	}
	var invoiceTotal int64
	if err := b.pool.QueryRow(ctx, "SELECT total_minor FROM invoices WHERE org_id = $1", org).Scan(&invoiceTotal); err != nil {
		t.Fatal(err)
	}
	waitLong(t, "the usage rows", func() bool {
		var n int
		_ = b.pool.QueryRow(ctx, "SELECT count(*) FROM llm_usage WHERE user_id = $1", subject).Scan(&n)
		return n >= 3
	})
	var usageRows, usageTokens int64
	if err := b.pool.QueryRow(ctx, "SELECT count(*), sum(prompt_tokens + completion_tokens) FROM llm_usage").Scan(&usageRows, &usageTokens); err != nil {
		t.Fatal(err)
	}
	tokens := personalTokens(subject)
	if n := b.findPersonal(t, tokens); len(n) == 0 {
		t.Fatal("the walk found none of the subject's data before the erasure: it proves nothing")
	}
	if keys := b.redisPersonal(t, subject); len(keys) == 0 {
		t.Fatal("no Redis key of the subject before the erasure: the Redis check proves nothing")
	}
	idemBefore := b.idempotencyKeys(t)
	var auditBefore int
	_ = b.pool.QueryRow(ctx, "SELECT count(*) FROM audit_events").Scan(&auditBefore)

	// The deletion: with the password, from the subject's first session.
	var sch api.DeletionScheduled
	if res := b.callAs(t, "DELETE", "/v1/me", tok, map[string]any{"password": testPassword}, &sch); res.StatusCode != 202 {
		t.Fatalf("delete me: %d %s", res.StatusCode, readAll(res))
	}
	b.runErasure(t)

	if found := b.findPersonal(t, tokens); len(found) > 0 {
		t.Errorf("personal data left after the erasure:\n%s", strings.Join(found, "\n"))
	}
	if keys := b.redisPersonal(t, subject); len(keys) > 0 {
		t.Errorf("Redis keys of the subject left: %v", keys)
	}
	if n := b.idempotencyKeys(t); idemBefore < 1 || n != idemBefore-1 {
		t.Errorf("idempotency records: %d before, %d after; want the subject's one gone", idemBefore, n)
	}
	// Kept, pseudonymised: the invoice, the payment, the usage figures, the audit log.
	var buyer string
	var total int64
	if err := b.pool.QueryRow(ctx, "SELECT buyer_name, total_minor FROM invoices WHERE org_id = $1", org).Scan(&buyer, &total); err != nil ||
		!strings.HasPrefix(buyer, "erased-") || total != invoiceTotal {
		t.Errorf("invoice kept as %q, total %d (want erased-…, %d): %v", buyer, total, invoiceTotal, err)
	}
	var payments int
	_ = b.pool.QueryRow(ctx, "SELECT count(*) FROM payment_orders WHERE org_id = $1 AND amount_minor = 5000", org).Scan(&payments)
	var rows, tokensAfter int64
	_ = b.pool.QueryRow(ctx, "SELECT count(*), sum(prompt_tokens + completion_tokens) FROM llm_usage").Scan(&rows, &tokensAfter)
	if payments != 1 || rows != usageRows || tokensAfter != usageTokens {
		t.Errorf("kept: %d payments (want 1), %d usage rows and %d tokens (want %d and %d)", payments, rows, tokensAfter, usageRows, usageTokens)
	}
	var auditAfter, erased int
	_ = b.pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE action = 'privacy.user_erased') FROM audit_events").Scan(&auditAfter, &erased)
	if erased != 1 || auditAfter < auditBefore+2 {
		t.Errorf("audit log: %d events before, %d after, %d privacy.user_erased", auditBefore, auditAfter, erased)
	}
	// The colleague, their org and their data are intact; the subject is gone.
	if res := b.call(t, "GET", "/v1/conversations/"+colleagueConv.Id.String(), colleague.token, nil, nil, inShared...); res.StatusCode != 200 {
		t.Errorf("colleague's conversation: %d", res.StatusCode)
	}
	if m := b.members(t, colleague, shared); len(m) != 1 {
		t.Errorf("shared org members after the erasure: %v", m)
	}
	if res := b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": subjectEmail, "password": testPassword}, nil); res.StatusCode != 401 {
		t.Errorf("login after the erasure: %d, want 401", res.StatusCode)
	}
}

// personalTokens are the values that must not survive the subject's erasure.
func personalTokens(subject uuid.UUID) []string {
	return []string{subject.String(), subjectEmail, strings.ToLower(subjectName), subjectIP, strings.ToLower(subjectUA)}
}

// findPersonal walks every column of every table of the public schema that can hold text
// or an id (text, varchar, json, jsonb, bytea, uuid, inet, arrays) and returns the
// "table.column: token" of every value that contains one of tokens.
func (b *bundle) findPersonal(t *testing.T, tokens []string) []string {
	t.Helper()
	ctx := t.Context()
	rows, err := b.pool.Query(ctx, `SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
		JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
		WHERE c.table_schema = 'public' AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea', 'uuid', 'inet', 'ARRAY', 'USER-DEFINED', 'tsvector')
		ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	type column struct{ table, name, typ string }
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		return c, r.Scan(&c.table, &c.name, &c.typ)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cols) < 100 {
		t.Fatalf("only %d columns walked: the schema query is wrong", len(cols))
	}
	var found []string
	for _, c := range cols {
		expr := fmt.Sprintf("lower(%s::text)", pgx.Identifier{c.name}.Sanitize())
		switch c.typ {
		case "bytea":
			expr = fmt.Sprintf("lower(encode(%s, 'escape'))", pgx.Identifier{c.name}.Sanitize())
		case "USER-DEFINED":
			continue // vectors: numbers only
		}
		for _, tok := range tokens {
			var n int
			q := fmt.Sprintf("SELECT count(*) FROM %s WHERE strpos(%s, $1) > 0", pgx.Identifier{c.table}.Sanitize(), expr)
			if err := b.pool.QueryRow(ctx, q, strings.ToLower(tok)).Scan(&n); err != nil {
				t.Fatalf("%s.%s: %v", c.table, c.name, err)
			}
			if n > 0 {
				found = append(found, fmt.Sprintf("%s.%s: %d rows hold %q", c.table, c.name, n, tok))
			}
		}
	}
	return found
}

// redisPersonal returns the keys of the test's key space (and of the abuse limiter's)
// whose name or value holds the subject's id, address, name, IP or agent, or the hashes the
// abuse limits name them by.
func (b *bundle) redisPersonal(t *testing.T, subject uuid.UUID) []string {
	t.Helper()
	ctx := context.Background()
	names := personalTokens(subject)
	for _, s := range []string{subjectEmail, subjectIP, "user:" + subject.String()} {
		sum := sha256.Sum256([]byte(s))
		names = append(names, hex.EncodeToString(sum[:16]))
	}
	var found []string
	for _, pattern := range []string{"kiln:" + b.ks.Env + ":*", "rate:kiln:" + b.ks.Env + ":*"} {
		iter := b.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			var value string
			switch b.rdb.Type(ctx, key).Val() {
			case "string":
				value = b.rdb.Get(ctx, key).Val()
			case "hash":
				value = fmt.Sprint(b.rdb.HGetAll(ctx, key).Val())
			case "stream":
				value = fmt.Sprint(b.rdb.XRange(ctx, key, "-", "+").Val())
			case "zset":
				value = fmt.Sprint(b.rdb.ZRange(ctx, key, 0, -1).Val())
			}
			text := strings.ToLower(key + " " + value)
			for _, n := range names {
				if strings.Contains(text, strings.ToLower(n)) {
					found = append(found, key)
					break
				}
			}
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return found
}

func (b *bundle) idempotencyKeys(t *testing.T) int {
	t.Helper()
	keys, err := b.rdb.Keys(context.Background(), "kiln:"+b.ks.Env+":idem:v1:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// TestDeleteMe: the re-authentication, the grace period, the sessions revoked at once,
// GET /v1/me showing the pending deletion, and a restore that cancels the erase job so
// that the account outlives the grace period.
func TestDeleteMe(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t)
	ada := b.person(t, "ada@example.com")
	other := b.loginOK(t, "ada@example.com")

	problemIs(t, b.call(t, "DELETE", "/v1/me", ada.token, nil, nil), 403, errs.PermissionDenied)
	problemIs(t, b.call(t, "DELETE", "/v1/me", ada.token, map[string]any{"password": "wrong password 123"}, nil), 403, errs.PermissionDenied)
	var sch api.DeletionScheduled
	if res := b.call(t, "DELETE", "/v1/me", ada.token, map[string]any{"password": testPassword}, &sch); res.StatusCode != 202 {
		t.Fatalf("delete me: %d %s", res.StatusCode, readAll(res))
	}
	if got := sch.EraseAt.Sub(sch.DeletionScheduledAt); got != 14*24*time.Hour {
		t.Errorf("grace period %s, want 14 days", got)
	}
	var again api.DeletionScheduled
	if res := b.call(t, "DELETE", "/v1/me", ada.token, map[string]any{"password": testPassword}, &again); res.StatusCode != 202 || !again.EraseAt.Equal(sch.EraseAt) {
		t.Errorf("asked twice: %d %v, want the same erase_at %v", res.StatusCode, again.EraseAt, sch.EraseAt)
	}
	if res := b.call(t, "GET", "/v1/me", other.AccessToken, nil, nil); res.StatusCode != 401 {
		t.Errorf("the other session after the deletion: %d, want 401", res.StatusCode)
	}
	me := b.currentUser(t, ada.token)
	if me.EraseAt == nil || !me.EraseAt.Equal(sch.EraseAt) || me.DeletionScheduledAt == nil {
		t.Errorf("GET /v1/me during the grace period: %+v", me)
	}
	b.loginOK(t, "ada@example.com") // signing in still works in the grace period

	if res := b.call(t, "POST", "/v1/me/restore", ada.token, nil, nil); res.StatusCode != 204 {
		t.Fatalf("restore: %d %s", res.StatusCode, readAll(res))
	}
	problemIs(t, b.call(t, "POST", "/v1/me/restore", ada.token, nil, nil), 404, errs.NotFound)
	if me := b.currentUser(t, ada.token); me.EraseAt != nil || me.DeletionScheduledAt != nil {
		t.Errorf("GET /v1/me after the restore: %+v", me)
	}
	var state string
	if err := b.pool.QueryRow(t.Context(), "SELECT state FROM jobs WHERE kind = 'privacy.erase'").Scan(&state); err != nil || state != "cancelled" {
		t.Errorf("erase job after the restore: %q %v, want cancelled", state, err)
	}
	b.runErasure(t)
	b.currentUser(t, ada.token) // past the grace period, still here
	if n := b.auditCount(t, "privacy.user_deletion_cancelled", ada.id.String()); n != 1 {
		t.Errorf("%d privacy.user_deletion_cancelled events, want 1", n)
	}

	// Deleted again and not restored: erased once the grace period is over.
	if res := b.call(t, "DELETE", "/v1/me", ada.token, map[string]any{"password": testPassword}, nil); res.StatusCode != 202 {
		t.Fatalf("delete again: %d", res.StatusCode)
	}
	b.runErasure(t)
	if res := b.call(t, "GET", "/v1/me", ada.token, nil, nil); res.StatusCode != 401 {
		t.Errorf("GET /v1/me after the erasure: %d, want 401", res.StatusCode)
	}
}

// TestDeleteMeWithoutPassword: an account that only signs in externally proves itself
// with a fresh access token.
func TestDeleteMeWithoutPassword(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.person(t, "ada@example.com")
	if _, err := b.pool.Exec(t.Context(), "UPDATE users SET password_hash = NULL WHERE id = $1", ada.id); err != nil {
		t.Fatal(err)
	}
	b.eraseClock.Advance(11 * time.Minute)
	problemIs(t, b.call(t, "DELETE", "/v1/me", ada.token, nil, nil), 403, errs.PermissionDenied)
	b.eraseClock.Advance(-11 * time.Minute)
	if res := b.call(t, "DELETE", "/v1/me", ada.token, nil, nil); res.StatusCode != 202 {
		t.Fatalf("delete with a fresh token: %d %s", res.StatusCode, readAll(res))
	}
}

// TestDeleteMeSoleOwner: the only owner of an org with other members cannot delete their
// account; the refusal names the org. Once ownership is handed over, they can.
func TestDeleteMeSoleOwner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.person(t, "ada@example.com")
	bob := b.person(t, "bob@example.com")
	org := b.org(t, ada, "Ada Works")
	b.join(t, ada, org, bob, "admin")
	b.org(t, ada, "Ada Alone") // no other member: it goes with her

	p := problemIs(t, b.call(t, "DELETE", "/v1/me", ada.token, map[string]any{"password": testPassword}, nil), 409, errs.SoleOwner)
	if p.Detail == nil || !strings.Contains(*p.Detail, "Ada Works") || strings.Contains(*p.Detail, "Ada Alone") {
		t.Errorf("sole_owner detail: %v", p.Detail)
	}
	if res := b.call(t, "POST", orgPath(org, "transfer-ownership"), ada.token, map[string]any{"user_id": bob.id}, nil); res.StatusCode != 204 {
		t.Fatalf("transfer: %d %s", res.StatusCode, readAll(res))
	}
	if res := b.call(t, "DELETE", "/v1/me", ada.token, map[string]any{"password": testPassword}, nil); res.StatusCode != 202 {
		t.Errorf("delete after the transfer: %d %s", res.StatusCode, readAll(res))
	}
}

// TestDeleteOrg: owners only; while pending, the org's writes and model calls are refused
// and its reads work; a restore undoes it; past the grace period the org is erased and the
// owner's other orgs are intact.
func TestDeleteOrg(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t)
	ada := b.person(t, "ada@example.com")
	bob := b.person(t, "bob@example.com")
	org := b.org(t, ada, "Doomed Ltd")
	keep := b.org(t, ada, "Kept Ltd")
	b.join(t, ada, org, bob, "admin")
	in := func(o uuid.UUID) []string { return []string{"Kiln-Org", o.String()} }
	var doomedConv, keptConv api.Conversation
	wantStatus(t, b.call(t, "POST", "/v1/conversations", ada.token, map[string]any{"title": "doomed"}, &doomedConv, in(org)...), 201)
	wantStatus(t, b.call(t, "POST", "/v1/conversations", ada.token, map[string]any{"title": "kept"}, &keptConv, in(keep)...), 201)

	problemIs(t, b.call(t, "DELETE", "/v1/orgs/"+org.String(), bob.token, nil, nil), 403, errs.PermissionDenied)
	problemIs(t, b.call(t, "DELETE", "/v1/orgs/"+ada.personalOrg.String(), ada.token, nil, nil), 400, errs.Invalid)
	var sch api.DeletionScheduled
	if res := b.call(t, "DELETE", "/v1/orgs/"+org.String(), ada.token, nil, &sch); res.StatusCode != 202 {
		t.Fatalf("delete org: %d %s", res.StatusCode, readAll(res))
	}
	problemIs(t, b.call(t, "POST", "/v1/conversations", ada.token, map[string]any{}, nil, in(org)...), 409, errs.OrgDeletionPending)
	problemIs(t, b.call(t, "POST", "/v1/chat/completions", bob.token, map[string]any{"model": "default",
		"messages": []map[string]any{{"role": "user", "content": "hi"}}}, nil, in(org)...), 409, errs.OrgDeletionPending)
	wantStatus(t, b.call(t, "GET", "/v1/conversations/"+doomedConv.Id.String(), ada.token, nil, nil, in(org)...), 200)
	wantStatus(t, b.call(t, "POST", "/v1/conversations", ada.token, map[string]any{}, nil, in(keep)...), 201)

	if res := b.call(t, "POST", "/v1/orgs/"+org.String()+"/restore", ada.token, nil, nil); res.StatusCode != 204 {
		t.Fatalf("restore org: %d %s", res.StatusCode, readAll(res))
	}
	wantStatus(t, b.call(t, "POST", "/v1/conversations", ada.token, map[string]any{}, nil, in(org)...), 201)

	wantStatus(t, b.call(t, "DELETE", "/v1/orgs/"+org.String(), ada.token, nil, nil), 202)
	b.runErasure(t)
	var name string
	var erasedAt *time.Time
	var convs, members int
	if err := b.pool.QueryRow(t.Context(), `SELECT name, erased_at, (SELECT count(*) FROM conversations WHERE org_id = $1),
		(SELECT count(*) FROM org_members WHERE org_id = $1) FROM orgs WHERE id = $1`, org).Scan(&name, &erasedAt, &convs, &members); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "erased-") || erasedAt == nil || convs != 0 || members != 0 {
		t.Errorf("erased org: name %q, erased_at %v, %d conversations, %d members", name, erasedAt, convs, members)
	}
	wantStatus(t, b.call(t, "GET", "/v1/conversations/"+keptConv.Id.String(), ada.token, nil, nil, in(keep)...), 200)
	if n := b.auditCount(t, "privacy.org_erased", org.String()); n != 1 {
		t.Errorf("%d privacy.org_erased events, want 1", n)
	}
	b.currentUser(t, bob.token)
}
