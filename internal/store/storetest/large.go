package storetest

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// LargeOrgSize is how much a large org holds (the privacy benchmarks').
type LargeOrgSize struct {
	Users         int // members; the first is its owner
	Conversations int
	Messages      int // per conversation
	Usage         int // llm_usage rows
	Documents     int // in one knowledge base
	Chunks        int // per document
	AuditEvents   int
}

// PrivacyBenchOrg is the org the privacy benchmarks export and erase (docs/performance.md,
// Privacy: export and erasure): 1,000 conversations keep a run of the export under two
// minutes on the shared 2-core machine (5,000 took 6 min there at a load of 30).
var PrivacyBenchOrg = LargeOrgSize{Users: 2, Conversations: 1000, Messages: 10, Usage: 100_000, Documents: 200, Chunks: 10, AuditEvents: 20_000}

// LargeOrg is a large org and its owner.
type LargeOrg struct {
	ID    uuid.UUID
	Owner uuid.UUID
	Rows  int64 // rows inserted
}

// NewLargeOrg fills an org of size in set-based statements (seconds, not minutes): texts
// of a few hundred bytes, spread over its users.
func NewLargeOrg(t testing.TB, st *store.Store, size LargeOrgSize) LargeOrg {
	t.Helper()
	ctx := t.Context()
	org := Org(t, st)
	out := LargeOrg{ID: org}
	users := make([]uuid.UUID, size.Users)
	for i := range users {
		users[i] = User(t, st, Org(t, st))
		role := "member"
		if i == 0 {
			role, out.Owner = "owner", users[i]
		}
		if err := st.AddOrgMember(ctx, db.AddOrgMemberParams{OrgID: org, UserID: users[i], Role: role, Now: time.Now()}); err != nil {
			t.Fatalf("add member: %v", err)
		}
	}
	kb := uuid.Must(uuid.NewV7())
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO conversations (id, org_id, user_id, title, metadata, created_at, updated_at)
			SELECT gen_random_uuid(), $1, ($2::uuid[])[1 + g % array_length($2::uuid[], 1)], 'conversation ' || g, '{}', now(), now()
			FROM generate_series(1, $3) g`, []any{org, users, size.Conversations}},
		{`INSERT INTO messages (id, org_id, conversation_id, role, content, status, created_at)
			SELECT gen_random_uuid(), $1, c.id, CASE WHEN g % 2 = 0 THEN 'user' ELSE 'assistant' END,
				'message ' || g || ': ' || repeat('lorem ipsum dolor sit amet ', 8), 'completed', now()
			FROM conversations c, generate_series(1, $2) g WHERE c.org_id = $1`, []any{org, size.Messages}},
		{`INSERT INTO llm_usage (id, org_id, user_id, request_id, endpoint, alias, provider, model, status, error_code,
				prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, cached, attempts, created_at)
			SELECT gen_random_uuid(), $1, ($2::uuid[])[1 + g % array_length($2::uuid[], 1)], 'req-' || g, 'chat', 'default', 'dev', 'dev-echo',
				'ok', '', 100, 50, 0, 0.001, 120, false, 1, now()
			FROM generate_series(1, $3) g`, []any{org, users, size.Usage}},
		{`INSERT INTO knowledge_bases (id, org_id, name, embedding_model, dimensions, chunk_max_tokens, chunk_overlap, created_by, document_count, chunk_count, created_at, updated_at)
			VALUES ($2, $1, 'large kb', 'hash', 256, 512, 64, $3, $4, $4 * $5, now(), now())`, []any{org, kb, users[0], size.Documents, size.Chunks}},
		{`INSERT INTO kb_documents (id, org_id, kb_id, title, source, media_type, content, content_hash, bytes, status, created_at, updated_at)
			SELECT gen_random_uuid(), $1, $2, 'document ' || g, 'text', 'text/plain', repeat('document text ' || g || ' ', 300),
				decode(md5('d' || g), 'hex'), 4500, 'ready', now(), now()
			FROM generate_series(1, $3) g`, []any{org, kb, size.Documents}},
		{`INSERT INTO kb_chunks (id, org_id, kb_id, document_id, ordinal, text, tokens, content_hash, dimensions, search_tsv, created_at)
			SELECT gen_random_uuid(), $1, d.kb_id, d.id, g, 'chunk ' || g || ' ' || repeat('lorem ipsum ', 40), 120,
				decode(md5(d.id::text || g), 'hex'), 256, to_tsvector('simple', 'chunk lorem ipsum'), now()
			FROM kb_documents d, generate_series(1, $2) g WHERE d.kb_id = $3`, []any{org, size.Chunks, kb}},
		{`INSERT INTO audit_events (id, org_id, actor_type, actor_id, action, target_type, target_id, ip, user_agent, data, created_at)
			SELECT gen_random_uuid(), $1, 'user', ($2::uuid[])[1 + g % array_length($2::uuid[], 1)], 'conversation.create', 'conversation',
				g::text, '198.51.100.7', 'bench/1.0', jsonb_build_object('n', g), now()
			FROM generate_series(1, $3) g`, []any{org, users, size.AuditEvents}},
	} {
		tag, err := st.Pool.Exec(ctx, stmt.sql, stmt.args...)
		if err != nil {
			t.Fatalf("fill the large org: %v", err)
		}
		out.Rows += tag.RowsAffected()
	}
	// Statistics, as autovacuum keeps them on a live database: without them the planner
	// takes the freshly filled tables for empty, and pages through llm_usage by sorting
	// the whole org on every page (0.3 s a page where the primary key takes 3 ms).
	if _, err := st.Pool.Exec(ctx, "ANALYZE"); err != nil {
		t.Fatalf("analyze the large org: %v", err)
	}
	return out
}
