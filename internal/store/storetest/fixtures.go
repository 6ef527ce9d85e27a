package storetest

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// Org inserts an org (not a personal one) for a test's rows to belong to and returns its
// id; the name is derived from the id.
func Org(t testing.TB, st *store.Store) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	if _, err := st.CreateOrg(t.Context(), db.CreateOrgParams{ID: id, Name: "org-" + id.String()[:8], Now: time.Now()}); err != nil {
		t.Fatalf("create org: %v", err)
	}
	return id
}

// User inserts a user without a password whose personal org is org and returns its id;
// the address is <id>@example.com.
func User(t testing.TB, st *store.Store, org uuid.UUID) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	if _, err := st.CreateUser(t.Context(), db.CreateUserParams{
		ID: id, Email: id.String() + "@example.com", Name: "u", PersonalOrgID: org, Now: time.Now(),
	}); err != nil {
		t.Fatalf("create user: %v", err)
	}
	return id
}
