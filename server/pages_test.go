package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/errs"
)

// TestListsArePaged: the lists that grow with logins, orgs and invitations (sessions, orgs,
// members, pending invitations) answer pages of `limit` (default 20) with a cursor that
// walks all of them once, in their order (issue 12: they answered every row at once).
func TestListsArePaged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ada := b.person(t, "ada@example.com")
	acme := b.org(t, ada, "Acme")
	const n = 150
	now := time.Now().UTC()
	sessions, orgs, users, invitations := make([]uuid.UUID, n), make([]uuid.UUID, n), make([]uuid.UUID, n), make([]uuid.UUID, n)
	for i := range n {
		sessions[i], orgs[i], users[i], invitations[i] = uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at)
		  SELECT id, $2, $3, $3, $3::timestamptz + interval '1 day' FROM unnest($1::uuid[]) id`, []any{sessions, ada.id, now}},
		{`INSERT INTO orgs (id, name) SELECT id, 'Org ' || id FROM unnest($1::uuid[]) id`, []any{orgs}},
		{`INSERT INTO org_members (org_id, user_id, role) SELECT id, $2, 'member' FROM unnest($1::uuid[]) id`, []any{orgs, ada.id}},
		{`INSERT INTO orgs (id, name, personal) SELECT id, 'Personal', true FROM unnest($1::uuid[]) id`, []any{users}},
		{`INSERT INTO users (id, email, personal_org_id) SELECT id, id || '@example.com', id FROM unnest($1::uuid[]) id`, []any{users}},
		{`INSERT INTO org_members (org_id, user_id, role) SELECT $2, id, 'member' FROM unnest($1::uuid[]) id`, []any{users, acme}},
		{`INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, expires_at)
		  SELECT id, $2, id || '@example.org', 'member', uuid_send(id), $3, $4::timestamptz + interval '1 day' FROM unnest($1::uuid[]) id`, []any{invitations, acme, ada.id, now}},
	} {
		if _, err := b.pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	for _, tt := range []struct {
		name, path string
		id         string // the item's id field
		total      int
	}{
		{"Sessions", "/v1/me/sessions", "id", n + 1},
		{"Orgs", "/v1/orgs", "id", n + 2},
		{"Members", orgPath(acme, "members"), "user_id", n + 1},
		{"Invitations", orgPath(acme, "invitations"), "id", n},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var first struct {
				Data       []map[string]any `json:"data"`
				NextCursor *string          `json:"next_cursor"`
			}
			if res := b.call(t, "GET", tt.path, ada.token, nil, &first); res.StatusCode != 200 || len(first.Data) != 20 || first.NextCursor == nil {
				t.Fatalf("first page: %d with %d items and cursor %v; want 20 and a cursor", res.StatusCode, len(first.Data), first.NextCursor)
			}
			seen := map[string]bool{}
			cursor, pages := "", 0
			for {
				var page struct {
					Data       []map[string]any `json:"data"`
					NextCursor *string          `json:"next_cursor"`
				}
				q := url.Values{"limit": {"64"}}
				if cursor != "" {
					q.Set("cursor", cursor)
				}
				if res := b.call(t, "GET", tt.path+"?"+q.Encode(), ada.token, nil, &page); res.StatusCode != 200 {
					t.Fatalf("page %d: %d %s", pages, res.StatusCode, readAll(res))
				}
				pages++
				if len(page.Data) > 64 {
					t.Fatalf("page %d holds %d items, more than its limit", pages, len(page.Data))
				}
				for _, item := range page.Data {
					id := fmt.Sprint(item[tt.id])
					if seen[id] {
						t.Fatalf("%s listed twice", id)
					}
					seen[id] = true
				}
				if page.NextCursor == nil {
					break
				}
				cursor = *page.NextCursor
			}
			if len(seen) != tt.total || pages != (tt.total+63)/64 {
				t.Errorf("walked %d items in %d pages, want %d in %d", len(seen), pages, tt.total, (tt.total+63)/64)
			}
			if first.Data[0][tt.id] == nil || !seen[fmt.Sprint(first.Data[0][tt.id])] {
				t.Errorf("first item %v not walked", first.Data[0])
			}
		})
	}
	t.Run("PersonalOrgFirst", func(t *testing.T) {
		t.Parallel()
		var page struct {
			Data []struct {
				ID       uuid.UUID `json:"id"`
				Personal bool      `json:"personal"`
			} `json:"data"`
		}
		if res := b.call(t, "GET", "/v1/orgs?limit=3", ada.token, nil, &page); res.StatusCode != 200 || len(page.Data) != 3 {
			t.Fatalf("orgs: %d, %d items", res.StatusCode, len(page.Data))
		}
		if !page.Data[0].Personal || page.Data[0].ID != ada.personalOrg || page.Data[1].ID != acme {
			raw, _ := json.Marshal(page.Data)
			t.Errorf("orgs %s: want the personal org, then the oldest (Acme)", raw)
		}
	})
	t.Run("ErrBadCursor", func(t *testing.T) {
		t.Parallel()
		wantProblem(t, b.call(t, "GET", "/v1/me/sessions?cursor=nope", ada.token, nil, nil), 400, errs.Invalid)
	})
}
