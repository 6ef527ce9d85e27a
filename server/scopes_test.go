package server

import (
	"fmt"
	"slices"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/apikey"
)

// TestScopesInSpec: the spec's Scope enum is apikey.Scopes, in order (so an API key can be
// created with each scope, and the docs and SDKs list them all), a key may carry every
// scope at once, and every operation an API key may call names the scope it needs, one of
// the catalog's: no operation is open to any key.
func TestScopesInSpec(t *testing.T) {
	t.Parallel()
	spec, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	var enum []string
	for _, v := range spec.Components.Schemas["Scope"].Value.Enum {
		enum = append(enum, fmt.Sprint(v))
	}
	if !slices.Equal(enum, apikey.Scopes) {
		t.Errorf("the spec's Scope enum %q, want apikey.Scopes %q", enum, apikey.Scopes)
	}
	keyScopes := spec.Components.Schemas["CreateAPIKeyRequest"].Value.Properties["scopes"].Value
	if keyScopes.MaxItems == nil || *keyScopes.MaxItems < uint64(len(apikey.Scopes)) {
		t.Errorf("CreateAPIKeyRequest.scopes maxItems %v: a key cannot carry all %d scopes", keyScopes.MaxItems, len(apikey.Scopes))
	}
	for route, req := range requirements(spec) {
		if !req.apiKey {
			continue
		}
		if len(req.scopes) == 0 {
			t.Errorf("%s takes an API key but names no x-kiln-scope", route)
		}
		for _, sc := range req.scopes {
			if !slices.Contains(apikey.Scopes, sc) {
				t.Errorf("%s: x-kiln-scope %q is not in apikey.Scopes", route, sc)
			}
		}
	}
}
