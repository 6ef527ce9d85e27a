package erasure

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestAuditStaysAppendOnly: the audit log refuses every update and delete, but for the
// erasure's own: inside a transaction that set kiln.erasure, and only of the personal
// fields. The setting is transaction-local: the next transaction is refused again.
func TestAuditStaysAppendOnly(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := t.Context()
	org := storetest.Org(t, st)
	user := storetest.User(t, st, org)
	if err := audit.Write(ctx, st.Queries, audit.Actor{Type: audit.ActorUser, ID: &user, IP: "198.51.100.9", UserAgent: "probe"},
		audit.Event{OrgID: &org, Action: "test.event", TargetType: "user", TargetID: user.String()}); err != nil {
		t.Fatal(err)
	}
	exec := func(erasing bool, stmt string) error {
		return pgx.BeginFunc(ctx, st.Pool, func(tx pgx.Tx) error {
			if erasing {
				if _, err := tx.Exec(ctx, "SELECT set_config('kiln.erasure', 'on', true)"); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, stmt)
			return err
		})
	}
	for _, tc := range []struct {
		name    string
		erasing bool
		stmt    string
		ok      bool
	}{
		{"UpdateOutsideErasure", false, "UPDATE audit_events SET ip = ''", false},
		{"DeleteOutsideErasure", false, "DELETE FROM audit_events", false},
		{"DeleteInErasure", true, "DELETE FROM audit_events", false},
		{"ActionInErasure", true, "UPDATE audit_events SET action = 'forged'", false},
		{"TimeInErasure", true, "UPDATE audit_events SET created_at = created_at - interval '1 day'", false},
		{"OrgInErasure", true, "UPDATE audit_events SET org_id = NULL", false},
		{"PersonalFieldsInErasure", true, "UPDATE audit_events SET ip = '', user_agent = '', actor_id = gen_random_uuid(), target_id = 'erased-x', data = '{}'", true},
		{"UpdateAfterErasure", false, "UPDATE audit_events SET data = '{\"x\": 1}'", false},
		{"PaymentAmountInErasure", true, "UPDATE payment_events SET amount_minor = 1", true}, // no row: nothing to refuse
	} {
		err := exec(tc.erasing, tc.stmt)
		if tc.ok != (err == nil) {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: refused for another reason: %v", tc.name, err)
		}
	}
	var ip, target string
	if err := st.Pool.QueryRow(ctx, "SELECT ip, target_id FROM audit_events").Scan(&ip, &target); err != nil || ip != "" || target != "erased-x" {
		t.Errorf("after the erasure's update: ip %q, target %q, %v", ip, target, err)
	}
}

// TestScrub: the subject's values are replaced wherever they occur in event data,
// case-insensitively, and the pseudonym is never matched again.
func TestScrub(t *testing.T) {
	t.Parallel()
	in := map[string]any{"email": "Zed@Example.com", "list": []any{"by zed@example.com", 3.0}, "nested": map[string]any{"n": "Erasmus"}}
	out := scrub(in, []string{"zed@example.com", "era"}, "erased-1").(map[string]any)
	if out["email"] != "erased-1" || out["list"].([]any)[0] != "by erased-1" || out["nested"].(map[string]any)["n"] != "erased-1smus" {
		t.Errorf("scrub = %v", out)
	}
	if got := pseudonymText(uuid.Nil, uuid.Nil); !strings.HasPrefix(got, "erased-") || len(got) != len("erased-")+16 {
		t.Errorf("pseudonym %q", got)
	}
}
