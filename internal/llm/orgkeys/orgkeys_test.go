package orgkeys_test

import (
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm/orgkeys"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

const (
	oldMaster = "old:b2xkLW1hc3Rlci1rZXktdGhpcnR5LXR3by1ieXRlcyE="
	newMaster = "new:bmV3LW1hc3Rlci1rZXktdGhpcnR5LXR3by1ieXRlcyE="
)

func keyring(t *testing.T, spec string) *secrets.Keyring {
	t.Helper()
	k, err := secrets.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestService(t *testing.T) {
	t.Parallel()
	known := func(p string) bool { return p == "openai" }

	t.Run("OKSetLookupDelete", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		svc := orgkeys.New(st, keyring(t, newMaster), known, time.Now)
		org := storetest.Org(t, st)
		if _, ok, err := svc.Lookup(t.Context(), org, "openai"); ok || err != nil {
			t.Fatalf("before: %v %v", ok, err)
		}
		k, err := svc.Set(t.Context(), org, "openai", "sk-test-abcd", audit.Actor{})
		if err != nil || k.Hint != "…abcd" {
			t.Fatalf("set: %+v %v", k, err)
		}
		if key, ok, err := svc.Lookup(t.Context(), org, "openai"); !ok || err != nil || key != "sk-test-abcd" {
			t.Fatalf("lookup after set (a cached miss must be forgotten): %q %v %v", key, ok, err)
		}
		if key, ok, _ := svc.Lookup(t.Context(), storetest.Org(t, st), "openai"); ok || key != "" {
			t.Fatalf("another org sees %q", key)
		}
		if err := svc.Delete(t.Context(), org, "openai", audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := svc.Lookup(t.Context(), org, "openai"); ok {
			t.Fatal("lookup after delete still finds the key")
		}
	})

	t.Run("ErrNotFoundForAnUnknownProvider", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		_, err := orgkeys.New(st, keyring(t, newMaster), known, time.Now).Set(t.Context(), storetest.Org(t, st), "nope", "sk-test-abcd", audit.Actor{})
		if errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("OKResealMovesKeysToTheNewMasterKey", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		org := storetest.Org(t, st)
		if _, err := orgkeys.New(st, keyring(t, oldMaster), known, time.Now).Set(t.Context(), org, "openai", "sk-test-abcd", audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		rotated := orgkeys.New(st, keyring(t, newMaster+","+oldMaster), known, time.Now)
		if n, err := rotated.Reseal(t.Context()); n != 1 || err != nil {
			t.Fatalf("reseal: %d %v", n, err)
		}
		if n, err := rotated.Reseal(t.Context()); n != 0 || err != nil {
			t.Fatalf("second reseal: %d %v", n, err)
		}
		rows, err := st.ListAllProviderKeys(t.Context())
		if err != nil || len(rows) != 1 || secrets.KeyID(rows[0].KeySealed) != "new" {
			t.Fatalf("rows %+v, %v", rows, err)
		}
		// The old master key can now be dropped.
		key, ok, err := orgkeys.New(st, keyring(t, newMaster), known, time.Now).Lookup(t.Context(), org, "openai")
		if !ok || err != nil || key != "sk-test-abcd" {
			t.Fatalf("lookup with the new key only: %q %v %v", key, ok, err)
		}
	})

	t.Run("ErrASealedKeyCopiedToAnotherOrgDoesNotOpen", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		svc := orgkeys.New(st, keyring(t, newMaster), known, time.Now)
		a, b := storetest.Org(t, st), storetest.Org(t, st)
		if _, err := svc.Set(t.Context(), a, "openai", "sk-test-abcd", audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		rows, _ := st.ListAllProviderKeys(t.Context())
		if _, err := st.UpsertProviderKey(t.Context(), db.UpsertProviderKeyParams{OrgID: b, Provider: "openai", KeySealed: rows[0].KeySealed, Hint: "…abcd", Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := svc.Lookup(t.Context(), b, "openai"); err == nil {
			t.Fatal("a key sealed for another org opened")
		}
	})
}
