package storetest

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/store"
)

// OrgRows counts the rows of org in every table of the public schema with an org_id column.
func OrgRows(t testing.TB, st *store.Store, org uuid.UUID) int64 {
	t.Helper()
	ctx := t.Context()
	rows, err := st.Pool.Query(ctx, `SELECT table_name FROM information_schema.columns
		WHERE table_schema = 'public' AND column_name = 'org_id' AND table_name IN
			(SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE')`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, table := range tables {
		var n int64
		if err := st.Pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %q WHERE org_id = $1`, table), org).Scan(&n); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		total += n
	}
	return total
}
